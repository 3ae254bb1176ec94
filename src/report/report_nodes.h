// What the renderers say about the nodes of a report as a whole: counts summed over nodes, the
// span in wall time (each node's events mapped with its own clock), the bad lines of all traces.
// Private to the report renderers.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "tcpwhy/report.h"

namespace tcpwhy::report {

// The one node of the single-correlator renderers' signatures, named by its first header.
ReportNode single_node(const Correlator& correlator, const ReplayStats& stats);

CorrelatorCounts total_counts(std::span<const ReportNode> nodes);

// Epoch nanoseconds of the first and last event of any node with a clock (0: none).
struct WallSpan {
    uint64_t first_ns = 0, last_ns = 0;
};
WallSpan wall_span(std::span<const ReportNode> nodes);

struct BadLines {
    uint64_t count = 0;
    std::string first;  // of the first node that has any
};
BadLines bad_lines(std::span<const ReportNode> nodes);

}  // namespace tcpwhy::report
