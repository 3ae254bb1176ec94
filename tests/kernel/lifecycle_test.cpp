// Real sockets in namespaces this test makes; asserts the exact events tcpwhy's kernel programs emit.
#include <set>

#include "harness.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {

constexpr uint16_t kPort = 8080;

bool same_conn(const Event& e, uint16_t lport, uint16_t rport) { return e.lport == lport && e.rport == rport; }

uint16_t local_port(const Fd& fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    return ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                         : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

// One accepted connection lb -> pod:8080 with a request and a response exchanged.
struct Connection {
    Fd client, server;
    uint16_t client_port = 0;
};

Connection open_connection(const LbAndPod& net, const Fd& listener) {
    Connection c;
    c.client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); });
    c.server = accept_one(listener);
    c.client_port = local_port(c.client);
    send_all(c.client, "GET / HTTP/1.1\r\nHost: pod\r\n\r\n");
    REQUIRE(recv_some(c.server).size() == 29);
    send_all(c.server, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    REQUIRE_FALSE(recv_some(c.client).empty());
    return c;
}

}  // namespace

TEST_CASE("server-side orderly close: close event with idle time, owner and netns") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    uint32_t pod_ns = net.pod.inode();
    EventCollector events([&](const Event& e) { return e.netns == pod_ns || e.netns == net.lb.inode(); });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    auto conn = open_connection(net, listener);

    sleep_ms(300);
    conn.server.reset();  // the backend closes first

    auto closes = events.wait_for([&](const Event& e) {
        return e.type == EventType::close && same_conn(e, kPort, conn.client_port);
    });
    INFO(events.dump());
    REQUIRE(closes.size() == 1);
    const Event& close = closes[0];
    CHECK(close.old_state == TcpState::established);
    CHECK(close.new_state == TcpState::fin_wait1);
    CHECK_FALSE(close.abort);
    CHECK(close.netns == pod_ns);
    CHECK(close.laddr.to_string() == LbAndPod::kPodAddr);
    CHECK(close.raddr.to_string() == LbAndPod::kLbAddr);
    CHECK(close.idle_rx_ms >= 290);
    CHECK(close.idle_rx_ms <= 400);
    CHECK(close.idle_tx_ms >= 290);
    CHECK(close.idle_tx_ms <= 400);
    CHECK(close.unread_bytes == 0);
    CHECK(close.bytes_rx == 29);
    CHECK(close.bytes_tx == 38);
    CHECK(close.pid == static_cast<uint32_t>(getpid()));
    CHECK(close.comm == "kernel_tests");
    CHECK(close.cookie != 0);

    // the peer sees the FIN: its socket goes ESTABLISHED -> CLOSE_WAIT, in the lb namespace
    auto peer = events.wait_for([&](const Event& e) {
        return e.type == EventType::state && e.new_state == TcpState::close_wait &&
               same_conn(e, conn.client_port, kPort);
    });
    REQUIRE(peer.size() == 1);
    CHECK(peer[0].netns == net.lb.inode());
    // State changes of the server socket share its cookie. By default only those the correlator
    // needs leave the kernel: how it opened and who closed first; not FIN_WAIT1->FIN_WAIT2, nor the
    // end after our FIN (docs/trace-format.md, "Which state changes"). The orphaned socket moves
    // FIN_WAIT2->CLOSE (timewait) as soon as the peer ACKs the FIN, which the peer's CLOSE_WAIT
    // above follows: give it time to show up if it were sent.
    sleep_ms(200);
    auto server_states = events.matching([&](const Event& e) {
        return e.type == EventType::state && e.cookie == close.cookie;
    });
    // Where the close event is built from the state change itself (no fentry/kprobe on tcp_close),
    // it stands for ESTABLISHED->FIN_WAIT1: the state event is not sent beside it.
    std::erase_if(server_states, [](const Event& e) {
        return e.old_state == TcpState::established && e.new_state == TcpState::fin_wait1;
    });
    REQUIRE(server_states.size() == 1);
    // the child's first: SYN_RECV->ESTABLISHED (its LISTEN->SYN_RECV carries the listener's cookie on 6.1)
    CHECK(server_states[0].old_state == TcpState::syn_recv);
    CHECK(server_states[0].new_state == TcpState::established);
    // softirq: no task owns the moment, but the socket knows the cgroup it was created in
    CHECK(server_states[0].pid == 0);
    CHECK(server_states[0].cgroup_id == close.cgroup_id);
}

TEST_CASE("all state changes on request: the same connection with every transition") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    TracerOptions options;
    options.all_state_changes = true;
    EventCollector events([&](const Event& e) { return e.netns == net.pod.inode() || e.netns == net.lb.inode(); },
                          options);
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    auto conn = open_connection(net, listener);
    conn.server.reset();

    auto ended = events.wait_for([&](const Event& e) {
        return e.type == EventType::state && e.new_state == TcpState::close && same_conn(e, kPort, conn.client_port);
    });
    INFO(events.dump());
    REQUIRE(ended.size() == 1);
    sleep_ms(50);
    auto server_states = events.matching([&](const Event& e) {
        return e.type == EventType::state && e.cookie == ended[0].cookie;
    });
    const std::vector<std::pair<TcpState, TcpState>> expected = {{TcpState::listen, TcpState::syn_recv},
                                                                 {TcpState::syn_recv, TcpState::established},
                                                                 {TcpState::established, TcpState::fin_wait1},
                                                                 {TcpState::fin_wait1, TcpState::fin_wait2},
                                                                 {TcpState::fin_wait2, TcpState::close}};
    // Kernels that run LISTEN->SYN_RECV before the clone's cookie is reset (6.1) give it the
    // listener's cookie: then the child's own list starts at SYN_RECV->ESTABLISHED.
    size_t skip = !server_states.empty() && server_states[0].old_state == TcpState::syn_recv ? 1 : 0;
    REQUIRE(server_states.size() + skip == expected.size());
    for (size_t i = 0; i < server_states.size(); ++i) {
        CHECK(server_states[i].old_state == expected[i + skip].first);
        CHECK(server_states[i].new_state == expected[i + skip].second);
    }
    auto client_established = events.matching([&](const Event& e) {
        return e.type == EventType::state && e.old_state == TcpState::syn_sent &&
               e.new_state == TcpState::established && same_conn(e, conn.client_port, kPort);
    });
    CHECK(client_established.size() == 1);
}

TEST_CASE("client-side orderly close: the server's close leaves CLOSE_WAIT") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    EventCollector events([&](const Event& e) { return e.netns == net.pod.inode(); });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    auto conn = open_connection(net, listener);

    conn.client.reset();
    REQUIRE(recv_some(conn.server).empty());  // EOF
    conn.server.reset();

    auto closes = events.wait_for([&](const Event& e) {
        return e.type == EventType::close && same_conn(e, kPort, conn.client_port);
    });
    INFO(events.dump());
    REQUIRE(closes.size() == 1);
    CHECK(closes[0].old_state == TcpState::close_wait);
    CHECK(closes[0].new_state == TcpState::last_ack);
    CHECK_FALSE(closes[0].abort);
    // no reset in an orderly close
    sleep_ms(100);
    CHECK(events.matching(of_type(EventType::reset_sent)).empty());
}

TEST_CASE("close after the peer's FIN: the FIN is not counted as data, read or not") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    EventCollector events([&](const Event& e) { return e.netns == net.pod.inode(); });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    auto read_eof = open_connection(net, listener);
    auto unread_eof = open_connection(net, listener);

    read_eof.client.reset();
    unread_eof.client.reset();
    REQUIRE(recv_some(read_eof.server).empty());  // this one reads the end of file
    sleep_ms(50);                                  // the other's FIN has arrived too, unread
    read_eof.server.reset();
    unread_eof.server.reset();

    for (const auto* conn : {&read_eof, &unread_eof}) {
        auto closes = events.wait_for([&](const Event& e) {
            return e.type == EventType::close && same_conn(e, kPort, conn->client_port);
        });
        INFO(events.dump());
        REQUIRE(closes.size() == 1);
        CHECK(closes[0].old_state == TcpState::close_wait);
        CHECK(closes[0].new_state == TcpState::last_ack);  // a FIN: the kernel did not abort
        CHECK_FALSE(closes[0].abort);
        CHECK(closes[0].unread_bytes == 0);
        CHECK(closes[0].bytes_rx == 29);  // the request, not its FIN
    }
}

TEST_CASE("server close with unread data: abort and TCP_ABORT_ON_CLOSE reset") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    EventCollector events([&](const Event& e) { return e.netns == net.pod.inode(); });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    auto conn = open_connection(net, listener);

    send_all(conn.client, std::string(123, 'x'));
    sleep_ms(50);  // arrives, unread
    conn.server.reset();

    auto resets = events.wait_for(of_type(EventType::reset_sent));
    INFO(events.dump());
    REQUIRE(resets.size() == 1);
    auto closes = events.matching(of_type(EventType::close));
    REQUIRE(closes.size() == 1);
    CHECK(closes[0].abort);
    CHECK(closes[0].new_state == TcpState::close);
    CHECK(closes[0].unread_bytes == 123);
    const Event& rst = resets[0];
    CHECK(rst.reason == ResetReason::tcp_abort_on_close);
    // named by the kernel from 6.10, inferred from the socket before
    CHECK(rst.reason_inferred == !events.tracer().features().reset_tracepoint_complete());
    CHECK(rst.sk_kind == SockKind::full);
    CHECK(rst.cookie == closes[0].cookie);
    CHECK(rst.lport == kPort);
    CHECK(rst.rport == conn.client_port);
    CHECK(rst.raddr.to_string() == LbAndPod::kLbAddr);
    CHECK(rst.unread_bytes == 123);
}

TEST_CASE("SO_LINGER {1,0} close: setsockopt event, abort, TCP_STATE reset carrying the option") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    EventCollector events([&](const Event& e) { return e.netns == net.pod.inode(); });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    auto conn = open_connection(net, listener);

    linger lg{1, 0};
    REQUIRE(setsockopt(conn.server.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
    conn.server.reset();

    auto resets = events.wait_for(of_type(EventType::reset_sent));
    INFO(events.dump());
    REQUIRE(resets.size() == 1);
    auto opts = events.matching(of_type(EventType::setsockopt));
    REQUIRE(opts.size() == 1);
    CHECK(opts[0].opt == SockOpt::so_linger);
    CHECK(opts[0].value == 1);
    CHECK(opts[0].value2 == 0);
    CHECK(opts[0].pid == static_cast<uint32_t>(getpid()));
    CHECK(opts[0].cookie == resets[0].cookie);
    CHECK(opts[0].lport == kPort);
    CHECK(opts[0].rport == conn.client_port);

    CHECK(resets[0].reason == ResetReason::tcp_state);
    CHECK(resets[0].rport == conn.client_port);
    CHECK(resets[0].opts.has(SockOpt::so_linger));
    CHECK(resets[0].opts.linger_onoff);
    CHECK(resets[0].opts.linger_s == 0);
    auto closes = events.matching(of_type(EventType::close));
    REQUIRE(closes.size() == 1);
    CHECK(closes[0].abort);
    CHECK(closes[0].unread_bytes == 0);
    CHECK(closes[0].rport == conn.client_port);
}

TEST_CASE("keep-alive race: idle close by the backend, the next request is reset") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    EventCollector events([&](const Event& e) { return e.netns == net.pod.inode(); });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    auto conn = open_connection(net, listener);

    constexpr int kIdleMs = 500;
    sleep_ms(kIdleMs);
    conn.server.reset();  // the backend's idle timeout fires
    // the load balancer does not know yet: its next request arrives after the FIN
    send_all(conn.client, "GET /next HTTP/1.1\r\nHost: pod\r\n\r\n");

    auto resets = events.wait_for(of_type(EventType::reset_sent));
    INFO(events.dump());
    REQUIRE(resets.size() == 1);
    auto closes = events.matching(of_type(EventType::close));
    REQUIRE(closes.size() == 1);
    const Event& close = closes[0];
    CHECK(close.new_state == TcpState::fin_wait1);
    CHECK(close.idle_rx_ms >= kIdleMs - 10);
    CHECK(close.idle_rx_ms <= kIdleMs + 100);

    const Event& rst = resets[0];
    CHECK(rst.cookie == close.cookie);  // also for a timewait socket
    bool race_reason = rst.reason == ResetReason::tcp_abort_on_data || rst.reason == ResetReason::tcp_timewait_socket;
    CHECK(race_reason);
    CHECK(rst.lport == kPort);
    CHECK(rst.rport == conn.client_port);
    CHECK(rst.laddr.to_string() == LbAndPod::kPodAddr);
    CHECK(rst.raddr.to_string() == LbAndPod::kLbAddr);
    CHECK(rst.netns == net.pod.inode());
}

TEST_CASE("SYN to a closed port: socketless NO_SOCKET reset with addresses from the segment") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    EventCollector events([&](const Event& e) { return e.netns == net.pod.inode(); });
    net.lb.enter([] {
        Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        auto sa = v4(LbAndPod::kPodAddr, 9);
        CHECK(connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == -1);
        CHECK(errno == ECONNREFUSED);
        return 0;
    });
    auto resets = events.wait_for(of_type(EventType::reset_sent));
    INFO(events.dump());
    REQUIRE(resets.size() == 1);
    CHECK(resets[0].reason == ResetReason::no_socket);
    CHECK(resets[0].sk_kind == SockKind::none);
    CHECK(resets[0].cookie == 0);
    CHECK(resets[0].has_skb);
    CHECK(resets[0].laddr.to_string() == LbAndPod::kPodAddr);
    CHECK(resets[0].lport == 9);
    CHECK(resets[0].raddr.to_string() == LbAndPod::kLbAddr);
    CHECK(resets[0].rport != 0);
}

TEST_CASE("IPv6 on loopback: states, close and reset with IPv6 addresses") {
    TCPWHY_REQUIRE_ROOT();
    Netns ns("v6");
    EventCollector events([&](const Event& e) { return e.netns == ns.inode(); });
    auto [client, server] = ns.enter([] {
        Fd listener(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in6 sa{};
        sa.sin6_family = AF_INET6;
        sa.sin6_port = htons(8443);
        sa.sin6_addr = in6addr_loopback;
        REQUIRE(bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
        REQUIRE(listen(listener.get(), 4) == 0);
        Fd c(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(connect(c.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
        return std::pair(std::move(c), accept_one(listener));
    });
    send_all(client, "hello");
    sleep_ms(20);
    server.reset();  // unread data: abort + reset

    auto resets = events.wait_for(of_type(EventType::reset_sent));
    INFO(events.dump());
    REQUIRE(resets.size() == 1);
    CHECK(resets[0].laddr.family == 6);
    CHECK(resets[0].laddr.to_string() == "::1");
    CHECK(resets[0].raddr.to_string() == "::1");
    CHECK(resets[0].lport == 8443);
    CHECK(resets[0].reason == ResetReason::tcp_abort_on_close);
    auto closes = events.matching(of_type(EventType::close));
    REQUIRE(closes.size() == 1);
    CHECK(closes[0].laddr.to_string() == "::1");
    CHECK(closes[0].unread_bytes == 5);
}

namespace {

// One TCP segment (ACK|PSH with data) from src_port to dst_port on 127.0.0.1, sent through a raw
// socket in the calling thread's namespace: a late segment of a connection neither side has any more.
void send_stray_segment(uint16_t src_port, uint16_t dst_port) {
    Fd raw(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_TCP));
    REQUIRE(raw);
    struct Segment {
        tcphdr tcp;
        char data[4];
    } seg{};
    seg.tcp.source = htons(src_port);
    seg.tcp.dest = htons(dst_port);
    seg.tcp.seq = htonl(1000);
    seg.tcp.ack_seq = htonl(2000);
    seg.tcp.doff = sizeof(tcphdr) / 4;
    seg.tcp.ack = 1;
    seg.tcp.psh = 1;
    seg.tcp.window = htons(1024);
    std::memcpy(seg.data, "late", 4);
    // The checksum over the IPv4 pseudo-header (127.0.0.1 both ways, protocol 6, length) and the segment.
    uint32_t sum = 0x7f00 + 0x0001 + 0x7f00 + 0x0001 + IPPROTO_TCP + sizeof(seg);
    const auto* words = reinterpret_cast<const uint16_t*>(&seg);
    for (size_t i = 0; i < sizeof(seg) / 2; ++i) sum += ntohs(words[i]);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    seg.tcp.check = htons(static_cast<uint16_t>(~sum));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(sendto(raw.get(), &seg, sizeof(seg), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)) ==
            static_cast<ssize_t>(sizeof(seg)));
}

}  // namespace

TEST_CASE("dual-stack listener: the listener's reset for a late segment is the aborted connection's, one address form") {
    TCPWHY_REQUIRE_ROOT();
    Netns ns("dual");
    EventCollector events([&](const Event& e) { return e.netns == ns.inode(); });
    constexpr uint16_t kPort = 8444;
    // A listener on [::] that takes IPv4 too (a Go server on :8080 is one): its sockets' events
    // carry IPv4-mapped addresses, the listener's reply to a stray IPv4 segment plain IPv4.
    Fd listener = ns.enter([] {
        Fd fd(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
        int v6only = 0;
        REQUIRE(setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) == 0);
        sockaddr_in6 sa{};
        sa.sin6_family = AF_INET6;
        sa.sin6_port = htons(kPort);
        sa.sin6_addr = in6addr_any;
        REQUIRE(bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
        REQUIRE(listen(fd.get(), 4) == 0);
        return fd;
    });
    Fd client = ns.enter([] { return tcp_connect_v4("127.0.0.1", kPort); });
    Fd server = accept_one(listener);
    sockaddr_in client_addr{};
    socklen_t len = sizeof(client_addr);
    REQUIRE(getsockname(client.get(), reinterpret_cast<sockaddr*>(&client_addr), &len) == 0);
    const uint16_t client_port = ntohs(client_addr.sin_port);
    // SO_LINGER {1,0}: the close is an abort, so no TIME_WAIT socket holds the tuple afterwards...
    linger lg{1, 0};
    REQUIRE(setsockopt(server.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
    server.reset();
    sleep_ms(20);
    client.reset();
    // ...and a late segment of that connection reaches the listener, which answers with a reset of its own.
    ns.enter([client_port] { send_stray_segment(client_port, kPort); });
    auto resets = events.wait_for(of_type(EventType::reset_sent), 3000, 2);
    INFO(events.dump());
    REQUIRE(resets.size() >= 2);
    CHECK(resets.back().sk_state == TcpState::listen);  // the listener answered the late segment
    for (const auto& e : events.snapshot())
        if (e.lport == kPort && e.rport) CHECK(e.raddr.to_string() == "127.0.0.1");  // never ::ffff:127.0.0.1

    Correlator correlator;
    for (const auto& e : events.snapshot()) correlator.on_event(e);
    correlator.finish();
    std::set<FindingKind> kinds;
    for (const auto& f : correlator.findings()) kinds.insert(f.kind);
    CHECK(kinds.count(FindingKind::linger_abort) == 1);  // the server's abort
    CHECK(kinds.count(FindingKind::other) == 0);         // the listener's reset is its tail, not unexplained
    CHECK(correlator.counts().follow_up_resets >= 1);
}
