// Kernel test harness: real network namespaces, real sockets, the real tracer.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tcpwhy/fd.h"
#include "tcpwhy/bpf/tracer.h"
#include "tcpwhy/correlator.h"
#include "tcpwhy/event.h"

namespace tcpwhy::test {

// Catch2 v2 has no SKIP: say why, visibly, and leave the test.
#define TCPWHY_REQUIRE_ROOT()                                                     \
    do {                                                                          \
        if (geteuid() != 0) {                                                     \
            WARN("SKIPPED: kernel tests need root (CAP_BPF, CAP_NET_ADMIN)");      \
            return;                                                               \
        }                                                                         \
    } while (0)

inline void run(const std::string& command) {
    if (std::system((command + " >/dev/null 2>&1").c_str()) != 0)
        throw std::runtime_error("command failed: " + command);
}

// A network namespace made with `ip netns add`; deleted (with its veth ends) on destruction.
class Netns {
public:
    explicit Netns(std::string base) : name_(fmt::format("tw{}-{}", getpid() % 100000, base)) {
        std::system(fmt::format("ip netns del {} >/dev/null 2>&1", name_).c_str());
        run("ip netns add " + name_);
        run(fmt::format("ip -n {} link set lo up", name_));
    }
    ~Netns() { std::system(fmt::format("ip netns del {} >/dev/null 2>&1", name_).c_str()); }
    Netns(const Netns&) = delete;
    Netns& operator=(const Netns&) = delete;

    const std::string& name() const { return name_; }
    uint32_t inode() const {
        struct stat st{};
        if (stat(("/run/netns/" + name_).c_str(), &st) != 0) throw std::runtime_error("no netns " + name_);
        return static_cast<uint32_t>(st.st_ino);
    }

    // Runs fn on a thread that has entered this namespace: sockets it creates live here.
    template <typename Fn>
    auto enter(Fn fn) const {
        std::packaged_task<decltype(fn())()> task([this, &fn] {
            Fd ns(open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC));
            if (!ns || setns(ns.get(), CLONE_NEWNET) != 0) throw std::runtime_error("setns " + name_);
            return fn();
        });
        auto result = task.get_future();
        std::thread(std::move(task)).join();
        return result.get();
    }

private:
    std::string name_;
};

// lb (130.211.0.143/22, 35.191.0.10/16) <-> pod (10.56.5.6/16), routes only between them.
struct LbAndPod {
    Netns lb{"lb"};
    Netns pod{"pod"};
    static constexpr const char* kLbAddr = "130.211.0.143";
    static constexpr const char* kPodAddr = "10.56.5.6";

    LbAndPod() {
        std::string veth_lb = fmt::format("vl{}", getpid() % 100000), veth_pod = fmt::format("vp{}", getpid() % 100000);
        run(fmt::format("ip link add {} netns {} type veth peer name {} netns {}", veth_lb, lb.name(), veth_pod,
                        pod.name()));
        run(fmt::format("ip -n {} addr add 130.211.0.143/22 dev {}", lb.name(), veth_lb));
        run(fmt::format("ip -n {} addr add 35.191.0.10/16 dev {}", lb.name(), veth_lb));
        run(fmt::format("ip -n {} addr add 10.56.5.6/16 dev {}", pod.name(), veth_pod));
        run(fmt::format("ip -n {} link set {} up", lb.name(), veth_lb));
        run(fmt::format("ip -n {} link set {} up", pod.name(), veth_pod));
        run(fmt::format("ip -n {} route add 10.56.0.0/16 dev {}", lb.name(), veth_lb));
        run(fmt::format("ip -n {} route add 130.211.0.0/22 dev {}", pod.name(), veth_pod));
        run(fmt::format("ip -n {} route add 35.191.0.0/16 dev {}", pod.name(), veth_pod));
    }
};

inline sockaddr_in v4(const char* addr, uint16_t port) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, addr, &sa.sin_addr);
    return sa;
}

inline Fd tcp_listen_v4(const char* addr, uint16_t port) {
    Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    auto sa = v4(addr, port);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) || listen(fd.get(), 128))
        throw std::runtime_error(fmt::format("listen {}:{}: {}", addr, port, strerror(errno)));
    return fd;
}

// From an ephemeral port, or from local_port when one is given.
inline Fd tcp_connect_v4(const char* addr, uint16_t port, uint16_t local_port = 0) {
    Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (local_port) {
        auto local = v4("0.0.0.0", local_port);
        if (bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof(local)))
            throw std::runtime_error(fmt::format("bind port {}: {}", local_port, strerror(errno)));
    }
    auto sa = v4(addr, port);
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)))
        throw std::runtime_error(fmt::format("connect {}:{}: {}", addr, port, strerror(errno)));
    return fd;
}

inline Fd accept_one(const Fd& listener) {
    Fd fd(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd) throw std::runtime_error(fmt::format("accept: {}", strerror(errno)));
    return fd;
}

inline void send_all(const Fd& fd, std::string_view data) {
    if (send(fd.get(), data.data(), data.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(data.size()))
        throw std::runtime_error(fmt::format("send: {}", strerror(errno)));
}

inline std::string recv_some(const Fd& fd) {
    char buf[4096];
    ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, n) : std::string();
}

// A whole file (a child's output, a trace); empty when it cannot be read.
inline std::string slurp(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// A shell command's exit code and its stdout and stderr together.
struct ShellOutput {
    int exit_code = -1;
    std::string text;
};

inline ShellOutput run_shell(const std::string& command) {
    ShellOutput out;
    FILE* pipe = popen((command + " 2>&1").c_str(), "r");
    if (!pipe) throw std::runtime_error("popen: " + command);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.text.append(buf, n);
    int status = pclose(pipe);
    out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
}

// n connections to listener (on addr:port), the server closing each first, each quiet 150 ms
// before its close: not ordinary, so each keeps its own events (the kernel tallies
// connections quieter than 100 ms: bpf/lib/tally.bpf.h). Opened in batches, so n costs about
// n / 500 * 150 ms.
inline void churn_quiet(const Fd& listener, const char* addr, uint16_t port, int n) {
    constexpr int kBatch = 500;
    // A batch holds 1000 descriptors beside what the test holds (the hostile-neighbour test: 800
    // more); the soft limit is 1024 where the shell or the test VM's init leaves it.
    rlimit files{};
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        setrlimit(RLIMIT_NOFILE, &files);
    }
    for (int done = 0; done < n;) {
        std::vector<std::pair<Fd, Fd>> open;
        for (; done < n && static_cast<int>(open.size()) < kBatch; ++done) {
            Fd client = tcp_connect_v4(addr, port);
            open.emplace_back(std::move(client), accept_one(listener));
        }
        sleep_ms(150);
        for (auto& [client, server] : open) server.reset();
    }
}

// Runs the tracer on a background thread and keeps the events that pass `keep`.
class EventCollector {
public:
    using Predicate = std::function<bool(const Event&)>;

    explicit EventCollector(Predicate keep, const TracerOptions& options = {}) : keep_(std::move(keep)) {
        tracer_ = Tracer::start(options);
        thread_ = std::thread([this] {
            while (!stop_) tracer_->poll(10, [this](const Event& e) {
                if (!keep_(e)) return;
                std::lock_guard lock(mutex_);
                events_.push_back(e);
            });
        });
    }
    ~EventCollector() {
        stop_ = true;
        thread_.join();
    }

    // Waits until an event matches, up to timeout; returns all matching events collected.
    std::vector<Event> wait_for(const Predicate& match, int timeout_ms = 3000, size_t at_least = 1) {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        while (true) {
            auto found = matching(match);
            if (found.size() >= at_least || std::chrono::steady_clock::now() >= deadline) return found;
            sleep_ms(10);
        }
    }
    std::vector<Event> matching(const Predicate& match) {
        std::lock_guard lock(mutex_);
        std::vector<Event> out;
        for (const auto& e : events_)
            if (match(e)) out.push_back(e);
        return out;
    }
    // Everything collected so far, in arrival order.
    std::vector<Event> snapshot() {
        std::lock_guard lock(mutex_);
        return events_;
    }
    // Everything collected, for failure messages.
    std::string dump() {
        std::lock_guard lock(mutex_);
        std::string out;
        for (const auto& e : events_)
            out += fmt::format("{} cookie={} {}:{}->{}:{} {}->{} reason={} sk={} idle_rx={} unread={}{}\n",
                               to_string(e.type), e.cookie, e.laddr.to_string(), e.lport, e.raddr.to_string(), e.rport,
                               to_string(e.old_state), to_string(e.new_state), to_string(e.reason), to_string(e.sk_kind),
                               e.idle_rx_ms, e.unread_bytes,
                               e.direction == Direction::unknown    ? ""
                               : e.direction == Direction::outbound ? " outbound"
                                                                    : " inbound");
        return out;
    }
    Tracer& tracer() { return *tracer_; }

private:
    Predicate keep_;
    std::unique_ptr<Tracer> tracer_;
    std::mutex mutex_;
    std::vector<Event> events_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

inline auto of_type(EventType type) {
    return [type](const Event& e) { return e.type == type; };
}

}  // namespace tcpwhy::test
