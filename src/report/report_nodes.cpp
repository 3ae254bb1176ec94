#include "report_nodes.h"

#include <algorithm>

#include "trace_clock.h"

namespace tcpwhy::report {

ReportNode single_node(const Correlator& correlator, const ReplayStats& stats) {
    NodeKey key =
        stats.headers.empty() ? NodeKey{} : NodeKey{stats.headers.front().hostname, stats.headers.front().boot_id};
    return ReportNode{key.hostname, key, &correlator, &stats};
}

CorrelatorCounts total_counts(std::span<const ReportNode> nodes) {
    CorrelatorCounts sum;
    for (const auto& node : nodes) {
        CorrelatorCounts c = node.correlator->counts();
        for (size_t t = 0; t < sum.events_by_type.size(); ++t) sum.events_by_type[t] += c.events_by_type[t];
        for (size_t k = 0; k < sum.resets.size(); ++k) sum.resets[k] += c.resets[k];
        sum.events += c.events;
        sum.connections += c.connections;
        sum.live_connections += c.live_connections;
        sum.expired_stale += c.expired_stale;
        sum.evicted_over_cap += c.evicted_over_cap;
        sum.backends_overflowed += c.backends_overflowed;
        sum.ignored_events += c.ignored_events;
        sum.local_reset_recv += c.local_reset_recv;
        sum.follow_up_resets += c.follow_up_resets;
    }
    return sum;
}

WallSpan wall_span(std::span<const ReportNode> nodes) {
    WallSpan span;
    for (const auto& node : nodes) {
        const ReplayStats& stats = *node.stats;
        TraceClock clock(stats);
        if (!stats.events || !clock.known()) continue;
        uint64_t first = clock.wall_ns(stats.first_ts_ns), last = clock.wall_ns(stats.last_ts_ns);
        span.first_ns = span.first_ns ? std::min(span.first_ns, first) : first;
        span.last_ns = std::max(span.last_ns, last);
    }
    return span;
}

BadLines bad_lines(std::span<const ReportNode> nodes) {
    BadLines bad;
    for (const auto& node : nodes) {
        if (node.stats->bad_lines && bad.first.empty()) bad.first = node.stats->first_bad;
        bad.count += node.stats->bad_lines;
    }
    return bad;
}

}  // namespace tcpwhy::report
