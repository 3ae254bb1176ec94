// The kernel evidence of the causes beyond the keep-alive race (issue 15), from real processes
// and real sockets in namespaces this test makes: a server killed with SIGKILL and by the OOM
// killer, a SIGTERM to a process that listens, a full accept queue, a request the peer gives up
// on, a response cut short by a reset, a refused SYN, a client reusing a connection its upstream
// closed. Each test asserts the exact events, then the finding the correlator reaches from them.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "harness.h"
#include "memory_cgroup.h"
#include "tcpwhy/explain.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
namespace fs = std::filesystem;

namespace {

constexpr uint16_t kPort = 8080;

uint16_t local_port(const Fd& fd) {
    sockaddr_in sa{};
    socklen_t len = sizeof(sa);
    getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    return ntohs(sa.sin_port);
}

// A process this test started (a real Python server, in a namespace); killed and reaped at the end.
class Child {
public:
    explicit Child(const std::string& command) {
        pid_ = fork();
        if (pid_ == 0) {
            execl("/bin/sh", "sh", "-c", command.c_str(), nullptr);
            _exit(127);
        }
    }
    ~Child() {
        if (pid_ <= 0) return;
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    pid_t pid() const { return pid_; }
    void signal(int sig) const { kill(pid_, sig); }
    // The wait status once it has ended (waits up to timeout_ms); nullopt while it runs.
    std::optional<int> wait(int timeout_ms) {
        for (int waited = 0; waited <= timeout_ms; waited += 10) {
            int status = 0;
            if (waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                return status;
            }
            sleep_ms(10);
        }
        return std::nullopt;
    }

private:
    pid_t pid_ = -1;
};

std::string ready_file(const LbAndPod& net) { return fmt::format("/tmp/{}-ready", net.pod.name()); }

// A Python server in the pod namespace: listens on 10.56.5.6:8080 (listen() backlog `backlog`), then
// runs `body` (Python, with `srv` the listening socket). exec'd by the shell: its pid is the child's.
std::string python_server(const LbAndPod& net, int backlog, const std::string& body, const std::string& before = "") {
    std::string script = fmt::format(
        "import socket, signal, sys, time\n"
        "srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "srv.bind(('{}', {})); srv.listen({})\n"
        "open(sys.argv[1], 'w').write('listening')\n"
        "{}",
        LbAndPod::kPodAddr, kPort, backlog, body);
    return fmt::format("{}exec ip netns exec {} python3 -c \"$(cat <<'PY'\n{}\nPY\n)\" {}", before, net.pod.name(), script,
                       ready_file(net));
}

void wait_listening(const LbAndPod& net) {
    for (int i = 0; i < 500 && slurp(ready_file(net)) != "listening"; ++i) sleep_ms(10);
    REQUIRE(slurp(ready_file(net)) == "listening");
    fs::remove(ready_file(net));
}

bool has_python() { return std::system("command -v python3 >/dev/null") == 0; }

Correlator correlate(const std::vector<Event>& events, CorrelatorConfig config = CorrelatorConfig::defaults()) {
    Correlator c(std::move(config));
    for (const auto& e : events) c.on_event(e);
    c.finish();
    return c;
}

std::optional<Finding> finding_of(const Correlator& c, FindingKind kind, uint32_t netns) {
    for (const auto& f : c.findings())
        if (f.kind == kind && f.backend.id.netns == netns) return f;
    return std::nullopt;
}


}  // namespace

TEST_CASE("exit: a server killed with SIGKILL closes from do_exit(), and the closes say so") {
    TCPWHY_REQUIRE_ROOT();
    if (!has_python()) {
        WARN("SKIPPED: needs python3");
        return;
    }
    // Every close path reads the exit: fentry or kprobe on tcp_close where they work (the 6.1 and
    // 6.12 guests), the state change everywhere.
    TracerOptions options;
    std::string path = GENERATE(as<std::string>{}, "best", "kprobe", "tracepoint");
    options.allow_fentry = path == "best";
    options.allow_kprobe = path != "tracepoint";
    INFO("attach paths: " << path);
    LbAndPod net;
    const uint32_t pod_ns = net.pod.inode();
    EventCollector events([&](const Event& e) { return e.netns == pod_ns; }, options);
    Child server(python_server(net, 16,
                               "c, _ = srv.accept()\n"
                               "c.recv(100)\n"
                               "time.sleep(60)\n"));
    const auto server_pid = static_cast<uint32_t>(server.pid());
    wait_listening(net);
    Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); });
    const uint16_t client_port = local_port(client);
    send_all(client, "GET /slow HTTP/1.1\r\nHost: pod\r\n\r\n");
    sleep_ms(300);  // read by the server, never answered
    server.signal(SIGKILL);
    REQUIRE(server.wait(3000));

    auto closes = events.wait_for([&](const Event& e) { return e.type == EventType::close && e.rport == client_port; });
    auto unlisten = events.wait_for([&](const Event& e) {
        return e.type == EventType::state && e.old_state == TcpState::listen && e.new_state == TcpState::close &&
               e.lport == kPort;
    });
    INFO(events.dump());
    REQUIRE(closes.size() == 1);
    const Event& close = closes[0];
    CHECK(close.task_exiting);
    CHECK(exit_signal(close.exit_code) == SIGKILL);
    CHECK_FALSE(close.oom_victim);
    CHECK(close.pid == server_pid);
    CHECK(close.comm.starts_with("python"));
    CHECK(close.new_state == TcpState::fin_wait1);  // the request had been read: a FIN, no reset
    CHECK(close.bytes_rx == 33);
    CHECK(close.bytes_tx == 0);
    REQUIRE(unlisten.size() == 1);
    CHECK(unlisten[0].task_exiting);
    CHECK(exit_signal(unlisten[0].exit_code) == SIGKILL);
    CHECK(unlisten[0].acceptq_max == 16);

    // The SIGKILL went to a process that listens: reported, with this test as the sender.
    auto signals = events.wait_for([](const Event& e) { return e.type == EventType::signal; });
    REQUIRE(signals.size() == 1);
    CHECK(signals[0].signal == SIGKILL);
    CHECK(signals[0].sender_pid == static_cast<uint32_t>(getpid()));
    CHECK(signals[0].comm.starts_with("python"));

    // A SYN after the exit is refused, and says it is a SYN.
    net.lb.enter([] {
        Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        auto sa = v4(LbAndPod::kPodAddr, kPort);
        return connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    });
    // The tracepoint path before 6.10 does not see socketless resets (docs/kernels.md): there the
    // refusal is fentry's or the kprobe's to see.
    const bool sees_refusals = path != "tracepoint" || events.tracer().features().reset_tracepoint_complete();
    auto refused = events.wait_for([](const Event& e) { return e.type == EventType::reset_sent && e.syn; },
                                   sees_refusals ? 3000 : 500);
    REQUIRE(refused.size() == (sees_refusals ? 1u : 0u));
    if (sees_refusals) CHECK(refused[0].reason == ResetReason::no_socket);

    // The finding: a crash, SIGKILL, one connection with a request in flight, the port refusing after.
    auto c = correlate(events.snapshot(), *CorrelatorConfig::from_options("none"));
    auto crash = finding_of(c, FindingKind::process_crash, pod_ns);
    REQUIRE(crash);
    REQUIRE(crash->crash);
    CHECK(exit_signal(crash->crash->exit_code) == SIGKILL);
    CHECK(crash->crash->connections == 1);
    CHECK(crash->crash->in_flight == 1);
    CHECK(crash->crash->listener_closed);
    CHECK(crash->crash->refused == (sees_refusals ? 1u : 0u));
}

TEST_CASE("exit: the OOM killer's victim closes its connections with the OOM flag") {
    TCPWHY_REQUIRE_ROOT();
    if (!has_python()) {
        WARN("SKIPPED: needs python3");
        return;
    }
    LbAndPod net;
    MemoryCgroup cgroup(fmt::format("tcpwhy-oom-{}", getpid()), 96ull << 20);
    if (cgroup.path().empty()) {
        WARN("SKIPPED: no memory cgroup controller to set a limit with");
        return;
    }
    const uint32_t pod_ns = net.pod.inode();
    EventCollector events([&](const Event& e) { return e.netns == pod_ns; });
    // Joins the cgroup, answers nothing, then grows until the OOM killer takes it.
    Child server(python_server(net, 16,
                               "c, _ = srv.accept()\n"
                               "c.recv(100)\n"
                               "hog = []\n"
                               "while True: hog.append(b'x' * (1 << 20))\n",
                               fmt::format("echo $$ > {}/cgroup.procs && ", cgroup.path())));
    wait_listening(net);
    Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); });
    const uint16_t client_port = local_port(client);
    send_all(client, "GET /big HTTP/1.1\r\nHost: pod\r\n\r\n");
    auto status = server.wait(20000);
    REQUIRE(status);
    CHECK(WIFSIGNALED(*status));
    CHECK(WTERMSIG(*status) == SIGKILL);

    auto closes =
        events.wait_for([&](const Event& e) { return e.type == EventType::close && e.rport == client_port; });
    INFO(events.dump());
    REQUIRE(closes.size() == 1);
    CHECK(closes[0].task_exiting);
    CHECK(closes[0].oom_victim);
    CHECK(exit_signal(closes[0].exit_code) == SIGKILL);

    auto c = correlate(events.snapshot(), *CorrelatorConfig::from_options("none"));
    auto crash = finding_of(c, FindingKind::process_crash, pod_ns);
    REQUIRE(crash);
    CHECK(crash->crash->oom_victim);
    CHECK(explain::summary(*crash).find("OOM killer") != std::string::npos);
}

TEST_CASE("signal: a SIGTERM to a process that listens is reported, to one that does not is not") {
    TCPWHY_REQUIRE_ROOT();
    if (!has_python()) {
        WARN("SKIPPED: needs python3");
        return;
    }
    LbAndPod net;
    const uint32_t pod_ns = net.pod.inode();
    Child bystander("exec sleep 60");
    const auto bystander_pid = static_cast<uint32_t>(bystander.pid());
    EventCollector events([&](const Event& e) {
        return e.netns == pod_ns || (e.type == EventType::signal && e.pid == bystander_pid);
    });
    // On SIGTERM it stops listening, then lingers (a rollout without a preStop delay).
    Child server(python_server(net, 64,
                               "def stop(*_):\n"
                               "    srv.close()\n"
                               "    time.sleep(30)\n"
                               "    sys.exit(0)\n"
                               "signal.signal(signal.SIGTERM, stop)\n"
                               "time.sleep(60)\n"));
    wait_listening(net);
    sleep_ms(100);
    bystander.signal(SIGTERM);
    server.signal(SIGTERM);
    REQUIRE(bystander.wait(3000));

    auto unlisten = events.wait_for([&](const Event& e) {
        return e.type == EventType::state && e.old_state == TcpState::listen && e.new_state == TcpState::close;
    });
    // The LB has not heard yet: it keeps connecting for a second.
    for (int i = 0; i < 5; ++i) {
        net.lb.enter([] {
            Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            auto sa = v4(LbAndPod::kPodAddr, kPort);
            return connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
        });
        sleep_ms(200);
    }
    auto refused = events.wait_for([](const Event& e) { return e.type == EventType::reset_sent && e.syn; }, 3000, 5);
    INFO(events.dump());
    auto signals = events.matching([](const Event& e) { return e.type == EventType::signal; });
    REQUIRE(signals.size() == 1);  // not the bystander's
    CHECK(signals[0].signal == SIGTERM);
    CHECK(signals[0].pid == static_cast<uint32_t>(server.pid()));
    CHECK(signals[0].netns == pod_ns);
    CHECK(signals[0].sender_pid == static_cast<uint32_t>(getpid()));
    REQUIRE(unlisten.size() == 1);
    CHECK_FALSE(unlisten[0].task_exiting);  // closed by the handler, not by an exit
    CHECK(unlisten[0].pid == static_cast<uint32_t>(server.pid()));
    REQUIRE(refused.size() == 5);

    // The finding: a rollout, SIGTERM -> close in well under a second, the LB refused for ~0.8 s after.
    auto c = correlate(events.snapshot());
    auto drain = finding_of(c, FindingKind::rollout_drain, pod_ns);
    REQUIRE(drain);
    REQUIRE(drain->drain);
    CHECK(drain->drain->signal == SIGTERM);
    REQUIRE(drain->drain->signal_to_close_ms);
    CHECK(*drain->drain->signal_to_close_ms < 1000);
    CHECK(drain->drain->refused_lb == 5);
    CHECK(drain->drain->drain_lag_ms >= 700);
    CHECK(drain->drain->drain_lag_ms <= 1500);
}

TEST_CASE("signal: a server that listened before tracing began has its SIGTERM seen") {
    TCPWHY_REQUIRE_ROOT();
    if (!has_python()) {
        WARN("SKIPPED: needs python3");
        return;
    }
    LbAndPod net;
    const uint32_t pod_ns = net.pod.inode();
    Child server(python_server(net, 64, "signal.signal(signal.SIGTERM, lambda *_: (srv.close(), sys.exit(0)))\n"
                                        "time.sleep(60)\n"));
    wait_listening(net);
    // Tracing starts now: listen(2) is over, only the socket iterator and /proc know the owner.
    EventCollector events([&](const Event& e) { return e.netns == pod_ns; });
    auto existing = events.tracer().list_existing(true);
    const auto server_pid = static_cast<uint32_t>(server.pid());
    CHECK(std::any_of(existing.events.begin(), existing.events.end(), [&](const Event& e) {
        return e.netns == pod_ns && e.new_state == TcpState::listen && e.lport == kPort && e.pid == server_pid;
    }));
    server.signal(SIGTERM);
    auto signals = events.wait_for([](const Event& e) { return e.type == EventType::signal; });
    INFO(events.dump());
    REQUIRE(signals.size() == 1);
    CHECK(signals[0].signal == SIGTERM);
    CHECK(signals[0].pid == server_pid);
}

TEST_CASE("overflow: a full accept queue is reported with the listener's backlog") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    const uint32_t pod_ns = net.pod.inode();
    EventCollector events([&](const Event& e) { return e.netns == pod_ns; });
    // A listener that never accepts, backlog 3. TCP_DEFER_ACCEPT holds a handshake until its first
    // data, which lets two handshakes wait while the queue fills: their data then finds it full,
    // as a request does that arrives one RTT after its SYN on a real network.
    Fd listener = net.pod.enter([] {
        Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        int one = 1;
        setsockopt(fd.get(), IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof(one));
        auto sa = v4(LbAndPod::kPodAddr, kPort);
        if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) || listen(fd.get(), 3))
            throw std::runtime_error("listen");
        return fd;
    });
    auto connect_lb = [&] { return net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); }); };
    Fd late1 = connect_lb(), late2 = connect_lb();  // handshakes waiting for their data
    std::vector<Fd> queued;
    for (int i = 0; i < 4; ++i) {  // 4 > the backlog of 3: the queue is full
        queued.push_back(connect_lb());
        send_all(queued.back(), "GET / HTTP/1.1\r\n\r\n");
        sleep_ms(30);
    }
    send_all(late1, "GET / HTTP/1.1\r\n\r\n");
    send_all(late2, "GET / HTTP/1.1\r\n\r\n");
    // Dropped at once where the kernel names the drop; SYN-ACKs sent again after 1 s everywhere.
    auto overflows = events.wait_for(
        [](const Event& e) { return e.type == EventType::listen_overflow && e.overflow_how == OverflowHow::synack_retransmit; },
        4000, 2);
    overflows = events.matching([](const Event& e) { return e.type == EventType::listen_overflow; });
    auto listens = events.matching([](const Event& e) { return e.type == EventType::state && e.new_state == TcpState::listen; });
    INFO(events.dump());
    REQUIRE(listens.size() == 1);
    CHECK(listens[0].acceptq_max == 3);
    REQUIRE(overflows.size() >= 2);
    std::set<uint16_t> peers;
    for (const auto& o : overflows) {
        CHECK(o.lport == kPort);
        CHECK(o.acceptq_max == 3);
        CHECK(o.acceptq_len >= 3);
        CHECK(o.raddr.to_string() == LbAndPod::kLbAddr);
        CHECK(o.cookie == listens[0].cookie);
        peers.insert(o.rport);
    }
    CHECK(peers == std::set<uint16_t>{local_port(late1), local_port(late2)});
    bool drop_reason = events.tracer().features().listen_overflow_drop_reason.has_value();
    auto drops = std::count_if(overflows.begin(), overflows.end(), [](const auto& o) { return o.overflow_how == OverflowHow::drop; });
    if (drop_reason) CHECK(drops >= 2);  // 6.15+: each dropped ACK, as it happens
    else CHECK(drops == 0);

    auto c = correlate(events.snapshot());
    auto f = finding_of(c, FindingKind::accept_queue_overflow, pod_ns);
    REQUIRE(f);
    CHECK(f->overflow->backlog == 3);
    CHECK(f->count == overflows.size());
}

TEST_CASE("LB timeout: the peer's FIN on an unanswered request carries how long it waited") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    const uint32_t pod_ns = net.pod.inode();
    EventCollector events([&](const Event& e) { return e.netns == pod_ns; });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); });
    const uint16_t client_port = local_port(client);
    Fd server = accept_one(listener);
    send_all(client, "GET /slow HTTP/1.1\r\nHost: pod\r\n\r\n");
    REQUIRE(recv_some(server).size() == 33);
    sleep_ms(1300);  // no response: the LB gives up
    client.reset();
    auto fins = events.wait_for([&](const Event& e) {
        return e.type == EventType::state && e.new_state == TcpState::close_wait && e.rport == client_port;
    });
    INFO(events.dump());
    REQUIRE(fins.size() == 1);
    CHECK(fins[0].bytes_rx == 33);
    CHECK(fins[0].bytes_tx == 0);
    CHECK(fins[0].idle_rx_ms >= 1250);
    CHECK(fins[0].idle_rx_ms <= 1500);

    auto c = correlate(events.snapshot());
    auto f = finding_of(c, FindingKind::lb_response_timeout, pod_ns);
    REQUIRE(f);
    CHECK(f->lb_timeout->connections == 1);
    CHECK(f->lb_timeout->waited.p50_ms >= 1250);
}

TEST_CASE("cut short: a reset with response bytes unacknowledged carries the send queue") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    const uint32_t pod_ns = net.pod.inode();
    EventCollector events([&](const Event& e) { return e.netns == pod_ns; });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    Fd client = net.lb.enter([] {
        Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        int small = 4096;  // the LB reads slowly: the response backs up in the backend's send queue
        setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        auto sa = v4(LbAndPod::kPodAddr, kPort);
        if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa))) throw std::runtime_error("connect");
        return fd;
    });
    const uint16_t client_port = local_port(client);
    Fd server = accept_one(listener);
    send_all(client, "POST /upload HTTP/1.1\r\nContent-Length: 100000\r\n\r\nbody...");
    sleep_ms(100);
    // A response bigger than what the peer takes, then close() with the body unread: a reset.
    int flags = fcntl(server.get(), F_GETFL);
    fcntl(server.get(), F_SETFL, flags | O_NONBLOCK);
    std::string chunk(65536, 'r');
    for (int i = 0; i < 16; ++i) send(server.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
    server.reset();
    auto resets = events.wait_for([&](const Event& e) { return e.type == EventType::reset_sent && e.rport == client_port; });
    INFO(events.dump());
    REQUIRE(resets.size() >= 1);
    CHECK(resets[0].send_queue_bytes > 0);
    CHECK(resets[0].unread_bytes > 0);

    auto c = correlate(events.snapshot());
    auto f = finding_of(c, FindingKind::response_cut_short, pod_ns);
    REQUIRE(f);
    REQUIRE(f->evidence);
    CHECK(f->evidence->send_queue_bytes == resets[0].send_queue_bytes);
}

TEST_CASE("outbound pool: a client reusing a connection its upstream closed as idle") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    const uint32_t pod_ns = net.pod.inode();
    EventCollector events([&](const Event& e) { return e.netns == pod_ns; });
    // The pod is the client here; its upstream listens in the other namespace.
    Fd upstream = net.lb.enter([] { return tcp_listen_v4(LbAndPod::kLbAddr, 9090); });
    Fd client = net.pod.enter([] { return tcp_connect_v4(LbAndPod::kLbAddr, 9090); });
    const uint16_t client_port = local_port(client);
    Fd served = accept_one(upstream);
    send_all(client, "GET / HTTP/1.1\r\n\r\n");
    REQUIRE_FALSE(recv_some(served).empty());
    send_all(served, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    REQUIRE_FALSE(recv_some(client).empty());
    sleep_ms(1200);
    served.reset();  // the upstream's idle timeout
    sleep_ms(100);
    send_all(client, "GET / HTTP/1.1\r\n\r\n");  // the pool reuses it
    auto reset = events.wait_for([&](const Event& e) { return e.type == EventType::reset_recv && e.lport == client_port; });
    auto fins = events.matching([&](const Event& e) {
        return e.type == EventType::state && e.new_state == TcpState::close_wait && e.lport == client_port;
    });
    INFO(events.dump());
    REQUIRE(reset.size() == 1);
    REQUIRE(fins.size() == 1);
    CHECK(fins[0].idle_rx_ms >= 1150);
    CHECK(fins[0].idle_tx_ms >= 1150);

    auto c = correlate(events.snapshot());
    auto f = finding_of(c, FindingKind::outbound_pool_race, pod_ns);
    REQUIRE(f);
    REQUIRE(f->upstream);
    CHECK(f->upstream->upstream_idle_close.p50_ms >= 1150);
    CHECK(f->upstream->upstream_idle_close.p50_ms <= 1400);
}

// The live samples' listing: the sockets processes hold in every namespace, each once with its
// process, read without entering any namespace (what the daemon can still do after its drop).
TEST_CASE("held sockets: every namespace's open connections with their process, a socket forked into two once") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    const uint32_t pod_ns = net.pod.inode();
    EventCollector events([](const Event&) { return false; });
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); });
    Fd served = accept_one(listener);
    pid_t child = fork();  // holds the same listener and connection
    if (child == 0) {
        pause();
        _exit(0);
    }
    sleep_ms(300);  // quiet a while: the idle times below count it
    auto listing = events.tracer().list_existing(false);
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);

    std::map<std::pair<uint32_t, uint16_t>, std::vector<Event>> by_local;  // (netns, local port)
    for (const Event& e : listing.events) by_local[{e.netns, e.lport}].push_back(e);
    const auto& on_port = by_local[{pod_ns, kPort}];  // the listener and the served end
    REQUIRE(on_port.size() == 2);
    for (const Event& e : on_port) {
        INFO(to_string(e.new_state) << " pid " << e.pid << " " << e.comm);
        // one of its two holders (the first the walk meets): the fork's copy is the same socket
        CHECK((e.pid == static_cast<uint32_t>(getpid()) || e.pid == static_cast<uint32_t>(child)));
        CHECK(!e.comm.empty());
    }
    auto served_end = std::find_if(on_port.begin(), on_port.end(),
                                   [](const Event& e) { return e.new_state == TcpState::established; });
    REQUIRE(served_end != on_port.end());
    CHECK(served_end->raddr.to_string() == LbAndPod::kLbAddr);
    CHECK(std::min(served_end->idle_rx_ms, served_end->idle_tx_ms) >= 250);
    // the LB's end, in the other namespace
    CHECK(std::any_of(listing.events.begin(), listing.events.end(), [&](const Event& e) {
        return e.netns == net.lb.inode() && e.rport == kPort && e.new_state == TcpState::established;
    }));
}
