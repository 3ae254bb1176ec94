#include "trace_clock.h"

#include <algorithm>
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

std::string wall_text(uint64_t ns) {
    std::tm tm = utc_of(ns);
    return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, (ns / 1'000'000) % 1000);
}

TraceClock::TraceClock(const ReplayStats& stats) {
    for (const auto& h : stats.headers)
        if (h.wall_start_ns) pairs_.emplace_back(h.mono_start_ns, h.wall_start_ns);
    std::stable_sort(pairs_.begin(), pairs_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
}

uint64_t TraceClock::wall_ns(uint64_t ts_ns) const {
    if (pairs_.empty()) return 0;
    // The last run that started at or before ts_ns; times before the first run use the first.
    auto after = std::upper_bound(pairs_.begin(), pairs_.end(), ts_ns,
                                  [](uint64_t ts, const auto& pair) { return ts < pair.first; });
    const auto& [mono, wall] = after == pairs_.begin() ? pairs_.front() : *std::prev(after);
    return static_cast<uint64_t>(static_cast<int64_t>(wall) +
                                 (static_cast<int64_t>(ts_ns) - static_cast<int64_t>(mono)));
}

std::string TraceClock::wall(uint64_t ts_ns) const {
    if (!known()) return fmt::format("{:.3f} s", ts_ns / 1e9);
    return wall_text(wall_ns(ts_ns));
}

std::string TraceClock::rfc3339(uint64_t ts_ns) const {
    if (!known() || ts_ns == 0) return "";
    return wall_rfc3339(wall_ns(ts_ns));
}

std::string wall_rfc3339(uint64_t ns) {
    std::tm tm = utc_of(ns);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, (ns / 1'000'000) % 1000);
}

std::string TraceClock::time_of_day(uint64_t ts_ns) const {
    std::string full = wall(ts_ns);
    return known() ? full.substr(11, 12) : full;
}

}  // namespace tcpwhy::report
