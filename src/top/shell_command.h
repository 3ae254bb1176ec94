// A command run through /bin/sh in a process group of its own, its stdin, stdout and stderr
// pipes to us (non-blocking on our side): the transports of `top --connect exec:` and the
// lister of `top --connect-from`.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "tcpwhy/fd.h"

namespace tcpwhy::top {

struct ShellCommand {
    pid_t pid = -1;
    Fd in, out, err;  // its stdin (ours to write), stdout and stderr (ours to read)
};

// Starts `command`; false and *why when it cannot be started.
bool start_shell_command(const std::string& command, ShellCommand& started, std::string* why);

// Ends what the command started: SIGTERM, then SIGKILL, to its process group (give it EOF
// first: a relay passes that on). Waits for it, at most about a second.
void end_shell_command(pid_t& pid);

// The last non-empty line of what a command wrote on stderr ("error: pod not found").
std::string last_line(std::string_view text);

}  // namespace tcpwhy::top
