#include "tcpwhy/live_view.h"

#include <algorithm>
#include <array>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tcpwhy/explain.h"
#include "tcpwhy/format.h"

namespace tcpwhy {
namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000;
constexpr uint64_t kNsPerMs = 1'000'000;

std::string row_key(uint32_t netns, uint16_t port, bool outbound) {
    return outbound ? fmt::format("{}:out:{}", netns, port) : fmt::format("{}:{}", netns, port);
}

std::string format_seconds(uint64_t ms) { return fmt::format("{:.1f} s", static_cast<double>(ms) / 1000.0); }

// "opened (accepted) → last data → idle 6.0 s → backend closed (FIN) → reset sent (...)".
std::vector<TimelineStep> timeline_of(const ConnectionRecord& r) {
    std::vector<TimelineStep> steps;
    bool received = r.end == EndKind::reset_received || r.reset == FindingKind::peer_reset;
    auto reset_step = [&] {
        std::string reason = r.reset_reason == ResetReason::none ? "" : fmt::format(" {}", to_string(r.reset_reason));
        std::string kind = r.reset ? fmt::format(": {}", to_string(*r.reset)) : "";
        return TimelineStep{r.reset_ts_ns ? r.reset_ts_ns : r.last_ts_ns,
                            fmt::format("{}{}{}", received ? "reset received" : "reset sent", reason, kind)};
    };
    if (r.cookie == 0) {  // a reset with no socket behind it: that is all there is
        steps.push_back(reset_step());
        return steps;
    }
    // an open the kernel counted in a tally has no time of its own (a span, like "idle")
    const uint64_t opened_ts = r.open_counted ? 0 : r.first_ts_ns;
    switch (r.opened) {
    case OpenKind::accepted: steps.push_back({opened_ts, r.open_counted ? "opened (accepted) earlier (counted)" : "opened (accepted)"}); break;
    case OpenKind::connected: steps.push_back({opened_ts, r.open_counted ? "opened (connected) earlier (counted)" : "opened (connected)"}); break;
    case OpenKind::unknown: steps.push_back({r.first_ts_ns, "first seen (open before tracing began)"}); break;
    }
    if (r.close_ts_ns) {
        uint64_t idle_ns = uint64_t{r.idle_before_close_ms} * kNsPerMs;
        if (r.first_close == FirstClose::local && idle_ns > 0) {
            if (r.close_ts_ns >= (r.open_counted ? 0 : r.first_ts_ns) + idle_ns)
                steps.push_back({r.close_ts_ns - idle_ns, "last data"});
            steps.push_back({0, fmt::format("idle {}", format_seconds(r.idle_before_close_ms))});
        }
        std::string close;
        if (r.first_close == FirstClose::remote) close = "peer closed first; backend closed";
        else close = r.aborted ? "backend closed (RST)" : "backend closed (FIN)";
        if (r.unread_at_close) close += fmt::format(" with {} B unread", r.unread_at_close);
        steps.push_back({r.close_ts_ns, std::move(close)});
    } else if (r.first_close == FirstClose::remote) {
        steps.push_back({0, "peer closed first"});
    }
    if (r.reset) steps.push_back(reset_step());
    switch (r.end) {
    case EndKind::open:
        if (r.last_ts_ns >= r.first_ts_ns + kNsPerSecond && !r.close_ts_ns && !r.reset)
            steps.push_back({r.last_ts_ns, "last event"});
        steps.push_back({0, "still open"});
        break;
    case EndKind::orderly:
        // the end the kernel reports after a local FIN is not sent: the close above is it
        if (r.end_ts_ns && r.end_ts_ns != r.close_ts_ns) steps.push_back({r.end_ts_ns, "closed"});
        break;
    case EndKind::expired: steps.push_back({r.last_ts_ns, "silent too long; forgotten"}); break;
    case EndKind::reset_sent:
    case EndKind::reset_received: break;
    }
    return steps;
}

SnapshotConnection connection_of(const ConnectionRecord& r) {
    SnapshotConnection c;
    c.peer = format_endpoint(r.raddr, r.rport);
    c.local = format_endpoint(r.laddr, r.lport);
    c.lb_peer = r.lb_peer;
    c.end = r.end;
    c.verdict = r.reset;
    if (r.evidence) c.evidence = explain::evidence(*r.evidence);
    c.timeline = timeline_of(r);
    return c;
}

SnapshotFinding finding_of(const Finding& f) {
    constexpr size_t kConnectionsShown = 10;
    explain::Words words = explain::words(f);
    std::vector<std::string> connections;
    for (size_t i = 0; i < f.connections.size() && i < kConnectionsShown; ++i)
        connections.push_back(explain::four_tuple(f.connections[i]));
    // The drill-down shows what the LB logs for it among the evidence lines.
    if (!words.lb_symptom.empty()) words.evidence.push_back("load balancer: " + words.lb_symptom);
    return {f.kind, f.count, std::move(words.summary), std::move(words.evidence), std::move(words.advice),
            std::move(connections)};
}

// Per-second reset counts of one backend over the last minute, indexed by second % 60.
struct Sparkline {
    std::array<uint32_t, kSparklineSeconds> per_second{};
    uint64_t resets_seen = 0;
};

}  // namespace

std::string SnapshotRow::key() const {
    return node.empty() ? row_key(netns, port, outbound) : node + "/" + row_key(netns, port, outbound);
}

struct LiveView::Impl {
    explicit Impl(CorrelatorConfig config) : correlator(std::move(config)) {}

    Correlator correlator;
    LiveStatus status;
    uint64_t now_ns = 0;
    double events_per_s = 0;
    uint64_t current_second = 0;
    std::unordered_map<std::string, Sparkline> sparklines;  // by row key
    struct LiveIdle {
        uint64_t count = 0;
        uint32_t p50_ms = 0, max_ms = 0;
    };
    std::unordered_map<std::string, LiveIdle> live_idle;  // by row key, from the last listing
    uint64_t live_sample_ns = 0;

    void set_live_sockets(const std::vector<Event>& sockets, uint64_t sample_ns) {
        std::unordered_map<std::string, std::vector<uint32_t>> idle_by_row;
        for (const auto& e : sockets) {
            if (e.new_state != TcpState::established && e.new_state != TcpState::close_wait) continue;
            BackendId b = correlator.backend_of(e);
            idle_by_row[row_key(b.netns, b.port, b.outbound)].push_back(std::min(e.idle_rx_ms, e.idle_tx_ms));
        }
        live_idle.clear();
        for (auto& [key, idle] : idle_by_row) {
            std::sort(idle.begin(), idle.end());
            live_idle[key] = {idle.size(), idle[idle.size() / 2], idle.back()};
        }
        live_sample_ns = sample_ns;
    }

    void advance_to(uint64_t second) {
        if (current_second == 0 || second <= current_second) {
            current_second = std::max(current_second, second);
            return;
        }
        uint64_t steps = std::min<uint64_t>(second - current_second, kSparklineSeconds);
        for (auto& [key, line] : sparklines)
            for (uint64_t s = second - steps + 1; s <= second; ++s) line.per_second[s % kSparklineSeconds] = 0;
        current_second = second;
    }

    void tick(uint64_t tick_ns, const LiveStatus& new_status) {
        correlator.expire(tick_ns);
        if (now_ns && tick_ns > now_ns && new_status.events_total >= status.events_total)
            events_per_s = static_cast<double>(new_status.events_total - status.events_total) * kNsPerSecond /
                           static_cast<double>(tick_ns - now_ns);
        status = new_status;
        now_ns = tick_ns;
        advance_to(tick_ns / kNsPerSecond);
        for (const auto& p : correlator.backends()) {
            Sparkline& line = sparklines[row_key(p.id.netns, p.id.port, p.id.outbound)];
            uint64_t resets = p.resets_total();
            if (resets > line.resets_seen)
                line.per_second[current_second % kSparklineSeconds] += static_cast<uint32_t>(resets - line.resets_seen);
            line.resets_seen = resets;
        }
    }

    std::vector<uint32_t> sparkline_of(const std::string& key) const {
        std::vector<uint32_t> out(kSparklineSeconds, 0);
        auto it = sparklines.find(key);
        if (it == sparklines.end()) return out;
        for (size_t i = 0; i < kSparklineSeconds; ++i)  // oldest first: current_second - 59 .. current_second
            out[i] = it->second.per_second[(current_second + 1 + i) % kSparklineSeconds];
        return out;
    }

    Snapshot snapshot() const {
        const CorrelatorConfig& config = correlator.config();
        Snapshot s;
        SnapshotHeader& h = s.header;
        h.node = status.node;
        h.kernel = status.kernel;
        h.attach = status.attach;
        h.lb_name = config.lb_name;
        h.lb_description = config.lb_description;
        h.lb_idle_timeout_s = config.lb_idle_timeout_s;
        h.events_per_s = events_per_s;
        h.events_total = status.events_total;
        h.dropped_total = status.dropped_total;
        h.now_ns = now_ns;
        h.live_sample_ns = live_sample_ns;
        h.wall_now_ns = WallClock::now().to_wall_ns(now_ns);

        // With a load balancer the row counts resets sent to its peers, as the findings do;
        // without one every peer is a client that can hit the race.
        bool lb_only = config.lb_idle_timeout_s > 0;
        auto profiles = correlator.backends();
        auto activity = correlator.backend_activity(kRecentConnections);
        std::unordered_map<std::string, std::vector<SnapshotFinding>> findings;
        for (const auto& f : correlator.findings())
            findings[row_key(f.backend.id.netns, f.backend.id.port, f.backend.id.outbound)].push_back(finding_of(f));

        for (size_t i = 0; i < profiles.size(); ++i) {
            const BackendProfile& p = profiles[i];
            SnapshotRow& row = s.rows.emplace_back();
            row.netns = p.id.netns;
            row.port = p.id.port;
            row.outbound = p.id.outbound;
            row.pod = p.id.pod;
            row.namespace_name = p.id.namespace_name;
            row.container = p.id.container;
            if (!p.id.pod.empty()) row.name = p.id.pod;
            else if (p.id.netns == 0 && p.id.port == 0) row.name = "(more backends)";  // past max_backends
            else row.name = fmt::format("netns {}", p.id.netns);
            row.process = p.comm;
            row.pid = p.pid;
            row.server = explain::server_name(p);
            row.server_detail = explain::server_line(p);
            if (i < activity.size()) {
                row.live_lb = activity[i].live_lb;
                row.live_other = activity[i].live_other;
                for (const auto& r : activity[i].recent) row.connections.push_back(connection_of(r));
            }
            row.idle_closes = p.idle_close.samples;
            row.idle_p50_ms = p.idle_close.p50_ms;
            auto sent = [&](size_t kind) { return p.resets_lb[kind] + (lb_only ? 0 : p.resets_other[kind]); };
            auto peer_reset = static_cast<size_t>(FindingKind::peer_reset);
            auto race = static_cast<size_t>(FindingKind::idle_close_race);
            row.resets_races = sent(race);
            for (size_t k = 0; k < kFindingKindCount; ++k)
                if (k != race && k != peer_reset) row.resets_other += sent(k);
            row.resets_received = p.resets_lb[peer_reset] + p.resets_other[peer_reset];
            row.resets_per_second = sparkline_of(row.key());
            if (auto it = live_idle.find(row.key()); it != live_idle.end()) {
                row.live_sampled = it->second.count;
                row.live_idle_p50_ms = it->second.p50_ms;
                row.live_idle_max_ms = it->second.max_ms;
            }
            if (auto it = findings.find(row.key()); it != findings.end()) {
                row.findings = std::move(it->second);
                findings.erase(it);
                row.verdict = row.findings.front().kind;
            }
        }
        return s;
    }
};

LiveView::LiveView(CorrelatorConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
LiveView::~LiveView() = default;
void LiveView::on_event(const Event& event) { impl_->correlator.on_event(event); }
void LiveView::tick(uint64_t now_ns, const LiveStatus& status) { impl_->tick(now_ns, status); }
void LiveView::set_live_sockets(const std::vector<Event>& sockets, uint64_t now_ns) {
    impl_->set_live_sockets(sockets, now_ns);
}
Correlator& LiveView::correlator() { return impl_->correlator; }
const Correlator& LiveView::correlator() const { return impl_->correlator; }
Snapshot LiveView::snapshot() const { return impl_->snapshot(); }
std::string LiveView::snapshot_json() const { return to_json(snapshot()); }

// ---- JSON -------------------------------------------------------------------

namespace {

using nlohmann::json;

json to_json_value(const SnapshotConnection& c) {
    json steps = json::array();
    for (const auto& step : c.timeline) steps.push_back({{"ts_ns", step.ts_ns}, {"what", step.what}});
    return {{"peer", c.peer},
            {"local", c.local},
            {"lb_peer", c.lb_peer},
            {"end", to_string(c.end)},
            {"verdict", c.verdict ? to_string(*c.verdict) : ""},
            {"evidence", c.evidence},
            {"timeline", steps}};
}

json to_json_value(const SnapshotFinding& f) {
    return {{"kind", to_string(f.kind)}, {"count", f.count},   {"summary", f.summary},
            {"evidence", f.evidence}, {"advice", f.advice}, {"connections", f.connections}};
}

json to_json_value(const SnapshotRow& r) {
    json findings = json::array(), connections = json::array();
    for (const auto& f : r.findings) findings.push_back(to_json_value(f));
    for (const auto& c : r.connections) connections.push_back(to_json_value(c));
    json j = {{"netns", r.netns},
              {"port", r.port},
              {"outbound", r.outbound},
              {"pod", r.pod},
              {"namespace", r.namespace_name},
              {"container", r.container},
              {"name", r.name},
              {"process", r.process},
              {"pid", r.pid},
              {"server", r.server},
              {"server_detail", r.server_detail},
              {"live_lb", r.live_lb},
              {"live_other", r.live_other},
              {"live_sampled", r.live_sampled},
              {"live_idle_p50_ms", r.live_idle_p50_ms},
              {"live_idle_max_ms", r.live_idle_max_ms},
              {"idle_closes", r.idle_closes},
              {"idle_p50_ms", r.idle_p50_ms},
              {"resets_races", r.resets_races},
              {"resets_other", r.resets_other},
              {"resets_received", r.resets_received},
              {"resets_per_second", r.resets_per_second},
              {"verdict", r.verdict ? to_string(*r.verdict) : ""},
              {"findings", findings},
              {"connections", connections}};
    if (!r.node.empty()) j["node"] = r.node;
    return j;
}

json header_json(const SnapshotHeader& h) {
    return {{"node", h.node},
            {"kernel", h.kernel},
            {"attach", h.attach},
            {"lb_name", h.lb_name},
            {"lb_description", h.lb_description},
            {"lb_idle_timeout_s", h.lb_idle_timeout_s},
            {"events_per_s", h.events_per_s},
            {"events_total", h.events_total},
            {"dropped_total", h.dropped_total},
            {"now_ns", h.now_ns},
            {"live_sample_ns", h.live_sample_ns},
            {"wall_now_ns", h.wall_now_ns}};
}

SnapshotHeader header_from(const json& h) {
    SnapshotHeader header;
    header.node = h.at("node").get<std::string>();
    header.kernel = h.at("kernel").get<std::string>();
    header.attach = h.at("attach").get<std::string>();
    header.lb_name = h.at("lb_name").get<std::string>();
    header.lb_description = h.at("lb_description").get<std::string>();
    header.lb_idle_timeout_s = h.at("lb_idle_timeout_s").get<uint32_t>();
    header.events_per_s = h.at("events_per_s").get<double>();
    header.events_total = h.at("events_total").get<uint64_t>();
    header.dropped_total = h.at("dropped_total").get<uint64_t>();
    header.now_ns = h.at("now_ns").get<uint64_t>();
    header.live_sample_ns = h.at("live_sample_ns").get<uint64_t>();
    header.wall_now_ns = h.at("wall_now_ns").get<uint64_t>();
    return header;
}

// "" for none. A kind this tcpwhy does not know (a newer daemon's) shows as `other`.
std::optional<FindingKind> kind_from(const json& j) {
    auto name = j.get<std::string>();
    if (name.empty()) return std::nullopt;
    return finding_kind_from_string(name).value_or(FindingKind::other);
}

SnapshotConnection connection_from(const json& j) {
    SnapshotConnection c;
    c.peer = j.at("peer").get<std::string>();
    c.local = j.at("local").get<std::string>();
    c.lb_peer = j.at("lb_peer").get<bool>();
    c.end = end_kind_from_string(j.at("end").get<std::string>()).value_or(EndKind::open);
    c.verdict = kind_from(j.at("verdict"));
    c.evidence = j.at("evidence").get<std::string>();
    for (const auto& step : j.at("timeline"))
        c.timeline.push_back({step.at("ts_ns").get<uint64_t>(), step.at("what").get<std::string>()});
    return c;
}

SnapshotFinding finding_from(const json& j) {
    SnapshotFinding f;
    f.kind = kind_from(j.at("kind")).value_or(FindingKind::other);
    f.count = j.at("count").get<uint64_t>();
    f.summary = j.at("summary").get<std::string>();
    f.evidence = j.at("evidence").get<std::vector<std::string>>();
    f.advice = j.at("advice").get<std::string>();
    f.connections = j.at("connections").get<std::vector<std::string>>();
    return f;
}

SnapshotRow row_from(const json& j) {
    SnapshotRow r;
    r.netns = j.at("netns").get<uint32_t>();
    r.port = j.at("port").get<uint16_t>();
    r.outbound = j.at("outbound").get<bool>();
    r.pod = j.at("pod").get<std::string>();
    r.namespace_name = j.at("namespace").get<std::string>();
    r.container = j.at("container").get<std::string>();
    r.name = j.at("name").get<std::string>();
    r.process = j.at("process").get<std::string>();
    r.pid = j.at("pid").get<uint32_t>();
    r.server = j.value("server", std::string());
    r.server_detail = j.value("server_detail", std::string());
    r.live_lb = j.at("live_lb").get<uint64_t>();
    r.live_other = j.at("live_other").get<uint64_t>();
    r.live_sampled = j.at("live_sampled").get<uint64_t>();
    r.live_idle_p50_ms = j.at("live_idle_p50_ms").get<uint32_t>();
    r.live_idle_max_ms = j.at("live_idle_max_ms").get<uint32_t>();
    r.idle_closes = j.at("idle_closes").get<uint64_t>();
    r.idle_p50_ms = j.at("idle_p50_ms").get<uint32_t>();
    r.resets_races = j.at("resets_races").get<uint64_t>();
    r.resets_other = j.at("resets_other").get<uint64_t>();
    r.resets_received = j.at("resets_received").get<uint64_t>();
    r.resets_per_second = j.at("resets_per_second").get<std::vector<uint32_t>>();
    r.verdict = kind_from(j.at("verdict"));
    for (const auto& f : j.at("findings")) r.findings.push_back(finding_from(f));
    for (const auto& c : j.at("connections")) r.connections.push_back(connection_from(c));
    if (auto node = j.find("node"); node != j.end()) r.node = node->get<std::string>();
    return r;
}

}  // namespace

std::string to_json(const Snapshot& snapshot) {
    json rows = json::array();
    for (const auto& r : snapshot.rows) rows.push_back(to_json_value(r));
    json j = {{"tcpwhy_snapshot", Snapshot::kVersion}, {"header", header_json(snapshot.header)}, {"rows", rows}};
    // A view of several daemons says which, and how each answered (a daemon's own has no such list).
    if (!snapshot.nodes.empty()) {
        json nodes = json::array();
        for (const auto& n : snapshot.nodes)
            nodes.push_back({{"name", n.name},
                             {"source", n.source},
                             {"header", header_json(n.header)},
                             {"answered", n.answered},
                             {"problem", n.problem}});
        j["nodes"] = std::move(nodes);
    }
    // Process names and kernel strings are not guaranteed UTF-8: replace, never throw.
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<Snapshot> parse_snapshot(std::string_view text, std::string* error) {
    auto fail = [error](std::string why) -> std::optional<Snapshot> {
        if (error) *error = std::move(why);
        return std::nullopt;
    };
    json j = json::parse(text.begin(), text.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return fail("not a JSON object");
    auto version = j.find("tcpwhy_snapshot");
    if (version == j.end() || !version->is_number_integer()) return fail("not a tcpwhy snapshot");
    if (version->get<int>() != Snapshot::kVersion)
        return fail(fmt::format("snapshot version {} (this tcpwhy reads version {})", version->get<int>(),
                                Snapshot::kVersion));
    try {
        Snapshot s;
        s.header = header_from(j.at("header"));
        for (const auto& row : j.at("rows")) s.rows.push_back(row_from(row));
        if (auto nodes = j.find("nodes"); nodes != j.end())
            for (const auto& n : *nodes)
                s.nodes.push_back({n.at("name").get<std::string>(), n.at("source").get<std::string>(),
                                   header_from(n.at("header")), n.at("answered").get<bool>(),
                                   n.at("problem").get<std::string>()});
        return s;
    } catch (const json::exception& e) {
        return fail(fmt::format("malformed snapshot: {}", e.what()));
    }
}

}  // namespace tcpwhy
