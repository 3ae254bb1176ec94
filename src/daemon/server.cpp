#include "tcpwhy/daemon/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include <pthread.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace tcpwhy::daemon {
namespace {

int64_t now_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1'000'000;
}

std::string_view reason_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 431: return "Request Header Fields Too Large";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

}  // namespace

Fd listen_tcp(const std::string& host_port, std::string* error) {
    auto colon = host_port.rfind(':');
    if (colon == std::string::npos) {
        *error = fmt::format("--metrics-addr {}: expected HOST:PORT, e.g. 0.0.0.0:9090", host_port);
        return {};
    }
    std::string host = host_port.substr(0, colon), port_text = host_port.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    char* end = nullptr;
    long port = strtol(port_text.c_str(), &end, 10);
    if (port_text.empty() || *end || port < 0 || port > 65535) {
        *error = fmt::format("--metrics-addr {}: port must be 0-65535", host_port);
        return {};
    }
    sockaddr_storage ss{};
    socklen_t len = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    // "" and "::" listen on IPv6 and IPv4 alike: a pod in a dual-stack or IPv6 cluster is
    // probed and scraped on its IPv6 address.
    const bool any_address = host.empty() || host == "::";
    if (any_address || inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        if (any_address) v6->sin6_addr = in6addr_any;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<uint16_t>(port));
        len = sizeof(*v6);
    } else if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<uint16_t>(port));
        len = sizeof(*v4);
    } else {
        *error = fmt::format("--metrics-addr {}: {} is not an IP address", host_port, host);
        return {};
    }
    Fd fd(socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd && any_address && errno == EAFNOSUPPORT) {
        // IPv6 turned off on this node (ipv6.disable=1): every IPv4 address then.
        ss = {};
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<uint16_t>(port));
        v4->sin_addr.s_addr = htonl(INADDR_ANY);
        len = sizeof(*v4);
        fd = Fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    }
    int one = 1, zero = 0;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    // The kernel caps the backlog at net.core.somaxconn; a deep one rides out a burst of connects.
    if (!fd || bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd.get(), 1024) != 0) {
        *error = fmt::format("cannot listen on {}: {}", host_port, strerror(errno));
        return {};
    }
    return fd;
}

std::string local_address(const Fd& listener) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    getsockname(listener.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    char text[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET6) {
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
        inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
        return fmt::format("[{}]:{}", text, ntohs(v6->sin6_port));
    }
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    return fmt::format("{}:{}", text, ntohs(v4->sin_port));
}

namespace {
bool unix_address(const std::string& path, sockaddr_un& sa, std::string* error) {
    sa = {};
    sa.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof(sa.sun_path)) {
        *error = fmt::format("socket path '{}' is empty or longer than {} bytes", path, sizeof(sa.sun_path) - 1);
        return false;
    }
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    return true;
}
}  // namespace

Fd connect_unix(const std::string& path, std::string* error) {
    sockaddr_un sa;
    if (!unix_address(path, sa, error)) return {};
    Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd || connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
        *error = fmt::format("cannot connect to {}: {}", path, strerror(errno));
        return {};
    }
    return fd;
}

Fd listen_unix(const std::string& path, std::string* error) {
    sockaddr_un sa;
    if (!unix_address(path, sa, error)) return {};
    struct stat st{};
    if (lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            *error = fmt::format("{} exists and is not a socket", path);
            return {};
        }
        std::string ignored;
        if (connect_unix(path, &ignored)) {
            *error = fmt::format("another tcpwhy daemon is listening on {}", path);
            return {};
        }
        unlink(path.c_str());  // left by a daemon that was killed
    }
    Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    mode_t old_mask = umask(0177);  // the socket file is created 0600: only root may talk to the daemon
    int rc = fd ? bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) : -1;
    int bind_errno = errno;
    umask(old_mask);
    if (rc != 0 || chmod(path.c_str(), 0600) != 0 || listen(fd.get(), 16) != 0) {
        *error = fmt::format("cannot listen on {}: {}", path, strerror(rc != 0 ? bind_errno : errno));
        return {};
    }
    return fd;
}


struct Server::CachedAnswer {
    std::string path;
    int64_t expires_ms = 0;
    std::shared_ptr<const std::string> bytes;  // head and body, shared by every client sent it
};

struct Server::Client {
    Fd fd;
    bool http = false;
    std::string input;
    int64_t deadline_ms = 0;   // HTTP: the request, then the answer, must be done by then
    int64_t last_active_ms = 0;  // Unix: the last request
    // What is still to be written: a shared answer and how far into it, then owned bytes.
    std::shared_ptr<const std::string> out_shared;
    std::string out_owned;
    size_t out_offset = 0;
    bool close_after_write = false;
    bool closed = false;

    bool writing() const { return out_shared || !out_owned.empty(); }
    std::string_view pending() const {
        std::string_view all = out_shared ? std::string_view(*out_shared) : std::string_view(out_owned);
        return all.substr(out_offset);
    }
};

namespace {

// The number of descriptors this process may open, raised to the hard limit (no privilege needed).
size_t descriptor_limit() {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
        getrlimit(RLIMIT_NOFILE, &limit);
    }
    return limit.rlim_cur == RLIM_INFINITY ? SIZE_MAX : static_cast<size_t>(limit.rlim_cur);
}

}  // namespace

Server::Server(Fd http_listener, Fd unix_listener, ServerHandlers handlers, ServerLimits limits)
    : http_(std::move(http_listener)),
      unix_(std::move(unix_listener)),
      handlers_(std::move(handlers)),
      limits_(limits) {
    // Half the descriptors for clients: the rest are the maps, programs, archive and exports'.
    size_t for_clients = descriptor_limit() / 2;
    limits_.max_unix_clients = std::max<size_t>(1, std::min(limits_.max_unix_clients, for_clients / 8));
    limits_.max_http_clients = std::max<size_t>(1, std::min(limits_.max_http_clients, for_clients - limits_.max_unix_clients));
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error("pipe2 failed");
    wake_read_ = Fd(pipe_fds[0]);
    wake_write_ = Fd(pipe_fds[1]);
    thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "tcpwhy-server");
        run();
    });
}

Server::~Server() {
    char byte = 1;
    (void)!write(wake_write_.get(), &byte, 1);
    thread_.join();
}

ServerStats Server::stats() const {
    std::lock_guard lock(stats_mutex_);
    return stats_;
}

int Server::poll_timeout_ms(int64_t now) const {
    int64_t next = -1;
    for (const auto& c : clients_) {
        int64_t due = c->http ? c->deadline_ms : c->last_active_ms + limits_.unix_idle_timeout_ms;
        if (!c->http && c->writing()) due = std::min(due, c->deadline_ms);
        if (next < 0 || due < next) next = due;
    }
    if (next < 0) return -1;
    return static_cast<int>(std::clamp<int64_t>(next - now, 0, 1000));
}

// At the limit, the client that has waited longest without sending a whole request goes: a
// probe or a scrape sends its request at once, an idle or trickling connection does not.
bool Server::make_room(bool http) {
    Client* victim = nullptr;
    for (auto& c : clients_) {
        if (c->closed || c->http != http || c->writing()) continue;
        int64_t since = http ? c->deadline_ms : c->last_active_ms;
        if (!victim || since < (http ? victim->deadline_ms : victim->last_active_ms)) victim = c.get();
    }
    if (!victim) return false;
    victim->closed = true;
    std::lock_guard lock(stats_mutex_);
    ++stats_.evicted;
    return true;
}

void Server::accept_from(int listener, bool http, int64_t now) {
    // Everything the backlog holds, so a burst is taken in one round.
    for (int i = 0; i < 1024; ++i) {
        Fd client(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!client) return;
        size_t open = std::count_if(clients_.begin(), clients_.end(),
                                    [http](const auto& c) { return !c->closed && c->http == http; });
        if (open >= (http ? limits_.max_http_clients : limits_.max_unix_clients) && !make_room(http))
            continue;  // every slot is busy answering: closed at once, the client retries
        auto c = std::make_unique<Client>();
        c->fd = std::move(client);
        c->http = http;
        c->deadline_ms = now + limits_.request_timeout_ms;
        c->last_active_ms = now;
        clients_.push_back(std::move(c));
    }
}

void Server::read_from(Client& c, int64_t now) {
    char buf[4096];
    while (!c.closed) {
        ssize_t n = recv(c.fd.get(), buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            // The peer closed (or failed). A client may half-close after its request: what it
            // asked is still answered.
            if (!c.writing()) c.closed = true;
            else c.close_after_write = true;
            return;
        }
        c.input.append(buf, static_cast<size_t>(n));
        if (c.input.size() > limits_.max_request_bytes) {
            std::lock_guard lock(stats_mutex_);
            ++stats_.oversized;
            c.closed = true;
            return;
        }
        if (c.http) {
            if (c.writing()) {
                c.input.clear();  // one request per connection: what follows it is ignored
                continue;
            }
            if (c.input.find("\r\n\r\n") != std::string::npos || c.input.find("\n\n") != std::string::npos)
                answer_http(c, now);
        } else {
            c.last_active_ms = now;
            answer_control(c, now);
        }
    }
}

void Server::answer_http(Client& c, int64_t now) {
    HttpResponse response;
    std::string method, path;
    auto line_end = c.input.find_first_of("\r\n");
    std::string request_line = c.input.substr(0, line_end);
    auto sp1 = request_line.find(' ');
    auto sp2 = request_line.find(' ', sp1 == std::string::npos ? 0 : sp1 + 1);
    if (sp1 == std::string::npos || sp2 == std::string::npos) {
        response = {400, "text/plain; charset=utf-8", "bad request\n"};
    } else {
        method = request_line.substr(0, sp1);
        path = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
        path = path.substr(0, path.find('?'));
        if (method != "GET" && method != "HEAD") response = {405, "text/plain; charset=utf-8", "only GET\n"};
    }
    c.input.clear();
    c.deadline_ms = now + limits_.response_timeout_ms;
    c.close_after_write = true;
    {
        std::lock_guard lock(stats_mutex_);
        ++stats_.http_served;
    }
    if (response.status == 200 && method == "GET") {
        for (const auto& cached : cache_) {
            if (cached->path == path && cached->expires_ms > now) {
                c.out_shared = cached->bytes;
                return;
            }
        }
    }
    if (response.status == 200) response = handlers_.http(path);
    std::string bytes = fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", response.status,
        reason_phrase(response.status), response.content_type, response.body.size());
    if (method == "HEAD") {
        c.out_owned = std::move(bytes);
        return;
    }
    bytes += response.body;
    auto shared = std::make_shared<const std::string>(std::move(bytes));
    c.out_shared = shared;
    if (response.reuse_ms > 0) {
        std::erase_if(cache_, [&](const auto& cached) { return cached->path == path || cached->expires_ms <= now; });
        cache_.push_back(std::make_shared<CachedAnswer>(CachedAnswer{path, now + response.reuse_ms, shared}));
    }
}

void Server::answer_control(Client& c, int64_t now) {
    size_t newline;
    while (!c.closed && (newline = c.input.find('\n')) != std::string::npos) {
        std::string line = c.input.substr(0, newline);
        c.input.erase(0, newline + 1);
        if (line.empty()) continue;
        auto answer = handlers_.control(line, c.fd);
        if (!answer) {  // the handler took the connection
            c.closed = true;
            return;
        }
        if (!c.writing()) c.deadline_ms = now + limits_.response_timeout_ms;
        c.out_owned += *answer;
        c.out_owned += '\n';
    }
}

void Server::write_to(Client& c, int64_t now) {
    while (c.writing()) {
        std::string_view rest = c.pending();
        ssize_t n = send(c.fd.get(), rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            c.closed = true;
            return;
        }
        c.out_offset += static_cast<size_t>(n);
        if (c.out_offset == (c.out_shared ? c.out_shared->size() : c.out_owned.size())) {
            c.out_shared.reset();
            c.out_owned.clear();
            c.out_offset = 0;
        }
    }
    if (c.close_after_write) c.closed = true;
    c.last_active_ms = now;
}

void Server::run() {
    std::vector<pollfd> fds;
    while (true) {
        fds.clear();
        fds.push_back({wake_read_.get(), POLLIN, 0});
        fds.push_back({http_.get(), static_cast<short>(http_ ? POLLIN : 0), 0});
        fds.push_back({unix_.get(), static_cast<short>(unix_ ? POLLIN : 0), 0});
        for (const auto& c : clients_)
            fds.push_back({c->fd.get(), static_cast<short>(c->writing() ? POLLOUT : POLLIN), 0});
        if (poll(fds.data(), fds.size(), poll_timeout_ms(now_ms())) < 0 && errno != EINTR) return;
        if (fds[0].revents) return;

        const int64_t now = now_ms();
        const size_t polled = clients_.size();
        for (size_t i = 0; i < polled; ++i) {
            Client& c = *clients_[i];
            short revents = fds[i + 3].revents;
            if (c.closed) continue;
            if (revents & (POLLERR | POLLNVAL)) {
                c.closed = true;
                continue;
            }
            if (revents & POLLOUT) write_to(c, now);
            else if (revents & (POLLIN | POLLHUP)) read_from(c, now);
            if (!c.closed && c.writing()) write_to(c, now);  // an answer made just now
        }
        if (fds[1].revents & POLLIN) accept_from(http_.get(), true, now);
        if (fds[2].revents & POLLIN) accept_from(unix_.get(), false, now);

        // Deadlines hold on every round, whether or not the client sent anything: a client
        // trickling a byte at a time cannot stretch its request past the deadline.
        for (auto& c : clients_) {
            if (c->closed) continue;
            bool late = false;
            if (c->http || c->writing()) late = now >= c->deadline_ms;
            else if (now - c->last_active_ms >= limits_.unix_idle_timeout_ms) late = true;
            if (!late) continue;
            c->closed = true;
            std::lock_guard lock(stats_mutex_);
            if (c->writing()) ++stats_.response_timeouts;
            else if (c->http) ++stats_.request_timeouts;
            else ++stats_.unix_idle_closed;
        }
        std::erase_if(clients_, [](const auto& c) { return c->closed; });
        std::erase_if(cache_, [now](const auto& cached) { return cached->expires_ms <= now; });
    }
}

}  // namespace tcpwhy::daemon
