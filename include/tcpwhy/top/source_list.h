// `tcpwhy top --connect-from COMMAND`: the daemons to read come from a command, run again every
// so often, so the view follows a cluster's nodes as they come and go (kubectl tcpwhy top runs
// `kubectl tcpwhy connects`, which lists the DaemonSet's running pods). Each line the command
// prints is a source as --connect takes it; blank lines are skipped.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tcpwhy/fd.h"

namespace tcpwhy::top {

class SourceList {
public:
    SourceList(std::string command, int64_t every_ms);
    ~SourceList();  // a run still going is ended
    SourceList(const SourceList&) = delete;
    SourceList& operator=(const SourceList&) = delete;

    // Starts a run when one is due and reads what the running one wrote, without waiting
    // (now_ms: monotonic_ms(), daemon_client.h).
    // A new list once a run exited 0 (the same list again too); nullopt otherwise.
    std::optional<std::vector<std::string>> poll(int64_t now_ms);
    // Runs it now and waits for it, at most timeout_ms: for a single snapshot.
    std::optional<std::vector<std::string>> run_now(int64_t timeout_ms);
    // Why the latest run gave no list, in one line naming the command; "" when it did.
    const std::string& problem() const { return problem_; }
    const std::string& command() const { return command_; }

private:
    void start(int64_t now_ms);
    void end_run();  // closes its pipes and ends it, if one is going
    void read_output();
    std::optional<std::vector<std::string>> finish(int status);
    void fail(const std::string& why);

    std::string command_;
    int64_t every_ms_;
    int64_t next_run_ms_ = 0;
    int64_t deadline_ms_ = 0;
    pid_t child_ = -1;
    Fd out_, err_;
    std::string output_, errors_;
    std::string problem_;
    bool listed_once_ = false;  // a failure after a list leaves the nodes of that list in the view
};

}  // namespace tcpwhy::top
