#include "causes.h"

#include <algorithm>

namespace tcpwhy::correlator {
namespace {

constexpr int kSigInt = 2, kSigQuit = 3, kSigKill = 9, kSigTerm = 15;

bool is_stop_signal(int signal) { return signal == kSigTerm || signal == kSigInt || signal == kSigQuit; }

IdleStats stats_of(const DurationHistogram& h) {
    return {h.count(), h.percentile(0.5), h.percentile(0.9), h.max(), h.exact()};
}

uint32_t ms_between(uint64_t from_ns, uint64_t to_ns) {
    return to_ns > from_ns ? static_cast<uint32_t>(std::min<uint64_t>((to_ns - from_ns) / 1'000'000, UINT32_MAX)) : 0;
}

}  // namespace

void SignalLog::add(StopSignal signal) {
    log_.push_back(std::move(signal));
    while (log_.size() > kCapacity) log_.pop_front();
}

const StopSignal* SignalLog::stop_before(uint32_t pid, uint64_t ts_ns, uint64_t memory_ns) const {
    for (auto it = log_.rbegin(); it != log_.rend(); ++it) {
        if (it->ts_ns > ts_ns) continue;
        if (ts_ns - it->ts_ns > memory_ns) break;
        if (it->pid == pid && is_stop_signal(it->signal)) return &*it;
    }
    return nullptr;
}

const StopSignal* SignalLog::kill_between(uint32_t pid, uint64_t from_ns, uint64_t to_ns) const {
    for (const auto& s : log_)
        if (s.pid == pid && s.signal == kSigKill && s.ts_ns >= from_ns && s.ts_ns <= to_ns) return &s;
    return nullptr;
}

void BackendCauses::add_overflow(uint64_t ts_ns, bool drop, bool lb_peer, uint32_t queue, uint32_t backlog) {
    ++(drop ? overflow_drops : overflow_synacks);
    if (lb_peer) ++overflow_lb;
    overflow_max_queue = std::max(overflow_max_queue, queue);
    if (backlog) overflow_backlog = backlog;
    if (!overflow_first_ts_ns) overflow_first_ts_ns = ts_ns;
    overflow_last_ts_ns = std::max(overflow_last_ts_ns, ts_ns);
    uint64_t second = ts_ns - ts_ns % 1'000'000'000;
    if (overflow_seconds.empty() || overflow_seconds.back().first != second) {
        overflow_seconds.emplace_back(second, 0);
        ++overflow_seconds_seen;
        while (overflow_seconds.size() > kOverflowSeconds) overflow_seconds.pop_front();
    }
    overflow_peak = std::max(overflow_peak, ++overflow_seconds.back().second);
}

bool abnormal_exit(uint16_t exit_code) {
    int signal = exit_signal(exit_code);
    if (signal) return !is_stop_signal(signal);
    int status = exit_status(exit_code);
    return status != 0 && status != 128 + kSigTerm && status != 128 + kSigInt;
}

bool request_in_flight(const Event& close) {
    if (close.unread_bytes > 0 || close.send_queue_bytes > 0) return true;
    if (close.bytes_rx == 0) return false;
    return close.bytes_tx == 0 || close.idle_rx_ms < close.idle_tx_ms;
}

DrainFacts drain_facts(const std::deque<StopEpisode>& stops, bool lb_only) {
    DrainFacts f;
    const StopEpisode* latest = nullptr;
    for (const auto& s : stops) {
        if (s.crash || !s.hurt(lb_only)) continue;
        ++f.stops;
        latest = &s;
        uint64_t anchor = s.listener_close_ts_ns ? s.listener_close_ts_ns : s.start_ts_ns;
        f.max_drain_lag_ms = std::max(f.max_drain_lag_ms, ms_between(anchor, s.last_refused_ts_ns));
        f.refused += s.refused;
        f.refused_lb += s.refused_lb;
        f.pooled_resets += s.pooled_resets;
    }
    if (!latest) return f;
    const StopEpisode& s = *latest;
    f.pid = s.pid;
    f.comm = s.comm;
    f.listener_close_ts_ns = s.listener_close_ts_ns;
    f.signal_ts_ns = s.signal_ts_ns;
    f.signal = s.signal;
    f.signal_sender = s.signal_sender;
    if (s.signal_ts_ns && s.listener_close_ts_ns >= s.signal_ts_ns)
        f.signal_to_close_ms = ms_between(s.signal_ts_ns, s.listener_close_ts_ns);
    f.last_refused_ts_ns = s.last_refused_ts_ns;
    uint64_t anchor = s.listener_close_ts_ns ? s.listener_close_ts_ns : s.start_ts_ns;
    f.drain_lag_ms = ms_between(anchor, s.last_refused_ts_ns);
    if (s.kill_ts_ns && s.signal_ts_ns) f.killed_after_ms = ms_between(s.signal_ts_ns, s.kill_ts_ns);
    if (s.relisten_ts_ns && s.listener_close_ts_ns) f.relisten_after_ms = ms_between(s.listener_close_ts_ns, s.relisten_ts_ns);
    if (s.by_exit) f.exit_code = s.exit_code;
    f.in_flight = s.in_flight;
    return f;
}

CrashFacts crash_facts(const std::deque<StopEpisode>& stops) {
    CrashFacts f;
    const StopEpisode* latest = nullptr;
    for (const auto& s : stops)
        if (s.crash) ++f.crashes, latest = &s;
    if (!latest) return f;
    const StopEpisode& s = *latest;
    f.pid = s.pid;
    f.comm = s.comm;
    f.ts_ns = s.exit_ts_ns ? s.exit_ts_ns : s.start_ts_ns;
    f.exit_code = s.exit_code;
    f.oom_victim = s.oom_victim;
    f.connections = s.exit_closes;
    f.connections_lb = s.exit_closes_lb;
    f.in_flight = s.in_flight;
    f.mid_response = s.mid_response;
    f.aborted = s.aborted;
    f.listener_closed = s.listener_close_ts_ns != 0;
    f.refused = s.refused;
    f.refused_lb = s.refused_lb;
    if (s.last_refused_ts_ns) f.refused_for_ms = ms_between(f.ts_ns, s.last_refused_ts_ns);
    if (s.relisten_ts_ns) f.restarted_after_ms = ms_between(f.ts_ns, s.relisten_ts_ns);
    return f;
}

OverflowFacts overflow_facts(const BackendCauses& c) {
    OverflowFacts f;
    f.drops = c.overflow_drops;
    f.synack_retransmits = c.overflow_synacks;
    f.lb = c.overflow_lb;
    f.backlog = c.overflow_backlog;
    f.max_queue = c.overflow_max_queue;
    f.peak_per_second = c.overflow_peak;
    f.seconds = c.overflow_seconds_seen;
    f.per_second.assign(c.overflow_seconds.begin(), c.overflow_seconds.end());
    return f;
}

LbTimeoutFacts lb_timeout_facts(const BackendCauses& c, uint32_t lb_response_timeout_s) {
    LbTimeoutFacts f;
    f.connections = c.gave_up;
    f.by_reset = c.gave_up_by_reset;
    f.waited = stats_of(c.gave_up_waited);
    f.lb_response_timeout_s = lb_response_timeout_s;
    return f;
}

UpstreamIdleFacts upstream_facts(const BackendCauses& c) {
    UpstreamIdleFacts f;
    f.upstream_idle_close = stats_of(c.upstream_idle);
    // Below the shortest close seen, with a margin that absorbs the timers' granularity: 10%, at least 1 s.
    uint32_t shortest = c.upstream_idle.min();
    uint32_t margin = std::max<uint32_t>(1000, shortest / 10);
    f.client_idle_below_ms = shortest > 2 * margin ? shortest - margin : shortest / 2;
    return f;
}

}  // namespace tcpwhy::correlator
