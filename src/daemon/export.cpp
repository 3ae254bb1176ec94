#include "tcpwhy/daemon/export.h"

#include "tcpwhy/jsonl.h"
#include "tcpwhy/report.h"

namespace tcpwhy::daemon {

ExportStats export_segments(const std::vector<ArchiveSegment>& segments, uint64_t cutoff_wall_ns,
                            const std::string& header, const std::function<bool(std::string_view)>& sink) {
    ExportStats stats;
    std::string last_header = header;
    if (!sink(header)) return stats;
    for (const auto& segment : segments) {
        std::string error;
        auto reader = TraceReader::open(segment.path, &error);
        if (!reader) {
            stats.warnings.push_back(error);  // deleted by rotation since it was listed, most likely
            continue;
        }
        ++stats.segments;
        TraceHeader clock;  // the segment's: maps its ts_ns to wall time
        bool have_clock = false;
        while (auto line = reader->next_line()) {
            auto parsed = parse_json_line(*line);
            if (parsed.kind == LineKind::header) {
                clock = parsed.header;
                have_clock = true;
                if (*line != last_header) {
                    last_header = std::string(*line);
                    if (!sink(*line)) return stats;
                }
                continue;
            }
            if (parsed.kind != LineKind::event || !have_clock) {
                ++stats.bad_lines;
                continue;
            }
            uint64_t wall_ns = clock.wall_start_ns + (parsed.event.ts_ns - clock.mono_start_ns);
            if (wall_ns < cutoff_wall_ns) continue;
            ++stats.events;
            if (!sink(*line)) return stats;
        }
        if (!reader->error().empty()) stats.warnings.push_back(segment.path + ": " + reader->error());
    }
    return stats;
}

}  // namespace tcpwhy::daemon
