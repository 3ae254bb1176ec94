#include "tcpwhy/daemon/export.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

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

constexpr uint64_t kProgressEveryLines = 16 * 1024;

}  // namespace

std::string export_progress_line(const ExportProgress& p) {
    return nlohmann::json{{"export_progress",
                           {{"bytes_read", p.bytes_read}, {"bytes_total", p.bytes_total}, {"events", p.events},
                            {"segment", p.segment}, {"segments", p.segments}}}}
        .dump();
}

std::optional<ExportProgress> parse_export_progress_line(std::string_view line) {
    if (!line.starts_with(R"({"export_progress":)")) return std::nullopt;
    auto json = nlohmann::json::parse(line, nullptr, false);
    if (!json.is_object() || !json.contains("export_progress") || !json["export_progress"].is_object())
        return std::nullopt;
    const auto& o = json["export_progress"];
    auto number = [&](const char* key) -> uint64_t {
        return o.contains(key) && o[key].is_number_unsigned() ? o[key].get<uint64_t>() : 0;
    };
    ExportProgress p;
    p.bytes_read = number("bytes_read");
    p.bytes_total = number("bytes_total");
    p.events = number("events");
    p.segment = number("segment");
    p.segments = number("segments");
    return p;
}

ExportStats export_segments(const std::vector<ArchiveSegment>& segments, uint64_t cutoff_wall_ns,
                            const std::string& header, const std::function<bool(std::string_view)>& sink,
                            const std::function<void(const ExportProgress&)>& progress) {
    ExportStats stats;
    std::string last_header = header;
    if (!sink(header)) return stats;
    ExportProgress where;
    where.segments = segments.size();
    for (const auto& segment : segments) where.bytes_total += segment.bytes;
    uint64_t bytes_before = 0;  // of the segments already read
    for (const auto& segment : segments) {
        std::string error;
        auto reader = open_segment(segment.path, &error);
        if (!reader) {
            stats.warnings.push_back(error);  // deleted by rotation since it was listed, most likely
            bytes_before += segment.bytes;
            ++where.segment;
            continue;
        }
        ++stats.segments;
        auto report_progress = [&] {
            where.bytes_read = std::min(where.bytes_total, bytes_before + reader->bytes_read());
            where.events = stats.events;
            progress(where);
        };
        if (progress) report_progress();
        uint64_t lines_until_progress = kProgressEveryLines;
        TraceHeader clock;  // the segment's: maps its ts_ns to wall time
        bool have_clock = false;
        ParsedLine parsed;
        while (auto line = reader->next_line()) {
            if (progress && --lines_until_progress == 0) {
                lines_until_progress = kProgressEveryLines;
                report_progress();
            }
            parse_json_line(*line, parsed);
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
        bytes_before += segment.bytes;
        ++where.segment;
        if (progress) {
            where.bytes_read = std::min(where.bytes_total, bytes_before);
            where.events = stats.events;
            progress(where);
        }
    }
    return stats;
}

}  // namespace tcpwhy::daemon
