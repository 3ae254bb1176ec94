// The correlator on synthetic event sequences: every reset classification and its
// near misses, LB presets, eviction bounds, findings and live updates.
#include <catch2/catch.hpp>

#include "event_builders.h"
#include "tcpwhy/correlator.h"
#include "tcpwhy/explain.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {

CorrelatorConfig preset(const char* name, std::optional<std::string_view> ranges = std::nullopt) {
    std::string error;
    auto config = CorrelatorConfig::from_options(name, ranges, std::nullopt, &error);
    INFO(error);
    REQUIRE(config);
    return *config;
}

void feed(Correlator& c, std::initializer_list<Event> events) {
    for (const auto& e : events) c.on_event(e);
}

// Shape 1 of the keep-alive race: FIN after an idle gap, then the peer's request.
// The abort-on-data path fires reset_recv on our own socket before the reset leaves.
void race_data_after_fin(Correlator& c, const Sock& s, uint64_t t0, uint32_t idle_ms = 6000) {
    feed(c, {accepted(s, t0), idle_fin(s, t0 + ms(idle_ms) + ms(50), idle_ms),
             reset_recv(s, t0 + ms(idle_ms) + ms(52), TcpState::fin_wait1),
             state(s, t0 + ms(idle_ms) + ms(52), TcpState::fin_wait1, TcpState::close),
             reset_sent(s, t0 + ms(idle_ms) + ms(52), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true)});
}

std::vector<FindingKind> kinds_of(const std::vector<Finding>& findings) {
    std::vector<FindingKind> kinds;
    for (const auto& f : findings) kinds.push_back(f.kind);
    return kinds;
}

// The text every renderer shows for a finding.
std::vector<std::string> tuples(const Finding& f) {
    std::vector<std::string> out;
    for (const auto& c : f.connections) out.push_back(explain::four_tuple(c));
    return out;
}
std::string summary(const Finding& f) { return explain::summary(f); }
std::vector<std::string> evidence(const Finding& f) { return explain::evidence(f); }
std::string advice(const Finding& f) { return explain::advice(f); }

const Finding& only_finding(const Correlator& c, FindingKind kind) {
    static std::vector<Finding> findings;
    findings = c.findings();
    REQUIRE(kinds_of(findings) == std::vector<FindingKind>{kind});
    return findings.front();
}

}  // namespace

TEST_CASE("race: data after the backend's idle FIN (TCP_ABORT_ON_DATA)") {
    Correlator c;
    Sock s;
    race_data_after_fin(c, s, sec(100));
    c.finish();

    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(f.count == 1);
    CHECK(tuples(f) == std::vector<std::string>{"130.211.0.143:51234->10.56.5.6:8080"});
    REQUIRE(f.idle_close);
    CHECK(f.idle_close->p50_ms == 6000);
    CHECK(f.idle_close->max_ms == 6000);
    CHECK(f.lb.range == "130.211.0.0/22");
    CHECK(f.lb.idle_timeout_s == 600);
    CHECK(f.backend.id.netns == 4026532891);
    CHECK(f.backend.id.port == 8080);
    CHECK(f.backend.comm == "node");
    CHECK(summary(f) ==
          "netns 4026532891 (process node, port 8080) closes idle keep-alive connections after 6.0 s (p50 of 1 close, "
          "max 6.0 s); the load balancer (gcp) keeps them up to 600 s; 1 request arrived on a closing connection and "
          "was reset (the LB answers these with 502, backend_connection_closed_before_data_sent_to_client)");
    CHECK(advice(f) ==
          "make the server's idle timeout longer than the LB's (600 s) so the LB always closes idle connections first: "
          "for Node.js `server.keepAliveTimeout = 620000` with `server.headersTimeout` above it (e.g. 621000)");
    REQUIRE(evidence(f).size() == 1);
    CHECK(evidence(f)[0] ==
          "backend sent FIN after 6000 ms idle; peer data arrived 2 ms after the FIN: reason TCP_ABORT_ON_DATA");

    // The reset_recv was our own tcp_reset(), not the peer's.
    auto counts = c.counts();
    CHECK(counts.local_reset_recv == 1);
    CHECK(counts.resets[static_cast<size_t>(FindingKind::peer_reset)] == 0);
    CHECK(counts.resets[static_cast<size_t>(FindingKind::idle_close_race)] == 1);
}

TEST_CASE("race: our reset recorded before our own reset_recv is still not a peer reset") {
    Correlator c;
    Sock s;
    feed(c, {accepted(s, sec(1)), idle_fin(s, sec(7), 6000),
             reset_sent(s, sec(7) + ms(3), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true),
             reset_recv(s, sec(7) + ms(3), TcpState::fin_wait1)});
    c.expire(sec(60));
    CHECK(kinds_of(c.findings()) == std::vector<FindingKind>{FindingKind::idle_close_race});
    CHECK(c.counts().local_reset_recv == 1);
}

TEST_CASE("race: request arrived just before close (unread bytes, TCP_ABORT_ON_CLOSE)") {
    Correlator c;
    Sock s;
    // The request refreshed idle_rx; the idle gap is the time since the backend last sent.
    feed(c,
         {accepted(s, sec(1)),
          close(s, sec(7), {.to = TcpState::close, .idle_rx_ms = 1, .idle_tx_ms = 6000, .unread = 120, .abort = true}),
          reset_sent(s, sec(7), "TCP_ABORT_ON_CLOSE", SockKind::full, TcpState::close, false)});
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(f.count == 1);
    CHECK(evidence(f).at(0) ==
          "backend closed with 120 unread bytes that arrived just before the close, after 6000 ms without sending: "
          "reason TCP_ABORT_ON_CLOSE");
    CHECK(f.idle_close->p50_ms == 6000);
}

TEST_CASE("race: data reached the TIME_WAIT socket of an idle close (same cookie)") {
    Correlator c;
    Sock s;
    feed(c,
         {accepted(s, sec(1)), idle_fin(s, sec(7), 6000), state(s, sec(7), TcpState::established, TcpState::fin_wait1),
          state(s, sec(7) + ms(1), TcpState::fin_wait1, TcpState::fin_wait2),
          state(s, sec(7) + ms(2), TcpState::fin_wait2, TcpState::close)});
    c.expire(sec(50));  // 43 s later: still within TIME_WAIT, so still remembered
    feed(c, {reset_sent(s, sec(50), "TCP_TIMEWAIT_SOCKET", SockKind::timewait, TcpState::time_wait, true)});
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(evidence(f).at(0) ==
          "backend sent FIN after 6000 ms idle; peer data reached the TIME_WAIT socket 43000 ms after it: reason "
          "TCP_TIMEWAIT_SOCKET");
}

TEST_CASE("race shapes are recognised without kernel reasons") {
    Correlator c;
    Sock a, b{.cookie = 2002, .rport = 40001}, t{.cookie = 3003, .rport = 40002};
    // Shape 1: reset triggered by a segment on our closed socket after our FIN.
    feed(c, {accepted(a, sec(1)), idle_fin(a, sec(7), 6000), reset_recv(a, sec(7) + ms(1), TcpState::fin_wait1),
             reset_sent(a, sec(7) + ms(1), "", SockKind::full, TcpState::close, true)});
    // Shape 2: no segment, unread data at an idle close.
    feed(c,
         {accepted(b, sec(1)),
          close(b, sec(7), {.to = TcpState::close, .idle_rx_ms = 0, .idle_tx_ms = 6000, .unread = 80, .abort = true}),
          reset_sent(b, sec(7), "", SockKind::full, TcpState::close, false)});
    // Shape 3: a timewait socket.
    feed(c, {accepted(t, sec(1)), idle_fin(t, sec(7), 6000), state(t, sec(7), TcpState::fin_wait2, TcpState::close),
             reset_sent(t, sec(9), "", SockKind::timewait, TcpState::time_wait, true)});
    c.finish();
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(f.count == 3);
    CHECK(evidence(f).at(0).ends_with("no kernel reason; shape recognised from socket state"));
    CHECK(c.counts().local_reset_recv == 1);
}

TEST_CASE("near miss: the peer (LB) closed the idle connection first") {
    Correlator c;
    Sock s;
    feed(c,
         {accepted(s, sec(1)), state(s, sec(601), TcpState::established, TcpState::close_wait),
          close(s, sec(601),
                {.from = TcpState::close_wait, .to = TcpState::last_ack, .idle_rx_ms = 600000, .idle_tx_ms = 600000}),
          state(s, sec(601), TcpState::last_ack, TcpState::close)});
    c.finish();
    CHECK(c.findings().empty());
    auto backends = c.backends();
    REQUIRE(backends.size() == 1);
    CHECK(backends[0].closed_remote_first == 1);
    CHECK(backends[0].closed_local_first == 0);
    CHECK(backends[0].idle_close.samples == 0);
    CHECK(backends[0].connections_lb == 1);
    CHECK(backends[0].live_connections == 0);
}

TEST_CASE("the kernel sends no end after a local FIN: the close event ends the connection") {
    Correlator c;
    Sock ours, theirs{.cookie = 1002, .rport = 51235}, half{.cookie = 1003, .rport = 51236};
    feed(c, {accepted(ours, sec(1)), accepted(theirs, sec(1)), accepted(half, sec(1))});
    CHECK(c.counts().live_connections == 3);
    CHECK(c.backends().at(0).live_connections == 3);
    feed(c, {idle_fin(ours, sec(7), 6000),  // no FIN_WAIT2 -> CLOSE follows
             state(theirs, sec(8), TcpState::established, TcpState::close_wait),
             close(theirs, sec(8), {.from = TcpState::close_wait, .to = TcpState::last_ack}),
             // fentry kernels: shutdown(2) shows as the state change alone
             state(half, sec(9), TcpState::established, TcpState::fin_wait1)});
    auto backends = c.backends();
    REQUIRE(backends.size() == 1);
    CHECK(backends[0].live_connections == 0);
    CHECK(backends[0].closed_local_first == 2);
    CHECK(backends[0].closed_remote_first == 1);
    // Older traces do send the end: it changes nothing.
    feed(c, {state(ours, sec(7) + ms(1), TcpState::fin_wait2, TcpState::close)});
    CHECK(c.backends().at(0).live_connections == 0);
}

TEST_CASE("near miss: data after the FIN of a busy connection is not a race") {
    Correlator c;
    Sock s;
    feed(c, {accepted(s, sec(1)), close(s, sec(1) + ms(30), {.idle_rx_ms = 5, .idle_tx_ms = 2}),
             reset_sent(s, sec(1) + ms(31), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true)});
    const Finding& f = only_finding(c, FindingKind::close_with_unread_data);
    CHECK(evidence(f).at(0) ==
          "peer data arrived after the backend's FIN on a busy connection (2 ms quiet, idle means >= 1000 ms): reason "
          "TCP_ABORT_ON_DATA");
    CHECK_FALSE(f.idle_close);
}

TEST_CASE("near miss: unread data at a close that was not idle") {
    Correlator c;
    Sock s;
    feed(c,
         {accepted(s, sec(1)),
          close(s, sec(2), {.to = TcpState::close, .idle_rx_ms = 0, .idle_tx_ms = 40, .unread = 4096, .abort = true}),
          reset_sent(s, sec(2), "TCP_ABORT_ON_CLOSE", SockKind::full, TcpState::close, false)});
    const Finding& f = only_finding(c, FindingKind::close_with_unread_data);
    CHECK(f.count == 1);
    CHECK(evidence(f).at(0).starts_with("backend closed with 4096 unread bytes on a busy connection (40 ms quiet"));
}

TEST_CASE("near miss: timewait data after a close that was not idle") {
    Correlator c;
    Sock s;
    feed(c, {accepted(s, sec(1)), close(s, sec(2), {.idle_rx_ms = 3, .idle_tx_ms = 3}),
             state(s, sec(2), TcpState::fin_wait2, TcpState::close),
             reset_sent(s, sec(5), "TCP_TIMEWAIT_SOCKET", SockKind::timewait, TcpState::time_wait, true)});
    CHECK(only_finding(c, FindingKind::timewait_data).count == 1);
}

TEST_CASE("timewait data on a connection whose close was not seen") {
    Correlator c;
    Sock s;
    feed(c, {reset_sent(s, sec(5), "TCP_TIMEWAIT_SOCKET", SockKind::timewait, TcpState::time_wait, true)});
    const Finding& f = only_finding(c, FindingKind::timewait_data);
    CHECK(evidence(f).at(0) == "data to a TIME_WAIT socket whose close was not seen: reason TCP_TIMEWAIT_SOCKET");
}

TEST_CASE("a locally closed connection is remembered through TIME_WAIT, then forgotten") {
    Correlator c;
    Sock s;
    feed(c, {accepted(s, sec(1)), idle_fin(s, sec(7), 6000), state(s, sec(7), TcpState::fin_wait2, TcpState::close)});
    c.expire(sec(7) + sec(64));
    CHECK(c.counts().live_connections == 1);
    c.expire(sec(7) + sec(66));
    CHECK(c.counts().live_connections == 0);
    CHECK(c.counts().expired_stale == 0);
    // Too late: the kernel's TIME_WAIT is over too, so this is not the race any more.
    feed(c, {reset_sent(s, sec(80), "TCP_TIMEWAIT_SOCKET", SockKind::timewait, TcpState::time_wait, true)});
    CHECK(kinds_of(c.findings()) ==
          std::vector<FindingKind>{FindingKind::idle_timeout_below_lb, FindingKind::timewait_data});
}

TEST_CASE("idle closes shorter than the LB timeout are a finding before any reset") {
    Correlator c;
    for (uint64_t i = 0; i < 5; ++i) {
        Sock s{.cookie = 10 + i, .rport = static_cast<uint16_t>(40000 + i)};
        feed(c, {accepted(s, sec(10 * i)), idle_fin(s, sec(10 * i) + sec(6), 6000 + static_cast<uint32_t>(i))});
    }
    const Finding& f = only_finding(c, FindingKind::idle_timeout_below_lb);
    CHECK(f.count == 5);
    CHECK(f.idle_close->p50_ms == 6002);
    CHECK(f.idle_close->samples == 5);
    CHECK(f.lb.range == "130.211.0.0/22,35.191.0.0/16,2600:2d00:1:b029::/64,2600:2d00:1:1::/64");
    CHECK(
        summary(f).starts_with("netns 4026532891 (process node, port 8080) closes idle keep-alive connections after "
                              "6.0 s (p50 of 5 closes, max 6.0 s); the load balancer (gcp) keeps them up to 600 s"));
}

TEST_CASE("near miss: idle closes longer than the LB timeout are no finding") {
    Correlator c;
    Sock s;
    feed(c, {accepted(s, sec(1)), idle_fin(s, sec(701), 700000)});
    CHECK(c.findings().empty());
    CHECK(c.backends().at(0).idle_close.p50_ms == 700000);
}

TEST_CASE("a race after an idle gap longer than the LB timeout says to check the LB timeout") {
    Correlator c;
    race_data_after_fin(c, Sock{}, sec(1), 700000);
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(
        advice(f).starts_with("the backend already waits 700.0 s, longer than the configured LB idle timeout (600 s)"));
}

TEST_CASE("IPv6 load-balancer peers") {
    Correlator c;
    Sock s{.laddr = "fd00::6", .raddr = "2600:2d00:1:b029::5"};
    race_data_after_fin(c, s, sec(1));
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(f.lb.range == "2600:2d00:1:b029::/64");
    CHECK(tuples(f) == std::vector<std::string>{"[2600:2d00:1:b029::5]:51234->[fd00::6]:8080"});
    CHECK(f.backend.id.laddr == ip("fd00::6"));
}

TEST_CASE("IPv4-mapped peers of a dual-stack listener match IPv4 LB ranges") {
    Correlator c;
    Sock s{.laddr = "::ffff:10.56.5.6", .raddr = "::ffff:35.191.3.4"};
    race_data_after_fin(c, s, sec(1));
    CHECK(only_finding(c, FindingKind::idle_close_race).lb.range == "35.191.0.0/16");
    CHECK(c.connections_with_peer(ip("35.191.3.4"), 51234).size() == 1);
}

TEST_CASE("races with peers outside the LB ranges are counted but are no LB finding") {
    Correlator c;
    race_data_after_fin(c, Sock{.raddr = "10.60.0.9"}, sec(1));
    auto backends = c.backends();
    REQUIRE(backends.size() == 1);
    CHECK(backends[0].resets_other[static_cast<size_t>(FindingKind::idle_close_race)] == 1);
    CHECK(backends[0].resets_lb[static_cast<size_t>(FindingKind::idle_close_race)] == 0);
    CHECK(backends[0].connections_other == 1);
    CHECK(c.findings().empty());
}

TEST_CASE("lb preset none: a race with any peer is a finding, with no LB timeout") {
    Correlator c(preset("none"));
    race_data_after_fin(c, Sock{.raddr = "10.60.0.9"}, sec(1));
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(f.lb.idle_timeout_s == 0);
    CHECK(f.lb.range == "");
    CHECK(advice(f).starts_with("make the server's keep-alive idle timeout longer than its clients' idle timeout"));
    CHECK(summary(f).find("load balancer") == std::string::npos);
}

TEST_CASE("aws-alb without --lb-ranges treats every non-loopback peer as the LB") {
    Correlator c(preset("aws-alb"));
    race_data_after_fin(c, Sock{.raddr = "10.60.0.9", .comm = "java"}, sec(1), 30000);
    race_data_after_fin(c, Sock{.cookie = 7, .laddr = "127.0.0.1", .lport = 9000, .raddr = "127.0.0.1"}, sec(1), 30000);
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(f.lb.range == "any");
    CHECK(f.lb.idle_timeout_s == 60);
    CHECK(f.backend.id.port == 8080);
    CHECK(
        advice(f).ends_with("for Tomcat `keepAliveTimeout=\"65000\"` on the Connector (Spring Boot: "
                           "`server.tomcat.keep-alive-timeout=65s`)"));
    CHECK(summary(f).ends_with("(the ALB answers these with 502 Bad Gateway)"));
}

TEST_CASE("aws-alb with --lb-ranges only counts peers in them") {
    Correlator c(preset("aws-alb", "10.0.128.0/20"));
    race_data_after_fin(c, Sock{.raddr = "10.0.130.7"}, sec(1), 30000);
    race_data_after_fin(c, Sock{.cookie = 9, .raddr = "10.60.0.9"}, sec(1), 30000);
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(f.count == 1);
    CHECK(f.lb.range == "10.0.128.0/20");
}

TEST_CASE("LB presets and options") {
    auto gcp = CorrelatorConfig::defaults();
    CHECK(gcp.lb_name == "gcp");
    CHECK(gcp.lb_idle_timeout_s == 600);
    CHECK(gcp.lb_ranges.contains(ip("35.191.10.1")));
    CHECK(gcp.lb_ranges.contains(ip("2600:2d00:1:1::9")));
    CHECK_FALSE(gcp.lb_any_non_loopback_peer);
    CHECK(preset("aws-alb").lb_idle_timeout_s == 60);
    CHECK(preset("aws-nlb").lb_idle_timeout_s == 350);
    CHECK(preset("azure").lb_idle_timeout_s == 240);
    CHECK(preset("azure").lb_any_non_loopback_peer);
    CHECK(preset("none").lb_idle_timeout_s == 0);
    CHECK_FALSE(preset("none").lb_any_non_loopback_peer);
    CHECK(lb_presets().size() == 5);

    auto custom = CorrelatorConfig::from_options("gcp", "10.129.0.0/23", 3600);
    REQUIRE(custom);
    CHECK(custom->lb_idle_timeout_s == 3600);
    CHECK(custom->lb_ranges.to_string() == "10.129.0.0/23");
    CHECK(custom->describe_lb() == "gcp (10.129.0.0/23, idle timeout 3600 s)");
    CHECK(preset("azure").describe_lb() ==
          "azure (any non-loopback peer; give --lb-ranges to narrow, idle timeout 240 s)");

    std::string error;
    CHECK_FALSE(CorrelatorConfig::from_options("haproxy", std::nullopt, std::nullopt, &error));
    CHECK(error == "unknown --lb 'haproxy' (expected gcp, aws-alb, aws-nlb, azure or none)");
    CHECK_FALSE(CorrelatorConfig::from_options("gcp", "10.0.0.1/8", std::nullopt, &error));
    CHECK(error.find("host bits set") != std::string::npos);
}

TEST_CASE("a backend whose own idle timeout is below the threshold: the relative idle bar") {
    Correlator c;
    // Five idle closes at ~500 ms: under the 1000 ms threshold, but this server's habit.
    for (uint64_t i = 0; i < 5; ++i) {
        Sock s{.cookie = 100 + i, .rport = static_cast<uint16_t>(30000 + i)};
        feed(c, {accepted(s, sec(i)), idle_fin(s, sec(i) + ms(500), 500)});
    }
    CHECK(c.backends().at(0).idle_close.samples == 0);
    race_data_after_fin(c, Sock{.cookie = 200}, sec(10), 480);  // bar is now 250 ms
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(f.idle_close->samples == 1);
    CHECK(f.idle_close->p50_ms == 480);
}

TEST_CASE("linger_abort is linked to the SO_LINGER {1,0} that preceded it") {
    Correlator c;
    Sock s{.raddr = "10.60.0.9", .comm = "nginx"};
    Event abort_close = close(s, sec(5), {.to = TcpState::close, .idle_rx_ms = 2, .idle_tx_ms = 2, .abort = true});
    abort_close.opts.set(SockOpt::so_linger, 0);
    Event rst = reset_sent(s, sec(5), "TCP_STATE", SockKind::full, TcpState::close, false);
    rst.opts = abort_close.opts;
    feed(c, {accepted(s, sec(1)), setsockopt(s, sec(3), "SOL_SOCKET", "SO_LINGER", 1, 0), abort_close, rst});
    const Finding& f = only_finding(c, FindingKind::linger_abort);
    CHECK(f.count == 1);
    REQUIRE(evidence(f).size() == 2);
    CHECK(evidence(f)[0] == "close() with SO_LINGER {1,0} in force: reason TCP_STATE");
    CHECK(evidence(f)[1] == "SO_LINGER {1,0} set by nginx[4242] 2.0 s before the first of 1 linger_abort reset");
    CHECK(advice(f).starts_with("SO_LINGER {1,0} makes close() send a reset"));
}

TEST_CASE("user_timeout is linked to TCP_USER_TIMEOUT being lowered") {
    Correlator c;
    // The client sets options before connect(): no cookie yet, attributed by process.
    Sock pre{.cookie = 0, .laddr = "0.0.0.0", .lport = 0, .raddr = "0.0.0.0", .rport = 0, .comm = "worker"};
    Sock s{.cookie = 77, .laddr = "10.56.5.6", .lport = 45000, .raddr = "10.70.0.5", .rport = 5432, .comm = "worker"};
    Event rst = reset_sent(s, sec(20), "TCP_KEEPALIVE_TIMEOUT", SockKind::full, TcpState::established, false);
    rst.opts.set(SockOpt::tcp_user_timeout, 5000);
    rst.opts.set(SockOpt::so_keepalive, 1);
    feed(c, {setsockopt(pre, sec(1), "IPPROTO_TCP", "TCP_USER_TIMEOUT", 30000),
             setsockopt(pre, sec(2), "IPPROTO_TCP", "TCP_USER_TIMEOUT", 5000),
             setsockopt(pre, sec(2), "IPPROTO_TCP", "TCP_USER_TIMEOUT", 5000),  // a repeat is not a change
             state(s, sec(3), TcpState::close, TcpState::syn_sent),
             state(s, sec(3), TcpState::syn_sent, TcpState::established), rst});
    const Finding& f = only_finding(c, FindingKind::user_timeout);
    CHECK(f.backend.id.outbound);
    CHECK(f.backend.id.port == 5432);
    CHECK(f.backend.opt_changes.size() == 2);
    REQUIRE(evidence(f).size() == 2);
    CHECK(evidence(f)[0] == "TCP_USER_TIMEOUT 5000 ms expired with the peer unresponsive: reason TCP_KEEPALIVE_TIMEOUT");
    CHECK(
        evidence(f)[1] ==
        "TCP_USER_TIMEOUT 5000 ms (was 30000 ms) set by worker[4242] 18.0 s before the first of 1 user_timeout reset");
    CHECK(advice(f).starts_with("TCP_USER_TIMEOUT (5000 ms) expired"));
}

TEST_CASE("keepalive_timeout") {
    Correlator c;
    Sock s;
    Event rst = reset_sent(s, sec(9000), "TCP_KEEPALIVE_TIMEOUT", SockKind::full, TcpState::established, false);
    rst.opts.set(SockOpt::so_keepalive, 1);
    rst.opts.set(SockOpt::tcp_keepidle, 7200);
    rst.opts.set(SockOpt::tcp_keepintvl, 75);
    rst.opts.set(SockOpt::tcp_keepcnt, 9);
    feed(c, {accepted(s, sec(1)), rst});
    const Finding& f = only_finding(c, FindingKind::keepalive_timeout);
    CHECK(evidence(f).at(0) ==
          "keep-alive probes went unanswered (TCP_KEEPIDLE 7200 s, TCP_KEEPINTVL 75 s, TCP_KEEPCNT 9): reason "
          "TCP_KEEPALIVE_TIMEOUT");
}

TEST_CASE("no_listener: a stateless reset for a port nobody listens on") {
    Correlator c;
    Sock s{.cookie = 0, .lport = 9090};
    feed(c, {reset_sent(s, sec(1), "NO_SOCKET", SockKind::none, TcpState::unknown, true)});
    const Finding& f = only_finding(c, FindingKind::no_listener);
    CHECK(f.backend.id.port == 9090);
    CHECK_FALSE(f.backend.id.outbound);
    CHECK(tuples(f) == std::vector<std::string>{"130.211.0.143:51234->10.56.5.6:9090"});
    CHECK(c.counts().connections == 0);
}

TEST_CASE("peer_reset is settled only once it cannot be our own abort") {
    Correlator c;
    Sock s{.raddr = "10.60.0.9"};
    feed(c, {accepted(s, sec(1)), reset_recv(s, sec(2), TcpState::established),
             state(s, sec(2), TcpState::established, TcpState::close)});
    CHECK(c.findings().empty());  // pending: our abort-on-data reset could still come
    c.expire(sec(2) + ms(50));
    CHECK(c.findings().empty());
    c.expire(sec(2) + ms(101));
    const Finding& f = only_finding(c, FindingKind::peer_reset);
    CHECK(evidence(f).at(0) == "reset received in ESTABLISHED");
    auto conns = c.connections_with_peer(ip("10.60.0.9"), 51234);
    REQUIRE(conns.size() == 1);
    CHECK(conns[0].end == EndKind::reset_received);
}

TEST_CASE("other: an unrecognised kernel reason is named") {
    Correlator c;
    Sock s;
    feed(c, {accepted(s, sec(1)),
             reset_sent(s, sec(2), "TCP_INVALID_ACK_SEQUENCE", SockKind::full, TcpState::syn_recv, true)});
    CHECK(evidence(only_finding(c, FindingKind::other)).at(0) ==
          "reason TCP_INVALID_ACK_SEQUENCE (socket full, state SYN_RECV)");
}

TEST_CASE("a connection reset twice is one verdict") {
    Correlator c;
    Sock s;
    race_data_after_fin(c, s, sec(1));
    feed(c, {reset_sent(s, sec(8), "TCP_TIMEWAIT_SOCKET", SockKind::timewait, TcpState::time_wait, true)});
    CHECK(only_finding(c, FindingKind::idle_close_race).count == 1);
}

TEST_CASE("findings carry the most recent connections kept, and how many more there were") {
    Correlator c;  // keeps the last 16 per backend and kind
    for (uint64_t i = 0; i < 40; ++i)
        race_data_after_fin(c, Sock{.cookie = 500 + i, .rport = static_cast<uint16_t>(20000 + i)}, sec(10 * i));
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(f.count == 40);
    REQUIRE(f.connections.size() == 16);
    CHECK(f.connections_not_kept == 24);
    CHECK(tuples(f).front() == "130.211.0.143:20039->10.56.5.6:8080");
    CHECK(tuples(f).back() == "130.211.0.143:20024->10.56.5.6:8080");
    CHECK(f.idle_close->samples == 40);
    // Every connection is a record with its own verdict and evidence, not a string.
    CHECK(f.connections.front().reset == FindingKind::idle_close_race);
    REQUIRE(f.connections.front().evidence);
    CHECK(f.connections.front().evidence->mechanism == Mechanism::data_after_fin);
}

TEST_CASE("live state is bounded: per-connection size and the connection cap") {
    CHECK(Correlator::live_connection_bytes() <= 256);
    auto config = CorrelatorConfig::defaults();
    config.max_live_connections = 64;
    Correlator c(config);
    for (uint64_t i = 1; i <= 1000; ++i)
        c.on_event(accepted(Sock{.cookie = i, .rport = static_cast<uint16_t>(i)}, sec(i)));
    auto counts = c.counts();
    CHECK(counts.live_connections <= 64);
    CHECK(counts.live_connections >= 56);
    CHECK(counts.connections == 1000);
    CHECK(counts.evicted_over_cap + counts.live_connections == 1000);
    // The most recent connection survives eviction.
    CHECK(c.connections_with_peer(ip("130.211.0.143"), 1000).size() == 1);
    CHECK(c.backends().at(0).live_connections == counts.live_connections);
}

TEST_CASE("ended connections: a FIN close is kept for TIME_WAIT resets, an abort only briefly") {
    Correlator c;
    Sock fin{.cookie = 1}, abort{.cookie = 2, .rport = 51235};
    feed(c, {accepted(fin, sec(1)), accepted(abort, sec(1)), idle_fin(fin, sec(2), 1000),
             close(abort, sec(2), {.to = TcpState::close, .abort = true})});
    CHECK(c.counts().live_connections == 2);
    c.expire(sec(5));  // past the short grace: the aborted one goes, the FIN-closed one may still time-wait
    CHECK(c.counts().live_connections == 1);
    CHECK(c.connections_with_peer(ip("130.211.0.143"), 51234).size() == 1);
    // a late reset from its TIME_WAIT socket still finds it (same cookie)
    c.on_event(reset_sent(fin, sec(30), "TCP_TIMEWAIT_SOCKET", SockKind::timewait, TcpState::time_wait, true));
    CHECK(c.counts().live_connections == 1);
    c.expire(sec(2) + CorrelatorConfig::defaults().closed_retention_ns + ms(1));
    CHECK(c.counts().live_connections == 0);
    CHECK(c.counts().expired_stale == 0);
    CHECK(c.counts().evicted_over_cap == 0);
}

TEST_CASE("over the cap, ended connections are evicted before open ones, however idle") {
    auto config = CorrelatorConfig::defaults();
    config.max_live_connections = 64;
    Correlator c(config);
    // 40 idle open connections from long ago, then 40 that closed a moment ago.
    for (uint64_t i = 1; i <= 40; ++i) c.on_event(accepted(Sock{.cookie = i, .rport = static_cast<uint16_t>(i)}, sec(1)));
    for (uint64_t i = 41; i <= 80; ++i) {
        Sock s{.cookie = i, .rport = static_cast<uint16_t>(i)};
        feed(c, {accepted(s, sec(100)), idle_fin(s, sec(100) + ms(i), 10)});
    }
    auto counts = c.counts();
    CHECK(counts.live_connections <= 64);
    CHECK(counts.evicted_over_cap == 80 - counts.live_connections);
    // every open connection survived
    for (uint16_t port = 1; port <= 40; ++port) CHECK(c.connections_with_peer(ip("130.211.0.143"), port).size() == 1);
}

TEST_CASE("silent open connections expire after stale_after") {
    auto config = CorrelatorConfig::defaults();
    config.stale_after_ns = sec(3600);
    Correlator c(config);
    c.on_event(accepted(Sock{}, sec(10)));
    c.expire(sec(3609));
    CHECK(c.counts().live_connections == 1);
    c.expire(sec(3611));
    CHECK(c.counts().live_connections == 0);
    CHECK(c.counts().expired_stale == 1);
    CHECK(c.backends().at(0).live_connections == 0);
}

TEST_CASE("outbound connections are grouped by the remote service port") {
    Correlator c;
    for (uint16_t p = 0; p < 3; ++p) {
        Sock s{.cookie = 50u + p, .lport = static_cast<uint16_t>(41000 + p), .raddr = "10.70.0.5", .rport = 5432};
        feed(c, {state(s, sec(1), TcpState::close, TcpState::syn_sent)});
    }
    auto backends = c.backends();
    REQUIRE(backends.size() == 1);
    CHECK(backends[0].id.outbound);
    CHECK(backends[0].id.port == 5432);
    CHECK(backends[0].connections_other == 3);
}

TEST_CASE("a connecting socket's local port, still 0 at SYN_SENT, is taken from later events") {
    Correlator c;
    Sock connecting{.cookie = 60, .laddr = "130.211.0.143", .lport = 0, .raddr = "10.56.5.6", .rport = 8080};
    Sock bound = connecting;
    bound.lport = 53266;
    feed(c, {state(connecting, sec(1), TcpState::close, TcpState::syn_sent),
             state(bound, sec(1) + ms(1), TcpState::syn_sent, TcpState::established),
             reset_recv(bound, sec(8), TcpState::last_ack)});
    c.finish();
    auto conns = c.connections_with_peer(ip("10.56.5.6"), 8080);
    REQUIRE(conns.size() == 1);
    CHECK(conns[0].lport == 53266);
    CHECK(tuples(only_finding(c, FindingKind::peer_reset)).at(0) == "10.56.5.6:8080->130.211.0.143:53266");
}

TEST_CASE("connections opened before tracing: a known listener decides the direction") {
    Correlator c;
    Sock listener{.cookie = 1, .lport = 80, .raddr = "0.0.0.0", .rport = 0};
    feed(c, {state(listener, sec(1), TcpState::close, TcpState::listen)});
    // lport 80 > rport 22 would look outbound, but 80 is listening.
    feed(c, {idle_fin(Sock{.cookie = 2, .lport = 80, .raddr = "10.1.1.1", .rport = 22}, sec(2), 10)});
    auto backends = c.backends();
    REQUIRE(backends.size() == 1);
    CHECK_FALSE(backends[0].id.outbound);
    CHECK(backends[0].id.port == 80);
}

TEST_CASE("a child socket's LISTEN -> SYN_RECV is an accepted connection, not a listener") {
    Correlator c;
    Sock s{.lport = 8080, .rport = 80};  // ports alone would say outbound
    feed(c, {state(s, sec(1), TcpState::listen, TcpState::syn_recv),
             state(s, sec(1), TcpState::syn_recv, TcpState::established)});
    auto conns = c.connections_with_peer(ip("130.211.0.143"), 80);
    REQUIRE(conns.size() == 1);
    CHECK(conns[0].opened == OpenKind::accepted);
    CHECK(c.counts().connections == 1);
    CHECK_FALSE(c.backends().at(0).id.outbound);
}

TEST_CASE("netns names show up as pods") {
    Correlator c;
    auto names = std::make_shared<WorkloadTable>();
    Workload pod;
    pod.kind = WorkloadKind::pod;
    pod.pod = "web-7d9";
    pod.namespace_name = "shop";
    names->set_netns(4026532891, pod);
    c.set_workloads(names);
    race_data_after_fin(c, Sock{}, sec(1));
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(f.backend.id.pod == "web-7d9");
    CHECK(summary(f).starts_with("pod shop/web-7d9 (process node, port 8080) closes idle"));
}

TEST_CASE("live updates: first verdict, then rate-limited count updates") {
    Correlator c;
    race_data_after_fin(c, Sock{.cookie = 1, .rport = 1}, sec(1));
    auto first = c.take_live_updates(sec(8));
    REQUIRE(first.size() == 1);
    CHECK(first[0].first);
    CHECK(explain::live_line(first[0]).starts_with(
        "finding [idle_close_race] netns 4026532891 (process node, port 8080) closes idle"));
    CHECK(c.take_live_updates(sec(9)).empty());  // nothing new

    race_data_after_fin(c, Sock{.cookie = 2, .rport = 2}, sec(2));
    race_data_after_fin(c, Sock{.cookie = 3, .rport = 3}, sec(3));
    CHECK(c.take_live_updates(sec(12)).empty());  // within the 10 s interval
    auto update = c.take_live_updates(sec(18));
    REQUIRE(update.size() == 1);
    CHECK_FALSE(update[0].first);
    CHECK(update[0].added == 2);
    CHECK(explain::live_line(update[0]) ==
          "update [idle_close_race] netns 4026532891 (process node, port 8080): 3 now (+2)");
    CHECK(c.take_live_updates(sec(40)).empty());
}

TEST_CASE("advice follows the process") {
    auto fix_for = [](const char* comm) {
        Correlator c;
        race_data_after_fin(c, Sock{.comm = comm}, sec(1));
        return explain::advice(c.findings().at(0));
    };
    CHECK(fix_for("gunicorn").ends_with("for gunicorn `--keep-alive 620`"));
    CHECK(fix_for("uvicorn").ends_with("for uvicorn `--timeout-keep-alive 620`"));
    CHECK(fix_for("nginx").ends_with("for nginx `keepalive_timeout 620s;`"));
    CHECK(fix_for("apache2").ends_with("for Apache `KeepAliveTimeout 620`"));
    CHECK(fix_for("httpd").ends_with("for Apache `KeepAliveTimeout 620`"));
    CHECK(fix_for("envoy").find("idle_timeout: 620s") != std::string::npos);
    CHECK(fix_for("python3").find("--timeout-keep-alive 620") != std::string::npos);
    // Go binaries carry their own names: the generic text names Go's setting.
    std::string generic = fix_for("checkout-api");
    CHECK(generic.find("http.Server{IdleTimeout: 620 * time.Second}") != std::string::npos);
    CHECK(generic.starts_with("make the server's idle timeout longer than the LB's (600 s)"));
}

TEST_CASE("the LB peer rule trace marks `lb` with: ranges, or any non-loopback peer without them") {
    auto gcp = CorrelatorConfig::defaults();
    CHECK(gcp.is_lb_peer(*IpAddr::parse("130.211.0.143")));
    CHECK(gcp.is_lb_peer(*IpAddr::parse("::ffff:35.191.1.2")));
    CHECK_FALSE(gcp.is_lb_peer(*IpAddr::parse("10.0.0.1")));

    auto alb = CorrelatorConfig::from_options("aws-alb");
    REQUIRE(alb);
    CHECK(alb->is_lb_peer(*IpAddr::parse("10.0.0.1")));
    CHECK_FALSE(alb->is_lb_peer(*IpAddr::parse("127.0.0.1")));
    CHECK_FALSE(alb->is_lb_peer(*IpAddr::parse("::1")));

    auto alb_ranges = CorrelatorConfig::from_options("aws-alb", "10.1.0.0/16");
    REQUIRE(alb_ranges);
    CHECK(alb_ranges->is_lb_peer(*IpAddr::parse("10.1.2.3")));
    CHECK_FALSE(alb_ranges->is_lb_peer(*IpAddr::parse("10.0.0.1")));

    auto none = CorrelatorConfig::from_options("none");
    REQUIRE(none);
    CHECK_FALSE(none->is_lb_peer(*IpAddr::parse("130.211.0.143")));
}

TEST_CASE("after a race, the listener's resets to the peer's in-flight segments are its tail, not new findings") {
    Correlator c;
    Sock s;
    // the timewait shape: FIN after 6 s idle, the LB's request hits the TIME_WAIT socket
    feed(c, {accepted(s, sec(1)), idle_fin(s, sec(7), 6000), state(s, sec(7), TcpState::fin_wait1, TcpState::fin_wait2),
             state(s, sec(7), TcpState::fin_wait2, TcpState::time_wait),
             reset_sent(s, sec(7) + ms(100), "TCP_TIMEWAIT_SOCKET", SockKind::timewait, TcpState::time_wait, true)});
    // then the peer's segments still in flight reach the listening socket (another cookie)
    Sock listener = s;
    listener.cookie = 77;
    feed(c, {reset_sent(listener, sec(7) + ms(150), "TCP_FLAGS", SockKind::full, TcpState::listen, true),
             reset_sent(listener, sec(7) + ms(160), "TCP_FLAGS", SockKind::full, TcpState::listen, true)});
    // and a stateless reply for the same tuple
    Sock gone = s;
    gone.cookie = 0;
    feed(c, {reset_sent(gone, sec(7) + ms(170), "NO_SOCKET", SockKind::none, TcpState::unknown, true)});
    c.finish();
    const Finding& f = only_finding(c, FindingKind::idle_close_race);
    CHECK(f.count == 1);
    CHECK(c.counts().follow_up_resets == 3);
    CHECK(c.counts().resets[static_cast<size_t>(FindingKind::other)] == 0);

    // A listener reset for a tuple this host never had is classified on its own.
    Sock stranger = listener;
    stranger.rport = 40000;
    feed(c, {reset_sent(stranger, sec(9), "TCP_FLAGS", SockKind::full, TcpState::listen, true)});
    c.finish();
    CHECK(c.counts().follow_up_resets == 3);
    CHECK(c.counts().connections == 1);  // the listener did not become a connection
}
