#include "tcpwhy/top/daemon_client.h"

#include "shell_command.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace tcpwhy::top {
namespace {

constexpr size_t kMaxAnswerBytes = 64u << 20;  // a snapshot of thousands of backends is a few MiB
constexpr std::string_view kRequest = "{\"cmd\":\"snapshot\"}\n";
// A daemon on this node answers at once; a command (kubectl exec through the API server) first
// has to start and reach the pod.
constexpr int64_t kSocketAnswerMs = 3000;
constexpr int64_t kCommandFirstAnswerMs = 20000;
constexpr int64_t kCommandAnswerMs = 8000;
// A command that failed is started again after 1 s, then 2, 4, ... up to 30 s.
constexpr int64_t kFirstBackoffMs = 1000;
constexpr int64_t kMaxBackoffMs = 30000;
constexpr size_t kStderrTail = 4096;

// The daemon's answer line: a snapshot, or {"error": "..."} for what it cannot do.
std::optional<Snapshot> parse_answer(std::string_view answer, std::string* why) {
    auto reply = nlohmann::json::parse(answer, nullptr, false);
    if (reply.is_object() && reply.contains("error") && reply["error"].is_string()) {
        *why = "the daemon answered: " + reply["error"].get<std::string>();
        return std::nullopt;
    }
    std::string problem;
    auto snapshot = parse_snapshot(answer, &problem);
    if (!snapshot) *why = "answer is not a snapshot: " + problem;
    return snapshot;
}

Fd connect_socket(const std::string& path, std::string* why) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (path.size() >= sizeof(address.sun_path)) {
        *why = "socket path too long";
        return {};
    }
    std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
    Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        *why = fmt::format("socket: {}", std::strerror(errno));
        return {};
    }
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
        *why = fmt::format("cannot connect: {}", std::strerror(errno));
        return {};
    }
    return fd;
}

}  // namespace

int64_t monotonic_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1'000'000;
}

std::optional<Snapshot> fetch_snapshot(const std::string& socket_path, int timeout_ms, std::string* error) {
    auto fail = [&](std::string why) -> std::optional<Snapshot> {
        *error = fmt::format("{}: {}", socket_path, why);
        return std::nullopt;
    };
    std::string why;
    Fd fd = connect_socket(socket_path, &why);
    if (!fd) return fail(why);
    if (send(fd.get(), kRequest.data(), kRequest.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(kRequest.size()))
        return fail(fmt::format("cannot send the request: {}", std::strerror(errno)));

    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::string answer;
    char buffer[65536];
    while (answer.find('\n') == std::string::npos) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return fail(fmt::format("no answer within {} ms", timeout_ms));
        pollfd p{fd.get(), POLLIN, 0};
        int ready = poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) return fail(fmt::format("poll: {}", std::strerror(errno)));
        if (ready == 0) continue;
        ssize_t n = recv(fd.get(), buffer, sizeof(buffer), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(fmt::format("read: {}", std::strerror(errno)));
        if (n == 0) {
            if (answer.empty()) return fail("the daemon closed the connection without answering");
            break;  // a last line without its newline
        }
        answer.append(buffer, static_cast<size_t>(n));
        if (answer.size() > kMaxAnswerBytes) return fail("answer larger than 64 MiB");
    }
    answer.resize(std::min(answer.find('\n'), answer.size()));
    auto snapshot = parse_answer(answer, &why);
    if (!snapshot) return fail(why);
    return snapshot;
}

// ---- DaemonLink -----------------------------------------------------------------

DaemonLink::DaemonLink(std::string source) : source_(std::move(source)) {}

DaemonLink::~DaemonLink() { close_link(); }

int DaemonLink::answer_fd() const {
    if (!awaiting_) return -1;
    return is_command() ? out_.get() : in_.get();
}

int DaemonLink::stderr_fd() const { return err_.get(); }

bool DaemonLink::connect(int64_t now_ms) {
    std::string why;
    if (!is_command()) {
        in_ = connect_socket(source_, &why);
        if (!in_) fail(why, now_ms);
        return static_cast<bool>(in_);
    }
    ShellCommand started;
    if (!start_shell_command(std::string(std::string_view(source_).substr(kExecPrefix.size())), started, &why)) {
        fail(why, now_ms);
        return false;
    }
    child_ = started.pid;
    in_ = std::move(started.in);
    out_ = std::move(started.out);
    err_ = std::move(started.err);
    stderr_tail_.clear();
    return true;
}

void DaemonLink::request(int64_t now_ms) {
    if (awaiting_) return;
    bool connected = is_command() ? child_ > 0 : static_cast<bool>(in_);
    if (!connected) {
        if (is_command() && now_ms < retry_at_ms_) return;  // problem_ still says why
        if (!connect(now_ms)) return;
    }
    buffer_.clear();
    ssize_t n = is_command() ? ::write(in_.get(), kRequest.data(), kRequest.size())
                             : send(in_.get(), kRequest.data(), kRequest.size(), MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(kRequest.size())) {
        // A kept connection the daemon has since closed: one fresh try at once.
        if (!is_command() && connected && answers_on_connection_ > 0) {
            close_link();
            request(now_ms);
            return;
        }
        fail(is_command() ? fmt::format("{}cannot send the request: {}", command_exit_text(), std::strerror(errno))
                          : fmt::format("cannot send the request: {}", std::strerror(errno)),
             now_ms);
        return;
    }
    awaiting_ = true;
    int64_t timeout = !is_command() ? kSocketAnswerMs : answered_once_ ? kCommandAnswerMs : kCommandFirstAnswerMs;
    deadline_ms_ = now_ms + timeout;
}

void DaemonLink::on_stderr() {
    if (!err_) return;
    char buffer[4096];
    while (true) {
        ssize_t n = ::read(err_.get(), buffer, sizeof(buffer));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) err_.reset();  // the command closed it (exited)
            return;
        }
        stderr_tail_.append(buffer, static_cast<size_t>(n));
        if (stderr_tail_.size() > kStderrTail) stderr_tail_.erase(0, stderr_tail_.size() - kStderrTail);
    }
}

bool DaemonLink::on_readable(int64_t now_ms) {
    if (!awaiting_) return false;
    int fd = answer_fd();
    char buffer[65536];
    while (true) {
        ssize_t n = is_command() ? ::read(fd, buffer, sizeof(buffer)) : recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
        if (n < 0 && !(errno == ECONNRESET && !is_command())) {
            fail(fmt::format("read: {}", std::strerror(errno)), now_ms);
            return false;
        }
        if (n == 0 || (n < 0 && errno == ECONNRESET && !is_command())) {
            if (is_command()) {
                on_stderr();
                fail(command_exit_text() + "the command ended without answering", now_ms);
            } else if (answers_on_connection_ > 0) {
                // A kept connection the daemon has since closed (it restarted, or our interval is longer
                // than its idle timeout): ask again on a new one.
                close_link();
                awaiting_ = false;
                request(now_ms);
            } else {
                fail("the daemon closed the connection without answering", now_ms);
            }
            return false;
        }
        buffer_.append(buffer, static_cast<size_t>(n));
        if (buffer_.size() > kMaxAnswerBytes) {
            fail("answer larger than 64 MiB", now_ms);
            return false;
        }
        auto newline = buffer_.find('\n');
        if (newline == std::string::npos) continue;
        std::string why;
        auto snapshot = parse_answer(std::string_view(buffer_).substr(0, newline), &why);
        buffer_.erase(0, newline + 1);
        awaiting_ = false;
        if (!snapshot) {
            fail(why, now_ms);
            return false;
        }
        latest_ = std::move(snapshot);
        problem_.clear();
        answered_once_ = true;
        ++answers_on_connection_;
        backoff_ms_ = 0;
        return true;
    }
}

void DaemonLink::check_deadline(int64_t now_ms) {
    if (!awaiting_ || now_ms < deadline_ms_) return;
    int64_t waited = !is_command() ? kSocketAnswerMs : answered_once_ ? kCommandAnswerMs : kCommandFirstAnswerMs;
    on_stderr();
    std::string said = is_command() ? last_line(stderr_tail_) : "";
    fail(fmt::format("no answer within {} ms{}", waited, said.empty() ? "" : " (the command said: " + said + ")"),
         now_ms);
}

void DaemonLink::fail(std::string why, int64_t now_ms) {
    problem_ = fmt::format("{}: {}", source_, why);
    awaiting_ = false;
    close_link();
    backoff_ms_ = backoff_ms_ ? std::min(backoff_ms_ * 2, kMaxBackoffMs) : kFirstBackoffMs;
    retry_at_ms_ = now_ms + backoff_ms_;
}

// "exited with status 1: error: pods "x" not found: " for the problem text; "" while it runs.
std::string DaemonLink::command_exit_text() {
    if (child_ <= 0) return "";
    int status = 0;
    pid_t done = 0;
    for (int i = 0; i < 50 && (done = waitpid(child_, &status, WNOHANG)) == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // its stdout closed: it is exiting
    if (done != child_) return "";
    child_ = -1;
    on_stderr();
    std::string said = last_line(stderr_tail_);
    std::string how = WIFEXITED(status) ? fmt::format("exited with status {}", WEXITSTATUS(status))
                                        : fmt::format("killed by signal {}", WTERMSIG(status));
    return said.empty() ? how + ": " : fmt::format("{} ({}): ", said, how);
}

void DaemonLink::end_input() { in_.reset(); }

void DaemonLink::close_link() {
    answers_on_connection_ = 0;
    in_.reset();  // a relay passes the end of its input on: the daemon closes, the command ends
    out_.reset();
    err_.reset();
    buffer_.clear();
    end_shell_command(child_);
}

// ---- DaemonLinks ------------------------------------------------------------------

DaemonLinks::DaemonLinks(const std::vector<std::string>& sources) {
    for (const auto& source : sources) links_.push_back(std::make_unique<DaemonLink>(source));
}

DaemonLinks::~DaemonLinks() {
    // Every command gets its EOF at once, so they wind down together, not one after another.
    for (auto& link : links_) link->end_input();
}

DaemonLinks::Change DaemonLinks::set_sources(const std::vector<std::string>& sources) {
    Change change;
    std::vector<std::unique_ptr<DaemonLink>> kept;
    for (const auto& source : sources) {
        if (std::any_of(kept.begin(), kept.end(), [&](const auto& l) { return l->source() == source; })) continue;
        auto it = std::find_if(links_.begin(), links_.end(), [&](const auto& l) { return l && l->source() == source; });
        if (it != links_.end()) {
            kept.push_back(std::move(*it));  // its connection and latest answer go on
        } else {
            kept.push_back(std::make_unique<DaemonLink>(source));
            ++change.added;
        }
    }
    for (auto& gone : links_)
        if (gone) {
            gone->end_input();
            ++change.removed;
        }
    links_ = std::move(kept);  // the links left behind close as they are destroyed
    return change;
}

void DaemonLinks::request_all() {
    int64_t now = monotonic_ms();
    for (auto& link : links_) link->request(now);
}

bool DaemonLinks::all_settled() const {
    return std::all_of(links_.begin(), links_.end(), [](const auto& l) { return l->settled(); });
}

void DaemonLinks::wait(int wait_ms) {
    const int64_t until = monotonic_ms() + wait_ms;
    while (true) {
        int64_t now = monotonic_ms();
        for (auto& link : links_) link->check_deadline(now);
        if (all_settled() || now >= until) return;
        std::vector<pollfd> fds;
        std::vector<std::pair<DaemonLink*, bool>> owners;  // (link, is its stderr)
        for (auto& link : links_) {
            if (int fd = link->answer_fd(); fd >= 0) {
                fds.push_back({fd, POLLIN, 0});
                owners.emplace_back(link.get(), false);
            }
            if (int fd = link->stderr_fd(); fd >= 0 && link->awaiting()) {
                fds.push_back({fd, POLLIN, 0});
                owners.emplace_back(link.get(), true);
            }
        }
        int64_t next_deadline = until;
        int ready = poll(fds.data(), fds.size(), static_cast<int>(std::clamp<int64_t>(next_deadline - now, 0, 100)));
        if (ready < 0 && errno != EINTR) return;
        if (ready <= 0) continue;
        now = monotonic_ms();
        for (size_t i = 0; i < fds.size(); ++i) {
            if (!fds[i].revents) continue;
            auto [link, is_stderr] = owners[i];
            if (is_stderr)
                link->on_stderr();
            else if (link->on_readable(now))
                ++answers_received_;
        }
    }
}

std::vector<NodeAnswer> DaemonLinks::answers() const {
    std::vector<NodeAnswer> out;
    for (const auto& link : links_) out.push_back({link->source(), link->latest(), link->problem()});
    return out;
}

// ---- relay ------------------------------------------------------------------------

int relay(const std::string& socket_path, int in_fd, int out_fd, std::string* error) {
    std::string why;
    Fd socket_fd = connect_socket(socket_path, &why);
    if (!socket_fd) {
        *error = fmt::format("{}: {}", socket_path, why);
        return 1;
    }
    auto write_all = [](int fd, const char* data, size_t size, bool is_socket) {
        while (size > 0) {
            ssize_t n = is_socket ? send(fd, data, size, MSG_NOSIGNAL) : ::write(fd, data, size);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return false;
            data += n;
            size -= static_cast<size_t>(n);
        }
        return true;
    };
    bool input_open = true;
    char buffer[65536];
    while (true) {
        pollfd fds[2] = {{socket_fd.get(), POLLIN, 0}, {input_open ? in_fd : -1, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            *error = fmt::format("poll: {}", std::strerror(errno));
            return 1;
        }
        if (fds[0].revents) {
            ssize_t n = recv(socket_fd.get(), buffer, sizeof(buffer), 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return 0;  // the daemon is done (or went away): so is the relay
            if (!write_all(out_fd, buffer, static_cast<size_t>(n), false)) {
                *error = fmt::format("writing to stdout: {}", std::strerror(errno));
                return 1;
            }
        }
        if (fds[1].revents) {
            ssize_t n = ::read(in_fd, buffer, sizeof(buffer));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                input_open = false;
                shutdown(socket_fd.get(), SHUT_WR);  // no more requests: the daemon answers what it has, then closes
                continue;
            }
            if (!write_all(socket_fd.get(), buffer, static_cast<size_t>(n), true)) {
                *error = fmt::format("{}: cannot send: {}", socket_path, std::strerror(errno));
                return 1;
            }
        }
    }
}

}  // namespace tcpwhy::top
