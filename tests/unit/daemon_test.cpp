// The daemon's pieces without the kernel: the rotating archive on a real directory,
// export from it, the Prometheus exposition of a replayed race, flag units, and the
// `existing` event in the trace format.
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>

#include <fmt/format.h>

#include "tcpwhy/daemon/archive.h"
#include "tcpwhy/daemon/export.h"
#include "tcpwhy/daemon/metrics.h"
#include "tcpwhy/daemon/units.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/report.h"

using namespace tcpwhy;
using namespace tcpwhy::daemon;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "tcpwhy-archive-XXXXXX").string();
        path = mkdtemp(tmpl.data());
    }
    ~TempDir() { fs::remove_all(path); }
};

TraceHeader test_header() {
    TraceHeader h;
    h.hostname = "node-1";
    h.kernel = "6.18";
    h.mono_start_ns = 1'000'000'000'000;
    h.wall_start_ns = 1'700'000'000'000'000'000;
    return h;
}

// An event line whose cookie numbers it, so order and gaps show.
std::string numbered_line(uint64_t n, uint64_t ts_ns) {
    Event e;
    e.type = EventType::state;
    e.ts_ns = ts_ns;
    e.cookie = n;
    e.netns = 4026531840;
    e.laddr = *IpAddr::parse("10.56.5.6");
    e.raddr = *IpAddr::parse("130.211.0.143");
    e.lport = 8080;
    e.rport = static_cast<uint16_t>(40000 + n % 20000);
    e.old_state = TcpState::syn_recv;
    e.new_state = TcpState::established;
    return to_json_line(e);
}

// Every line of a segment: the header first, then the cookies of its events.
std::vector<uint64_t> read_segment(const std::string& path) {
    std::string error;
    auto reader = TraceReader::open(path, &error);
    REQUIRE(reader);
    std::vector<uint64_t> cookies;
    bool first = true;
    while (auto line = reader->next_line()) {
        auto parsed = parse_json_line(*line);
        if (first) REQUIRE(parsed.kind == LineKind::header);
        else REQUIRE(parsed.kind == LineKind::event);
        if (!first) cookies.push_back(parsed.event.cookie);
        first = false;
    }
    CHECK(reader->error().empty());
    return cookies;
}

std::vector<fs::path> segment_files(const fs::path& dir) {
    std::vector<fs::path> out;
    for (const auto& entry : fs::directory_iterator(dir))
        if (is_segment_name(entry.path().filename().string())) out.push_back(entry.path());
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace

TEST_CASE("daemon units: sizes and durations as the flags take them") {
    CHECK(parse_size("64K") == 65536u);
    CHECK(parse_size("16M") == 16u << 20);
    CHECK(parse_size("1GiB") == 1ull << 30);
    CHECK(parse_size("512") == 512u);
    CHECK_FALSE(parse_size("12X"));
    CHECK_FALSE(parse_size("M"));
    CHECK_FALSE(parse_size("99999999999999999999G"));
    CHECK(parse_duration_s("90s") == 90u);
    CHECK(parse_duration_s("30m") == 1800u);
    CHECK(parse_duration_s("12h") == 43200u);
    CHECK(parse_duration_s("7d") == 604800u);
    CHECK(parse_duration_s("15") == 15u);
    CHECK_FALSE(parse_duration_s("5w"));
    CHECK_FALSE(parse_duration_s("-1m"));
}

TEST_CASE("daemon archive: size rotation keeps the newest lines, in order, under the total cap") {
    TempDir dir;
    ArchiveLimits limits;
    limits.segment_bytes = 16 << 10;
    limits.total_bytes = 64 << 10;
    limits.min_free_bytes = 0;
    limits.min_free_percent = 0;
    std::string error;
    auto archive = Archive::open(dir.path.string(), limits, test_header(), &error);
    REQUIRE(archive);

    constexpr uint64_t kLines = 40000;  // ~8 MB of JSONL: far more than the cap
    for (uint64_t n = 1; n <= kLines; ++n) archive->write(numbered_line(n, 2'000'000'000'000 + n * 1000));
    archive->close();

    auto stats = archive->stats();
    CHECK(stats.lines_written == kLines);
    CHECK(stats.write_errors == 0);
    CHECK(stats.segments_deleted > 0);
    auto files = segment_files(dir.path);
    REQUIRE(files.size() >= 2);
    CHECK(files.size() == stats.segments);
    uint64_t on_disk = 0;
    for (const auto& f : files) on_disk += fs::file_size(f);
    CHECK(on_disk == stats.bytes);
    // The size is read every 64 KiB of input, so a segment overshoots by at most that much compressed.
    CHECK(on_disk <= limits.total_bytes + (64 << 10));

    // Oldest gone, newest kept, no gap inside what is kept.
    std::vector<uint64_t> cookies;
    for (const auto& f : files) {
        auto part = read_segment(f.string());
        cookies.insert(cookies.end(), part.begin(), part.end());
    }
    REQUIRE_FALSE(cookies.empty());
    CHECK(cookies.back() == kLines);
    CHECK(cookies.front() > 1);
    for (size_t i = 1; i < cookies.size(); ++i) REQUIRE(cookies[i] == cookies[i - 1] + 1);
}

TEST_CASE("daemon archive: a restart adopts the old segments and numbers on after them") {
    TempDir dir;
    ArchiveLimits limits;
    limits.min_free_bytes = 0;
    limits.min_free_percent = 0;
    std::string error;
    {
        auto first = Archive::open(dir.path.string(), limits, test_header(), &error);
        REQUIRE(first);
        first->write(numbered_line(1, 2'000'000'000'000));
    }
    auto second = Archive::open(dir.path.string(), limits, test_header(), &error);
    REQUIRE(second);
    second->write(numbered_line(2, 2'000'000'000'001));
    second->rotate();
    auto segments = second->segments_since(0);
    REQUIRE(segments.size() == 2);
    CHECK(segments[0].seq == 1);
    CHECK(segments[1].seq == 2);
    CHECK(read_segment(segments[0].path) == std::vector<uint64_t>{1});
    CHECK(read_segment(segments[1].path) == std::vector<uint64_t>{2});
}

TEST_CASE("daemon archive: segments past the age limit are deleted") {
    TempDir dir;
    ArchiveLimits limits;
    limits.min_free_bytes = 0;
    limits.min_free_percent = 0;
    limits.max_age_s = 3600;
    std::string error;
    auto archive = Archive::open(dir.path.string(), limits, test_header(), &error);
    REQUIRE(archive);
    archive->write(numbered_line(1, 2'000'000'000'000));
    archive->rotate();
    archive->write(numbered_line(2, 2'000'000'000'001));
    archive->rotate();
    auto segments = archive->segments_since(0);
    REQUIRE(segments.size() == 2);
    archive->maintain(time(nullptr));
    CHECK(archive->segments_since(0).size() == 2);
    // Two hours later the first segment's last write is past the limit... as is the second's.
    archive->maintain(segments[0].last_write + 2 * 3600);
    CHECK(archive->segments_since(0).empty());
    CHECK(archive->stats().segments_deleted == 2);
    CHECK(segment_files(dir.path).empty());
}

TEST_CASE("daemon archive: a write failure is counted, the line dropped and counted, and writing resumes") {
    TempDir dir;
    ArchiveLimits limits;
    limits.min_free_bytes = 0;
    limits.min_free_percent = 0;
    std::string error;
    auto archive_dir = dir.path / "archive";
    auto archive = Archive::open(archive_dir.string(), limits, test_header(), &error);
    REQUIRE(archive);
    archive->write(numbered_line(1, 2'000'000'000'000));
    archive->rotate();
    fs::remove_all(archive_dir);  // the volume went away under the daemon
    archive->write(numbered_line(2, 2'000'000'000'001));
    archive->write(numbered_line(3, 2'000'000'000'002));
    auto stats = archive->stats();
    CHECK(stats.write_errors == 1);  // one failed open; then it waits before trying again
    CHECK(stats.lines_dropped_write_error == 2);
    CHECK(stats.lines_written == 1);
    CHECK(stats.last_error.find("cannot create") != std::string::npos);
}

TEST_CASE("daemon archive: lines gzip held when the disk filled are counted as dropped, not written") {
    if (geteuid() != 0) {
        WARN("skipped: needs root to mount a small tmpfs");
        return;
    }
    TempDir dir;
    auto mount_point = dir.path / "small";
    fs::create_directories(mount_point);
    REQUIRE(std::system(fmt::format("mount -t tmpfs -o size=64k tcpwhy-unit {}", mount_point.string()).c_str()) == 0);
    struct Unmount {
        fs::path path;
        ~Unmount() { std::system(fmt::format("umount {} >/dev/null 2>&1", path.string()).c_str()); }
    } unmount{mount_point};

    ArchiveLimits limits;
    limits.min_free_bytes = 0;
    limits.min_free_percent = 0;
    std::string error;
    auto archive = Archive::open((mount_point / "archive").string(), limits, test_header(), &error);
    REQUIRE(archive);
    archive->write(numbered_line(1, 2'000'000'000'000));  // opens the segment: header and line in gzip's buffer
    // Another writer fills the disk; gzip only finds out when it pushes its buffer out.
    std::system(fmt::format("dd if=/dev/zero of={} bs=4k >/dev/null 2>&1", (mount_point / "filler").string()).c_str());
    for (uint64_t n = 2; n <= 50; ++n) archive->write(numbered_line(n, 2'000'000'000'000 + n));
    archive->close();
    auto stats = archive->stats();
    INFO(stats.last_error);
    CHECK(stats.write_errors > 0);
    CHECK(stats.lines_written == 0);
    CHECK(stats.lines_dropped_write_error == 50);
}

TEST_CASE("daemon archive: a directory that cannot be made is refused with the reason") {
    std::string error;
    auto archive = Archive::open("/proc/no-such-dir/archive", ArchiveLimits{}, test_header(), &error);
    CHECK_FALSE(archive);
    CHECK(error.find("cannot create archive directory /proc/no-such-dir/archive") != std::string::npos);
}

TEST_CASE("daemon export: the events since the cutoff, behind one header") {
    TempDir dir;
    ArchiveLimits limits;
    limits.min_free_bytes = 0;
    limits.min_free_percent = 0;
    std::string error;
    TraceHeader header = test_header();
    auto archive = Archive::open(dir.path.string(), limits, header, &error);
    REQUIRE(archive);
    // Events one second apart from the trace's start: wall = wall_start + (ts - mono_start).
    for (uint64_t n = 1; n <= 10; ++n) archive->write(numbered_line(n, header.mono_start_ns + n * 1'000'000'000));
    archive->rotate();
    for (uint64_t n = 11; n <= 20; ++n) archive->write(numbered_line(n, header.mono_start_ns + n * 1'000'000'000));
    archive->rotate();

    std::vector<std::string> lines;
    auto stats = export_segments(archive->segments_since(0), header.wall_start_ns + 15 * 1'000'000'000ull,
                                 to_json_line(header), [&](std::string_view line) {
                                     lines.emplace_back(line);
                                     return true;
                                 });
    CHECK(stats.segments == 2);
    CHECK(stats.events == 6);  // 15..20
    CHECK(stats.bad_lines == 0);
    REQUIRE(lines.size() == 7);
    CHECK(parse_json_line(lines[0]).kind == LineKind::header);
    CHECK(parse_json_line(lines[1]).event.cookie == 15);
    CHECK(parse_json_line(lines[6]).event.cookie == 20);
}

TEST_CASE("trace format: the existing event round-trips with its state") {
    Event e;
    e.type = EventType::existing;
    e.ts_ns = 5;
    e.cookie = 77;
    e.netns = 4026531840;
    e.laddr = *IpAddr::parse("10.0.0.1");
    e.raddr = *IpAddr::parse("10.0.0.2");
    e.lport = 8080;
    e.rport = 40000;
    e.new_state = TcpState::established;
    std::string line = to_json_line(e);
    CHECK(line.find("\"type\":\"existing\"") != std::string::npos);
    auto parsed = parse_json_line(line);
    REQUIRE(parsed.kind == LineKind::event);
    CHECK(parsed.event.type == EventType::existing);
    CHECK(parsed.event.new_state == TcpState::established);
    CHECK(parsed.event.cookie == 77);
}

TEST_CASE("daemon metrics: a replayed race as Prometheus text, cardinality bounded") {
    Correlator correlator(CorrelatorConfig::defaults());
    EventMetrics events(correlator.config());
    ReplayStats replay;
    std::string error;
    REQUIRE(replay_traces({std::string(TCPWHY_SOURCE_DIR) + "/tests/fixtures/node_keepalive_race.jsonl"}, correlator,
                          [&](const Event& e) {
                              events.on_event(e, correlator.backend_of(e));
                          },
                          replay, &error) == kReportOk);
    correlator.finish();

    MetricsSnapshot snap;
    snap.events_by_type = events.events_by_type();
    snap.resets_sent = events.resets_sent();
    snap.resets_received = events.resets_received();
    snap.backends = correlator.backends();
    snap.findings = correlator.findings();
    snap.counts = correlator.counts();
    snap.lb_name = "gcp";
    snap.version = "test";
    std::string text = render_prometheus(snap, 200);
    INFO(text);

    // Every line is a comment or `name{labels} value`, and every family is declared once.
    std::regex sample(R"(^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? [0-9.e+-]+$)");
    std::map<std::string, int> types;
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.rfind("# TYPE ", 0) == 0) {
            types[line.substr(7, line.find(' ', 7) - 7)]++;
            continue;
        }
        if (line.rfind("# HELP ", 0) == 0) continue;
        REQUIRE(std::regex_match(line, sample));
    }
    for (const auto& [family, n] : types) CHECK(n == 1);

    uint64_t reset_events = snap.events_by_type[static_cast<size_t>(EventType::reset_sent)];
    REQUIRE(reset_events > 0);
    CHECK(text.find(fmt::format("tcpwhy_events_total{{type=\"reset_sent\"}} {}\n", reset_events)) != std::string::npos);
    CHECK(text.find("tcpwhy_keepalive_races_total{namespace=\"\",pod=\"\",port=\"8080\","
                    "lb_range=\"130.211.0.0/22\"} 6\n") !=
          std::string::npos);
    CHECK(text.find("tcpwhy_findings{namespace=\"\",pod=\"\",port=\"8080\",kind=\"idle_close_race\",severity=\"critical\"} 6\n") !=
          std::string::npos);
    CHECK(text.find("tcpwhy_idle_close_seconds_bucket{namespace=\"\",pod=\"\",port=\"8080\",le=\"5\"} 0\n") !=
          std::string::npos);  // Node.js closes at 6.0 s: above the 5 s bucket, in the 10 s one
    CHECK(text.find("tcpwhy_idle_close_seconds_bucket{namespace=\"\",pod=\"\",port=\"8080\",le=\"10\"} 6\n") !=
          std::string::npos);
    uint64_t kernel_reason_resets = 0;
    for (const auto& [key, n] : snap.resets_sent)
        if (key.port == 8080 && key.lb_range == "130.211.0.0/22") kernel_reason_resets += n;
    CHECK(kernel_reason_resets == 6);

    // A second, quieter socket; with one label set allowed it folds into _other.
    snap.resets_sent[{false, 4026531840, 9999, false, ResetReason::no_socket, ""}] = 1;
    std::string folded = render_prometheus(snap, 1);
    CHECK(folded.find("tcpwhy_resets_sent_total{namespace=\"_other\",pod=\"_other\",port=\"_other\","
                      "reason=\"NO_SOCKET\",lb_range=\"\"} 1\n") != std::string::npos);
    CHECK(folded.find("port=\"9999\"") == std::string::npos);
    CHECK(folded.find("tcpwhy_keepalive_races_total{namespace=\"\",pod=\"\",port=\"8080\"") != std::string::npos);
    CHECK(folded.find("tcpwhy_metrics_series_folded 1\n") != std::string::npos);
}

TEST_CASE("daemon metrics: label values are escaped") {
    CHECK(escape_label_value("a\"b\\c\nd") == "a\\\"b\\\\c\\nd");
}

TEST_CASE("daemon metrics: resets are labelled with the backend's port, never an ephemeral one") {
    Correlator correlator(CorrelatorConfig::defaults());
    EventMetrics metrics(correlator.config());
    // As the daemon does: the correlator first, then the metrics with its backend for the event.
    auto observe = [&](const Event& e) {
        correlator.on_event(e);
        metrics.on_event(e, correlator.backend_of(e));
    };
    auto event = [](EventType type, uint16_t lport, uint16_t rport) {
        Event e;
        e.type = type;
        e.netns = 4026531840;
        e.laddr = *IpAddr::parse("10.56.5.6");
        e.raddr = *IpAddr::parse("130.211.0.143");
        e.lport = lport;
        e.rport = rport;
        e.sk_kind = SockKind::full;
        return e;
    };
    Event listen = event(EventType::existing, 8080, 0);
    listen.new_state = TcpState::listen;
    observe(listen);
    Event inbound = event(EventType::reset_sent, 8080, 51234);
    inbound.reason = ResetReason::tcp_abort_on_data;
    observe(inbound);
    Event outbound = event(EventType::reset_sent, 43210, 5432);  // this node's client to a database
    outbound.raddr = *IpAddr::parse("10.60.0.7");
    outbound.reason = ResetReason::tcp_abort_on_close;
    observe(outbound);

    std::map<uint16_t, std::pair<bool, std::string>> by_port;
    for (const auto& [key, n] : metrics.resets_sent()) {
        CHECK(n == 1);
        by_port[key.port] = {key.outbound, key.lb_range};
    }
    REQUIRE(by_port.size() == 2);
    CHECK(by_port[8080] == std::pair<bool, std::string>{false, "130.211.0.0/22"});
    CHECK(by_port[5432] == std::pair<bool, std::string>{true, ""});
}
