#include "tcpwhy/top/source_list.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "shell_command.h"
#include "tcpwhy/top/daemon_client.h"

namespace tcpwhy::top {
namespace {

// kubectl through the API server answers in about a second; a run still going after this is stuck.
constexpr int64_t kRunTimeoutMs = 30000;
constexpr size_t kMaxOutputBytes = 1u << 20;  // a line per node: thousands of nodes are far below this
constexpr size_t kStderrTail = 4096;

// Reads what is there on a non-blocking fd into `into` (bounded); false once it is closed.
bool drain(Fd& fd, std::string& into, size_t max, bool keep_tail) {
    if (!fd) return false;
    char buffer[8192];
    while (true) {
        ssize_t n = ::read(fd.get(), buffer, sizeof(buffer));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return true;  // EAGAIN: more later
        if (n == 0) {
            fd.reset();
            return false;
        }
        into.append(buffer, static_cast<size_t>(n));
        if (into.size() > max) {
            if (keep_tail) into.erase(0, into.size() - max);
            else into.resize(max + 1);  // over the bound: finish() refuses it
        }
    }
}

}  // namespace

SourceList::SourceList(std::string command, int64_t every_ms) : command_(std::move(command)), every_ms_(every_ms) {}

SourceList::~SourceList() { end_run(); }

void SourceList::end_run() {
    out_.reset();
    err_.reset();
    end_shell_command(child_);
}

void SourceList::fail(const std::string& why) {
    problem_ = fmt::format("--connect-from '{}': {}{}", command_, why,
                           listed_once_ ? "; the nodes read stay as they were" : "");
}

void SourceList::start(int64_t now_ms) {
    next_run_ms_ = now_ms + every_ms_;
    ShellCommand started;
    std::string why;
    if (!start_shell_command(command_, started, &why)) return fail(why);
    started.in.reset();  // it reads nothing: EOF at once
    child_ = started.pid;
    out_ = std::move(started.out);
    err_ = std::move(started.err);
    output_.clear();
    errors_.clear();
    deadline_ms_ = now_ms + kRunTimeoutMs;
}

void SourceList::read_output() {
    drain(out_, output_, kMaxOutputBytes, false);
    drain(err_, errors_, kStderrTail, true);
}

std::optional<std::vector<std::string>> SourceList::finish(int status) {
    read_output();
    out_.reset();
    err_.reset();
    std::string said = last_line(errors_);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::string how = WIFEXITED(status) ? fmt::format("exited with status {}", WEXITSTATUS(status))
                                            : fmt::format("killed by signal {}", WTERMSIG(status));
        fail(said.empty() ? how : fmt::format("{} ({})", said, how));
        return std::nullopt;
    }
    if (output_.size() > kMaxOutputBytes) {
        fail(fmt::format("printed more than {} bytes; expected one source a line", kMaxOutputBytes));
        return std::nullopt;
    }
    std::vector<std::string> sources;
    size_t at = 0;
    while (at < output_.size()) {
        size_t end = output_.find('\n', at);
        if (end == std::string::npos) end = output_.size();
        std::string line = output_.substr(at, end - at);
        at = end + 1;
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
        size_t first = line.find_first_not_of(" \t");
        if (first != std::string::npos) sources.push_back(line.substr(first));
    }
    if (sources.empty()) {
        fail(said.empty() ? "listed no source" : said);
        return std::nullopt;
    }
    problem_.clear();
    listed_once_ = true;
    return sources;
}

std::optional<std::vector<std::string>> SourceList::poll(int64_t now_ms) {
    if (child_ <= 0) {
        if (now_ms >= next_run_ms_) start(now_ms);
        return std::nullopt;
    }
    read_output();
    int status = 0;
    pid_t done = waitpid(child_, &status, WNOHANG);
    if (done == child_) {
        child_ = -1;
        return finish(status);
    }
    if (now_ms >= deadline_ms_) {
        end_run();
        fail(fmt::format("no list within {} s", kRunTimeoutMs / 1000));
    }
    return std::nullopt;
}

std::optional<std::vector<std::string>> SourceList::run_now(int64_t timeout_ms) {
    int64_t now = monotonic_ms();
    if (child_ <= 0) start(now);
    if (child_ <= 0) return std::nullopt;  // could not start: problem() says why
    deadline_ms_ = std::min(deadline_ms_, now + timeout_ms);
    while (child_ > 0) {
        if (auto sources = poll(monotonic_ms())) return sources;
        if (child_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
}

}  // namespace tcpwhy::top
