// Human-readable, aligned event lines for `tcpwhy trace`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tcpwhy/event.h"

namespace tcpwhy {

// Maps CLOCK_MONOTONIC event times to wall-clock time, from one pair of readings.
struct WallClock {
    uint64_t mono_ns = 0;
    uint64_t wall_ns = 0;
    static WallClock now();
    uint64_t to_wall_ns(uint64_t mono) const { return wall_ns + (mono - mono_ns); }
};

std::string format_event_header();
// `who`: the workload's name ("default/web-1", "pod", "host"); the netns inode when empty.
std::string format_event_line(const Event& event, const WallClock& clock, std::string_view who = {});
std::string format_endpoint(const IpAddr& addr, uint16_t port);  // "10.0.0.1:80", "[::1]:80"

}  // namespace tcpwhy
