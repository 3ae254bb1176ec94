// `{"cmd":"export","since_s":N}`: the archived JSONL trace of the last N seconds, as
// one plain (uncompressed) JSONL stream that `tcpwhy report` reads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tcpwhy/daemon/archive.h"

namespace tcpwhy::daemon {

struct ExportStats {
    uint64_t segments = 0;
    uint64_t events = 0;
    uint64_t bad_lines = 0;             // lines that do not parse (e.g. cut by a kill -9)
    std::vector<std::string> warnings;  // unreadable or truncated segments
};

// Streams the events of `segments` (oldest first) whose wall time is at or after
// cutoff_wall_ns. `header` (the running daemon's header line) goes first; a
// segment's header is repeated only when it differs from the last one sent (another
// run, another clock base). sink returns false to stop (the client went away).
ExportStats export_segments(const std::vector<ArchiveSegment>& segments, uint64_t cutoff_wall_ns,
                            const std::string& header, const std::function<bool(std::string_view)>& sink);

}  // namespace tcpwhy::daemon
