// The daemon's HTTP and control server against hostile neighbours, over real sockets on
// loopback: clients that trickle a request, never finish it, never read the answer, or
// just hold connections open, while /healthz must keep answering at once.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "tcpwhy/daemon/server.h"

using namespace tcpwhy;
using namespace tcpwhy::daemon;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

int64_t ms_since(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// A server on 127.0.0.1 (any port) whose /big answer is large enough to fill any socket buffer.
struct TestServer {
    std::string address;
    std::atomic<int> renders{0};
    std::unique_ptr<Server> server;
    fs::path socket_path;

    explicit TestServer(ServerLimits limits = {}, const std::string& listen = "127.0.0.1:0", bool with_unix = false) {
        std::string error;
        Fd http = listen_tcp(listen, &error);
        REQUIRE(http);
        address = local_address(http);
        Fd unix_listener;
        if (with_unix) {
            socket_path = fs::temp_directory_path() / fmt::format("tcpwhy-server-test-{}.sock", getpid());
            unix_listener = listen_unix(socket_path.string(), &error);
            REQUIRE(unix_listener);
        }
        ServerHandlers handlers;
        handlers.http = [this](const std::string& path) -> HttpResponse {
            if (path == "/healthz") return {200, "text/plain", "ok\n"};
            if (path == "/big") {
                ++renders;
                return {200, "text/plain", std::string(32 << 20, 'x'), 1000};
            }
            return {404, "text/plain", "not found\n"};
        };
        handlers.control = [](const std::string& line, Fd&) -> std::optional<std::string> { return "echo " + line; };
        server = std::make_unique<Server>(std::move(http), std::move(unix_listener), handlers, limits);
    }
    ~TestServer() {
        server.reset();
        if (!socket_path.empty()) fs::remove(socket_path);
    }
};

sockaddr_storage parse_address(const std::string& address, socklen_t* len) {
    sockaddr_storage ss{};
    auto colon = address.rfind(':');
    std::string host = address.substr(0, colon);
    uint16_t port = static_cast<uint16_t>(std::stoi(address.substr(colon + 1)));
    if (host.front() == '[') {
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &v6->sin6_addr);
        *len = sizeof(*v6);
    } else {
        auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        inet_pton(AF_INET, host.c_str(), &v4->sin_addr);
        *len = sizeof(*v4);
    }
    return ss;
}

Fd connect_to(const std::string& address, int receive_buffer = 0) {
    socklen_t len = 0;
    sockaddr_storage ss = parse_address(address, &len);
    Fd fd(socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    if (receive_buffer) setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    REQUIRE(connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    return fd;
}

void send_text(const Fd& fd, std::string_view text) {
    REQUIRE(send(fd.get(), text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size()));
}

// Reads until the peer closes or timeout_ms pass; what arrived.
std::string read_all(const Fd& fd, int timeout_ms) {
    std::string out;
    auto start = Clock::now();
    char buf[65536];
    while (ms_since(start) < timeout_ms) {
        pollfd p{fd.get(), POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        ssize_t n = recv(fd.get(), buf, sizeof(buf), 0);
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

// True when the peer has closed the connection (recv sees EOF or a reset), within timeout_ms.
bool closed_by_peer(const Fd& fd, int timeout_ms) {
    auto start = Clock::now();
    char buf[4096];
    while (ms_since(start) < timeout_ms) {
        pollfd p{fd.get(), POLLIN, 0};
        if (poll(&p, 1, 20) <= 0) continue;
        ssize_t n = recv(fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN)) return true;
    }
    return false;
}

// GET /healthz on a new connection: how long until the whole answer arrived, -1 if it did not.
int64_t healthz_ms(const std::string& address) {
    auto start = Clock::now();
    Fd fd = connect_to(address);
    send_text(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    std::string answer = read_all(fd, 3000);
    if (answer.find("200 OK") == std::string::npos || answer.find("\r\n\r\nok\n") == std::string::npos) return -1;
    return ms_since(start);
}

}  // namespace

TEST_CASE("server: a client trickling its request faster than the poll round still meets the deadline", "[server]") {
    ServerLimits limits;
    limits.request_timeout_ms = 1000;
    TestServer t(limits);
    Fd slow = connect_to(t.address);
    auto start = Clock::now();
    bool closed = false;
    // One byte every 50 ms, never the blank line that ends the headers.
    for (int i = 0; i < 60 && !closed; ++i) {
        if (send(slow.get(), "X", 1, MSG_NOSIGNAL) != 1) break;
        closed = closed_by_peer(slow, 50);
    }
    closed = closed || closed_by_peer(slow, 500);
    CHECK(closed);
    CHECK(ms_since(start) < 2000);
    CHECK(t.server->stats().request_timeouts == 1);
}

TEST_CASE("server: a client that never reads /metrics does not hold up /healthz", "[server]") {
    TestServer t;
    // Tiny receive windows, never read: each answer stays queued in the server.
    std::vector<Fd> readers;
    for (int i = 0; i < 8; ++i) {
        readers.push_back(connect_to(t.address, 4096));
        send_text(readers.back(), "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    for (int i = 0; i < 5; ++i) {
        int64_t ms = healthz_ms(t.address);
        CHECK(ms >= 0);
        CHECK(ms < 1000);
    }
    // Eight readers, one rendering: the answer is shared for its second.
    CHECK(t.renders.load() == 1);
}

TEST_CASE("server: a slow reader is cut off at the response deadline", "[server]") {
    ServerLimits limits;
    limits.response_timeout_ms = 800;
    TestServer t(limits);
    Fd reader = connect_to(t.address, 4096);
    send_text(reader, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    std::string got = read_all(reader, 3000);  // what was queued in the kernel, then the close
    CHECK(got.size() < (32u << 20));
    CHECK(t.server->stats().response_timeouts == 1);
}

TEST_CASE("server: hundreds of idle connections cannot starve /healthz", "[server]") {
    TestServer t;
    std::vector<Fd> idle;
    for (int i = 0; i < 700; ++i) idle.push_back(connect_to(t.address));  // more than the 512 slots
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    for (int i = 0; i < 10; ++i) {
        int64_t ms = healthz_ms(t.address);
        INFO("probe " << i);
        CHECK(ms >= 0);
        CHECK(ms < 1000);
        idle.push_back(connect_to(t.address));  // and more keep coming
    }
    CHECK(t.server->stats().evicted >= 188);
}

TEST_CASE("server: idle control clients are closed, and capped apart from HTTP", "[server]") {
    ServerLimits limits;
    limits.unix_idle_timeout_ms = 500;
    limits.max_unix_clients = 4;
    TestServer t(limits, "127.0.0.1:0", true);
    std::string error;
    std::vector<Fd> clients;
    for (int i = 0; i < 6; ++i) {
        clients.push_back(connect_unix(t.socket_path.string(), &error));
        REQUIRE(clients.back());
    }
    // The newest four hold the slots; the oldest two made room.
    CHECK(closed_by_peer(clients[0], 300));
    CHECK(closed_by_peer(clients[1], 300));
    // A client that asks gets its answer...
    send_text(clients[5], "{\"cmd\":\"snapshot\"}\n");
    std::string answer = read_all(clients[5], 200);
    CHECK(answer == "echo {\"cmd\":\"snapshot\"}\n");
    // ...and every client that then says nothing is closed after the idle timeout.
    for (int i = 2; i < 6; ++i) CHECK(closed_by_peer(clients[i], 1500));
    CHECK(t.server->stats().unix_idle_closed == 4);
    // HTTP is unaffected by the Unix cap.
    CHECK(healthz_ms(t.address) >= 0);
}

TEST_CASE("server: [::] listens on IPv6 and IPv4 alike", "[server]") {
    std::string error;
    Fd probe(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe) {
        WARN("SKIPPED: no IPv6 on this machine");
        return;
    }
    TestServer t({}, "[::]:0");
    std::string port = t.address.substr(t.address.rfind(':') + 1);
    CHECK(t.address.rfind("[::]:", 0) == 0);
    CHECK(healthz_ms("127.0.0.1:" + port) >= 0);
    CHECK(healthz_ms("[::1]:" + port) >= 0);
    TestServer v4_only({}, "0.0.0.0:0");
    CHECK(v4_only.address.rfind("0.0.0.0:", 0) == 0);
}
