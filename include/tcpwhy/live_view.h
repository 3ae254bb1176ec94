// The live view: what `tcpwhy top` draws and what `tcpwhy daemon` serves to
// `top --connect`. It owns the correlator of a live session and adds what only a
// live session has: per-second reset counts (the sparklines), event rates and the
// event source's status (attach path, drops).
//
// Wire format between daemon and `top --connect` (a Unix stream socket): one JSON
// request per line, e.g. {"cmd":"snapshot"}; the daemon answers with one line,
// snapshot_json(). {"cmd":"export","since_s":1800} streams the JSONL trace of the
// last 30 minutes from the archive and closes the connection.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tcpwhy/correlator.h"
#include "tcpwhy/event.h"

namespace tcpwhy {

// What the event source knows, for the view's header.
struct LiveStatus {
    std::string node;         // host name
    std::string kernel;       // uname -r
    std::string attach;       // Tracer::attach_summary()
    uint64_t events_total = 0;   // events consumed from the kernel so far
    uint64_t dropped_total = 0;  // events the kernel programs could not emit so far
};

// ---- the snapshot: what a view draws, and the daemon's wire format ----------

// One step in a connection's life, for the drill-down's timeline.
struct TimelineStep {
    uint64_t ts_ns = 0;  // CLOCK_MONOTONIC; 0: a span, not an instant ("idle 6.0 s")
    std::string what;    // "opened (accepted)", "last data", "backend closed (FIN)", ...
};

// A snapshot is a rendering for display: the kinds stay enums (the wire carries their
// names), the sentences are explain's, made once by whoever holds the correlator.
struct SnapshotConnection {
    std::string peer, local;  // "130.211.0.143:59920", "10.56.5.6:8080"
    bool lb_peer = false;
    EndKind end = EndKind::open;
    std::optional<FindingKind> verdict;  // the reset's kind when it was reset
    std::string evidence;                // why, in words
    std::vector<TimelineStep> timeline;  // oldest first
};

struct SnapshotFinding {
    FindingKind kind = FindingKind::other;
    uint64_t count = 0;
    std::string summary;
    std::vector<std::string> evidence;
    std::string advice;
    std::vector<std::string> connections;  // recent affected four-tuples, newest first
};

inline constexpr size_t kSparklineSeconds = 60;

// One backend (pod and port).
struct SnapshotRow {
    uint32_t netns = 0;
    uint16_t port = 0;
    bool outbound = false;  // the local side of outgoing connections to `port`
    std::string pod, namespace_name, container;  // empty until workload names are known
    std::string name;  // the pod, or "netns <inode>" without one; "(more backends)" past max_backends
    std::string process;
    uint32_t pid = 0;
    // The server the process runs, when detected: "gunicorn 20.1.0 (gthread worker)", and the
    // drill-down's line (explain::server_line); "" when not detected. Older daemons send neither.
    std::string server, server_detail;
    uint64_t live_lb = 0, live_other = 0;
    // The open connections as last listed (set_live_sockets): how many, and how long they had
    // been idle then. An idle keep-alive connection makes no events: only a listing shows it.
    uint64_t live_sampled = 0;
    uint32_t live_idle_p50_ms = 0, live_idle_max_ms = 0;
    uint64_t idle_closes = 0;
    uint32_t idle_p50_ms = 0;
    // Resets sent to load-balancer peers (to every peer with --lb none): keep-alive races, and the rest.
    uint64_t resets_races = 0, resets_other = 0;
    uint64_t resets_received = 0;  // from any peer
    std::vector<uint32_t> resets_per_second;  // every reset of the backend, the last 60 s, oldest first
    std::optional<FindingKind> verdict;  // the leading finding's kind
    std::vector<SnapshotFinding> findings;         // most important first
    std::vector<SnapshotConnection> connections;  // newest first
    // The node it is on, in a view of several daemons (merge_snapshots()); "" in a daemon's own
    // snapshot, whose header names the node. netns inodes repeat across nodes: this keeps them apart.
    std::string node;

    // Identifies the row across snapshots: "4026532246:8080" / "4026532246:out:8080", with
    // "node-a/" first in a view of several nodes.
    std::string key() const;
};

struct SnapshotHeader {
    std::string node, kernel, attach;
    std::string lb_name, lb_description;
    uint32_t lb_idle_timeout_s = 0;  // 0: no load balancer
    double events_per_s = 0;
    uint64_t events_total = 0, dropped_total = 0;
    uint64_t now_ns = 0;       // CLOCK_MONOTONIC when taken
    uint64_t live_sample_ns = 0;  // when the open connections were last listed (0: never)
    uint64_t wall_now_ns = 0;  // the wall clock at now_ns, to show times of day
};

// One daemon of a view of several: its own header (its clock, rates, drops) and, when its
// latest answer did not come, why (its rows are then those of its last answer, if any).
struct SnapshotNode {
    std::string name;    // the node's name in the rows (the header's node, made unique)
    std::string source;  // where it was read: a socket path, or "exec:COMMAND"
    SnapshotHeader header;
    bool answered = false;  // at least one snapshot came; header and rows are from the latest
    std::string problem;    // "" when the latest request was answered
};

struct Snapshot {
    static constexpr int kVersion = 2;
    SnapshotHeader header;  // of several nodes: sums of rates and counts, times on the wall clock
    std::vector<SnapshotRow> rows;
    std::vector<SnapshotNode> nodes;  // empty: the view of one daemon (or of this process)
};

// One line of JSON (no newline), and back. parse_snapshot: nullopt and *error on
// anything that is not a snapshot of this version.
std::string to_json(const Snapshot& snapshot);
std::optional<Snapshot> parse_snapshot(std::string_view json, std::string* error = nullptr);

// Not synchronised: one thread feeds it, or the caller serialises on_event, tick and snapshots.
class LiveView {
public:
    explicit LiveView(CorrelatorConfig config);
    ~LiveView();
    LiveView(const LiveView&) = delete;
    LiveView& operator=(const LiveView&) = delete;

    // Every event of the session, in order; feeds the correlator.
    void on_event(const Event& event);
    // About once a second: correlator expiry, rates, the sparkline's current second.
    void tick(uint64_t now_ns, const LiveStatus& status);
    // The sockets open now (`existing` events with idle times), for each row's live connections.
    void set_live_sockets(const std::vector<Event>& sockets, uint64_t now_ns);

    Correlator& correlator();
    const Correlator& correlator() const;

    // The whole view as one line of JSON (no newline): header, one row per backend,
    // per backend its findings and recent connections.
    std::string snapshot_json() const;
    // The same, as data; as of the last tick() for rates and sparklines.
    Snapshot snapshot() const;

    // Recent connections kept per row.
    static constexpr size_t kRecentConnections = 10;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tcpwhy
