// `tcpwhy top --connect PATH`: asks a running `tcpwhy daemon` for its live view over
// its Unix socket (protocol: include/tcpwhy/live_view.h).
#pragma once

#include <optional>
#include <string>

#include "tcpwhy/live_view.h"

namespace tcpwhy::top {

// One request, one answer: sends {"cmd":"snapshot"}, reads one line, parses it.
// nullopt and *error (one line, naming the socket) when the daemon cannot be
// reached, does not answer within timeout_ms, or answers something else.
std::optional<Snapshot> fetch_snapshot(const std::string& socket_path, int timeout_ms, std::string* error);

}  // namespace tcpwhy::top
