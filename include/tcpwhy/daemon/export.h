// `{"cmd":"export","since_s":N}`: the archived JSONL trace of the last N seconds, as
// one plain (uncompressed) JSONL stream that `tcpwhy report` reads.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
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

// How far an export is through its segments, for the client's progress meter.
struct ExportProgress {
    uint64_t bytes_read = 0;   // of the segments, as stored (gzip)
    uint64_t bytes_total = 0;  // the segments' sizes when they were listed
    uint64_t events = 0;       // sent so far
    size_t segment = 0;        // the one being read, from 0
    size_t segments = 0;
};

// `{"export_progress":{...}}`: the line an export asked with "progress":true carries between
// trace lines (the client strips it), and its reading back. Not a trace line: it has no "v".
std::string export_progress_line(const ExportProgress& progress);
std::optional<ExportProgress> parse_export_progress_line(std::string_view line);

// Streams the events of `segments` (oldest first) whose wall time is at or after
// cutoff_wall_ns. `header` (the running daemon's header line) goes first; a
// segment's header is repeated only when it differs from the last one sent (another
// run, another clock base). sink returns false to stop (the client went away).
// `progress`, when set, is called as each segment opens and every few thousand lines.
ExportStats export_segments(const std::vector<ArchiveSegment>& segments, uint64_t cutoff_wall_ns,
                            const std::string& header, const std::function<bool(std::string_view)>& sink,
                            const std::function<void(const ExportProgress&)>& progress = {});

}  // namespace tcpwhy::daemon
