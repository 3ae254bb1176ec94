#include "tcpwhy/daemon/archive.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

namespace tcpwhy::daemon {
namespace {

constexpr uint64_t kSizeCheckEvery = 64 << 10;  // uncompressed bytes between reads of the on-disk size
constexpr time_t kRetryAfterFailure = 10;       // seconds before a new segment is tried after a failure

gzFile as_gz(void* p) { return static_cast<gzFile>(p); }

std::string segment_name(uint64_t seq, time_t now) {
    tm utc{};
    gmtime_r(&now, &utc);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &utc);
    return fmt::format("segment-{:010}-{}.jsonl.gz", seq, stamp);
}

}  // namespace

bool is_segment_name(std::string_view name, uint64_t* seq) {
    constexpr std::string_view prefix = "segment-", suffix = ".jsonl.gz";
    if (!name.starts_with(prefix) || !name.ends_with(suffix) || name.size() < prefix.size() + 10 + suffix.size())
        return false;
    uint64_t value = 0;
    auto digits = name.substr(prefix.size(), 10);
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (ec != std::errc{} || ptr != digits.data() + digits.size()) return false;
    if (seq) *seq = value;
    return true;
}

Archive::Archive(std::string dir, const ArchiveLimits& limits, TraceHeader header)
    : dir_(std::move(dir)), limits_(limits), header_(std::move(header)) {}

std::unique_ptr<Archive> Archive::open(const std::string& dir, const ArchiveLimits& limits, TraceHeader header,
                                       std::string* error) {
    std::error_code ec;
    if (std::filesystem::create_directories(dir, ec))
        std::filesystem::permissions(dir, std::filesystem::perms(0750), ec);
    if (ec) {
        *error = fmt::format("cannot create archive directory {}: {}", dir, ec.message());
        return nullptr;
    }
    if (access(dir.c_str(), W_OK | X_OK) != 0) {
        *error = fmt::format("cannot write to archive directory {}: {}", dir, strerror(errno));
        return nullptr;
    }
    std::unique_ptr<Archive> archive(new Archive(dir, limits, std::move(header)));
    // Segments of earlier runs stay part of the archive (export reaches them) and count against its limits.
    if (DIR* d = opendir(dir.c_str())) {
        while (dirent* entry = readdir(d)) {
            ArchiveSegment segment;
            if (!is_segment_name(entry->d_name, &segment.seq)) continue;
            segment.path = dir + "/" + entry->d_name;
            // lstat: a symlink planted under a segment's name is not followed, nor adopted (export
            // would read whatever it points to), and neither is anything but a plain file.
            struct stat st{};
            if (lstat(segment.path.c_str(), &st) != 0) continue;
            if (!S_ISREG(st.st_mode)) {
                archive->refused_.push_back(fmt::format("{}: not a regular file ({}), left alone", segment.path,
                                                        S_ISLNK(st.st_mode) ? "a symlink" : "a special file"));
                continue;
            }
            segment.bytes = st.st_size;
            segment.last_write = st.st_mtime;
            archive->closed_.push_back(std::move(segment));
        }
        closedir(d);
    }
    std::sort(archive->closed_.begin(), archive->closed_.end(),
              [](const auto& a, const auto& b) { return a.seq < b.seq; });
    if (!archive->closed_.empty()) archive->next_seq_ = archive->closed_.back().seq + 1;
    std::lock_guard lock(archive->mutex_);
    archive->enforce_limits_locked(time(nullptr));
    return archive;
}

Archive::~Archive() { close(); }

void Archive::record_error_locked(std::string message) {
    ++stats_.write_errors;
    stats_.last_error = std::move(message);
}

bool Archive::open_segment_locked(time_t now) {
    open_ = ArchiveSegment{};
    open_.seq = next_seq_++;
    open_.path = dir_ + "/" + segment_name(open_.seq, now);
    int fd = ::open(open_.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        record_error_locked(fmt::format("cannot create {}: {}", open_.path, strerror(errno)));
        retry_after_ = now + kRetryAfterFailure;
        return false;
    }
    gz_ = gzdopen(fd, fmt::format("wb{}", limits_.gzip_level).c_str());
    if (!gz_) {
        ::close(fd);
        unlink(open_.path.c_str());
        record_error_locked(fmt::format("cannot start gzip stream in {}", open_.path));
        retry_after_ = now + kRetryAfterFailure;
        return false;
    }
    open_since_ = now;
    open_event_lines_ = 0;
    unflushed_bytes_ = 0;
    std::string header = to_json_line(header_) + '\n';
    if (preamble_) header += preamble_();
    if (gzwrite(as_gz(gz_), header.data(), static_cast<unsigned>(header.size())) <= 0) {
        int errnum = 0;
        record_error_locked(fmt::format("cannot write {}: {}", open_.path, gzerror(as_gz(gz_), &errnum)));
        close_segment_locked();
        retry_after_ = now + kRetryAfterFailure;
        return false;
    }
    return true;
}

void Archive::close_segment_locked() {
    if (!gz_) return;
    errno = 0;
    int rc = gzclose(as_gz(gz_));
    int close_errno = errno;
    gz_ = nullptr;
    if (rc != Z_OK) {
        record_error_locked(fmt::format("cannot finish {}: {}", open_.path,
                                        rc == Z_ERRNO && close_errno ? strerror(close_errno) : zError(rc)));
        lose_unflushed_locked();
    }
    unflushed_lines_ = 0;
    struct stat st{};
    if (open_event_lines_ == 0) {
        unlink(open_.path.c_str());  // a header alone says nothing; failed retries must not pile up
    } else if (stat(open_.path.c_str(), &st) == 0) {
        open_.bytes = st.st_size;
        open_.last_write = st.st_mtime;
        closed_.push_back(std::move(open_));
    }
    open_ = ArchiveSegment{};
    if (close_errno == ENOSPC) delete_oldest_locked();
}

// Lines gzip accepted but had not yet pushed to the file when writing failed: they are gone,
// so they move from written to dropped (written + dropped = every line offered).
void Archive::lose_unflushed_locked() {
    stats_.lines_written -= std::min(stats_.lines_written, unflushed_lines_);
    stats_.lines_dropped_write_error += unflushed_lines_;
    unflushed_lines_ = 0;
}

void Archive::delete_oldest_locked() {
    if (closed_.empty()) return;
    const auto& oldest = closed_.front();
    if (unlink(oldest.path.c_str()) != 0 && errno != ENOENT)
        record_error_locked(fmt::format("cannot delete {}: {}", oldest.path, strerror(errno)));
    ++stats_.segments_deleted;
    closed_.erase(closed_.begin());
}

void Archive::write(std::string_view line) {
    std::lock_guard lock(mutex_);
    if (stats_.paused_low_disk) {
        ++stats_.lines_dropped_low_disk;
        return;
    }
    if (!gz_) {
        time_t now = time(nullptr);
        if (now < retry_after_ || !open_segment_locked(now)) {
            ++stats_.lines_dropped_write_error;
            return;
        }
    }
    auto* gz = as_gz(gz_);
    errno = 0;
    if (gzwrite(gz, line.data(), static_cast<unsigned>(line.size())) <= 0 || gzputc(gz, '\n') < 0) {
        int write_errno = errno, errnum = 0;
        record_error_locked(fmt::format("cannot write {}: {}", open_.path, gzerror(gz, &errnum)));
        ++stats_.lines_dropped_write_error;
        close_segment_locked();
        if (write_errno == ENOSPC) delete_oldest_locked();  // the disk filled under us: the oldest goes first
        retry_after_ = time(nullptr) + kRetryAfterFailure;
        return;
    }
    ++stats_.lines_written;
    ++open_event_lines_;
    ++unflushed_lines_;
    unflushed_bytes_ += line.size() + 1;
    if (unflushed_bytes_ >= kSizeCheckEvery) {
        unflushed_bytes_ = 0;
        open_.bytes = static_cast<uint64_t>(std::max<z_off_t>(gzoffset(gz), 0));
        if (open_.bytes >= limits_.segment_bytes) {
            close_segment_locked();
            enforce_limits_locked(time(nullptr));
        }
    }
}

void Archive::maintain(time_t now) {
    std::lock_guard lock(mutex_);
    if (gz_ && open_event_lines_ > 0) {
        // Push out what the gzip buffer holds: a crash loses at most about a second of lines.
        if (gzflush(as_gz(gz_), Z_SYNC_FLUSH) != Z_OK) {
            int errnum = 0;
            record_error_locked(fmt::format("cannot flush {}: {}", open_.path, gzerror(as_gz(gz_), &errnum)));
            lose_unflushed_locked();
            close_segment_locked();
            retry_after_ = now + kRetryAfterFailure;
        } else {
            unflushed_lines_ = 0;
            open_.bytes = static_cast<uint64_t>(std::max<z_off_t>(gzoffset(as_gz(gz_)), 0));
            if (now - open_since_ >= static_cast<time_t>(limits_.segment_age_s) || open_.bytes >= limits_.segment_bytes)
                close_segment_locked();
        }
    }
    enforce_limits_locked(now);
}

void Archive::rotate() {
    std::lock_guard lock(mutex_);
    close_segment_locked();
}

void Archive::close() {
    std::lock_guard lock(mutex_);
    close_segment_locked();
}

uint64_t Archive::free_bytes_locked() const {
    struct statvfs vfs{};
    if (statvfs(dir_.c_str(), &vfs) != 0) return UINT64_MAX;  // unknown: do not delete on a guess
    return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

uint64_t Archive::min_free_locked() const {
    struct statvfs vfs{};
    uint64_t by_percent = 0;
    if (limits_.min_free_percent && statvfs(dir_.c_str(), &vfs) == 0)
        by_percent = static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize / 100 * limits_.min_free_percent;
    return std::max(limits_.min_free_bytes, by_percent);
}

void Archive::enforce_limits_locked(time_t now) {
    auto delete_oldest = [&] { delete_oldest_locked(); };
    if (limits_.max_age_s)
        while (!closed_.empty() && closed_.front().last_write + static_cast<time_t>(limits_.max_age_s) < now)
            delete_oldest();
    auto total = [&] {
        uint64_t sum = gz_ ? open_.bytes : 0;
        for (const auto& s : closed_) sum += s.bytes;
        return sum;
    };
    while (!closed_.empty() && total() > limits_.total_bytes) delete_oldest();
    if (uint64_t min_free = min_free_locked()) {
        while (!closed_.empty() && free_bytes_locked() < min_free) delete_oldest();
        bool low = free_bytes_locked() < min_free;
        if (low && !stats_.paused_low_disk) {
            close_segment_locked();
            record_error_locked(fmt::format("less than {} MiB free under {}: archiving paused", min_free >> 20, dir_));
        }
        stats_.paused_low_disk = low;
    }
}

std::vector<ArchiveSegment> Archive::segments_since(time_t since) const {
    std::lock_guard lock(mutex_);
    std::vector<ArchiveSegment> out;
    for (const auto& s : closed_)
        if (s.last_write >= since) out.push_back(s);
    return out;
}

ArchiveStats Archive::stats() const {
    std::lock_guard lock(mutex_);
    ArchiveStats s = stats_;
    s.segments = closed_.size() + (gz_ ? 1 : 0);
    s.bytes = gz_ ? open_.bytes : 0;
    for (const auto& c : closed_) s.bytes += c.bytes;
    return s;
}

}  // namespace tcpwhy::daemon
