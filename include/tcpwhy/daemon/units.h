// Sizes ("64K", "16M", "1G") and durations ("90s", "30m", "12h", "7d") as the daemon's flags take them.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace tcpwhy::daemon {

// Bytes; a bare number is bytes; K, M, G, T are powers of 1024 (an optional trailing "i"/"iB"/"B" is accepted).
std::optional<uint64_t> parse_size(std::string_view text);
// Seconds; a bare number is seconds; s, m, h, d suffixes.
std::optional<uint64_t> parse_duration_s(std::string_view text);

}  // namespace tcpwhy::daemon
