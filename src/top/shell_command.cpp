#include "shell_command.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <fmt/format.h>

extern char** environ;

namespace tcpwhy::top {
namespace {

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

bool start_shell_command(const std::string& command, ShellCommand& started, std::string* why) {
    // In a process group of its own: the terminal's Ctrl-C is ours to handle, and ending the
    // command ends every process it started.
    int in_pipe[2], out_pipe[2], err_pipe[2];
    if (pipe2(in_pipe, O_CLOEXEC) != 0) return *why = fmt::format("pipe: {}", std::strerror(errno)), false;
    if (pipe2(out_pipe, O_CLOEXEC) != 0) {
        ::close(in_pipe[0]), ::close(in_pipe[1]);
        return *why = fmt::format("pipe: {}", std::strerror(errno)), false;
    }
    if (pipe2(err_pipe, O_CLOEXEC) != 0) {
        ::close(in_pipe[0]), ::close(in_pipe[1]), ::close(out_pipe[0]), ::close(out_pipe[1]);
        return *why = fmt::format("pipe: {}", std::strerror(errno)), false;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in_pipe[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    posix_spawnattr_setpgroup(&attributes, 0);
    // Signals this process ignores (SIGPIPE) or blocks are the command's to have by default.
    sigset_t defaults, none;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    std::string text = command;
    char* argv[] = {const_cast<char*>("sh"), const_cast<char*>("-c"), text.data(), nullptr};
    pid_t pid = -1;
    int rc = posix_spawn(&pid, "/bin/sh", &actions, &attributes, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    ::close(in_pipe[0]);
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    Fd in(in_pipe[1]), out(out_pipe[0]), err(err_pipe[0]);
    if (rc != 0) return *why = fmt::format("cannot start /bin/sh: {}", std::strerror(rc)), false;
    set_nonblocking(in.get());
    set_nonblocking(out.get());
    set_nonblocking(err.get());
    started.pid = pid;
    started.in = std::move(in);
    started.out = std::move(out);
    started.err = std::move(err);
    return true;
}

void end_shell_command(pid_t& pid) {
    if (pid <= 0) return;
    // A moment to end by itself (it has EOF), then SIGTERM, then SIGKILL to the group it leads.
    const pid_t group = pid;
    for (int signal_to_send : {0, SIGTERM, SIGKILL}) {
        if (signal_to_send) kill(-group, signal_to_send);
        for (int i = 0; i < 50; ++i) {
            if (waitpid(pid, nullptr, WNOHANG) == pid) {
                pid = -1;
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
    waitpid(pid, nullptr, 0);
    pid = -1;
}

std::string last_line(std::string_view text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
    auto newline = text.find_last_of('\n');
    return std::string(newline == std::string_view::npos ? text : text.substr(newline + 1));
}

}  // namespace tcpwhy::top
