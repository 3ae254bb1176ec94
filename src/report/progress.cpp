#include "tcpwhy/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace tcpwhy {
namespace {

std::chrono::milliseconds delay_from_environment(std::chrono::milliseconds fallback) {
    const char* text = std::getenv("TCPWHY_PROGRESS_DELAY_MS");
    if (!text || !*text) return fallback;
    unsigned value = 0;
    auto [end, ec] = std::from_chars(text, text + std::strlen(text), value);
    return ec == std::errc{} && *end == '\0' ? std::chrono::milliseconds(value) : fallback;
}

// Columns the line may take: one less than the terminal's, so the cursor never wraps (a wrapped
// line cannot be redrawn with '\r').
size_t usable_columns(int fd) {
    winsize size{};
    if (ioctl(fd, TIOCGWINSZ, &size) == 0 && size.ws_col > 1) return size.ws_col - 1;
    return 79;
}

}  // namespace

ProgressMeter::ProgressMeter(int fd, std::chrono::milliseconds delay)
    : fd_(fd), active_(fd >= 0 && isatty(fd) == 1), start_(Clock::now()),
      next_frame_(start_ + delay_from_environment(delay)) {}

ProgressMeter::~ProgressMeter() { finish(); }

void ProgressMeter::draw(std::string_view text) {
    text = text.substr(0, usable_columns(fd_));
    // Spaces over what is left of a longer frame, then back: no escape sequences, so any
    // terminal (TERM=dumb too) shows it right.
    std::string frame = "\r";
    frame.append(text);
    if (shown_ > text.size()) frame.append(shown_ - text.size(), ' ');
    frame.append("\r");
    shown_ = text.size();
    write_all(frame);
}

void ProgressMeter::finish() {
    if (!active_) return;
    active_ = false;
    if (shown_ == 0) return;
    write_all("\r" + std::string(shown_, ' ') + "\r");
    shown_ = 0;
}

void ProgressMeter::write_all(std::string_view bytes) const {
    while (!bytes.empty()) {
        ssize_t n = ::write(fd_, bytes.data(), bytes.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // a terminal that went away: the meter is only a courtesy
        bytes.remove_prefix(static_cast<size_t>(n));
    }
}

std::string byte_size_text(uint64_t bytes) {
    constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) return fmt::format("{} B", bytes);
    double value = static_cast<double>(bytes) / 1024;
    size_t unit = 0;
    while (value >= 1024 && unit + 1 < std::size(kUnits)) value /= 1024, ++unit;
    return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string count_text(double count) {
    if (count >= 1e6) return fmt::format("{:.1f} M", count / 1e6);
    if (count >= 1e4) return fmt::format("{:.0f} k", count / 1e3);
    return fmt::format("{:.0f}", count);
}

std::string clock_text(double seconds) {
    auto total = static_cast<uint64_t>(seconds + 0.5);
    if (total >= 3600) return fmt::format("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60);
    return fmt::format("{}:{:02}", total / 60, total % 60);
}

std::string pace_text(uint64_t bytes_read, uint64_t bytes_total, uint64_t events, double elapsed_s) {
    std::string line;
    if (bytes_total) {
        line = fmt::format("{} of {} ({:.0f}%)", byte_size_text(bytes_read), byte_size_text(bytes_total),
                           100.0 * static_cast<double>(std::min(bytes_read, bytes_total)) /
                               static_cast<double>(bytes_total));
    } else {
        line = fmt::format("{} read", byte_size_text(bytes_read));
    }
    if (elapsed_s > 0) line += fmt::format(", {} events/s", count_text(static_cast<double>(events) / elapsed_s));
    if (bytes_total && bytes_read > 0 && bytes_read < bytes_total && elapsed_s >= 1) {
        double left = static_cast<double>(bytes_total - bytes_read) * elapsed_s / static_cast<double>(bytes_read);
        line += fmt::format(", {} left", clock_text(left));
    }
    return line;
}

}  // namespace tcpwhy
