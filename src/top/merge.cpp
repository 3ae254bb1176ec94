#include "tcpwhy/top/merge.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>

namespace tcpwhy::top {
namespace {

// A time of a node's CLOCK_MONOTONIC on the wall clock, through the pair its header carries.
// 0 stays 0: a timeline step without a time (a span) is not an instant.
uint64_t on_wall_clock(uint64_t ts_ns, const SnapshotHeader& h) {
    if (ts_ns == 0) return 0;
    return static_cast<uint64_t>(static_cast<int64_t>(h.wall_now_ns) +
                                 (static_cast<int64_t>(ts_ns) - static_cast<int64_t>(h.now_ns)));
}

}  // namespace

Snapshot merge_snapshots(const std::vector<NodeAnswer>& answers) {
    Snapshot merged;
    std::map<std::string, int> uses;
    for (const auto& a : answers) {
        std::string base = a.snapshot && !a.snapshot->header.node.empty() ? a.snapshot->header.node : a.source;
        int n = ++uses[base];
        SnapshotNode node;
        node.name = n == 1 ? base : fmt::format("{}#{}", base, n);
        node.source = a.source;
        node.answered = a.snapshot.has_value();
        node.problem = a.problem;
        if (a.snapshot) node.header = a.snapshot->header;
        merged.nodes.push_back(std::move(node));
    }
    SnapshotHeader& h = merged.header;
    h.node = fmt::format("{} nodes", answers.size());
    bool first = true;
    for (size_t i = 0; i < answers.size(); ++i) {
        if (!answers[i].snapshot) continue;
        const Snapshot& s = *answers[i].snapshot;
        const SnapshotHeader& from = s.header;
        if (first) {
            h.kernel = from.kernel;
            h.attach = from.attach;
            h.lb_name = from.lb_name;
            h.lb_description = from.lb_description;
            h.lb_idle_timeout_s = from.lb_idle_timeout_s;
        } else {
            if (h.kernel != from.kernel) h.kernel = "(several)";
            if (h.attach != from.attach) h.attach = "(several)";
        }
        first = false;
        h.events_per_s += from.events_per_s;
        h.events_total += from.events_total;
        h.dropped_total += from.dropped_total;
        h.wall_now_ns = std::max(h.wall_now_ns, from.wall_now_ns);
        h.live_sample_ns = std::max(h.live_sample_ns, on_wall_clock(from.live_sample_ns, from));
        for (SnapshotRow row : s.rows) {
            row.node = merged.nodes[i].name;
            for (auto& c : row.connections)
                for (auto& step : c.timeline) step.ts_ns = on_wall_clock(step.ts_ns, from);
            merged.rows.push_back(std::move(row));
        }
    }
    h.now_ns = h.wall_now_ns;  // the merged view's clock is the wall clock
    return merged;
}

}  // namespace tcpwhy::top
