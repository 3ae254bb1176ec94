// The daemon's rotating archive: the JSONL trace (the same lines and header as
// `tcpwhy trace -o`) in gzip segments under one directory, bounded in size, age and
// the filesystem's free space; the oldest segments go first. A write failure is
// counted (and the line dropped, counted) while tracing goes on. Thread-safe: the
// event loop writes, the export thread lists and reads closed segments.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "tcpwhy/jsonl.h"

namespace tcpwhy::daemon {

struct ArchiveLimits {
    uint64_t segment_bytes = 16ull << 20;     // compressed bytes on disk before a new segment starts
    uint64_t segment_age_s = 600;             // a segment with events older than this is closed
    uint64_t total_bytes = 1ull << 30;        // the whole archive
    uint64_t max_age_s = 7 * 86400;           // closed segments last written longer ago are deleted (0: no limit)
    // Free space to leave on the archive's filesystem: the larger of the two. The kubelet
    // evicts pods when the node's filesystem has less than 10% free (15% where images live
    // on it too), so by default the archive stops 5 points above that.
    uint64_t min_free_bytes = 256ull << 20;
    uint32_t min_free_percent = 20;
    int gzip_level = 1;                       // fastest: the daemon shares the node's CPU
};

struct ArchiveSegment {
    std::string path;
    uint64_t seq = 0;
    uint64_t bytes = 0;
    time_t last_write = 0;  // wall seconds (the file's mtime)
};

struct ArchiveStats {
    uint64_t segments = 0;             // on disk now, the open one included
    uint64_t bytes = 0;                // on disk now (the open segment's as of its last flush)
    uint64_t lines_written = 0;
    uint64_t write_errors = 0;         // failed writes, opens and flushes
    uint64_t lines_dropped_write_error = 0;
    uint64_t lines_dropped_low_disk = 0;
    uint64_t segments_deleted = 0;     // by the size, age and free-space limits
    bool paused_low_disk = false;
    std::string last_error;
};

class Archive {
public:
    // Creates dir (mode 0750) if needed and adopts segments a previous run left there.
    // Returns nullptr and sets *error when the directory cannot be used.
    static std::unique_ptr<Archive> open(const std::string& dir, const ArchiveLimits& limits, TraceHeader header,
                                         std::string* error);
    ~Archive();
    Archive(const Archive&) = delete;
    Archive& operator=(const Archive&) = delete;

    // Entries named like segments that were not adopted (a symlink, a FIFO: not the archive's own).
    const std::vector<std::string>& refused() const { return refused_; }

    // Lines (each ending in '\n') written after the header at the start of every segment:
    // the names (`workload` lines) known so far, so every segment reads on its own.
    // Called from whichever thread writes.
    void set_preamble(std::function<std::string()> preamble) { preamble_ = std::move(preamble); }
    // One JSONL line (no newline). Never throws; failures are counted in stats().
    void write(std::string_view line);
    // About once a second: rotation by age, deletion by age, size and free space.
    void maintain(time_t now);
    // Closes the open segment (the next write starts a new one): export reads closed segments only.
    void rotate();
    // Flushes and closes the open segment.
    void close();

    // Closed segments last written at or after `since` (wall seconds), oldest first.
    std::vector<ArchiveSegment> segments_since(time_t since) const;
    ArchiveStats stats() const;
    const std::string& dir() const { return dir_; }

private:
    std::vector<std::string> refused_;  // at open
    Archive(std::string dir, const ArchiveLimits& limits, TraceHeader header);
    bool open_segment_locked(time_t now);
    void close_segment_locked();
    void record_error_locked(std::string message);
    void enforce_limits_locked(time_t now);
    void delete_oldest_locked();
    void lose_unflushed_locked();
    uint64_t free_bytes_locked() const;
    uint64_t min_free_locked() const;  // the larger of the byte and percent floors

    std::string dir_;
    ArchiveLimits limits_;
    TraceHeader header_;
    std::function<std::string()> preamble_;

    mutable std::mutex mutex_;
    std::vector<ArchiveSegment> closed_;  // oldest first
    void* gz_ = nullptr;                  // gzFile of the open segment; void* keeps zlib.h out
    ArchiveSegment open_;
    time_t open_since_ = 0;
    uint64_t open_event_lines_ = 0;
    uint64_t unflushed_lines_ = 0;  // written into gzip since its last successful flush
    uint64_t unflushed_bytes_ = 0;        // uncompressed bytes since the on-disk size was last read
    uint64_t next_seq_ = 1;
    time_t retry_after_ = 0;              // after a failure, no new segment before this
    ArchiveStats stats_;
};

// Segment file names: segment-<seq, 10 digits>-<UTC start>.jsonl.gz; seq orders them.
bool is_segment_name(std::string_view name, uint64_t* seq = nullptr);

}  // namespace tcpwhy::daemon
