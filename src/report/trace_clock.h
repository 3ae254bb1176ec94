// Trace time (CLOCK_MONOTONIC ns of the node that recorded it) as wall-clock time, from
// the pairs of readings its trace headers carry. Private to the report renderers.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tcpwhy/report.h"

namespace tcpwhy::report {

// One node's clock: CLOCK_MONOTONIC of one boot is one timeline, but each run of tcpwhy on it
// (a daemon restart) read the wall clock anew, so a time is mapped with the pair of the run that
// recorded it (the latest header that started before it).
class TraceClock {
public:
    explicit TraceClock(const ReplayStats& stats);
    bool known() const { return !pairs_.empty(); }
    // Nanoseconds since the epoch; 0 when the trace has no header with a clock.
    uint64_t wall_ns(uint64_t ts_ns) const;
    // wall_ns() where the clock is known, else ts_ns itself: a time to order by.
    uint64_t wall_or_trace_ns(uint64_t ts_ns) const { return known() ? wall_ns(ts_ns) : ts_ns; }
    // "2026-11-23 20:27:05.407 UTC", or "12.345 s" (trace time) without a header.
    std::string wall(uint64_t ts_ns) const;
    // "2026-11-23T20:27:05.407Z" (RFC 3339, what LB logs carry), "" without a header.
    std::string rfc3339(uint64_t ts_ns) const;
    // "20:27:05.407" (a page's header has the date).
    std::string time_of_day(uint64_t ts_ns) const;

private:
    std::vector<std::pair<uint64_t, uint64_t>> pairs_;  // (mono_start_ns, wall_start_ns), by mono_start_ns
};

// An epoch time as "2026-11-23 20:27:05.407 UTC", and as "2026-11-23T20:27:05.407Z".
std::string wall_text(uint64_t wall_ns);
std::string wall_rfc3339(uint64_t wall_ns);

}  // namespace tcpwhy::report
