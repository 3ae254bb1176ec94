// The kernel's tallies on real sockets: ordinary connections cost at most 1.5 records each, while
// resets and idle-close races keep every event, and the backend's counts are the same.
#include "harness.h"

#include <map>
#include <set>

#include "tcpwhy/abi.h"
#include "tcpwhy/correlator.h"
#include "tcpwhy/jsonl.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {

constexpr uint16_t kPort = 8080;

TracerOptions tallying() {
    TracerOptions options;
    options.tally = true;
    options.lb_ranges = *CidrSet::parse_list(kGcpLbRanges);
    return options;
}

// A request and its response on a connected pair, then the backend closes first (nginx with
// Connection: close).
void serve_and_close(const Fd& client, Fd server) {
    send_all(client, "GET / HTTP/1.1\r\n\r\n");
    REQUIRE(!recv_some(server).empty());
    send_all(server, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    server.reset();
    while (!recv_some(client).empty()) {
    }
}

// The same from the LB's namespace to the pod's listener.
void ordinary_request(const LbAndPod& net, const Fd& listener) {
    Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); });
    serve_and_close(client, accept_one(listener));
}

}  // namespace

TEST_CASE("tally: ordinary connections cost at most 1.5 records -- resets and races keep full detail") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    const uint32_t pod = net.pod.inode(), lb = net.lb.inode();
    EventCollector events([&](const Event& e) { return e.netns == pod || e.netns == lb; }, tallying());
    REQUIRE(events.tracer().tallies());
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });

    constexpr int kOrdinary = 300;
    for (int i = 0; i < kOrdinary; ++i) ordinary_request(net, listener);

    // Three closes with the request unread: the backend's close aborts (close_with_unread_data).
    constexpr int kUnread = 3;
    std::vector<uint16_t> unread_ports;
    for (int i = 0; i < kUnread; ++i) {
        Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); });
        Fd server = accept_one(listener);
        send_all(client, "GET / HTTP/1.1\r\n\r\n");
        sleep_ms(20);
        sockaddr_in local{};
        socklen_t len = sizeof(local);
        getsockname(client.get(), reinterpret_cast<sockaddr*>(&local), &len);
        unread_ports.push_back(ntohs(local.sin_port));
        server.reset();
    }
    // Two idle-close races: quiet 1.2 s, the backend closes, the LB's next request meets a reset.
    constexpr int kRaces = 2;
    std::vector<std::pair<Fd, Fd>> pooled;
    for (int i = 0; i < kRaces; ++i) {
        Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); });
        pooled.emplace_back(std::move(client), accept_one(listener));
    }
    sleep_ms(1200);
    for (auto& [client, server] : pooled) server.reset();
    sleep_ms(20);
    for (auto& [client, server] : pooled) send_all(client, "GET / HTTP/1.1\r\n\r\n");
    sleep_ms(1500);  // a tally read (once a second) after the last end

    const int connections = kOrdinary + kUnread + kRaces;
    auto all = events.snapshot();
    INFO(events.dump());
    // records: every event and tally in the two namespaces, the listener's own events aside
    size_t records = 0;
    uint64_t tallied_opens = 0, tallied_ends = 0;
    for (const auto& e : all) {
        if (e.type == EventType::state && (e.new_state == TcpState::listen || e.old_state == TcpState::listen)) continue;
        ++records;
        if (e.type == EventType::tally) {
            tallied_opens += e.tally.opened;
            tallied_ends += e.tally.closed_local_first + e.tally.closed_remote_first;
        }
    }
    double per_connection = static_cast<double>(records) / connections;
    INFO(records << " records for " << connections << " connections: " << per_connection << " each");
    CHECK(per_connection <= 1.5);
    // both ends of every connection opened; both ends of each ordinary one ended ordinarily
    CHECK(tallied_opens == 2u * connections);
    CHECK(tallied_ends >= 2u * kOrdinary);

    // The aborts and races keep their close and their resets, one by one.
    auto closes = events.matching([&](const Event& e) { return e.type == EventType::close && e.netns == pod; });
    int aborted_unread = 0, idle_closes = 0;
    for (const auto& c : closes) {
        if (c.abort && c.unread_bytes > 0) ++aborted_unread;
        if (!c.abort && c.idle_rx_ms >= 1000) ++idle_closes;
    }
    CHECK(aborted_unread == kUnread);
    CHECK(idle_closes == kRaces);
    auto resets = events.matching([&](const Event& e) { return e.type == EventType::reset_sent && e.netns == pod; });
    CHECK(resets.size() >= static_cast<size_t>(kUnread + kRaces));

    // The correlator, given exactly these records, counts every connection and finds each cause.
    CorrelatorConfig config = CorrelatorConfig::defaults();
    config.opens_tallied = true;
    Correlator correlator(config);
    for (auto e : all) {
        if (e.type != EventType::tally) e.lb = config.is_lb_peer(e.raddr);
        correlator.on_event(e);
    }
    correlator.finish();
    const BackendProfile* backend = nullptr;
    auto backends = correlator.backends();
    for (const auto& b : backends)
        if (b.id.netns == pod && b.id.port == kPort && !b.id.outbound) backend = &b;
    REQUIRE(backend);
    CHECK(backend->connections_lb == static_cast<uint64_t>(connections));
    CHECK(backend->connections_other == 0);
    CHECK(backend->live_connections == 0);
    CHECK(backend->closed_local_first == static_cast<uint64_t>(connections));
    CHECK(backend->comm == "kernel_tests");
    CHECK(backend->resets(FindingKind::close_with_unread_data) == static_cast<uint64_t>(kUnread));
    CHECK(backend->resets(FindingKind::idle_close_race) == static_cast<uint64_t>(kRaces));
    for (const auto& f : correlator.findings()) {
        if (f.kind != FindingKind::idle_close_race) continue;
        REQUIRE(f.evidence);
        CHECK(f.evidence->close_seen);
        CHECK(f.evidence->idle_gap_ms >= 1000);
    }
}

TEST_CASE("tally: --all-states (all_state_changes) tallies nothing") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    TracerOptions options = tallying();
    options.all_state_changes = true;
    EventCollector events([&](const Event& e) { return e.netns == net.pod.inode(); }, options);
    CHECK_FALSE(events.tracer().tallies());
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    ordinary_request(net, listener);
    auto closes = events.wait_for(of_type(EventType::close));
    CHECK(closes.size() == 1);
    sleep_ms(1200);
    CHECK(events.matching(of_type(EventType::tally)).empty());
}

namespace {

Fd tcp_listen_v6_loopback(uint16_t port) {
    Fd fd(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(port);
    sa.sin6_addr = in6addr_loopback;
    REQUIRE(bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
    REQUIRE(listen(fd.get(), 64) == 0);
    return fd;
}

Fd tcp_connect_v6_loopback(uint16_t port) {
    Fd fd(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(port);
    sa.sin6_addr = in6addr_loopback;
    REQUIRE(connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
    return fd;
}

}  // namespace

// The kernel applies the correlator's LB rule itself when it tallies: a few ranges are compared
// inline, more than TCPWHY_LB_INLINE_MAX go to the LPM trie. Both must agree with the correlator.
TEST_CASE("tally: the LB flag of a tally follows the session's ranges, compared inline or in the trie") {
    TCPWHY_REQUIRE_ROOT();
    constexpr uint16_t kV6Port = 8081, kPlainPort = 8082;
    std::string inline_ranges = std::string(kGcpLbRanges) + ",::1/128";
    std::string trie_ranges = inline_ranges;
    for (int i = 0; i < TCPWHY_LB_INLINE_MAX; ++i) trie_ranges += fmt::format(",10.250.{}.0/24", i);
    for (const std::string& ranges : {inline_ranges, trie_ranges}) {
        const size_t count = CidrSet::parse_list(ranges)->ranges().size();
        INFO(count << " LB ranges");
        LbAndPod net;
        const uint32_t pod = net.pod.inode();
        TracerOptions options = tallying();
        options.lb_ranges = *CidrSet::parse_list(ranges);
        EventCollector events([&](const Event& e) { return e.netns == pod; }, options);
        REQUIRE(events.tracer().tallies());
        Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
        Fd listener6 = net.pod.enter([&] { return tcp_listen_v6_loopback(kV6Port); });
        Fd plain = net.pod.enter([&] { return tcp_listen_v4("127.0.0.1", kPlainPort); });
        constexpr int kEach = 3;
        for (int i = 0; i < kEach; ++i) {
            ordinary_request(net, listener);  // from 130.211.0.143: in a v4 range
            Fd client6 = net.pod.enter([&] { return tcp_connect_v6_loopback(kV6Port); });
            serve_and_close(client6, accept_one(listener6));  // from ::1: in the v6 range
            Fd client = net.pod.enter([&] { return tcp_connect_v4("127.0.0.1", kPlainPort); });
            serve_and_close(client, accept_one(plain));  // from 127.0.0.1: in none
        }
        sleep_ms(1500);  // a tally read after the last end
        std::map<std::pair<uint16_t, bool>, uint64_t> opened;  // (port, lb) of inbound tallies
        for (const Event& e : events.matching(of_type(EventType::tally)))
            if (e.direction != Direction::outbound) opened[{e.lport, e.lb}] += e.tally.opened;
        INFO(events.dump());
        CHECK(opened[{kPort, true}] == kEach);
        CHECK(opened[{kPort, false}] == 0);
        CHECK(opened[{kV6Port, true}] == kEach);
        CHECK(opened[{kV6Port, false}] == 0);
        CHECK(opened[{kPlainPort, false}] == kEach);
        CHECK(opened[{kPlainPort, true}] == 0);
    }
}

// With tallies the correlator meets a connection first at its end, without the open that says
// who connected. The kernel's listener mirror says it there: an upstream on a port above the
// ephemeral range, called from a lower local port, is outbound to the upstream's port, not a
// backend listening on the caller's port (the guess from the port numbers alone).
TEST_CASE("tally: a connection first seen at its end is keyed by the kernel's listener mirror, not the port numbers") {
    TCPWHY_REQUIRE_ROOT();
    constexpr uint16_t kUpstreamPort = 45000, kCallerPort = 33000;
    LbAndPod net;
    const uint32_t pod = net.pod.inode();
    EventCollector events([&](const Event& e) { return e.netns == pod; }, tallying());
    REQUIRE(events.tracer().tallies());
    Fd upstream = net.pod.enter([] { return tcp_listen_v4("127.0.0.1", kUpstreamPort); });
    {
        Fd caller = net.pod.enter([] { return tcp_connect_v4("127.0.0.1", kUpstreamPort, kCallerPort); });
        Fd served = accept_one(upstream);
        send_all(caller, "GET / HTTP/1.1\r\n\r\n");
        REQUIRE(!recv_some(served).empty());
        send_all(served, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        REQUIRE(!recv_some(caller).empty());
        sleep_ms(300);   // quiet past the ordinary bar: the caller's close is an event
        caller.reset();  // its pool retires it
        sleep_ms(50);
    }
    auto closes = events.wait_for([](const Event& e) { return e.type == EventType::close && e.lport == kCallerPort; });
    sleep_ms(1500);  // a tally read after the last end
    INFO(events.dump());
    REQUIRE(closes.size() == 1);
    CHECK(closes[0].rport == kUpstreamPort);
    CHECK(closes[0].direction == Direction::outbound);
    for (const Event& e : events.matching([](const Event& e) { return e.lport == kUpstreamPort; }))
        CHECK(e.direction == Direction::inbound);

    CorrelatorConfig config = CorrelatorConfig::defaults();
    config.opens_tallied = true;
    Correlator correlator(config);
    for (const Event& e : events.snapshot()) correlator.on_event(e);
    std::set<std::pair<uint16_t, bool>> keys;  // (port, outbound) of every backend
    std::string backends;
    for (const auto& b : correlator.backends()) {
        keys.insert({b.id.port, b.id.outbound});
        backends += fmt::format("{} {} lb={} other={} live={}\n", b.id.port, b.id.outbound ? "outbound" : "inbound",
                                b.connections_lb, b.connections_other, b.live_connections);
    }
    INFO(backends);
    CHECK(keys.contains({kUpstreamPort, true}));   // the caller's side: outbound to the upstream
    CHECK(keys.contains({kUpstreamPort, false}));  // the upstream's side: its listener
    CHECK_FALSE(keys.contains({kCallerPort, false}));
    CHECK_FALSE(keys.contains({kCallerPort, true}));
}

// Each CPU counts its first backends in direct slots (a per-CPU array) and the rest in the tally
// hash map: 2 x 100 backends on one CPU cannot all have a slot, and every one is counted once.
TEST_CASE("tally: more backends than a CPU's direct slots are all counted, the rest in the hash map") {
    TCPWHY_REQUIRE_ROOT();
    constexpr uint16_t kFirstPort = 20000;
    constexpr int kBackends = 100;
    static_assert(2 * kBackends > TCPWHY_TALLY_DIRECT_SLOTS);
    LbAndPod net;
    const uint32_t pod = net.pod.inode(), lb = net.lb.inode();
    cpu_set_t one_cpu, before;
    sched_getaffinity(0, sizeof(before), &before);
    CPU_ZERO(&one_cpu);
    CPU_SET(0, &one_cpu);
    sched_setaffinity(0, sizeof(one_cpu), &one_cpu);  // the opens and ends on as few CPUs as may be
    EventCollector events([&](const Event& e) { return e.netns == pod || e.netns == lb; }, tallying());
    REQUIRE(events.tracer().tallies());
    std::vector<Fd> listeners;
    for (int i = 0; i < kBackends; ++i) {
        const uint16_t port = static_cast<uint16_t>(kFirstPort + i);
        listeners.push_back(net.pod.enter([port] { return tcp_listen_v4(LbAndPod::kPodAddr, port); }));
    }
    for (int i = 0; i < kBackends; ++i) {
        const uint16_t port = static_cast<uint16_t>(kFirstPort + i);
        Fd client = net.lb.enter([port] { return tcp_connect_v4(LbAndPod::kPodAddr, port); });
        serve_and_close(client, accept_one(listeners[static_cast<size_t>(i)]));
    }
    sched_setaffinity(0, sizeof(before), &before);
    sleep_ms(1500);  // a tally read after the last end

    std::map<std::pair<uint16_t, bool>, std::pair<uint64_t, uint64_t>> counted;  // (port, outbound) -> opens, ends
    for (const Event& e : events.matching([](const Event& e) { return e.type == EventType::tally; })) {
        const bool outbound = e.direction == Direction::outbound;
        auto& [opens, ends] = counted[{outbound ? e.rport : e.lport, outbound}];
        opens += e.tally.opened;
        ends += e.tally.closed_local_first + e.tally.closed_remote_first;
    }
    std::string wrong;
    for (int i = 0; i < kBackends; ++i) {
        const uint16_t port = static_cast<uint16_t>(kFirstPort + i);
        for (bool outbound : {false, true}) {
            auto [opens, ends] = counted[{port, outbound}];
            if (opens != 1 || ends != 1)
                wrong += fmt::format("{} {}: {} opens, {} ends\n", port, outbound ? "outbound" : "inbound", opens, ends);
        }
    }
    INFO(wrong);
    CHECK(wrong.empty());
    CHECK(events.tracer().counters().tally_full == 0);
}
