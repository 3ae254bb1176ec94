// Any pod of the cluster can reach the daemon's :9090. The daemon, run as the pod runs it
// (the DaemonSet's capabilities and args, from deploy/), must keep answering the kubelet's
// /healthz within a second and keep up with the kernel's events while other pods hold
// hundreds of idle connections, trickle requests and never read their answers.
#include <arpa/inet.h>
#include <poll.h>

#include <atomic>
#include <thread>

#include "daemon_process.h"
#include "harness.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
using Clock = std::chrono::steady_clock;

namespace {

Fd connect_http(const std::string& address, int receive_buffer = 0) {
    auto colon = address.rfind(':');
    sockaddr_in sa = v4(address.substr(0, colon).c_str(), static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
    Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (receive_buffer) setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return {};
    return fd;
}

// GET /healthz on a new connection; milliseconds to the whole "ok" answer, -1 when none came in 3 s.
int64_t healthz_ms(const std::string& address) {
    auto start = Clock::now();
    auto elapsed = [&] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    };
    Fd fd = connect_http(address);
    if (!fd) return -1;
    std::string request = "GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n", answer;
    if (send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) return -1;
    char buf[4096];
    while (elapsed() < 3000) {
        pollfd p{fd.get(), POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
        if (n <= 0) break;
        answer.append(buf, static_cast<size_t>(n));
    }
    return answer.find("200 OK") != std::string::npos && answer.ends_with("\r\n\r\nok\n") ? elapsed() : -1;
}

}  // namespace

TEST_CASE("hostile neighbours: idle, trickling and non-reading clients cannot stall /healthz or the event loop") {
    TCPWHY_REQUIRE_ROOT();
    if (std::system("command -v setpriv >/dev/null 2>&1") != 0) {
        WARN("SKIPPED: setpriv (util-linux) is needed to start the daemon with the DaemonSet's capabilities");
        return;
    }
    Netns ns("hostile");
    TempDir dir;
    DaemonProcess daemon(dir.path, manifest_daemon_args(), {}, with_manifest_capabilities());
    INFO(daemon.stderr_text());
    const std::string address = daemon.metrics_addr;
    std::string before = daemon.get("/metrics");
    const double closes_before = metric(before, "tcpwhy_events_total", {"type=\"close\""});

    // Many backends make /metrics long enough to fill a slow reader's window.
    std::vector<Fd> backends = ns.enter([] {
        std::vector<Fd> fds;
        for (uint16_t port = 31000; port < 31150; ++port) {
            Fd listener = tcp_listen_v4("127.0.0.1", port);
            fds.push_back(tcp_connect_v4("127.0.0.1", port));
            fds.push_back(accept_one(listener));
        }
        return fds;
    });

    constexpr int kIdle = 400, kTricklers = 100, kSlowReaders = 10;
    std::vector<Fd> idle, tricklers, readers;
    for (int i = 0; i < kIdle; ++i)
        if (Fd fd = connect_http(address)) idle.push_back(std::move(fd));
    for (int i = 0; i < kTricklers; ++i)
        if (Fd fd = connect_http(address)) tricklers.push_back(std::move(fd));
    for (int i = 0; i < kSlowReaders; ++i) {
        if (Fd fd = connect_http(address, 4096)) {
            send_all(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            readers.push_back(std::move(fd));
        }
    }
    CHECK(idle.size() + tricklers.size() + readers.size() >= kIdle + kTricklers + kSlowReaders - 10);

    std::atomic<bool> stop{false};
    // A byte every 50 ms on each trickling connection, never a whole request; reconnecting
    // when the server closes one, as a determined neighbour would.
    std::thread trickle([&] {
        while (!stop) {
            for (auto& fd : tricklers)
                if (send(fd.get(), "X", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) fd = connect_http(address);
            sleep_ms(50);
        }
    });
    // Meanwhile the node's traffic: connections opened and closed in a namespace.
    constexpr int kChurn = 2000;
    std::thread churn([&] {
        ns.enter([] {
            Fd listener = tcp_listen_v4("127.0.0.1", 32000);
            churn_quiet(listener, "127.0.0.1", 32000, kChurn);  // each its own events, as the check counts them
            return 0;
        });
    });

    // The kubelet's probe, every 200 ms for 8 s: each within a second.
    std::vector<int64_t> probes;
    auto until = Clock::now() + std::chrono::seconds(8);
    while (Clock::now() < until) {
        probes.push_back(healthz_ms(address));
        sleep_ms(200);
    }
    churn.join();
    stop = true;
    trickle.join();
    int64_t worst = 0, failed = 0;
    for (auto ms : probes) {
        if (ms < 0) ++failed;
        worst = std::max(worst, ms);
    }
    INFO(probes.size() << " probes, " << failed << " failed, slowest " << worst << " ms");
    CHECK(probes.size() >= 20);
    CHECK(failed == 0);
    CHECK(worst < 1000);

    // The event loop kept up: nothing dropped in the kernel, every close counted.
    idle.clear();
    tricklers.clear();
    readers.clear();
    std::string after;
    for (int i = 0; i < 20; ++i) {
        sleep_ms(250);
        after = daemon.get("/metrics");
        if (metric(after, "tcpwhy_events_total", {"type=\"close\""}) >= closes_before + kChurn) break;
    }
    INFO(after);
    CHECK(metric(after, "tcpwhy_events_dropped_total", {"where=\"ringbuf_full\""}) == 0);
    CHECK(metric(after, "tcpwhy_events_dropped_total", {"where=\"malformed\""}) == 0);
    CHECK(metric(after, "tcpwhy_events_total", {"type=\"close\""}) >= closes_before + kChurn);
    CHECK(daemon.stop(SIGTERM) == 0);
}
