#include "tcpwhy/daemon/export.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "tcpwhy/jsonl.h"
#include "tcpwhy/report.h"

namespace tcpwhy::daemon {
namespace {

// A segment as the archive wrote it: a plain file, never through a symlink (O_NOFOLLOW), and
// never a FIFO or device planted under its name (O_NONBLOCK keeps the open from waiting on one).
std::unique_ptr<TraceReader> open_segment(const std::string& path, std::string* error) {
    int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *error = fmt::format("{}: {}", path, errno == ELOOP ? "a symlink, not read" : strerror(errno));
        return nullptr;
    }
    struct stat st{};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *error = fmt::format("{}: not a regular file, not read", path);
        return nullptr;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return TraceReader::from_fd(fd, path, error);
}

}  // namespace

ExportStats export_segments(const std::vector<ArchiveSegment>& segments, uint64_t cutoff_wall_ns,
                            const std::string& header, const std::function<bool(std::string_view)>& sink) {
    ExportStats stats;
    std::string last_header = header;
    if (!sink(header)) return stats;
    for (const auto& segment : segments) {
        std::string error;
        auto reader = open_segment(segment.path, &error);
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
            // Names and servers (each segment's preamble repeats those known so far) go along, so
            // `report` of an export names backends and words the fix as the live run did.
            if (parsed.kind == LineKind::workload || parsed.kind == LineKind::server) {
                if (!sink(*line)) return stats;
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
