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

// A name from outside (a process's comm, a pod, container or `ip netns` name) made safe to
// print on a terminal: control bytes (C0, DEL), C1 controls, bidirectional overrides and
// bytes that are not UTF-8 become visible escapes (\x1b, \u009b, \u202e); printable ASCII and
// other UTF-8 stay as they are. Nothing a process names itself can then move the cursor,
// retitle the window or rewrite what an operator reads.
std::string terminal_safe(std::string_view text);
// The same for a whole rendered text, keeping its newlines and tabs.
std::string terminal_safe_text(std::string_view text);

}  // namespace tcpwhy
