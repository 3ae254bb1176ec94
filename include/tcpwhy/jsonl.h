// The JSON Lines trace: tcpwhy's postmortem format (schema: docs/trace-format.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tcpwhy/event.h"
#include "tcpwhy/server.h"
#include "tcpwhy/workload.h"

namespace tcpwhy {

inline constexpr int kTraceVersion = 1;

// First line of a trace file: where and when it was recorded.
struct TraceHeader {
    int v = kTraceVersion;
    std::string tool = "tcpwhy";
    std::string hostname;
    std::string boot_id;  // /proc/sys/kernel/random/boot_id: with hostname, which node and which boot ("" unknown)
    std::string kernel;
    std::string clock = "CLOCK_MONOTONIC";
    uint64_t mono_start_ns = 0;  // CLOCK_MONOTONIC at start; with wall_start_ns maps ts_ns to wall time
    uint64_t wall_start_ns = 0;  // CLOCK_REALTIME at start
    std::string lb_ranges;
    // Ordinary connections were counted in the kernel (`tally` lines), not sent one by one: a
    // connection first seen at its close or reset was opened, and counted, already.
    bool tally = false;
};

std::string to_json_line(const Event& event);         // one line, no newline
std::string to_json_line(const TraceHeader& header);  // "type":"header"
std::string to_json_line(const WorkloadRecord& record);  // "type":"workload": who a netns or cgroup is
std::string to_json_line(const ServerRecord& record);    // "type":"server": which server a process runs

enum class LineKind { event, header, workload, server, bad, unsupported_version };

struct ParsedLine {
    LineKind kind = LineKind::bad;
    Event event;
    TraceHeader header;
    WorkloadRecord workload;
    ServerRecord server;
    std::string error;  // for bad / unsupported_version
};

// Parses one line. Unknown fields are ignored; a missing or wrong-typed required
// field, or text that is not a JSON object, is `bad`.
ParsedLine parse_json_line(std::string_view line);
// The same into `out`, reusing its storage (a replay parses millions of lines): kind, error
// and the member for the line's kind are set as above; the other kinds' members keep whatever
// an earlier line left there.
void parse_json_line(std::string_view line, ParsedLine& out);

}  // namespace tcpwhy
