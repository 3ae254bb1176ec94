// `tcpwhy top --connect SOURCE`: asks running `tcpwhy daemon`s for their live view (protocol:
// include/tcpwhy/live_view.h). A SOURCE is the daemon's Unix socket, or `exec:COMMAND`: a
// command whose stdin and stdout carry the protocol, so a transport such as
// `kubectl exec -i POD -- tcpwhy relay` reaches a daemon's socket inside its pod.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tcpwhy/fd.h"
#include "tcpwhy/live_view.h"
#include "tcpwhy/top/merge.h"

namespace tcpwhy::top {

// One request, one answer: sends {"cmd":"snapshot"}, reads one line, parses it.
// nullopt and *error (one line, naming the socket) when the daemon cannot be
// reached, does not answer within timeout_ms, or answers something else.
std::optional<Snapshot> fetch_snapshot(const std::string& socket_path, int timeout_ms, std::string* error);

inline constexpr std::string_view kExecPrefix = "exec:";

// Milliseconds on CLOCK_MONOTONIC: the clock of every now_ms below (and of poll()'s waits).
int64_t monotonic_ms();

// One daemon, the connection kept open from one snapshot to the next (a daemon answers any
// number of requests on a connection; a command such as kubectl exec is worth starting once).
class DaemonLink {
public:
    explicit DaemonLink(std::string source);
    ~DaemonLink();  // closes; a command it started gets EOF, then SIGTERM, then SIGKILL
    DaemonLink(const DaemonLink&) = delete;
    DaemonLink& operator=(const DaemonLink&) = delete;

    const std::string& source() const { return source_; }
    bool is_command() const { return source_.starts_with(kExecPrefix); }

    // Sends a snapshot request unless one is out, connecting (or starting the command) first.
    // After a failure a command is started again no sooner than its back-off allows.
    void request(int64_t now_ms);
    bool awaiting() const { return awaiting_; }
    // What to poll while an answer is awaited (-1: none); the command's stderr too.
    int answer_fd() const;
    int stderr_fd() const;
    // Reads what is there; returns true when a whole answer arrived (latest() then has it).
    bool on_readable(int64_t now_ms);
    void on_stderr();
    // An answer not in by its deadline: the link is closed and the problem says so.
    void check_deadline(int64_t now_ms);
    // Closes the command's stdin (or the socket) without waiting for it to end.
    void end_input();

    const std::optional<Snapshot>& latest() const { return latest_; }
    // Why the latest request got no answer ("" when it did).
    const std::string& problem() const { return problem_; }
    // The latest request was answered or failed.
    bool settled() const { return !awaiting_; }

private:
    bool connect(int64_t now_ms);
    void fail(std::string why, int64_t now_ms);
    void close_link();
    std::string command_exit_text();

    std::string source_;
    Fd in_, out_, err_;  // socket: in_ only (both ways); command: its stdin, stdout, stderr
    pid_t child_ = -1;
    bool awaiting_ = false;
    int64_t deadline_ms_ = 0;
    int64_t retry_at_ms_ = 0;
    int64_t backoff_ms_ = 0;
    bool answered_once_ = false;
    uint64_t answers_on_connection_ = 0;
    std::string buffer_, stderr_tail_;
    std::optional<Snapshot> latest_;
    std::string problem_;
};

// Several daemons at once: one request each per round, their answers waited for together.
class DaemonLinks {
public:
    explicit DaemonLinks(const std::vector<std::string>& sources);
    ~DaemonLinks();
    // The sources from now on, in this order: a link kept keeps its connection and its latest
    // answer; a new one is connected at the next request; one left out is closed.
    struct Change {
        size_t added = 0, removed = 0;
    };
    Change set_sources(const std::vector<std::string>& sources);
    // Asks every daemon that is not still answering the last request.
    void request_all();
    // Waits up to wait_ms for answers (returns sooner once every request is settled).
    void wait(int wait_ms);
    bool all_settled() const;
    size_t size() const { return links_.size(); }
    const DaemonLink& link(size_t i) const { return *links_[i]; }
    std::vector<NodeAnswer> answers() const;
    uint64_t answers_received() const { return answers_received_; }

private:
    std::vector<std::unique_ptr<DaemonLink>> links_;
    uint64_t answers_received_ = 0;
};

// `tcpwhy relay`: copies stdin to the daemon's socket and the socket to stdout until the daemon
// closes (stdin's end is passed on as a half-close), so `kubectl exec -i POD -- tcpwhy relay` is
// a `top --connect` transport. Returns 0, or 1 with *error when the socket cannot be reached or a copy fails.
int relay(const std::string& socket_path, int in_fd, int out_fd, std::string* error);

}  // namespace tcpwhy::top
