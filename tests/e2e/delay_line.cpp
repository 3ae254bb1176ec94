// tw-delay-line: joins two network namespaces with a TUN device in each and carries the
// IP packets between them after a fixed one-way delay, like the network between a cloud
// load balancer and a backend. This kernel has no netem (nor fq), and on a veth with
// zero latency nginx sees the backend's FIN before it can reuse the connection, so the
// keep-alive race would need microsecond luck; with a real RTT the window is as wide as
// it is in production (requests sent within one RTT before the backend's close).
//
//   tw-delay-line NS_A DEV_A NS_B DEV_B DELAY_MS
//
// Creates DEV_A in NS_A and DEV_B in NS_B (names from `ip netns`), prints "ready" on
// stdout, and forwards until SIGTERM/SIGINT. The caller assigns addresses and routes
// with `ip -n`. The devices disappear with this process.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

volatile std::sig_atomic_t stop = 0;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "tw-delay-line: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(1);
}

class UniqueFd {
public:
    explicit UniqueFd(int fd = -1) : fd_(fd) {}
    ~UniqueFd() {
        if (fd_ >= 0) close(fd_);
    }
    UniqueFd(UniqueFd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

// A TUN device is created in the network namespace of whoever opens /dev/net/tun.
UniqueFd open_tun_in(const std::string& netns, const std::string& dev) {
    UniqueFd self(open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
    UniqueFd target(open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC));
    if (self.get() < 0 || target.get() < 0) die("open network namespace " + netns);
    if (setns(target.get(), CLONE_NEWNET) != 0) die("setns " + netns);
    UniqueFd tun(open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK));
    if (tun.get() < 0) die("open /dev/net/tun");
    ifreq ifr{};
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", dev.c_str());
    if (ioctl(tun.get(), TUNSETIFF, &ifr) != 0) die("create tun " + dev + " in " + netns);
    if (setns(self.get(), CLONE_NEWNET) != 0) die("setns back");
    return tun;
}

struct Packet {
    std::chrono::steady_clock::time_point due;
    std::vector<char> bytes;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc != 6) {
        std::fprintf(stderr, "usage: tw-delay-line NS_A DEV_A NS_B DEV_B DELAY_MS\n");
        return 2;
    }
    const auto delay = std::chrono::milliseconds(std::atoi(argv[5]));
    UniqueFd a = open_tun_in(argv[1], argv[2]);
    UniqueFd b = open_tun_in(argv[3], argv[4]);
    struct sigaction sa{};
    sa.sa_handler = [](int) { stop = 1; };
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::printf("ready\n");
    std::fflush(stdout);

    // Packets keep their order per direction: the delay is the same for all of them.
    std::deque<Packet> to_b, to_a;
    const int fds[2] = {a.get(), b.get()};
    std::deque<Packet>* queues[2] = {&to_b, &to_a};  // what is read from fds[i] goes to queues[i]
    const int out_fd[2] = {b.get(), a.get()};
    std::vector<char> buf(65536);
    while (!stop) {
        auto now = std::chrono::steady_clock::now();
        int timeout_ms = 100;
        for (auto* q : queues) {
            if (q->empty()) continue;
            auto wait = std::chrono::ceil<std::chrono::milliseconds>(q->front().due - now).count();
            timeout_ms = std::min<int>(timeout_ms, std::max<int>(0, static_cast<int>(wait)));
        }
        pollfd pfds[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
        if (poll(pfds, 2, timeout_ms) < 0 && errno != EINTR) die("poll");
        now = std::chrono::steady_clock::now();
        for (int i = 0; i < 2; ++i) {
            if (!(pfds[i].revents & POLLIN)) continue;
            while (true) {
                ssize_t n = read(fds[i], buf.data(), buf.size());
                if (n <= 0) break;
                queues[i]->push_back({now + delay, std::vector<char>(buf.begin(), buf.begin() + n)});
            }
        }
        for (int i = 0; i < 2; ++i) {
            auto& q = *queues[i];
            while (!q.empty() && q.front().due <= now) {
                // A write to a device that is still down fails; that packet is lost, as on a wire.
                (void)!write(out_fd[i], q.front().bytes.data(), q.front().bytes.size());
                q.pop_front();
            }
        }
    }
    return 0;
}
