// The archive adopts only its own files, and keeps the node out of the kubelet's
// DiskPressure eviction by default.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "tcpwhy/daemon/archive.h"
#include "tcpwhy/daemon/export.h"
#include "tcpwhy/jsonl.h"

using namespace tcpwhy;
using namespace tcpwhy::daemon;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "tcpwhy-archive-safety-XXXXXX").string();
        path = mkdtemp(tmpl.data());
    }
    ~TempDir() { fs::remove_all(path); }
};

TraceHeader header() {
    TraceHeader h;
    h.hostname = "node-1";
    h.kernel = "6.18";
    h.mono_start_ns = 1'000'000'000'000;
    h.wall_start_ns = 1'700'000'000'000'000'000;
    return h;
}

std::string event_line(uint64_t cookie) {
    Event e;
    e.type = EventType::close;
    e.ts_ns = header().mono_start_ns + 1'000'000'000;
    e.cookie = cookie;
    e.laddr = *IpAddr::parse("10.56.5.6");
    e.raddr = *IpAddr::parse("130.211.0.143");
    e.lport = 8080;
    e.rport = 40000;
    return to_json_line(e);
}

}  // namespace

TEST_CASE("archive: a symlink or FIFO under a segment's name is neither adopted nor read", "[archive]") {
    TempDir dir;
    fs::path archive_dir = dir.path / "archive";
    fs::create_directories(archive_dir);
    // Something else's file, a valid trace even, reached through a planted symlink.
    fs::path elsewhere = dir.path / "not-the-archives.jsonl";
    std::ofstream(elsewhere) << to_json_line(header()) << '\n' << event_line(4242) << '\n';
    fs::path link = archive_dir / "segment-0000000007-20260101T000000Z.jsonl.gz";
    fs::create_symlink(elsewhere, link);
    fs::path fifo = archive_dir / "segment-0000000008-20260101T000000Z.jsonl.gz";
    REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);

    ArchiveLimits limits;
    limits.min_free_bytes = 0;
    limits.min_free_percent = 0;
    limits.total_bytes = 1;  // would delete every adopted segment at once
    std::string error;
    auto archive = Archive::open(archive_dir.string(), limits, header(), &error);
    REQUIRE(archive);
    REQUIRE(archive->refused().size() == 2);
    CHECK(archive->refused()[0].find("not a regular file") != std::string::npos);
    CHECK(archive->segments_since(0).empty());
    CHECK(fs::is_symlink(link));    // left alone, not deleted by the limits
    CHECK(fs::exists(elsewhere));
    CHECK(fs::exists(fifo));

    // Even handed to export by path, neither is read (and the FIFO does not hang it).
    std::vector<std::string> exported;
    auto stats = export_segments({ArchiveSegment{link.string(), 7}, ArchiveSegment{fifo.string(), 8}}, 0,
                                 to_json_line(header()), [&](std::string_view line) {
                                     exported.emplace_back(line);
                                     return true;
                                 });
    CHECK(stats.segments == 0);
    CHECK(stats.events == 0);
    REQUIRE(stats.warnings.size() == 2);
    CHECK(stats.warnings[0].find("symlink") != std::string::npos);
    CHECK(exported.size() == 1);  // the header alone
}

TEST_CASE("archive: the default free-space floor is above the kubelet's eviction thresholds", "[archive]") {
    // kubelet hard eviction defaults: nodefs.available<10%, imagefs.available<15%.
    CHECK(ArchiveLimits{}.min_free_percent >= 15);

    // A floor the filesystem cannot meet (99% free) pauses archiving at once: nothing written.
    TempDir dir;
    ArchiveLimits limits;
    limits.min_free_bytes = 0;
    limits.min_free_percent = 99;
    std::string error;
    auto archive = Archive::open((dir.path / "archive").string(), limits, header(), &error);
    REQUIRE(archive);
    archive->write(event_line(1));
    archive->maintain(time(nullptr));
    archive->write(event_line(2));
    auto stats = archive->stats();
    CHECK(stats.paused_low_disk);
    CHECK(stats.lines_dropped_low_disk >= 1);
    CHECK(stats.last_error.find("archiving paused") != std::string::npos);
}
