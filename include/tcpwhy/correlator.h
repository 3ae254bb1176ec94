// The correlator: decoded events in, connection lifecycles, backend timeout
// profiles and findings out. No BPF and no I/O, so `tcpwhy trace` (live), `tcpwhy
// report` (replay) and the unit tests drive the same code and get the same answers.
// It decides and records facts (kinds, counts, durations, reasons, who closed first);
// it writes no English: include/tcpwhy/explain.h turns the facts into sentences, and
// every output (text, JSON, HTML, top, metrics) renders the same facts.
// Rules, evidence and memory bounds: docs/correlator.md.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tcpwhy/cidr.h"
#include "tcpwhy/event.h"
#include "tcpwhy/histogram.h"
#include "tcpwhy/kinds.h"
#include "tcpwhy/server.h"
#include "tcpwhy/workload.h"

namespace tcpwhy {

// ---- configuration --------------------------------------------------------

// What a load balancer logs or answers when a finding of one kind happens behind it, in its
// own words ("502 failed_to_connect_to_backend"), so that whoever holds the LB's log line finds
// the finding. docs/correlator.md has the table.
struct LbSymptom {
    FindingKind kind;
    std::string_view text;
};

// A load balancer tcpwhy knows: its source ranges (when they are fixed and public), how long it
// keeps an idle backend connection open and waits for a response, and how it shows each kind.
struct LbPreset {
    std::string_view name;           // as given to --lb
    std::string_view description;    // "Google Cloud HTTP(S) load balancer"
    std::string_view ranges;         // empty: no fixed public ranges; needs --lb-ranges
    uint32_t idle_timeout_s = 0;     // 0: no load balancer
    std::string_view reset_symptom;  // what clients of the LB see when a race reset happens
    uint32_t response_timeout_s = 0; // how long it waits for a response (0: none, an L4 balancer)
    std::span<const LbSymptom> symptoms;  // per kind; kinds without a row have no LB-specific words
};
std::span<const LbPreset> lb_presets();
const LbPreset* find_lb_preset(std::string_view name);
// The preset's words for a kind, or "" when it has none.
std::string_view lb_symptom(const LbPreset& preset, FindingKind kind);

// A default-constructed config has no load balancer (like --lb none); the CLI's
// default, gcp, is CorrelatorConfig::defaults().
struct CorrelatorConfig {
    std::string lb_name = "none";
    std::string lb_description = "no load balancer";
    std::string lb_reset_symptom = "clients see a reset or an empty reply";
    CidrSet lb_ranges;
    // No ranges known (aws-*/azure without --lb-ranges): every peer that is not a
    // loopback address counts as a load-balancer peer. With `none` no peer does.
    bool lb_any_non_loopback_peer = false;
    uint32_t lb_idle_timeout_s = 0;  // 0: no load balancer
    uint32_t lb_response_timeout_s = 0;  // how long the LB waits for a response; 0: unknown or none

    // A local close counts as an idle close when the connection had been quiet at
    // least this long, or at least half the backend's usual close time (see docs).
    uint32_t idle_threshold_ms = 1000;

    // Memory and time bounds.
    uint64_t stale_after_ns = 3600ull * 1'000'000'000;     // an open connection with no event this long is dropped
    uint64_t closed_retention_ns = 65ull * 1'000'000'000;  // a locally closed one is kept this long (TIME_WAIT is 60 s)
    uint64_t local_abort_window_ns = 100ull * 1'000'000;   // a reset_recv this close to our abort-on-data reset is ours
    size_t max_live_connections = 262'144;                 // hard cap; the least recently active are evicted past it
    size_t max_backends = 4096;                            // further backends are folded into one overflow backend
    size_t recent_connections_per_kind = 16;  // per backend and reset kind: ring of recent reset connections
    uint64_t live_update_interval_ns = 10ull * 1'000'000'000;
    bool split_backends_by_laddr = false;  // key backends by (netns, port, laddr) instead of (netns, port)
    // The kernel tallies ordinary connections (`tally` events): a connection first seen by its
    // close or reset was opened, and counted, already (docs/correlator.md, "Tallies").
    bool opens_tallied = false;

    // Rollouts and crashes: connections refused after a backend stops listening, and closes after
    // a stopping signal, belong to that stop for this long (or until it listens again).
    uint64_t drain_window_ns = 120ull * 1'000'000'000;
    // A SIGKILL, a crash or exit != 0 this long after a SIGTERM or SIGINT is the end of a rollout
    // whose grace period ran out, not a crash.
    uint64_t stop_signal_memory_ns = 600ull * 1'000'000'000;
    // The peer closed a connection whose request had waited this long with no response: the LB gave up.
    uint32_t lb_gave_up_after_ms = 1000;

    // From the CLI options: --lb PRESET, --lb-ranges LIST, --lb-idle-timeout SECONDS.
    // Returns nullopt and sets *error on an unknown preset or a bad range list.
    static std::optional<CorrelatorConfig> from_options(std::string_view preset,
                                                        std::optional<std::string_view> ranges = std::nullopt,
                                                        std::optional<uint32_t> idle_timeout_s = std::nullopt,
                                                        std::string* error = nullptr,
                                                        std::optional<uint32_t> response_timeout_s = std::nullopt);
    // --lb gcp with its ranges and timeout: what `tcpwhy` uses when given no option.
    static CorrelatorConfig defaults();
    // "gcp (130.211.0.0/22,..., idle timeout 600 s)" for headers and logs.
    std::string describe_lb() const;
    // Whether a peer counts as the load balancer: inside a range, or any non-loopback
    // peer when no ranges are known. The one rule: `trace` marks `lb` with it, the
    // correlator counts by it, metrics label by lb_range_label().
    bool is_lb_peer(const IpAddr& peer) const;
    // The range a peer is in ("130.211.0.0/22"), "any" for an LB peer of a preset without
    // ranges, "" for a peer that is not the LB.
    std::string lb_range_label(const IpAddr& peer) const;
};

// ---- results --------------------------------------------------------------

enum class OpenKind : uint8_t { unknown, accepted, connected };
enum class FirstClose : uint8_t { unknown, local, remote };
enum class EndKind : uint8_t { open, orderly, reset_sent, reset_received, expired };
std::string_view to_string(OpenKind kind);
std::string_view to_string(FirstClose kind);
std::string_view to_string(EndKind kind);
std::optional<EndKind> end_kind_from_string(std::string_view name);

// How the correlator recognised a reset: the mechanism behind it, before idle or not
// idle decided the kind.
enum class Mechanism : uint8_t {
    no_socket,        // no socket for the segment (a SYN to a closed port, a connection this host forgot)
    timewait,         // data to a TIME_WAIT socket
    data_after_fin,   // data arrived after our FIN (socket closing or closed)
    unread_at_close,  // closed with data still unread
    linger_zero,      // close() with SO_LINGER {1,0} (tcp_disconnect)
    timer_expired,    // keep-alive or user timeout
    reset_received,   // the peer sent the reset
    unrecognised,
};
std::string_view to_string(Mechanism mechanism);

// Where the reset's reason came from.
enum class ReasonSource : uint8_t {
    kernel,    // the kernel named it (6.10+)
    inferred,  // decode inferred it from the socket's state (older kernels)
    none,      // no reason at all; the shape was recognised from the socket state
};
std::string_view to_string(ReasonSource source);

// Why the correlator chose a connection's kind: the facts of the reset and of the local
// close before it. explain::evidence() says it in a sentence.
struct ResetEvidence {
    Mechanism mechanism = Mechanism::unrecognised;
    ResetReason reason = ResetReason::none;
    ReasonSource reason_source = ReasonSource::none;
    SockKind sk_kind = SockKind::none;
    TcpState sk_state = TcpState::unknown;  // the socket's state when the reset left or arrived
    bool close_seen = false;                 // the local close was traced
    bool close_idle = false;                 // ... and was an idle close (idle_gap_ms >= idle_bar_ms)
    bool close_aborted = false;              // ... and sent an RST instead of a FIN
    bool idle_from_reset = false;            // close not seen: idle_gap_ms is the reset's own idle_rx
    uint32_t idle_gap_ms = 0;                // quiet before the local close (or before the reset)
    uint32_t idle_bar_ms = 0;                // what counted as idle for this backend then
    std::optional<uint32_t> after_close_ms;  // the reset this long after the local close
    uint32_t unread_bytes = 0;
    FirstClose first_close = FirstClose::unknown;  // reset_received: who had closed first
    bool linger_zero_in_force = false;             // SO_LINGER {1,0} on the socket
    std::optional<uint32_t> user_timeout_ms;       // TCP_USER_TIMEOUT in force, when set
    std::optional<std::array<uint32_t, 3>> keepalive_probes;  // TCP_KEEPIDLE s, TCP_KEEPINTVL s, TCP_KEEPCNT
    uint32_t send_queue_bytes = 0;            // written and unacknowledged when the reset left: what it discarded
    bool closed_by_exit = false;              // the local close ran as the process exited
    bool closed_while_draining = false;       // ... ran after the backend stopped listening or got a SIGTERM
    std::optional<uint32_t> peer_idle_ms;     // reset_received: quiet before the peer's FIN, when it closed first
    bool operator==(const ResetEvidence&) const = default;
};

// One connection's lifecycle as the correlator understood it.
struct ConnectionRecord {
    uint64_t cookie = 0;
    uint32_t netns = 0;
    IpAddr laddr, raddr;
    uint16_t lport = 0, rport = 0;
    bool lb_peer = false;
    OpenKind opened = OpenKind::unknown;
    bool open_counted = false;  // its open was in a kernel tally: first_ts_ns is its first own event, not the open
    FirstClose first_close = FirstClose::unknown;
    EndKind end = EndKind::open;
    bool aborted = false;      // the local side closed with an RST
    uint64_t first_ts_ns = 0;  // first event seen
    uint64_t close_ts_ns = 0;  // local close (0: none seen)
    uint64_t end_ts_ns = 0;    // reached CLOSE (0: not yet)
    uint64_t last_ts_ns = 0;
    uint64_t reset_ts_ns = 0;  // when the reset that decided `reset` happened (0: not reset)
    uint32_t idle_before_close_ms = 0;  // the quiet time before the local close
    uint32_t unread_at_close = 0;
    uint64_t bytes_rx = 0, bytes_tx = 0;
    std::optional<FindingKind> reset;         // the classification, when it was reset
    ResetReason reset_reason = ResetReason::none;  // kernel reason of the reset sent, if any
    std::optional<ResetEvidence> evidence;    // why the correlator chose `reset`
};

// Which backend: a listening port in a network namespace (inbound), or for the
// local side of outgoing connections, the remote service port (outbound).
struct BackendId {
    uint32_t netns = 0;
    uint16_t port = 0;
    bool outbound = false;
    IpAddr laddr;     // last local address seen (part of the key only with split_backends_by_laddr)
    // Who it is (issue 4's resolver, or names recorded in a trace); empty when unknown.
    std::string pod;        // pod name on Kubernetes; the `ip netns` name, or "host", elsewhere
    std::string namespace_name;  // Kubernetes namespace; empty off Kubernetes
    std::string container;  // container name, when known
    WorkloadKind workload = WorkloadKind::unknown;  // what `pod` names: a pod, an `ip netns` name, the host, ...
};

struct IdleStats {
    uint64_t samples = 0;
    uint32_t p50_ms = 0, p90_ms = 0, max_ms = 0;
    bool exact = true;  // false: percentiles are bucket estimates (±3%)
};

// A timeout option a process set on a backend's socket, or changed.
struct SockOptChange {
    uint64_t ts_ns = 0;
    uint32_t pid = 0;
    std::string comm;
    SockOpt opt = SockOpt::so_keepalive;
    int64_t value = 0, value2 = 0;    // as the setsockopt event has them (linger: onoff, seconds)
    std::optional<int64_t> previous;  // the value it replaced, when known
};

struct BackendProfile {
    BackendId id;
    std::string comm;  // process seen owning its sockets (most recent)
    uint32_t pid = 0;
    // The server that process runs (framework, version, configured knobs), when it was detected
    // (live, or from the trace's `server` lines); nullopt when nothing was looked up. A detection
    // that recognised nothing is present with kind unknown.
    std::optional<ServerInfo> server;
    uint64_t connections_lb = 0, connections_other = 0, live_connections = 0;
    uint64_t closed_local_first = 0, closed_remote_first = 0, aborted_local = 0;
    IdleStats idle_close;                                       // idle closes by the backend
    std::vector<std::pair<uint32_t, uint64_t>> idle_histogram;  // (bucket low ms, count)
    std::array<uint64_t, kFindingKindCount> resets_lb{};        // by kind, to load-balancer peers
    std::array<uint64_t, kFindingKindCount> resets_other{};     // by kind, to other peers
    SockOpts opts;                                              // timeout options seen in force on its sockets
    std::vector<SockOptChange> opt_changes;                     // when they were set or changed (bounded)

    uint64_t resets(FindingKind kind) const {
        return resets_lb[static_cast<size_t>(kind)] + resets_other[static_cast<size_t>(kind)];
    }
    uint64_t resets_total() const;
};

// The load balancer a finding is judged against.
struct LbFacts {
    std::string name;             // the --lb preset: "gcp", "aws-alb", "none", ...
    std::string range;            // the LB range the affected peers matched ("" when none, "any" without ranges)
    uint32_t idle_timeout_s = 0;  // 0: no load balancer
    uint32_t response_timeout_s = 0;  // how long it waits for a response (0: unknown or none)
};

// ---- the facts of the kinds that are about a backend's life, not one reset ----
// (docs/correlator.md, "Rollouts, crashes, queues, timeouts")

// rollout_drain: the backend stopped listening while the LB still sent it connections.
struct DrainFacts {
    uint64_t stops = 0;                        // listener closes followed by refusals or resets (episodes)
    uint32_t pid = 0;                          // the process that stopped listening (latest stop)
    std::string comm;
    uint64_t listener_close_ts_ns = 0;         // latest stop: the last listener on the port closed
    uint64_t signal_ts_ns = 0;                 // the stopping signal before it (0: none seen)
    int signal = 0;                            // SIGTERM, SIGINT, ...
    std::string signal_sender;                 // "kubelet[1234]"
    std::optional<uint32_t> signal_to_close_ms;  // stopping signal -> listener close
    uint64_t last_refused_ts_ns = 0;           // the last refused LB connection (or reset pooled one) of it
    uint32_t drain_lag_ms = 0;                 // listener close -> that last refusal: how long the LB kept sending
    uint32_t max_drain_lag_ms = 0;             // over every stop
    uint64_t refused = 0, refused_lb = 0;      // SYNs answered with a reset after the listener closed
    uint64_t pooled_resets = 0;                // connections closed while draining that then got a request
    std::optional<uint32_t> killed_after_ms;   // SIGKILL this long after the stopping signal (grace period ran out)
    std::optional<uint32_t> relisten_after_ms; // listening again this long after the close (a restart)
    std::optional<uint16_t> exit_code;         // how the process ended, when its exit closed sockets
    uint64_t in_flight = 0;                    // connections closed with a request unanswered as it stopped
};

// process_crash: the process died (fatal signal, OOM kill, exit != 0) with connections open.
struct CrashFacts {
    uint64_t crashes = 0;                 // episodes (processes that died) on this backend
    uint32_t pid = 0;                     // the latest one
    std::string comm;
    uint64_t ts_ns = 0;                   // its first close from the exit
    uint16_t exit_code = 0;               // wait(2) status: the signal, or exit status << 8
    bool oom_victim = false;              // chosen by the OOM killer
    uint64_t connections = 0, connections_lb = 0;  // open connections its exit closed
    uint64_t in_flight = 0;               // of those, with a request read (or unread) and not answered
    uint64_t mid_response = 0;            // ... with response bytes still unacknowledged
    uint64_t aborted = 0;                 // closed with a reset (unread data)
    bool listener_closed = false;         // the exit closed the last listener on the port
    uint64_t refused = 0, refused_lb = 0; // SYNs refused after that, until it listened again
    std::optional<uint32_t> refused_for_ms;     // exit -> the last refused SYN
    std::optional<uint32_t> restarted_after_ms; // exit -> listening again
};

// accept_queue_overflow: handshakes dropped at a full accept queue.
struct OverflowFacts {
    uint64_t drops = 0;               // SYNs or final ACKs dropped (skb:kfree_skb TCP_LISTEN_OVERFLOW)
    uint64_t synack_retransmits = 0;  // SYN-ACKs sent again with the queue full (an ACK had been dropped)
    uint64_t lb = 0;                  // of all those, from LB peers
    uint32_t backlog = 0;             // the listener's backlog in force: min(listen() backlog, net.core.somaxconn)
    uint32_t max_queue = 0;           // the longest accept queue seen
    uint32_t peak_per_second = 0;     // the most overflow events in one second
    uint32_t seconds = 0;             // seconds with at least one
    // per second with events, oldest first (the last 60): (CLOCK_MONOTONIC of the second, events)
    std::vector<std::pair<uint64_t, uint32_t>> per_second;
};

// lb_response_timeout: the LB closed connections on which a request waited for a response.
struct LbTimeoutFacts {
    uint64_t connections = 0, by_reset = 0;  // connections the peer gave up on; of those, with a reset (else FIN)
    IdleStats waited;                        // how long the request had waited then (ms)
    uint32_t lb_response_timeout_s = 0;      // the configured LB's (0: unknown)
};

// outbound_pool_race: how long the upstream lets a connection idle before it closes it.
struct UpstreamIdleFacts {
    IdleStats upstream_idle_close;    // quiet before the upstream's FIN, on connections it closed
    uint32_t client_idle_below_ms = 0;  // what to set the client's pool idle timeout below
};

// A verdict about one backend: what, how often, since when, and the facts that show it.
struct Finding {
    FindingKind kind = FindingKind::other;
    BackendProfile backend;
    uint64_t count = 0;  // resets of this kind (idle closes for idle_timeout_below_lb)
    uint64_t count_lb = 0, count_other = 0;  // of those, by peer (resets only)
    uint64_t first_ts_ns = 0, last_ts_ns = 0;
    std::optional<IdleStats> idle_close;     // the backend's idle closes, when it made any
    LbFacts lb;
    std::optional<ResetEvidence> evidence;   // the most recent reset's
    std::optional<SockOptChange> linked_change;  // the related option change set before the resets
    // The affected connections the correlator kept (the last recent_connections_per_kind of this
    // kind per backend), newest first, and how many more there were.
    std::vector<ConnectionRecord> connections;
    uint64_t connections_not_kept = 0;
    // The facts of the kinds about a backend's life (one is set, for its kind).
    std::optional<DrainFacts> drain;
    std::optional<CrashFacts> crash;
    std::optional<OverflowFacts> overflow;
    std::optional<LbTimeoutFacts> lb_timeout;
    std::optional<UpstreamIdleFacts> upstream;
};

// The order findings() lists them in: the more important kind first (kinds.h weight), then the
// larger count. Reports of several nodes merge their findings by it.
bool finding_before(const Finding& a, const Finding& b);

struct CorrelatorCounts {
    std::array<uint64_t, kEventTypeCount> events_by_type{};  // indexed by EventType
    uint64_t events = 0;
    uint64_t connections = 0;          // distinct connections seen
    uint64_t live_connections = 0;     // in memory now
    uint64_t expired_stale = 0;        // open, silent for stale_after
    uint64_t evicted_over_cap = 0;     // pushed out by max_live_connections
    uint64_t backends_overflowed = 0;  // connections folded into the overflow backend
    uint64_t ignored_events = 0;       // events with nothing to attach to (cookie 0 and no address)
    uint64_t local_reset_recv = 0;     // reset_recv caused by our own abort (not a peer reset)
    uint64_t follow_up_resets = 0;     // resets for segments of a connection already reset (peer data in flight)
    std::array<uint64_t, kFindingKindCount> resets{};  // by kind
};

// A finding that is new, or has grown, since the last take_live_updates().
struct FindingUpdate {
    Finding finding;
    bool first = true;   // reached for the first time (else: grown)
    uint64_t added = 0;  // since the last update about it
};

// What `tcpwhy top` shows of a backend beyond its profile.
struct BackendActivity {
    uint64_t live_lb = 0, live_other = 0;  // open connections, by peer
    std::vector<ConnectionRecord> recent;  // newest first: reset ones (with evidence) and those still in memory
};

// ---- the correlator -------------------------------------------------------

class Correlator {
public:
    explicit Correlator(CorrelatorConfig config = CorrelatorConfig::defaults());
    ~Correlator();
    Correlator(Correlator&&) noexcept;
    Correlator& operator=(Correlator&&) noexcept;
    Correlator(const Correlator&) = delete;
    Correlator& operator=(const Correlator&) = delete;

    void on_event(const Event& event);
    // Hints, for a caller that knows the next events ahead (replay): start bringing into the
    // cache what on_event(event) will look up, so it finds it there. prefetch() first, then,
    // an event or so later, prefetch_more() (what the first fetched says where to find). They
    // change nothing.
    void prefetch(const Event& event) const;
    void prefetch_more(const Event& event) const;
    // Settles what time alone decides (pending reset_recv, retention, stale state)
    // as of now_ns (CLOCK_MONOTONIC). Call about once a second live, or every few
    // thousand events on replay.
    void expire(uint64_t now_ns);
    // Only the pending reset_recv whose abort window has passed: cheap enough for every poll,
    // so a peer's reset counts ~100 ms after it arrived, not at the next expire().
    void settle_due(uint64_t now_ns);
    // End of input: settle everything still pending. The state stays queryable.
    void finish();

    std::vector<Finding> findings() const;
    std::vector<BackendProfile> backends() const;
    // Connections with this peer, live or recently reset, oldest first.
    std::vector<ConnectionRecord> connections_with_peer(const IpAddr& raddr, uint16_t rport) const;
    // Recently reset connections, oldest first: per backend and reset kind the last
    // recent_connections_per_kind of them, with their verdict and evidence.
    std::vector<ConnectionRecord> recent_resets() const;
    CorrelatorCounts counts() const;
    const CorrelatorConfig& config() const;

    // For `tcpwhy trace`'s live lines: each finding when it is first reached, then at most
    // once every live_update_interval_ns while its count grows.
    std::vector<FindingUpdate> take_live_updates(uint64_t now_ns);

    // Keep the full record (with evidence) of every reset connection with this peer,
    // beyond the per-backend ring; `report --conn` sets it before replaying.
    void watch_peer(const IpAddr& raddr, uint16_t rport);

    // Replay: the trace's header says its ordinary connections were tallied (TraceHeader::tally).
    void set_opens_tallied(bool tallied);

    // Where backends get their names (pod, namespace, container): looked up by the
    // backend's namespace and its owner's cgroup when results are built, so names
    // resolved after a connection's events still apply. Shared with its filler
    // (the live WorkloadResolver, or the `workload` lines of a replayed trace).
    void set_workloads(std::shared_ptr<const WorkloadTable> table);
    // Where backends get their server (ServerInfo by the owner's pid), read the same way: the
    // live ServerDetector's table, or the `server` lines of a replayed trace.
    void set_servers(std::shared_ptr<const ServerTable> table);

    // The backend an event counts toward, by the one rule that keys backends (docs/correlator.md):
    // its connection's or listener's when known, else the listening port, or for an outgoing
    // connection the remote service port. Call after on_event() for that event.
    BackendId backend_of(const Event& event) const;

    // Bytes of live state one connection costs (the hash map node aside); <= 256.
    static size_t live_connection_bytes();

    // One entry per backend, in the order of backends() (call both without an event in
    // between), each with at most max_recent recent connections. One pass over the live
    // connections: call it on a timer, not per event.
    std::vector<BackendActivity> backend_activity(size_t max_recent) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tcpwhy
