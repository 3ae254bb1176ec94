// The state behind the kinds that are about a backend's life rather than one reset: stops
// (rollouts and crashes), full accept queues, requests the LB gave up on, and how long an
// upstream lets connections idle. Kept per backend, allocated the first time one applies, so a
// backend that never stops, overflows or times out costs one pointer. Pure data and small rules;
// the correlator (correlator.cpp) feeds it and builds the findings from it.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>

#include "tcpwhy/correlator.h"
#include "tcpwhy/histogram.h"

namespace tcpwhy::correlator {

// A stopping signal (SIGTERM, SIGINT, SIGQUIT, SIGKILL) sent to a process that listens.
struct StopSignal {
    uint64_t ts_ns = 0;
    uint32_t pid = 0;
    int signal = 0;
    std::string sender;  // "containerd-shim[812]"
};

// The last stopping signals, for the stops and exits that follow them.
class SignalLog {
public:
    static constexpr size_t kCapacity = 64;
    void add(StopSignal signal);
    // The latest SIGTERM, SIGINT or SIGQUIT to pid in [ts - memory, ts].
    const StopSignal* stop_before(uint32_t pid, uint64_t ts_ns, uint64_t memory_ns) const;
    // The first SIGKILL to pid in [from, to].
    const StopSignal* kill_between(uint32_t pid, uint64_t from_ns, uint64_t to_ns) const;
    // Nothing recent at all: the common case, checked before anything else per close.
    bool quiet_since(uint64_t ts_ns) const { return log_.empty() || log_.back().ts_ns < ts_ns; }

private:
    std::deque<StopSignal> log_;  // oldest first
};

// A process signalled to stop, or the last listener of a port closing, or a process dying with
// connections: one stop of a backend, with what followed it.
struct StopEpisode {
    bool crash = false;         // a fatal signal, an OOM kill or exit != 0, not after a stopping signal
    uint32_t pid = 0;
    std::string comm;
    uint64_t start_ts_ns = 0;           // the first sign: the signal, the listener close or the first exit close
    uint64_t signal_ts_ns = 0;          // the stopping signal (0: none seen)
    int signal = 0;
    std::string signal_sender;
    uint64_t kill_ts_ns = 0;            // a SIGKILL after the stopping signal
    uint64_t listener_close_ts_ns = 0;  // the last listener closed (0: the port kept listening)
    uint64_t relisten_ts_ns = 0;        // a listener again (0: not yet)
    bool by_exit = false;               // its sockets were closed by the process's exit
    uint64_t exit_ts_ns = 0;
    uint16_t exit_code = 0;
    bool oom_victim = false;
    uint64_t refused = 0, refused_lb = 0;                  // SYNs reset while the port did not listen
    uint64_t pooled_resets = 0, pooled_resets_lb = 0;      // connections reset after it closed them
    uint64_t last_refused_ts_ns = 0;                       // the last of either
    uint64_t exit_closes = 0, exit_closes_lb = 0;          // open connections the exit closed
    uint64_t in_flight = 0, in_flight_lb = 0;              // ... with a request unanswered
    uint64_t mid_response = 0;                             // ... with response bytes unacknowledged
    uint64_t aborted = 0;                                  // ... closed with a reset

    // Whether the LB (any peer without one) was hurt: what makes a rollout a finding.
    bool hurt(bool lb_only) const {
        return lb_only ? refused_lb + pooled_resets_lb + in_flight_lb > 0 : refused + pooled_resets + in_flight > 0;
    }
};

struct BackendCauses {
    static constexpr size_t kMaxStops = 8;
    static constexpr size_t kMaxRecent = 16;
    static constexpr size_t kOverflowSeconds = 60;

    std::deque<StopEpisode> stops;   // newest last
    uint64_t draining_since_ns = 0;  // a stopping signal or the last listener's close; 0 while it serves

    // Full accept queue.
    uint64_t overflow_drops = 0, overflow_synacks = 0, overflow_lb = 0;
    uint32_t overflow_max_queue = 0, overflow_backlog = 0, overflow_peak = 0, overflow_seconds_seen = 0;
    uint64_t overflow_first_ts_ns = 0, overflow_last_ts_ns = 0;
    std::deque<std::pair<uint64_t, uint32_t>> overflow_seconds;  // (second start, events), oldest first

    // Requests the LB gave up on.
    uint64_t gave_up = 0, gave_up_by_reset = 0, gave_up_lb = 0;
    uint64_t gave_up_first_ts_ns = 0, gave_up_last_ts_ns = 0;
    DurationHistogram gave_up_waited;
    std::deque<ConnectionRecord> gave_up_recent;

    // Outbound: how long the upstream let connections idle before its FIN.
    DurationHistogram upstream_idle;

    // Crashes: the connections the exits closed (reset ones are in the reset tallies).
    std::deque<ConnectionRecord> exit_recent;

    void add_overflow(uint64_t ts_ns, bool drop, bool lb_peer, uint32_t queue, uint32_t backlog);
};

// A wait(2) status that is a crash: a fatal signal other than the stopping ones, or exit != 0
// (128 + SIGTERM/SIGINT, what shells and runtimes exit with after those, is a stop).
bool abnormal_exit(uint16_t exit_code);

// A close that leaves a request unanswered: unread data, a request newer than the last send (or
// nothing ever sent after data came), or a response still unacknowledged.
bool request_in_flight(const Event& close);

// The facts of a stop for its finding: the latest hurting rollout, with the worst lag of all.
DrainFacts drain_facts(const std::deque<StopEpisode>& stops, bool lb_only);
CrashFacts crash_facts(const std::deque<StopEpisode>& stops);
OverflowFacts overflow_facts(const BackendCauses& causes);
LbTimeoutFacts lb_timeout_facts(const BackendCauses& causes, uint32_t lb_response_timeout_s);
UpstreamIdleFacts upstream_facts(const BackendCauses& causes);

}  // namespace tcpwhy::correlator
