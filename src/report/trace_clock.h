// Trace time (CLOCK_MONOTONIC ns of the node that recorded it) as wall-clock time, from
// the pair of readings a trace header carries. Private to the report renderers.
#pragma once

#include <cstdint>
#include <string>

#include "tcpwhy/report.h"

namespace tcpwhy::report {

class TraceClock {
public:
    explicit TraceClock(const ReplayStats& stats);
    bool known() const { return wall_ != 0; }
    // Nanoseconds since the epoch; 0 when the trace has no header with a clock.
    uint64_t wall_ns(uint64_t ts_ns) const;
    // "2026-11-23 20:27:05.407 UTC", or "12.345 s" (trace time) without a header.
    std::string wall(uint64_t ts_ns) const;
    // "2026-11-23T20:27:05.407Z" (RFC 3339, what LB logs carry), "" without a header.
    std::string rfc3339(uint64_t ts_ns) const;
    // "20:27:05.407" (a page's header has the date).
    std::string time_of_day(uint64_t ts_ns) const;

private:
    uint64_t mono_ = 0, wall_ = 0;
};

}  // namespace tcpwhy::report
