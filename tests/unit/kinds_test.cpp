// Every finding kind, through every renderer: the table of kinds is the only place a kind
// is declared, so a kind added there without a scenario here, or that some output
// cannot show, fails this test (docs/correlator.md, "Adding a finding kind").
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <sstream>

#include "event_builders.h"
#include "tcpwhy/daemon/metrics.h"
#include "tcpwhy/explain.h"
#include "tcpwhy/kinds.h"
#include "tcpwhy/live_view.h"
#include "tcpwhy/report.h"
#include "tcpwhy/top/view_model.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {

using Scenario = std::function<std::vector<Event>()>;

// The HTML report escapes what it prints; the words it must show, as they appear there.
std::string html_escaped(std::string_view text) {
    std::string out;
    for (char c : text) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
        }
    }
    return out;
}

// The events that make each kind, as the kernel reports them (the correlator tests cover
// their near misses).
const std::map<FindingKind, Scenario>& scenarios() {
    static const std::map<FindingKind, Scenario> all = {
        {FindingKind::idle_close_race,
         [] {
             Sock s;
             return std::vector<Event>{
                 accepted(s, sec(1)), idle_fin(s, sec(7), 6000),
                 reset_sent(s, sec(7) + ms(2), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true)};
         }},
        {FindingKind::close_with_unread_data,
         [] {
             Sock s;
             return std::vector<Event>{
                 accepted(s, sec(1)), close(s, sec(1) + ms(30), {.idle_rx_ms = 5, .idle_tx_ms = 2}),
                 reset_sent(s, sec(1) + ms(31), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true)};
         }},
        {FindingKind::linger_abort,
         [] {
             Sock s{.raddr = "10.60.0.9"};
             Event rst = reset_sent(s, sec(5), "TCP_STATE", SockKind::full, TcpState::close, false);
             rst.opts.set(SockOpt::so_linger, 0);
             return std::vector<Event>{accepted(s, sec(1)), setsockopt(s, sec(3), "SOL_SOCKET", "SO_LINGER", 1, 0),
                                       close(s, sec(5), {.to = TcpState::close, .abort = true}), rst};
         }},
        {FindingKind::no_listener,
         [] {
             Sock s{.cookie = 0, .lport = 9090};
             return std::vector<Event>{reset_sent(s, sec(1), "NO_SOCKET", SockKind::none, TcpState::unknown, true)};
         }},
        {FindingKind::timewait_data,
         [] {
             Sock s;
             return std::vector<Event>{
                 reset_sent(s, sec(5), "TCP_TIMEWAIT_SOCKET", SockKind::timewait, TcpState::time_wait, true)};
         }},
        {FindingKind::keepalive_timeout,
         [] {
             Sock s;
             Event rst = reset_sent(s, sec(90), "TCP_KEEPALIVE_TIMEOUT", SockKind::full, TcpState::established, false);
             rst.opts.set(SockOpt::so_keepalive, 1);
             return std::vector<Event>{accepted(s, sec(1)), rst};
         }},
        {FindingKind::user_timeout,
         [] {
             Sock s;
             Event rst = reset_sent(s, sec(20), "TCP_KEEPALIVE_TIMEOUT", SockKind::full, TcpState::established, false);
             rst.opts.set(SockOpt::tcp_user_timeout, 5000);
             return std::vector<Event>{accepted(s, sec(1)), rst};
         }},
        {FindingKind::peer_reset,
         [] {
             Sock s{.raddr = "10.60.0.9"};
             return std::vector<Event>{accepted(s, sec(1)), reset_recv(s, sec(2), TcpState::established),
                                       state(s, sec(2), TcpState::established, TcpState::close)};
         }},
        {FindingKind::other,
         [] {
             Sock s;
             return std::vector<Event>{
                 accepted(s, sec(1)),
                 reset_sent(s, sec(2), "TCP_INVALID_ACK_SEQUENCE", SockKind::full, TcpState::syn_recv, true)};
         }},
        {FindingKind::rollout_drain,
         [] {
             // SIGTERM, the listener closes 20 ms later, the LB keeps connecting for 3 s.
             Sock listener{.cookie = 500};
             Sock lb1{.rport = 40001}, lb2{.rport = 40002};
             return std::vector<Event>{listen_on(listener, sec(1)), signal_to(listener, sec(10), 15),
                                       unlisten(listener, sec(10) + ms(20)), refused_syn(lb1, sec(11)),
                                       refused_syn(lb2, sec(13) + ms(20))};
         }},
        {FindingKind::process_crash,
         [] {
             // The OOM killer: the request in flight is closed by the exit, then the port refuses.
             Sock listener{.cookie = 500};
             Sock s;
             Sock lb{.rport = 40009};
             return std::vector<Event>{
                 listen_on(listener, sec(1)), accepted(s, sec(2)),
                 close(s, sec(5), {.idle_rx_ms = 300, .idle_tx_ms = 3000, .exit_code = 9, .oom_victim = true}),
                 unlisten(listener, sec(5) + ms(1), 9, true), refused_syn(lb, sec(6))};
         }},
        {FindingKind::accept_queue_overflow,
         [] {
             Sock listener{.cookie = 500};
             std::vector<Event> events{listen_on(listener, sec(1), 2)};
             for (uint16_t i = 0; i < 5; ++i)
                 events.push_back(overflow(Sock{.rport = static_cast<uint16_t>(41000 + i)}, sec(2) + ms(10 * i), 3, 2,
                                           OverflowHow::drop, 500));
             return events;
         }},
        {FindingKind::lb_response_timeout,
         [] {
             // A request waited 30 s with no response byte when the LB closed the connection.
             Sock s;
             return std::vector<Event>{accepted(s, sec(1)), peer_fin(s, sec(31), 30000, 30040, 250, 0)};
         }},
        {FindingKind::response_cut_short,
         [] {
             // Closed with a request body unread: the reset threw away 64 KiB of response.
             Sock s;
             Event rst = reset_sent(s, sec(2) + ms(1), "TCP_ABORT_ON_CLOSE", SockKind::full, TcpState::close, false);
             rst.send_queue_bytes = 65536;
             return std::vector<Event>{
                 accepted(s, sec(1)),
                 close(s, sec(2), {.to = TcpState::close, .idle_rx_ms = 4, .idle_tx_ms = 0, .unread = 4096,
                                   .abort = true, .send_queue = 65536}),
                 rst};
         }},
        {FindingKind::outbound_pool_race,
         [] {
             // The pod's client reuses a connection its upstream closed after 5 s idle.
             Sock s{.laddr = "10.56.5.6", .lport = 41234, .raddr = "10.60.0.9", .rport = 8080};
             return std::vector<Event>{connected(s, sec(1)), peer_fin(s, sec(6), 5000, 5000),
                                       reset_recv(s, sec(7), TcpState::close_wait),
                                       state(s, sec(7), TcpState::close_wait, TcpState::close)};
         }},
        {FindingKind::idle_timeout_below_lb,
         [] {
             std::vector<Event> events;
             for (uint64_t i = 0; i < 5; ++i) {
                 Sock s{.cookie = 10 + i, .rport = static_cast<uint16_t>(40000 + i)};
                 events.push_back(accepted(s, sec(10 * i)));
                 events.push_back(idle_fin(s, sec(10 * i) + sec(6), 6000));
             }
             return events;
         }},
    };
    return all;
}

bool contains(const std::string& haystack, std::string_view needle) {
    return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("kinds: one row per kind, in enum order, names unique and round-tripping") {
    auto kinds = finding_kinds();
    REQUIRE(kinds.size() == kFindingKindCount);
    for (size_t i = 0; i < kinds.size(); ++i) {
        CHECK(static_cast<size_t>(kinds[i].kind) == i);
        CHECK(finding_kind_from_string(kinds[i].name) == kinds[i].kind);
        CHECK(kinds[i].colour.starts_with("#"));
    }
    CHECK_FALSE(finding_kind_from_string("no_such_kind"));
}

TEST_CASE("kinds: every kind through every renderer") {
    for (const KindInfo& row : finding_kinds()) {
        DYNAMIC_SECTION(row.name) {
            auto scenario = scenarios().find(row.kind);
            INFO("kind " << row.name << " has no scenario in kinds_test.cpp: add the events that make it");
            REQUIRE(scenario != scenarios().end());
            auto events = scenario->second();

            // The correlator decides it.
            LiveView view(CorrelatorConfig::defaults());
            for (const auto& e : events) view.on_event(e);
            view.tick(sec(200), LiveStatus{"node-a", "6.18", "tp_btf", events.size(), 0});
            const Correlator& correlator = view.correlator();
            auto findings = correlator.findings();
            REQUIRE(findings.size() == 1);
            const Finding& f = findings[0];
            CHECK(f.kind == row.kind);

            // explain has words for it.
            explain::Words words = explain::words(f);
            CHECK_FALSE(words.summary.empty());
            if (row.kind >= FindingKind::rollout_drain) CHECK_FALSE(words.lb_symptom.empty());
            CHECK_FALSE(words.advice.empty());
            if (row.counts_resets) CHECK_FALSE(words.evidence.empty());

            // report: text, JSON, HTML.
            ReplayStats stats;
            std::ostringstream text, json, html;
            render_text_report(correlator, stats, text);
            CHECK(contains(text.str(), fmt::format("[{}] {}", row.name, words.summary)));
            CHECK(contains(text.str(), "   fix: " + words.advice));
            render_json_report(correlator, stats, json);
            auto j = nlohmann::json::parse(json.str());
            CHECK(j["findings"][0]["kind"] == row.name);
            CHECK(j["findings"][0]["severity"] == to_string(row.severity));
            CHECK(j["findings"][0]["advice"] == words.advice);
            render_html_report(correlator, stats, {}, 0, html);
            CHECK(contains(html.str(), fmt::format("style=\"--k:{}\" data-kind=\"{}\"", row.colour, row.name)));
            // What the LB logs for it: every renderer names it (the race says it in its summary).
            if (!words.lb_symptom.empty()) {
                CHECK(contains(text.str(), "   lb: " + words.lb_symptom));
                CHECK(j["findings"][0]["lb_symptom"] == words.lb_symptom);
                CHECK(contains(html.str(), "load balancer: " + html_escaped(words.lb_symptom)));
            } else {
                CHECK(j["findings"][0]["lb_symptom"].is_null());
            }

            // top: the snapshot (the daemon's wire format, round-tripped), the row and the drill-down.
            std::string error;
            auto snapshot = parse_snapshot(view.snapshot_json(), &error);
            INFO(error);
            REQUIRE(snapshot);
            const SnapshotRow* with_finding = nullptr;
            for (const auto& r : snapshot->rows)
                if (!r.findings.empty()) with_finding = &r;
            REQUIRE(with_finding);
            CHECK(with_finding->verdict == row.kind);
            CHECK(with_finding->findings[0].kind == row.kind);
            CHECK(with_finding->findings[0].advice == words.advice);
            if (!words.lb_symptom.empty()) {
                const auto& lines = with_finding->findings[0].evidence;
                CHECK(std::find(lines.begin(), lines.end(), "load balancer: " + words.lb_symptom) != lines.end());
            }
            CHECK(top::verdict_rank(with_finding->verdict) == 1 + static_cast<int>(row.severity));
            auto lines = top::detail_lines(*with_finding, snapshot->header, top::Glyphs::ascii(), 200);
            bool styled = std::any_of(lines.begin(), lines.end(), [&](const top::DetailLine& l) {
                return l.role == top::LineRole::finding && l.kind == row.kind;
            });
            CHECK(styled);
            CHECK(contains(top::render_plain(*snapshot, {}, {}, top::Glyphs::ascii()), std::string(row.name)));

            // metrics.
            daemon::MetricsSnapshot metrics;
            metrics.backends = correlator.backends();
            metrics.findings = findings;
            metrics.counts = correlator.counts();
            std::string prometheus = daemon::render_prometheus(metrics, 200);
            CHECK(contains(prometheus, fmt::format("kind=\"{}\"", row.name)));
            if (row.counts_resets) CHECK(contains(prometheus, fmt::format("class=\"{}\"", row.name)));
        }
    }
}
