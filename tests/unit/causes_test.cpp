// The kinds about a backend's life (rollouts, crashes, full accept queues, LB timeouts, cut
// responses, outbound pools) on synthetic events: each rule, its facts, and its near misses.
// The event shapes are the ones tests/kernel/causes_test.cpp records from the kernel.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "event_builders.h"
#include "tcpwhy/correlator.h"
#include "tcpwhy/decode.h"
#include "tcpwhy/explain.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/report.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {

constexpr int kSigTerm = 15, kSigKill = 9, kSigSegv = 11;

CorrelatorConfig preset(const char* name) { return *CorrelatorConfig::from_options(name); }

Correlator run(std::vector<Event> events, CorrelatorConfig config = CorrelatorConfig::defaults()) {
    Correlator c(std::move(config));
    for (const auto& e : events) c.on_event(e);
    c.finish();
    return c;
}

std::vector<FindingKind> kinds(const Correlator& c) {
    std::vector<FindingKind> out;
    for (const auto& f : c.findings()) out.push_back(f.kind);
    return out;
}

std::optional<Finding> find(const Correlator& c, FindingKind kind) {
    for (const auto& f : c.findings())
        if (f.kind == kind) return f;
    return std::nullopt;
}

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

// A listener, a SIGTERM, the listener's close 20 ms later: the start of every rollout below.
struct Rollout {
    Sock listener{.cookie = 500};
    std::vector<Event> events;
    Rollout(uint64_t t0 = sec(10)) {
        events = {listen_on(listener, sec(1)), signal_to(listener, t0, kSigTerm), unlisten(listener, t0 + ms(20))};
    }
    void refuse(uint16_t peer_port, uint64_t ts, const char* peer = "130.211.0.143") {
        events.push_back(refused_syn(Sock{.raddr = peer, .rport = peer_port}, ts));
    }
};

}  // namespace

// ---- rollout_drain ----------------------------------------------------------------

TEST_CASE("rollout: the drain lag is listener close -> the last refused LB SYN") {
    Rollout r;
    for (int i = 0; i < 10; ++i) r.refuse(static_cast<uint16_t>(40000 + i), sec(10) + ms(20) + ms(350 * (i + 1)));
    auto c = run(r.events);
    REQUIRE(kinds(c) == std::vector{FindingKind::rollout_drain});  // not no_listener
    Finding f = *find(c, FindingKind::rollout_drain);
    REQUIRE(f.drain);
    CHECK(f.drain->drain_lag_ms == 3500);
    CHECK(f.drain->signal == kSigTerm);
    CHECK(f.drain->signal_to_close_ms == 20);
    CHECK(f.drain->signal_sender == "containerd-shim[1]");
    CHECK(f.drain->refused == 10);
    CHECK(f.drain->refused_lb == 10);
    CHECK(f.drain->pid == 4242);
    CHECK(f.count == 10);
    CHECK(f.connections.size() == 10);
    // preStop: the lag (3.5 s -> 4 s) plus a 5 s margin; the grace period above it.
    std::string advice = explain::advice(f);
    CHECK(contains(advice, "\"sleep\", \"9\""));
    CHECK(contains(advice, "terminationGracePeriodSeconds: 30"));
    CHECK(contains(advice, "Connection: close"));
    CHECK(contains(explain::words(f).lb_symptom, "failed_to_connect_to_backend"));
    CHECK(c.counts().resets[static_cast<size_t>(FindingKind::no_listener)] == 0);
}

TEST_CASE("rollout: a preStop delay long enough leaves no finding") {
    // The LB stopped sending at 8 s; SIGTERM at 10 s (after the preStop sleep), close at 10.02 s.
    Rollout r;
    Sock s;
    r.events.insert(r.events.begin() + 1, accepted(s, sec(2)));
    r.events.insert(r.events.begin() + 2, close(s, sec(8), {.from = TcpState::close_wait, .to = TcpState::last_ack}));
    auto c = run(r.events);
    CHECK(c.findings().empty());
}

TEST_CASE("rollout near misses: refusals with no stop before them, after the window, after a restart") {
    SECTION("a port nobody listened on is no_listener") {
        auto c = run({refused_syn(Sock{.rport = 40001}, sec(5))});
        CHECK(kinds(c) == std::vector{FindingKind::no_listener});
    }
    SECTION("past the drain window (120 s) the refusals are no_listener") {
        Rollout r;
        r.refuse(40001, sec(10) + sec(121));
        auto c = run(r.events);
        CHECK(kinds(c) == std::vector{FindingKind::no_listener});
    }
    SECTION("listening again ends the stop") {
        Rollout r;
        r.events.push_back(listen_on(r.listener, sec(12)));
        r.events.push_back(unlisten(Sock{.cookie = 501}, sec(13)));  // another socket's close is not this stop's
        r.refuse(40001, sec(14));
        auto c = run(r.events);
        // the port listens (cookie 500 is open again): a refusal now is something else
        CHECK(kinds(c) == std::vector{FindingKind::no_listener});
    }
    SECTION("refusals of peers that are not the LB are counted, but no LB finding") {
        Rollout r;
        r.refuse(40001, sec(11), "10.60.0.9");
        auto c = run(r.events);
        CHECK(c.findings().empty());
        CHECK(c.counts().resets[static_cast<size_t>(FindingKind::rollout_drain)] == 1);
        auto none = run(r.events, preset("none"));  // without an LB every peer counts
        CHECK(kinds(none) == std::vector{FindingKind::rollout_drain});
    }
}

TEST_CASE("rollout: pooled connections closed while stopping that then get a request") {
    Rollout r;
    Sock s;
    // Node's server.close() closes the idle keep-alive connection right after SIGTERM; the LB sends on it.
    r.events.insert(r.events.begin() + 1, accepted(s, sec(2)));
    r.events.push_back(idle_fin(s, sec(10) + ms(30), 8000));
    r.events.push_back(reset_sent(s, sec(10) + ms(90), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true));
    auto c = run(r.events);
    REQUIRE(kinds(c) == std::vector{FindingKind::rollout_drain});  // not idle_close_race
    Finding f = c.findings()[0];
    CHECK(f.drain->pooled_resets == 1);
    CHECK(f.drain->drain_lag_ms == 70);
    REQUIRE(f.evidence);
    CHECK(f.evidence->closed_while_draining);
    // a close made by stopping says nothing of the server's idle timeout
    CHECK(c.backends()[0].idle_close.samples == 0);
}

TEST_CASE("rollout: SIGKILL after SIGTERM is a grace period that ran out, not a crash") {
    Rollout r;
    Sock s;
    r.events.insert(r.events.begin() + 1, accepted(s, sec(2)));
    r.events.push_back(signal_to(r.listener, sec(40), kSigKill, 1, "kubelet"));
    r.events.push_back(close(s, sec(40) + ms(1), {.idle_rx_ms = 100, .idle_tx_ms = 5000, .exit_code = kSigKill}));
    auto c = run(r.events);
    REQUIRE(kinds(c) == std::vector{FindingKind::rollout_drain});
    Finding f = c.findings()[0];
    REQUIRE(f.drain->killed_after_ms);
    CHECK(*f.drain->killed_after_ms == 30000);
    CHECK(f.drain->in_flight == 1);
    CHECK(contains(explain::advice(f), "grace period is too short"));
}

// ---- process_crash ------------------------------------------------------------------

TEST_CASE("crash: a fatal signal with connections open -- refusals until it listens again") {
    Sock listener{.cookie = 500};
    Sock a{.cookie = 1001, .rport = 41001}, b{.cookie = 1002, .rport = 41002}, idle{.cookie = 1003, .rport = 41003};
    auto c = run({listen_on(listener, sec(1)), accepted(a, sec(2)), accepted(b, sec(2)), accepted(idle, sec(2)),
                  // a: request read, no answer; b: half a response unacknowledged; idle: answered
                  close(a, sec(5), {.idle_rx_ms = 200, .idle_tx_ms = 3000, .exit_code = kSigSegv | 0x80}),
                  close(b, sec(5), {.idle_rx_ms = 300, .idle_tx_ms = 10, .send_queue = 8192, .exit_code = kSigSegv | 0x80}),
                  close(idle, sec(5), {.idle_rx_ms = 3000, .idle_tx_ms = 2990, .exit_code = kSigSegv | 0x80}),
                  unlisten(listener, sec(5) + ms(1), kSigSegv | 0x80), refused_syn(Sock{.rport = 42001}, sec(6)),
                  refused_syn(Sock{.rport = 42002}, sec(7)), listen_on(listener, sec(8)),
                  refused_syn(Sock{.rport = 42003}, sec(9))});
    Finding f = *find(c, FindingKind::process_crash);
    REQUIRE(f.crash);
    CHECK(f.crash->exit_code == (kSigSegv | 0x80));
    CHECK(f.crash->connections == 3);
    CHECK(f.crash->connections_lb == 3);
    CHECK(f.crash->in_flight == 2);
    CHECK(f.crash->mid_response == 1);
    CHECK(f.crash->refused == 2);
    CHECK(f.crash->refused_for_ms == 2000);
    CHECK(f.crash->restarted_after_ms == 3000);
    CHECK(contains(explain::summary(f), "died from SIGSEGV (core dumped)"));
    // after the restart a refusal is not the crash's
    CHECK(c.counts().resets[static_cast<size_t>(FindingKind::no_listener)] == 1);
    // the exit's closes are no idle closes
    for (const auto& backend : c.backends()) CHECK(backend.idle_close.samples == 0);
}

TEST_CASE("crash: a worker dies, the listener stays -- its reset on unread data is the crash's") {
    Sock listener{.cookie = 500, .pid = 100, .comm = "gunicorn"};
    Sock s{.pid = 4242, .comm = "gunicorn"};
    auto c = run({listen_on(listener, sec(1)), accepted(s, sec(2)),
                  close(s, sec(5), {.to = TcpState::close, .unread = 120, .abort = true, .exit_code = kSigKill,
                                    .oom_victim = true}),
                  reset_sent(s, sec(5), "TCP_ABORT_ON_CLOSE", SockKind::full, TcpState::close, false)});
    REQUIRE(kinds(c) == std::vector{FindingKind::process_crash});  // not close_with_unread_data
    Finding f = c.findings()[0];
    CHECK(f.crash->oom_victim);
    CHECK_FALSE(f.crash->listener_closed);
    CHECK(f.crash->aborted == 1);
    CHECK(f.crash->pid == 4242);
    REQUIRE(f.evidence);
    CHECK(f.evidence->closed_by_exit);
    CHECK(contains(explain::advice(f), "resources.limits.memory"));
}

TEST_CASE("crash near misses: a clean exit, 128+SIGTERM, a SIGTERM before it") {
    Sock listener{.cookie = 500};
    Sock s;
    auto exiting = [&](uint16_t code, bool signalled) {
        std::vector<Event> events{listen_on(listener, sec(1)), accepted(s, sec(2))};
        if (signalled) events.push_back(signal_to(listener, sec(4), kSigTerm));
        events.push_back(close(s, sec(5), {.idle_rx_ms = 3000, .idle_tx_ms = 2900, .exit_code = code}));
        events.push_back(unlisten(listener, sec(5), code));
        return run(events);
    };
    CHECK(exiting(0, false).findings().empty());              // exit 0: a stop, and it hurt nobody
    CHECK(exiting((128 + 15) << 8, false).findings().empty());  // exit 143, what runtimes exit with after SIGTERM
    CHECK(exiting(kSigTerm, false).findings().empty());       // killed by SIGTERM
    CHECK(exiting(kSigKill, true).findings().empty());        // SIGKILL after SIGTERM: a rollout, and idle
    CHECK(kinds(exiting(1 << 8, false)) == std::vector{FindingKind::process_crash});  // exit 1
}

// ---- accept_queue_overflow ---------------------------------------------------------------

TEST_CASE("overflow: drops and SYN-ACKs sent again, the backlog and the drops over time") {
    Sock listener{.cookie = 500};
    std::vector<Event> events{listen_on(listener, sec(1), 128)};
    for (int i = 0; i < 6; ++i)
        events.push_back(overflow(Sock{.rport = static_cast<uint16_t>(43000 + i)}, sec(2) + ms(100 * i), 129, 0,
                                  i % 2 ? OverflowHow::synack_retransmit : OverflowHow::drop, 500));
    events.push_back(overflow(Sock{.raddr = "10.60.0.9", .rport = 43100}, sec(5), 129, 128, OverflowHow::drop, 500));
    auto c = run(events);
    REQUIRE(kinds(c) == std::vector{FindingKind::accept_queue_overflow});
    Finding f = c.findings()[0];
    REQUIRE(f.overflow);
    CHECK(f.count == 7);
    CHECK(f.overflow->drops == 4);
    CHECK(f.overflow->synack_retransmits == 3);
    CHECK(f.overflow->lb == 6);
    CHECK(f.overflow->backlog == 128);  // the events' own where they have it, else the listener's
    CHECK(f.overflow->max_queue == 129);
    CHECK(f.overflow->peak_per_second == 6);
    CHECK(f.overflow->seconds == 2);
    REQUIRE(f.overflow->per_second.size() == 2);
    CHECK(f.overflow->per_second[0].second == 6);
    CHECK(contains(explain::advice(f), "server.listen({port, backlog: 1024})"));
    CHECK(contains(explain::advice(f), "net.core.somaxconn"));
    // A detected server gets its own option, in its words (docs/servers.md).
    f.backend.server = ServerInfo{.kind = ServerKind::gunicorn, .version = "20.1.0"};
    CHECK(contains(explain::advice(f), "gunicorn 20.1.0 `--backlog 1024`"));
    f.backend.server = ServerInfo{.kind = ServerKind::nginx};
    CHECK(contains(explain::advice(f), "`listen PORT backlog=1024;`"));
}

TEST_CASE("overflow: an overflow on a listener whose open was not traced names its port") {
    auto c = run({overflow(Sock{.rport = 43000}, sec(2), 3, 2)});
    Finding f = *find(c, FindingKind::accept_queue_overflow);
    CHECK(f.backend.id.port == 8080);
    CHECK_FALSE(f.backend.id.outbound);
    CHECK(f.overflow->backlog == 2);
}

// ---- lb_response_timeout ----------------------------------------------------------------

TEST_CASE("LB timeout: the LB's FIN on a request unanswered for 30 s") {
    std::vector<Event> events;
    for (uint16_t i = 0; i < 3; ++i) {
        Sock s{.cookie = 2000u + i, .rport = static_cast<uint16_t>(44000 + i)};
        events.push_back(accepted(s, sec(1)));
        events.push_back(peer_fin(s, sec(31) + ms(i), 30000 + i * 10, 30050, 250, 0));
    }
    auto c = run(events);
    REQUIRE(kinds(c) == std::vector{FindingKind::lb_response_timeout});
    Finding f = c.findings()[0];
    REQUIRE(f.lb_timeout);
    CHECK(f.count == 3);
    CHECK(f.lb_timeout->waited.p50_ms == 30010);
    CHECK(f.lb_timeout->lb_response_timeout_s == 30);  // gcp's backend service timeout
    CHECK(f.connections.size() == 3);
    CHECK(contains(explain::summary(f), "the LB's response timeout (30 s)"));
    CHECK(contains(explain::words(f).lb_symptom, "backend_timeout"));

    // Another timeout than the preset's: the words say to check it.
    auto shorter = run(events, *CorrelatorConfig::from_options("gcp", std::nullopt, std::nullopt, nullptr, 60));
    CHECK(contains(explain::advice(shorter.findings()[0]), "check the LB's real timeout"));
}

TEST_CASE("LB timeout near misses: an answered request, a short wait, not the LB") {
    Sock s;
    CHECK(run({accepted(s, sec(1)), peer_fin(s, sec(61), 60000, 59990)}).findings().empty());  // answered, then idle
    CHECK(run({accepted(s, sec(1)), peer_fin(s, sec(2), 500, 600, 250, 0)}).findings().empty());  // gave up after 0.5 s
    CHECK(run({accepted(s, sec(1)), peer_fin(s, sec(31), 30000, 30050, 0, 0)}).findings().empty());  // nothing asked
    Sock other{.raddr = "10.60.0.9"};
    CHECK(run({accepted(other, sec(1)), peer_fin(other, sec(31), 30000, 30050, 250, 0)}).findings().empty());
    CHECK(kinds(run({accepted(other, sec(1)), peer_fin(other, sec(31), 30000, 30050, 250, 0)}, preset("none"))) ==
          std::vector{FindingKind::lb_response_timeout});
}

TEST_CASE("LB timeout: a reset from the LB on a waiting request, and the late response's reset after a FIN") {
    Sock s;
    Event rst = reset_recv(s, sec(31), TcpState::established);
    rst.idle_rx_ms = 30000;
    rst.idle_tx_ms = 30040;
    rst.bytes_rx = 250;
    auto by_reset = run({accepted(s, sec(1)), rst, state(s, sec(31), TcpState::established, TcpState::close)});
    REQUIRE(kinds(by_reset) == std::vector{FindingKind::lb_response_timeout});  // not peer_reset
    CHECK(by_reset.findings()[0].lb_timeout->by_reset == 1);

    // FIN after 30 s, the backend answers at 35 s, the LB's socket resets it: one timeout, no peer_reset.
    auto late = run({accepted(s, sec(1)), peer_fin(s, sec(31), 30000, 30040, 250, 0),
                     reset_recv(s, sec(35), TcpState::close_wait), state(s, sec(35), TcpState::close_wait, TcpState::close)});
    CHECK(kinds(late) == std::vector{FindingKind::lb_response_timeout});
}

// ---- response_cut_short --------------------------------------------------------------------

TEST_CASE("cut short: a reset that discards response bytes -- without them it stays what it was") {
    Sock s;
    auto closing = [&](uint32_t send_queue) {
        Event rst = reset_sent(s, sec(2), "TCP_ABORT_ON_CLOSE", SockKind::full, TcpState::close, false);
        rst.send_queue_bytes = send_queue;
        return run({accepted(s, sec(1)),
                    close(s, sec(2), {.to = TcpState::close, .idle_rx_ms = 3, .unread = 4096, .abort = true,
                                      .send_queue = send_queue}),
                    rst});
    };
    auto cut = closing(65536);
    REQUIRE(kinds(cut) == std::vector{FindingKind::response_cut_short});
    CHECK(cut.findings()[0].evidence->send_queue_bytes == 65536);
    CHECK(contains(explain::words(cut.findings()[0]).lb_symptom, "after_partial_response_sent"));
    CHECK(kinds(closing(0)) == std::vector{FindingKind::close_with_unread_data});

    // The keep-alive race stays the race whatever is queued.
    Event race = reset_sent(s, sec(7) + ms(2), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true);
    race.send_queue_bytes = 100;
    CHECK(kinds(run({accepted(s, sec(1)), idle_fin(s, sec(7), 6000), race})) ==
          std::vector{FindingKind::idle_close_race});
}

// ---- outbound_pool_race ----------------------------------------------------------------------

namespace {

// Four pooled connections of `comm` to an upstream on 8080 that closes them after 5 s idle; each
// is reused a second later and reset.
std::vector<Event> pool_races(const char* comm) {
    std::vector<Event> events;
    for (uint16_t i = 0; i < 4; ++i) {
        Sock s{.cookie = 3000u + i, .lport = static_cast<uint16_t>(45000 + i), .raddr = "10.60.0.9", .rport = 8080,
               .comm = comm};
        events.push_back(connected(s, sec(10 * i)));
        events.push_back(peer_fin(s, sec(10 * i) + sec(5), 5000 + i, 5000 + i));
        events.push_back(reset_recv(s, sec(10 * i) + sec(6), TcpState::close_wait));
    }
    return events;
}

}  // namespace

TEST_CASE("outbound pool: the upstream's idle close, then the client's reuse and the reset") {
    auto c = run(pool_races("node"));
    REQUIRE(kinds(c) == std::vector{FindingKind::outbound_pool_race});
    Finding f = c.findings()[0];
    CHECK(f.backend.id.outbound);
    CHECK(f.count == 4);
    REQUIRE(f.upstream);
    CHECK(f.upstream->upstream_idle_close.p50_ms == 5001);
    CHECK(f.upstream->client_idle_below_ms == 4000);
    REQUIRE(f.evidence);
    REQUIRE(f.evidence->peer_idle_ms);
    CHECK(*f.evidence->peer_idle_ms >= 5000);  // the latest settled of the four
    CHECK(*f.evidence->peer_idle_ms <= 5003);
    CHECK(contains(explain::advice(f), "http.Agent({keepAlive: true, timeout: 4000})"));
}

TEST_CASE("outbound pool near misses: a busy connection, an inbound one, a reset before any FIN") {
    Sock out{.lport = 45000, .raddr = "10.60.0.9", .rport = 8080};
    CHECK(kinds(run({connected(out, sec(1)), peer_fin(out, sec(2), 40, 30), reset_recv(out, sec(3), TcpState::close_wait)})) ==
          std::vector{FindingKind::peer_reset});
    CHECK(kinds(run({connected(out, sec(1)), reset_recv(out, sec(9), TcpState::established)})) ==
          std::vector{FindingKind::peer_reset});
    // The LB's own side of the backend's keep-alive race (the LB traced on the node): a peer_reset.
    Sock lb_side{.laddr = "130.211.0.143", .lport = 45001, .raddr = "10.56.5.6", .rport = 8080};
    CHECK(kinds(run({connected(lb_side, sec(1)), peer_fin(lb_side, sec(7), 6000, 6000),
                     reset_recv(lb_side, sec(7) + ms(60), TcpState::close_wait)})) == std::vector{FindingKind::peer_reset});
    CHECK(kinds(run({connected(lb_side, sec(1)), peer_fin(lb_side, sec(7), 6000, 6000),
                     reset_recv(lb_side, sec(7) + ms(60), TcpState::close_wait)},
                    preset("none"))) == std::vector{FindingKind::outbound_pool_race});
    Sock in{.raddr = "10.60.0.9"};
    CHECK(kinds(run({accepted(in, sec(1)), peer_fin(in, sec(7), 6000, 6000), reset_recv(in, sec(8), TcpState::close_wait)})) ==
          std::vector{FindingKind::peer_reset});
}

// ---- the trace: new fields round-trip, old traces replay the same ---------------------------

TEST_CASE("trace: the new event types and fields round-trip through JSON Lines") {
    Sock s;
    Event close_event = close(s, sec(5), {.idle_rx_ms = 1, .idle_tx_ms = 2, .send_queue = 777, .exit_code = 0x8b,
                                          .oom_victim = true});
    Event sig = signal_to(s, sec(6), kSigTerm, 812, "containerd-shim");
    Event ovf = overflow(s, sec(7), 129, 128, OverflowHow::synack_retransmit, 500);
    Event fin = peer_fin(s, sec(8), 3000, 3100, 250, 0);
    Event syn = refused_syn(s, sec(9));
    Event listen = listen_on(s, sec(10), 4096);
    for (const Event& e : {close_event, sig, ovf, fin, syn, listen}) {
        std::string line = to_json_line(e);
        INFO(line);
        auto parsed = parse_json_line(line);
        REQUIRE(parsed.kind == LineKind::event);
        const Event& back = parsed.event;
        CHECK(back.type == e.type);
        CHECK(back.task_exiting == e.task_exiting);
        CHECK(back.exit_code == e.exit_code);
        CHECK(back.oom_victim == e.oom_victim);
        CHECK(back.send_queue_bytes == e.send_queue_bytes);
        CHECK(back.signal == e.signal);
        CHECK(back.sender_pid == e.sender_pid);
        CHECK(back.sender_comm == e.sender_comm);
        CHECK(back.acceptq_len == e.acceptq_len);
        CHECK(back.acceptq_max == e.acceptq_max);
        CHECK(back.overflow_how == e.overflow_how);
        CHECK(back.syn == e.syn);
        CHECK(back.idle_rx_ms == e.idle_rx_ms);
        CHECK(back.idle_tx_ms == e.idle_tx_ms);
        CHECK(back.bytes_rx == e.bytes_rx);
        CHECK(back.bytes_tx == e.bytes_tx);
    }
    // The documented spellings.
    CHECK(contains(to_json_line(sig), "\"type\":\"signal\""));
    CHECK(contains(to_json_line(sig), "\"signal\":\"SIGTERM\""));
    CHECK(contains(to_json_line(ovf), "\"how\":\"synack_retransmit\""));
    CHECK(contains(to_json_line(close_event), "\"exiting\":true,\"exit_code\":139"));
    CHECK(contains(to_json_line(syn), "\"syn\":true"));
}

TEST_CASE("decode: the ABI 4 fields") {
    tcpwhy_event raw{};
    raw.type = TCPWHY_EV_CLOSE;
    raw.flags = TCPWHY_F_TASK_EXITING | TCPWHY_F_OOM_VICTIM;
    raw.close.exit_code = 9;
    raw.close.send_queue_bytes = 1234;
    Event e = decode_event(raw, {});
    CHECK(e.task_exiting);
    CHECK(e.oom_victim);
    CHECK(e.exit_code == 9);
    CHECK(e.send_queue_bytes == 1234);

    raw = {};
    raw.type = TCPWHY_EV_STATE;
    raw.state.old_state = 1;  // ESTABLISHED -> CLOSE_WAIT
    raw.state.new_state = 8;
    raw.state.idle_rx_ms = 30000;
    raw.state.idle_tx_ms = 30040;
    raw.state.bytes_rx = 250;
    raw.state.bytes_tx = 0;
    e = decode_event(raw, {});
    CHECK(e.idle_rx_ms == 30000);
    CHECK(e.idle_tx_ms == 30040);
    CHECK(e.bytes_rx == 250);
    CHECK_FALSE(e.task_exiting);
    CHECK(e.exit_code == 0);

    raw = {};
    raw.type = TCPWHY_EV_LISTEN_OVERFLOW;
    raw.overflow.acceptq_len = 5;
    raw.overflow.acceptq_max = 4;
    raw.overflow.how = TCPWHY_OVF_DROP;
    e = decode_event(raw, {});
    CHECK(e.type == EventType::listen_overflow);
    CHECK(e.acceptq_len == 5);
    CHECK(e.acceptq_max == 4);
    CHECK(e.overflow_how == OverflowHow::drop);

    raw = {};
    raw.type = TCPWHY_EV_SIGNAL;
    raw.signal.signal = 15;
    raw.signal.sender_pid = 812;
    std::memcpy(raw.signal.sender_comm, "containerd-shim", 15);
    e = decode_event(raw, {});
    CHECK(e.signal == 15);
    CHECK(e.sender_pid == 812);
    CHECK(e.sender_comm == "containerd-shim");

    raw = {};
    raw.type = TCPWHY_EV_RESET_SENT;
    raw.flags = TCPWHY_F_HAS_SKB | TCPWHY_F_SYN;
    raw.reset.reason = -1;
    e = decode_event(raw, {});
    CHECK(e.syn);
}

TEST_CASE("report --json: the facts of a rollout are the documented ones") {
    Rollout r;
    r.refuse(40001, sec(12));
    std::string trace;
    for (const auto& e : r.events) trace += to_json_line(e) + "\n";
    auto path = std::filesystem::temp_directory_path() / fmt::format("tcpwhy-causes-{}.jsonl", getpid());
    std::ofstream(path) << trace;
    std::ostringstream out, err;
    ReportOptions options{.inputs = {path.string()}, .json = true};
    REQUIRE(run_report(options, out, err) == kReportOk);
    std::filesystem::remove(path);
    auto j = nlohmann::json::parse(out.str());
    REQUIRE(j["findings"].size() == 1);
    const auto& f = j["findings"][0];
    CHECK(f["kind"] == "rollout_drain");
    CHECK(f["facts"]["drain_lag_ms"] == 1980);
    CHECK(f["facts"]["signal"] == "SIGTERM");
    CHECK(contains(f["lb_symptom"].get<std::string>(), "failed_to_connect_to_backend"));
    // Every key is in docs/report-json.md's `facts` table.
    std::ifstream doc(std::string(TCPWHY_SOURCE_DIR) + "/docs/report-json.md");
    std::string line, section, text;
    std::set<std::string> documented;
    while (std::getline(doc, line)) {
        if (line.starts_with("## ")) section = line.substr(3);
        if (section == "`facts`" && line.starts_with("| `")) documented.insert(line.substr(3, line.find('`', 3) - 3));
    }
    for (const auto& [key, value] : f["facts"].items()) CHECK(documented.count(key) == 1);
}

TEST_CASE("causes' advice names a detected server's own option: its drain, its memory bound, its pool") {
    // rollout: lag 3.5 s -> preStop 9 s, grace 30 s: the server's drain gets 30 - 9 - 5 = 16 s
    Rollout r;
    for (int i = 0; i < 10; ++i) r.refuse(static_cast<uint16_t>(40000 + i), sec(10) + ms(20) + ms(350 * (i + 1)));
    Finding drain = *find(run(r.events), FindingKind::rollout_drain);
    drain.backend.server = ServerInfo{.kind = ServerKind::gunicorn, .version = "20.1.0"};
    CHECK(contains(explain::advice(drain), "the server's own drain: gunicorn 20.1.0 `--graceful-timeout 16`"));
    drain.backend.server = ServerInfo{.kind = ServerKind::nginx};
    CHECK(contains(explain::advice(drain), "nginx `worker_shutdown_timeout 16s;`"));
    drain.backend.server = ServerInfo{.kind = ServerKind::go_net_http};
    CHECK(contains(explain::advice(drain), "`srv.Shutdown(ctx)` with a 16 s context on SIGTERM"));
    drain.backend.server = ServerInfo{.kind = ServerKind::bun};  // no shutdown option known: the generic words
    CHECK_FALSE(contains(explain::advice(drain), "the server's own drain"));

    // an OOM kill: the runtime's own memory bound
    Sock listener{.cookie = 500}, a{.cookie = 1001, .rport = 41001};
    auto crashed = run({listen_on(listener, sec(1)), accepted(a, sec(2)),
                        close(a, sec(5), {.idle_rx_ms = 200, .idle_tx_ms = 3000, .exit_code = 9, .oom_victim = true}),
                        unlisten(listener, sec(5) + ms(1), 9, true)});
    auto crash = find(crashed, FindingKind::process_crash);
    REQUIRE(crash);
    REQUIRE(crash->crash->oom_victim);
    crash->backend.server = ServerInfo{.kind = ServerKind::tomcat, .version = "10.1.16"};
    CHECK(contains(explain::advice(*crash), "Tomcat 10.1.16: `-XX:MaxRAMPercentage=75`"));
    crash->backend.server = ServerInfo{.kind = ServerKind::go_net_http};
    CHECK(contains(explain::advice(*crash), "`GOMEMLIMIT`"));

    // a pool race: the client's own pool option, below the upstream's 5 s
    Finding pool = run(pool_races("envoy")).findings().at(0);
    pool.backend.server = ServerInfo{.kind = ServerKind::go_net_http};
    CHECK(contains(explain::advice(pool), "`http.Transport{IdleConnTimeout: 4 * time.Second}`"));
    pool.backend.server = ServerInfo{.kind = ServerKind::nginx};
    CHECK(contains(explain::advice(pool), "`keepalive_timeout 4s;` in the `upstream` block"));
}
