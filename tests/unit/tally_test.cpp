// Ordinary connections counted by the kernel (`tally` events): the correlator keeps the same
// backend counts, live counts and idle bars as when every connection came one by one, and
// the connections that do come one by one are not counted twice.
#include <catch2/catch.hpp>

#include "event_builders.h"
#include "tcpwhy/correlator.h"
#include "tcpwhy/histogram.h"
#include "tcpwhy/jsonl.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {

Event tally(const Sock& s, uint64_t ts, uint64_t opened, uint64_t local_first, uint64_t remote_first,
            uint64_t idle_ms_sum = 0, bool lb = true) {
    Event e;
    e.type = EventType::tally;
    e.ts_ns = ts;
    e.netns = s.netns;
    e.lport = s.lport;
    e.lb = lb;
    e.pid = s.pid;
    e.comm = s.comm;
    e.tally.opened = opened;
    e.tally.closed_local_first = local_first;
    e.tally.closed_remote_first = remote_first;
    e.tally.local_idle_ms = idle_ms_sum;
    e.bytes_rx = 400 * (local_first + remote_first);
    e.bytes_tx = 900 * (local_first + remote_first);
    return e;
}

Correlator tallied_correlator() {
    CorrelatorConfig config = CorrelatorConfig::defaults();
    config.opens_tallied = true;
    return Correlator(config);
}

// n ordinary connections to s's backend, one by one as --all-states would give them (closed by
// the backend idle_ms after their last data), each with its own cookie and peer port.
void ordinary_one_by_one(Correlator& c, Sock s, uint64_t t0, int n, uint32_t idle_ms) {
    for (int i = 0; i < n; ++i) {
        s.cookie = 50'000 + static_cast<uint64_t>(i);
        s.rport = static_cast<uint16_t>(40'000 + i);
        uint64_t t = t0 + ms(static_cast<uint64_t>(i));
        c.on_event(accepted(s, t));
        c.on_event(close(s, t + ms(idle_ms), {.idle_rx_ms = idle_ms, .idle_tx_ms = idle_ms}));
    }
}

}  // namespace

TEST_CASE("tally: a backend's ordinary connections count as if each had come one by one") {
    Sock s;
    Correlator tallied = tallied_correlator();
    tallied.on_event(tally(s, sec(1), 120, 100, 20, 100 * 3));
    tallied.on_event(tally(s, sec(2), 30, 25, 5, 25 * 3));

    Correlator one_by_one;
    Sock closed_by_peer = s;
    ordinary_one_by_one(one_by_one, s, sec(1), 125, 3);
    for (int i = 0; i < 25; ++i) {
        closed_by_peer.cookie = 90'000 + static_cast<uint64_t>(i);
        closed_by_peer.rport = static_cast<uint16_t>(60'000 + i);
        one_by_one.on_event(accepted(closed_by_peer, sec(2)));
        one_by_one.on_event(close(closed_by_peer, sec(2) + ms(1), {.from = TcpState::close_wait, .to = TcpState::last_ack}));
    }

    auto a = tallied.backends();
    auto b = one_by_one.backends();
    REQUIRE(a.size() == 1);
    REQUIRE(b.size() == 1);
    CHECK(a[0].connections_lb == 150);
    CHECK(a[0].connections_lb == b[0].connections_lb);
    CHECK(a[0].connections_other == 0);
    CHECK(a[0].closed_local_first == 125);
    CHECK(a[0].closed_local_first == b[0].closed_local_first);
    CHECK(a[0].closed_remote_first == b[0].closed_remote_first);
    CHECK(a[0].live_connections == 0);
    CHECK(a[0].comm == "node");
    CHECK(a[0].pid == 4242);
    CHECK(a[0].id.port == 8080);
    CHECK_FALSE(a[0].id.outbound);
    CHECK(tallied.findings().empty());
}

TEST_CASE("tally: opened minus ended is the live count, by peer, in the profile and in top's activity") {
    Sock s;
    Correlator c = tallied_correlator();
    c.on_event(tally(s, sec(1), 10, 4, 0, 0, true));
    c.on_event(tally(s, sec(1), 3, 0, 1, 0, false));
    auto backends = c.backends();
    REQUIRE(backends.size() == 1);
    CHECK(backends[0].connections_lb == 10);
    CHECK(backends[0].connections_other == 3);
    CHECK(backends[0].live_connections == 8);
    auto activity = c.backend_activity(0);
    REQUIRE(activity.size() == 1);
    CHECK(activity[0].live_lb == 6);
    CHECK(activity[0].live_other == 2);
}

TEST_CASE("tally: a connection whose end is not ordinary keeps full detail and is counted once") {
    Sock s;
    Correlator c = tallied_correlator();
    // 9 ordinary connections and the race's: the kernel tallied ten opens and nine ends
    c.on_event(tally(s, sec(1), 10, 9, 0, 9 * 2));
    // the race: the backend's idle FIN (not ordinary, so sent), then the LB's request meets a reset
    Sock race = s;
    race.cookie = 7;
    c.on_event(idle_fin(race, sec(7), 6000));
    c.on_event(reset_recv(race, sec(7) + ms(2), TcpState::fin_wait1));
    c.on_event(state(race, sec(7) + ms(2), TcpState::fin_wait1, TcpState::close));
    c.on_event(reset_sent(race, sec(7) + ms(2), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true));
    c.finish();

    auto findings = c.findings();
    REQUIRE(findings.size() == 1);
    CHECK(findings[0].kind == FindingKind::idle_close_race);
    REQUIRE(findings[0].evidence);
    CHECK(findings[0].evidence->close_seen);
    CHECK(findings[0].evidence->idle_gap_ms == 6000);
    REQUIRE(findings[0].connections.size() == 1);
    CHECK(findings[0].connections[0].lport == 8080);
    auto backends = c.backends();
    REQUIRE(backends.size() == 1);
    CHECK(backends[0].connections_lb == 10);  // not 11: its open was in the tally
    CHECK(backends[0].closed_local_first == 10);
    CHECK(backends[0].live_connections == 0);
}

TEST_CASE("tally: a tally that arrives after the individual end of a connection it counted") {
    Sock s;
    Correlator c = tallied_correlator();
    // the tally is read once a second: an abort can be handled before the tally with its open
    c.on_event(close(s, ms(200), {.to = TcpState::close, .idle_rx_ms = 5, .idle_tx_ms = 5, .unread = 10,
                                  .abort = true}));
    CHECK(c.backends().at(0).live_connections == 0);  // never below 0
    c.on_event(tally(s, sec(1), 2, 1, 0, 1));
    CHECK(c.backends().at(0).live_connections == 0);
    CHECK(c.backends().at(0).connections_lb == 2);
}

TEST_CASE("tally: opens that were not tallied are counted as before") {
    Sock s;
    Correlator c = tallied_correlator();
    // a refused connect never reached ESTABLISHED: the kernel sends its SYN_SENT->CLOSE, not a tally
    Sock client{.cookie = 77, .laddr = "10.56.5.6", .lport = 40000, .raddr = "10.0.0.9", .rport = 5432};
    c.on_event(state(client, sec(1), TcpState::syn_sent, TcpState::close));
    // a socket open before tracing started, listed by the iterator
    Event existing = base(s, EventType::existing, sec(1));
    existing.new_state = TcpState::established;
    c.on_event(existing);
    auto backends = c.backends();
    REQUIRE(backends.size() == 2);
    uint64_t counted = 0;
    for (const auto& b : backends) counted += b.connections_lb + b.connections_other;
    CHECK(counted == 2);
}

TEST_CASE("tally: ordinary local closes keep the relative idle bar's base") {
    // A backend whose connections mostly close within a few ms, and ten after 400 ms. One by one,
    // the fast closes put the median below the bar's floor: the bar is the 1 s threshold and the
    // 400 ms closes are not idle closes. Tallied, the same must hold.
    Sock s;
    Correlator one_by_one;
    ordinary_one_by_one(one_by_one, s, sec(1), 100, 4);
    Sock slow = s;
    slow.lport = s.lport;
    for (int i = 0; i < 10; ++i) {
        slow.cookie = 70'000 + static_cast<uint64_t>(i);
        slow.rport = static_cast<uint16_t>(30'000 + i);
        one_by_one.on_event(accepted(slow, sec(3)));
        one_by_one.on_event(idle_fin(slow, sec(3) + ms(400), 400));
    }

    Correlator tallied = tallied_correlator();
    tallied.on_event(tally(s, sec(2), 110, 100, 0, 100 * 4));
    for (int i = 0; i < 10; ++i) {
        slow.cookie = 70'000 + static_cast<uint64_t>(i);
        slow.rport = static_cast<uint16_t>(30'000 + i);
        tallied.on_event(idle_fin(slow, sec(3) + ms(400), 400));
    }
    auto a = one_by_one.backends().at(0);
    auto b = tallied.backends().at(0);
    CHECK(a.idle_close.samples == 0);
    CHECK(b.idle_close.samples == a.idle_close.samples);
    CHECK(b.closed_local_first == a.closed_local_first);
    CHECK(b.live_connections == 0);

    // Without the tally's closes the 400 ms closes alone would set the bar (half their median)
    Correlator without_base = tallied_correlator();
    for (int i = 0; i < 10; ++i) {
        slow.cookie = 70'000 + static_cast<uint64_t>(i);
        without_base.on_event(idle_fin(slow, sec(3) + ms(400), 400));
    }
    CHECK(without_base.backends().at(0).idle_close.samples > 0);
}

TEST_CASE("tally: outbound tallies are keyed by the remote service port") {
    Sock upstream{.cookie = 0, .laddr = "10.56.5.6", .lport = 0, .raddr = "10.0.0.9", .rport = 5432};
    Event e = tally(upstream, sec(1), 5, 0, 5, 0, false);
    e.lport = 0;
    e.rport = 5432;
    e.direction = Direction::outbound;
    Correlator c = tallied_correlator();
    c.on_event(e);
    auto backends = c.backends();
    REQUIRE(backends.size() == 1);
    CHECK(backends[0].id.outbound);
    CHECK(backends[0].id.port == 5432);
    CHECK(backends[0].connections_other == 5);
    CHECK(backends[0].closed_remote_first == 5);
}

TEST_CASE("tally: the trace line and the header flag round-trip") {
    Sock s;
    Event e = tally(s, 123456789, 7, 5, 2, 11);
    e.cgroup_id = 99;
    e.opts.set(SockOpt::so_keepalive, 1);
    ParsedLine parsed = parse_json_line(to_json_line(e));
    REQUIRE(parsed.kind == LineKind::event);
    const Event& back = parsed.event;
    CHECK(back.type == EventType::tally);
    CHECK(back.ts_ns == 123456789);
    CHECK(back.netns == s.netns);
    CHECK(back.lport == 8080);
    CHECK(back.lb);
    CHECK(back.direction == Direction::inbound);
    CHECK(back.tally.opened == 7);
    CHECK(back.tally.closed_local_first == 5);
    CHECK(back.tally.closed_remote_first == 2);
    CHECK(back.tally.local_idle_ms == 11);
    CHECK(back.bytes_rx == e.bytes_rx);
    CHECK(back.bytes_tx == e.bytes_tx);
    CHECK(back.pid == 4242);
    CHECK(back.comm == "node");
    CHECK(back.cgroup_id == 99);
    CHECK(back.opts.has(SockOpt::so_keepalive));

    TraceHeader h;
    h.hostname = "node-1";
    CHECK(parse_json_line(to_json_line(h)).header.tally == false);
    CHECK(to_json_line(h).find("tally") == std::string::npos);  // old readers and golden traces: unchanged
    h.tally = true;
    CHECK(parse_json_line(to_json_line(h)).header.tally == true);
}

TEST_CASE("tally: a histogram given a value n times is the histogram given it n times one by one") {
    for (uint64_t n : {uint64_t{1}, uint64_t{40}, uint64_t{64}, uint64_t{65}, uint64_t{5000}}) {
        DurationHistogram bulk, single;
        bulk.add(30);
        single.add(30);
        bulk.add(7, n);
        for (uint64_t i = 0; i < n; ++i) single.add(7);
        INFO(n);
        CHECK(bulk.count() == single.count());
        CHECK(bulk.exact() == single.exact());
        CHECK(bulk.percentile(0.5) == single.percentile(0.5));
        CHECK(bulk.percentile(0.99) == single.percentile(0.99));
        CHECK(bulk.buckets() == single.buckets());
    }
}

TEST_CASE("tally: a connection first met at its end is keyed by the kernel's direction, before the port guess") {
    // A pool's connection from local port 33000 to an upstream on 45000, retired after a quiet
    // spell: its open was tallied, so its close is the first the correlator hears of it.
    Sock pooled{.cookie = 31, .laddr = "10.56.5.6", .lport = 33000, .raddr = "10.0.0.9", .rport = 45000};
    for (Direction direction : {Direction::outbound, Direction::unknown}) {
        Event end = close(pooled, sec(2), {.idle_rx_ms = 300, .idle_tx_ms = 300});
        end.direction = direction;
        ParsedLine parsed = parse_json_line(to_json_line(end));
        REQUIRE(parsed.kind == LineKind::event);
        CHECK(parsed.event.direction == direction);

        Correlator c = tallied_correlator();
        c.on_event(parsed.event);
        auto backends = c.backends();
        REQUIRE(backends.size() == 1);
        if (direction == Direction::outbound) {
            CHECK(backends[0].id.outbound);
            CHECK(backends[0].id.port == 45000);
        } else {  // no word from the kernel (--all-states, older traces): the lower port listens
            CHECK_FALSE(backends[0].id.outbound);
            CHECK(backends[0].id.port == 33000);
        }
    }
}
