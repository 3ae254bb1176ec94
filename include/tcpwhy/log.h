// tcpwhy's one logger, on stderr (stdout stays the command's output: text, JSON Lines,
// the screen). Every message is one line that starts with "tcpwhy: ":
//
//   tcpwhy: <info>
//   tcpwhy: WARNING <what happened and what it means>
//   tcpwhy: <problem>          (error; the caller exits non-zero)
//     fix: <what to do>
//   tcpwhy: debug: <detail>    (only with -v; libbpf's own log among it)
//
// Backed by spdlog; safe to call from any thread.
#pragma once

#include <string_view>

namespace tcpwhy::log {

// -v: debug messages, libbpf's included.
void set_verbose(bool verbose);
bool verbose();

void info(std::string_view message);
void warn(std::string_view message);
// A problem the command stops for, and what to do about it (may be empty).
void error(std::string_view problem, std::string_view fix = {});
void debug(std::string_view message);

}  // namespace tcpwhy::log
