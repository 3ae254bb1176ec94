#include "tcpwhy/daemon/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace tcpwhy::daemon {
namespace {

constexpr size_t kMaxClients = 64;
constexpr size_t kMaxRequestBytes = 16 << 10;
constexpr int64_t kHttpRequestTimeoutMs = 5000;
constexpr int kSendTimeoutS = 5;

int64_t now_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1'000'000;
}

void set_nonblocking(int fd, bool on) {
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

// Blocking send of everything, bounded by the socket's send timeout.
bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
}

std::string_view reason_phrase(int status) {
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
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
    if (inet_pton(AF_INET, host.empty() ? "0.0.0.0" : host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<uint16_t>(port));
        len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<uint16_t>(port));
        len = sizeof(*v6);
    } else {
        *error = fmt::format("--metrics-addr {}: {} is not an IP address", host_port, host);
        return {};
    }
    Fd fd(socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (!fd || bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd.get(), 64) != 0) {
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

Server::Server(Fd http_listener, Fd unix_listener, ServerHandlers handlers)
    : http_(std::move(http_listener)), unix_(std::move(unix_listener)), handlers_(std::move(handlers)) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) throw std::runtime_error("pipe2 failed");
    wake_read_ = Fd(pipe_fds[0]);
    wake_write_ = Fd(pipe_fds[1]);
    thread_ = std::thread([this] { run(); });
}

Server::~Server() {
    char byte = 1;
    (void)!write(wake_write_.get(), &byte, 1);
    thread_.join();
}

void Server::run() {
    while (true) {
        std::vector<pollfd> fds;
        fds.push_back({wake_read_.get(), POLLIN, 0});
        fds.push_back({http_.get(), static_cast<short>(http_ ? POLLIN : 0), 0});
        fds.push_back({unix_.get(), static_cast<short>(unix_ ? POLLIN : 0), 0});
        for (const auto& c : clients_) fds.push_back({c.fd.get(), POLLIN, 0});
        int timeout = clients_.empty() ? -1 : 200;  // to expire slow HTTP clients
        if (poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR) return;
        if (fds[0].revents) return;

        for (int i : {1, 2}) {
            if (!(fds[i].revents & POLLIN)) continue;
            Fd client(accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
            if (!client) continue;
            if (clients_.size() >= kMaxClients) continue;  // closed at once: the client retries
            timeval tv{kSendTimeoutS, 0};
            setsockopt(client.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
            clients_.push_back({std::move(client), i == 1, {}, now_ms() + kHttpRequestTimeoutMs});
        }
        // Clients accepted above are not in fds yet; their revents come next round.
        size_t polled = fds.size() - 3;
        std::vector<bool> keep(clients_.size(), true);
        for (size_t i = 0; i < polled && i < clients_.size(); ++i) {
            Client& c = clients_[i];
            if (!fds[i + 3].revents) {
                if (c.http && now_ms() > c.deadline_ms) keep[i] = false;
                continue;
            }
            char buf[4096];
            ssize_t n = recv(c.fd.get(), buf, sizeof(buf), 0);
            if (n <= 0) {
                keep[i] = n < 0 && (errno == EAGAIN || errno == EINTR);
                continue;
            }
            c.buffer.append(buf, static_cast<size_t>(n));
            if (c.buffer.size() > kMaxRequestBytes) {
                keep[i] = false;
                continue;
            }
            if (c.http) {
                if (c.buffer.find("\r\n\r\n") == std::string::npos && c.buffer.find("\n\n") == std::string::npos)
                    continue;
                serve_http(c);
                keep[i] = false;
            } else {
                keep[i] = serve_control(c);
            }
        }
        std::vector<Client> remaining;
        for (size_t i = 0; i < clients_.size(); ++i)
            if (keep[i] && clients_[i].fd) remaining.push_back(std::move(clients_[i]));
        clients_ = std::move(remaining);
    }
}

void Server::serve_http(Client& c) {
    HttpResponse response;
    auto line_end = c.buffer.find_first_of("\r\n");
    std::string request_line = c.buffer.substr(0, line_end);
    auto sp1 = request_line.find(' ');
    auto sp2 = request_line.find(' ', sp1 == std::string::npos ? 0 : sp1 + 1);
    if (sp1 == std::string::npos || sp2 == std::string::npos) {
        response = {400, "text/plain; charset=utf-8", "bad request\n"};
    } else {
        std::string method = request_line.substr(0, sp1);
        std::string path = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
        path = path.substr(0, path.find('?'));
        if (method != "GET" && method != "HEAD") response = {405, "text/plain; charset=utf-8", "only GET\n"};
        else response = handlers_.http(path);
        if (method == "HEAD") response.body.clear();
    }
    set_nonblocking(c.fd.get(), false);
    std::string head = fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", response.status,
        reason_phrase(response.status), response.content_type, response.body.size());
    if (send_all(c.fd.get(), head)) send_all(c.fd.get(), response.body);
}

bool Server::serve_control(Client& c) {
    size_t newline;
    while ((newline = c.buffer.find('\n')) != std::string::npos) {
        std::string line = c.buffer.substr(0, newline);
        c.buffer.erase(0, newline + 1);
        if (line.empty()) continue;
        auto answer = handlers_.control(line, c.fd);
        if (!answer) return false;  // the handler took the connection
        set_nonblocking(c.fd.get(), false);
        bool sent = send_all(c.fd.get(), *answer + "\n");
        set_nonblocking(c.fd.get(), true);
        if (!sent) return false;
    }
    return true;
}

}  // namespace tcpwhy::daemon
