// The live view on synthetic events: rows, sparklines, rates, timelines, and the
// snapshot's JSON (the daemon's wire format) read back exactly.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "event_builders.h"
#include "tcpwhy/live_view.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {

// The keep-alive race, shape 1: idle FIN, the LB's request, our abort-on-data reset.
void race(LiveView& view, const Sock& s, uint64_t t0, uint32_t idle_ms = 6000) {
    for (const auto& e : {accepted(s, t0), idle_fin(s, t0 + ms(idle_ms), idle_ms),
                          state(s, t0 + ms(idle_ms) + ms(2), TcpState::fin_wait1, TcpState::close),
                          reset_sent(s, t0 + ms(idle_ms) + ms(2), "TCP_ABORT_ON_DATA", SockKind::full,
                                     TcpState::close, true)})
        view.on_event(e);
}

LiveStatus status(uint64_t events, uint64_t dropped = 0) { return {"node-a", "6.18.0", "tp_btf", events, dropped}; }

const SnapshotRow& row_of(const Snapshot& s, uint32_t netns, uint16_t port, bool outbound = false) {
    for (const auto& row : s.rows)
        if (row.netns == netns && row.port == port && row.outbound == outbound) return row;
    FAIL("no row for " << netns << ":" << port);
    throw;
}

std::vector<std::string> steps_of(const SnapshotConnection& c) {
    std::vector<std::string> steps;
    for (const auto& step : c.timeline) steps.push_back(step.what);
    return steps;
}

}  // namespace

TEST_CASE("live view: a racing backend's row, verdict, finding and timeline") {
    LiveView view(CorrelatorConfig::defaults());
    Sock s;
    race(view, s, sec(100));
    Sock open{.cookie = 2002, .rport = 51300};
    view.on_event(accepted(open, sec(107)));
    Sock other{.cookie = 3003, .raddr = "10.56.9.9", .rport = 40000};  // not an LB peer
    view.on_event(accepted(other, sec(107)));
    view.tick(sec(108), status(7));

    Snapshot snap = view.snapshot();
    CHECK(snap.header.node == "node-a");
    CHECK(snap.header.kernel == "6.18.0");
    CHECK(snap.header.attach == "tp_btf");
    CHECK(snap.header.lb_name == "gcp");
    CHECK(snap.header.lb_idle_timeout_s == 600);
    CHECK(snap.header.events_total == 7);
    CHECK(snap.header.now_ns == sec(108));
    REQUIRE(snap.rows.size() == 1);
    const SnapshotRow& row = snap.rows[0];
    CHECK(row.name == "netns 4026532891");  // until workload names arrive
    CHECK(row.pod.empty());
    CHECK(row.port == 8080);
    CHECK_FALSE(row.outbound);
    CHECK(row.process == "node");
    CHECK(row.pid == 4242);
    CHECK(row.live_lb == 1);
    CHECK(row.live_other == 1);
    CHECK(row.idle_closes == 1);
    CHECK(row.idle_p50_ms == 6000);
    CHECK(row.resets_races == 1);
    CHECK(row.resets_other == 0);
    CHECK(row.resets_received == 0);
    CHECK(row.verdict == FindingKind::idle_close_race);
    REQUIRE(row.findings.size() == 1);
    CHECK(row.findings[0].kind == FindingKind::idle_close_race);
    CHECK(row.findings[0].count == 1);
    CHECK(row.findings[0].advice.find("server.keepAliveTimeout = 620000") != std::string::npos);
    CHECK(row.findings[0].connections == std::vector<std::string>{"130.211.0.143:51234->10.56.5.6:8080"});

    // Newest first: the two open ones, then the reset one with its whole life.
    REQUIRE(row.connections.size() == 3);
    CHECK(row.connections[0].end == EndKind::open);
    CHECK(steps_of(row.connections[0]) == std::vector<std::string>{"opened (accepted)", "still open"});
    const SnapshotConnection& reset = row.connections[2];
    CHECK(reset.peer == "130.211.0.143:51234");
    CHECK(reset.local == "10.56.5.6:8080");
    CHECK(reset.lb_peer);
    CHECK(reset.end == EndKind::reset_sent);
    CHECK(reset.verdict == FindingKind::idle_close_race);
    CHECK_FALSE(reset.evidence.empty());
    CHECK(steps_of(reset) == std::vector<std::string>{"opened (accepted)", "last data", "idle 6.0 s",
                                                      "backend closed (FIN)",
                                                      "reset sent TCP_ABORT_ON_DATA: idle_close_race"});
    CHECK(reset.timeline[0].ts_ns == sec(100));
    CHECK(reset.timeline[1].ts_ns == sec(100));  // the close came exactly 6 s after the last data
    CHECK(reset.timeline[2].ts_ns == 0);         // a span, not an instant
    CHECK(reset.timeline[3].ts_ns == sec(106));
    CHECK(reset.timeline[4].ts_ns == sec(106) + ms(2));
}

TEST_CASE("live view: the sparkline counts resets per second over the last minute") {
    LiveView view(CorrelatorConfig::defaults());
    view.tick(sec(1000), status(0));
    Sock a{.cookie = 1, .rport = 50001}, b{.cookie = 2, .rport = 50002}, c{.cookie = 3, .rport = 50003};
    race(view, a, sec(994));
    race(view, b, sec(994));
    view.tick(sec(1000) + ms(500), status(8));  // two resets in second 1000
    race(view, c, sec(996));
    view.tick(sec(1003), status(12));  // one in second 1003

    auto row = view.snapshot().rows.at(0);
    REQUIRE(row.resets_per_second.size() == kSparklineSeconds);
    CHECK(row.resets_per_second[59] == 1);  // now: second 1003
    CHECK(row.resets_per_second[56] == 2);  // three seconds ago
    uint64_t total = 0;
    for (auto n : row.resets_per_second) total += n;
    CHECK(total == 3);
    CHECK(view.snapshot().header.events_per_s == Approx(4.0 / 2.5));

    // A minute later the old seconds have scrolled out.
    view.tick(sec(1003 + 60), status(12));
    row = view.snapshot().rows.at(0);
    for (auto n : row.resets_per_second) CHECK(n == 0);
    CHECK(row.resets_races == 3);  // the totals stay
}

TEST_CASE("live view: --lb none counts every peer's races -- resets received are their own column") {
    LiveView view(*CorrelatorConfig::from_options("none"));
    Sock s{.raddr = "10.56.9.9"};
    race(view, s, sec(10));
    Sock peer{.cookie = 77, .rport = 50077};
    for (const auto& e : {accepted(peer, sec(20)), reset_recv(peer, sec(21), TcpState::established),
                          state(peer, sec(21), TcpState::established, TcpState::close)})
        view.on_event(e);
    view.tick(sec(30), status(10));
    Snapshot snap = view.snapshot();
    const SnapshotRow& row = row_of(snap, 4026532891, 8080);
    CHECK(row.resets_races == 1);
    CHECK(row.resets_received == 1);
    CHECK(row.verdict == FindingKind::idle_close_race);
    CHECK(snap.header.lb_idle_timeout_s == 0);
}

TEST_CASE("snapshot JSON: round trip is exact, one line, and foreign input is refused") {
    LiveView view(CorrelatorConfig::defaults());
    race(view, Sock{}, sec(100));
    Sock outbound{.cookie = 9, .laddr = "10.56.5.6", .lport = 45000, .raddr = "10.0.0.5", .rport = 5432};
    view.on_event(state(outbound, sec(101), TcpState::close, TcpState::syn_sent));
    view.tick(sec(102), status(5, 2));
    std::string json = view.snapshot_json();
    CHECK(json.find('\n') == std::string::npos);

    std::string error;
    auto parsed = parse_snapshot(json, &error);
    INFO(error);
    REQUIRE(parsed);
    CHECK(to_json(*parsed) == json);
    CHECK(parsed->header.dropped_total == 2);
    CHECK(row_of(*parsed, 4026532891, 5432, true).key() == "4026532891:out:5432");
    CHECK(row_of(*parsed, 4026532891, 8080).connections.at(0).timeline.size() == 5);

    CHECK_FALSE(parse_snapshot("not json", &error));
    CHECK(error == "not a JSON object");
    CHECK_FALSE(parse_snapshot(R"({"findings": []})", &error));
    CHECK(error == "not a tcpwhy snapshot");
    auto future = nlohmann::json::parse(json);
    future["tcpwhy_snapshot"] = Snapshot::kVersion + 1;
    CHECK_FALSE(parse_snapshot(future.dump(), &error));
    CHECK(error == fmt::format("snapshot version {} (this tcpwhy reads version {})", Snapshot::kVersion + 1,
                               Snapshot::kVersion));
    auto broken = nlohmann::json::parse(json);
    broken["rows"][0].erase("verdict");
    CHECK_FALSE(parse_snapshot(broken.dump(), &error));
    CHECK(error.find("malformed snapshot") == 0);
    CHECK(error.find("verdict") != std::string::npos);
}

TEST_CASE("correlator: backend activity splits live connections by peer and lists recent ones") {
    Correlator c;
    Sock lb1{.cookie = 1, .rport = 1}, lb2{.cookie = 2, .rport = 2}, other{.cookie = 3, .raddr = "10.9.9.9"};
    for (const auto& e : {accepted(lb1, sec(1)), accepted(lb2, sec(2)), accepted(other, sec(3)),
                          idle_fin(lb2, sec(4), 2000)})
        c.on_event(e);
    c.on_event(state(lb2, sec(4) + ms(1), TcpState::fin_wait1, TcpState::close));
    auto backends = c.backends();
    auto activity = c.backend_activity(2);
    REQUIRE(activity.size() == backends.size());
    REQUIRE(activity.size() == 1);
    CHECK(activity[0].live_lb == 1);  // lb2 ended
    CHECK(activity[0].live_other == 1);
    REQUIRE(activity[0].recent.size() == 2);  // bounded; newest first
    CHECK(activity[0].recent[0].cookie == 2);
    CHECK(activity[0].recent[0].close_ts_ns == sec(4));
    CHECK(activity[0].recent[1].cookie == 3);
}
