#include "trace_clock.h"

#include <ctime>

#include <fmt/format.h>

namespace tcpwhy::report {
namespace {

std::tm utc_of(uint64_t wall_ns) {
    time_t secs = static_cast<time_t>(wall_ns / 1'000'000'000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    return tm;
}

}  // namespace

TraceClock::TraceClock(const ReplayStats& stats) {
    if (!stats.headers.empty() && stats.headers.front().wall_start_ns) {
        mono_ = stats.headers.front().mono_start_ns;
        wall_ = stats.headers.front().wall_start_ns;
    }
}

uint64_t TraceClock::wall_ns(uint64_t ts_ns) const {
    if (!wall_) return 0;
    return static_cast<uint64_t>(static_cast<int64_t>(wall_) + (static_cast<int64_t>(ts_ns) - static_cast<int64_t>(mono_)));
}

std::string TraceClock::wall(uint64_t ts_ns) const {
    if (!wall_) return fmt::format("{:.3f} s", ts_ns / 1e9);
    uint64_t ns = wall_ns(ts_ns);
    std::tm tm = utc_of(ns);
    return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, (ns / 1'000'000) % 1000);
}

std::string TraceClock::rfc3339(uint64_t ts_ns) const {
    if (!wall_ || ts_ns == 0) return "";
    uint64_t ns = wall_ns(ts_ns);
    std::tm tm = utc_of(ns);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, (ns / 1'000'000) % 1000);
}

std::string TraceClock::time_of_day(uint64_t ts_ns) const {
    std::string full = wall(ts_ns);
    return wall_ ? full.substr(11, 12) : full;
}

}  // namespace tcpwhy::report
