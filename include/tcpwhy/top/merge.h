// `tcpwhy top --connect A --connect B ...`: the views of several daemons (one per node) as one
// view, a row per node and backend. Socket cookies and netns inodes repeat across nodes (the
// host's namespace has the same inode on every node), so every row keeps its node, and each
// node's CLOCK_MONOTONIC times are moved onto the wall clock, the one clock nodes share.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tcpwhy/live_view.h"

namespace tcpwhy::top {

// What one daemon gave: its latest snapshot, and why the latest request got none.
struct NodeAnswer {
    std::string source;                // its socket path, or "exec:COMMAND"
    std::optional<Snapshot> snapshot;  // the latest answer; nullopt: none yet
    std::string problem;               // "" when the latest request was answered
};

// One view of them all: rows of every node that answered (named by their header's node; a name
// two daemons share gets "#2", "#3"), a node list with each header and problem, a header with the
// sums (events/s, events, drops) and the LB of the first that answered, times on the wall clock.
Snapshot merge_snapshots(const std::vector<NodeAnswer>& answers);

}  // namespace tcpwhy::top
