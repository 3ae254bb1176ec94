// Every watched socket option, set on a real accepted socket, as tcpwhy reports it.
#include "harness.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

TEST_CASE("setsockopt: every watched option with its value, carried to the close") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    EventCollector events([&](const Event& e) { return e.netns == net.pod.inode(); });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, 8081); });
    Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, 8081); });
    Fd server = accept_one(listener);
    int fd = server.get();

    auto set_int = [fd](int level, int name, int value) {
        REQUIRE(setsockopt(fd, level, name, &value, sizeof(value)) == 0);
    };
    set_int(SOL_SOCKET, SO_KEEPALIVE, 1);
    set_int(IPPROTO_TCP, TCP_KEEPIDLE, 61);
    set_int(IPPROTO_TCP, TCP_KEEPINTVL, 7);
    set_int(IPPROTO_TCP, TCP_KEEPCNT, 4);
    set_int(IPPROTO_TCP, TCP_USER_TIMEOUT, 12345);
    set_int(IPPROTO_TCP, TCP_LINGER2, 9);
    set_int(IPPROTO_TCP, TCP_DEFER_ACCEPT, 3);
    timeval rcv{2, 500000}, snd{3, 0};
    REQUIRE(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv)) == 0);
    REQUIRE(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd)) == 0);
    linger lg{1, 5};
    REQUIRE(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
    int nodelay = 1;  // not watched: must not appear
    REQUIRE(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay)) == 0);

    auto opts = events.wait_for(of_type(EventType::setsockopt), 3000, 10);
    INFO(events.dump());
    REQUIRE(opts.size() == 10);
    auto value_of = [&](SockOpt opt) -> std::pair<int64_t, int64_t> {
        for (const auto& e : opts)
            if (e.opt == opt) return {e.value, e.value2};
        FAIL("no setsockopt event for " << to_string(opt));
        return {};
    };
    CHECK(value_of(SockOpt::so_keepalive).first == 1);
    CHECK(value_of(SockOpt::tcp_keepidle).first == 61);
    CHECK(value_of(SockOpt::tcp_keepintvl).first == 7);
    CHECK(value_of(SockOpt::tcp_keepcnt).first == 4);
    CHECK(value_of(SockOpt::tcp_user_timeout).first == 12345);
    CHECK(value_of(SockOpt::tcp_linger2).first == 9);
    CHECK(value_of(SockOpt::tcp_defer_accept).first == 3);
    CHECK(value_of(SockOpt::so_rcvtimeo).first == 2'500'000);  // set as SO_RCVTIMEO_OLD (glibc's timeval)
    CHECK(value_of(SockOpt::so_sndtimeo).first == 3'000'000);
    CHECK(value_of(SockOpt::so_linger) == std::pair<int64_t, int64_t>{1, 5});
    for (const auto& e : opts) {
        CHECK(e.pid == static_cast<uint32_t>(getpid()));
        CHECK(e.cookie != 0);
        CHECK(e.lport == 8081);
        CHECK(e.raddr.to_string() == LbAndPod::kLbAddr);
        CHECK(e.netns == net.pod.inode());
    }

    server.reset();
    auto closes = events.wait_for(of_type(EventType::close));
    REQUIRE(closes.size() == 1);
    const SockOpts& in_force = closes[0].opts;
    CHECK(in_force.keepalive);
    CHECK(in_force.keepidle_s == 61);
    CHECK(in_force.keepintvl_s == 7);
    CHECK(in_force.keepcnt == 4);
    CHECK(in_force.user_timeout_ms == 12345);
    CHECK(in_force.linger2_s == 9);
    CHECK(in_force.defer_accept_s == 3);
    CHECK(in_force.rcvtimeo_us == 2'500'000);
    CHECK(in_force.sndtimeo_us == 3'000'000);
    CHECK(in_force.linger_onoff);
    CHECK(in_force.linger_s == 5);
}

TEST_CASE("setsockopt: receive and send timeouts reach the backend's option changes") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    EventCollector events([&](const Event& e) { return e.netns == net.pod.inode(); });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, 8083); });
    Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, 8083); });
    Fd server = accept_one(listener);
    timeval rcv{4, 0}, snd{1, 250000};
    REQUIRE(setsockopt(server.get(), SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv)) == 0);
    REQUIRE(setsockopt(server.get(), SOL_SOCKET, SO_SNDTIMEO, &snd, sizeof(snd)) == 0);
    rcv.tv_sec = 9;  // a change: the backend's option changes keep what it replaced
    REQUIRE(setsockopt(server.get(), SOL_SOCKET, SO_RCVTIMEO, &rcv, sizeof(rcv)) == 0);
    auto opts = events.wait_for(of_type(EventType::setsockopt), 3000, 3);
    INFO(events.dump());
    REQUIRE(opts.size() == 3);

    Correlator correlator;
    for (const auto& e : events.snapshot()) correlator.on_event(e);
    auto backends = correlator.backends();
    auto backend = std::find_if(backends.begin(), backends.end(), [](const BackendProfile& b) { return b.id.port == 8083; });
    REQUIRE(backend != backends.end());
    std::vector<std::tuple<SockOpt, int64_t, std::optional<int64_t>>> changes;
    for (const auto& c : backend->opt_changes) changes.emplace_back(c.opt, c.value, c.previous);
    CHECK(changes == std::vector<std::tuple<SockOpt, int64_t, std::optional<int64_t>>>{
                         {SockOpt::so_rcvtimeo, 4'000'000, std::nullopt},
                         {SockOpt::so_sndtimeo, 1'250'000, std::nullopt},
                         {SockOpt::so_rcvtimeo, 9'000'000, 4'000'000}});
    CHECK(backend->opts.rcvtimeo_us == 9'000'000);
    CHECK(backend->opts.sndtimeo_us == 1'250'000);
}

TEST_CASE("options set on the listener are inherited by accepted sockets") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    EventCollector events([&](const Event& e) { return e.netns == net.pod.inode(); });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, 8082); });
    int idle = 42;
    REQUIRE(setsockopt(listener.get(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) == 0);
    Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, 8082); });
    Fd server = accept_one(listener);
    server.reset();
    auto closes = events.wait_for(of_type(EventType::close));
    INFO(events.dump());
    REQUIRE(closes.size() == 1);
    CHECK(closes[0].opts.has(SockOpt::tcp_keepidle));
    CHECK(closes[0].opts.keepidle_s == 42);
    CHECK(closes[0].pid == static_cast<uint32_t>(getpid()));
}
