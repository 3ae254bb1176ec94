#include "classify.h"

#include <algorithm>
#include <array>
#include <string_view>

#include <fmt/format.h>

namespace tcpwhy::classify {
namespace {

struct ReasonMechanism {
    ResetReason reason;
    Mechanism mechanism;
};

// Kernel reasons whose mechanism tcpwhy knows.
constexpr std::array kReasonMechanisms = {
    ReasonMechanism{ResetReason::no_socket, Mechanism::no_socket},
    ReasonMechanism{ResetReason::tcp_timewait_socket, Mechanism::timewait},
    ReasonMechanism{ResetReason::tcp_abort_on_data, Mechanism::data_after_fin},
    ReasonMechanism{ResetReason::tcp_abort_on_close, Mechanism::unread_at_close},
    ReasonMechanism{ResetReason::tcp_disconnect_with_data, Mechanism::unread_at_close},
    ReasonMechanism{ResetReason::tcp_state, Mechanism::linger_zero},
    ReasonMechanism{ResetReason::tcp_keepalive_timeout, Mechanism::timer_expired},
};

Mechanism mechanism_from_reason(ResetReason reason) {
    for (const auto& entry : kReasonMechanisms)
        if (entry.reason == reason) return entry.mechanism;
    return Mechanism::unrecognised;
}

bool is_closing_state(TcpState s) {
    return s == TcpState::fin_wait1 || s == TcpState::fin_wait2 || s == TcpState::closing;
}

bool linger_zero_in_force(const SockOpts& opts) {
    return opts.has(SockOpt::so_linger) && opts.linger_onoff && opts.linger_s == 0;
}

// Kernels without reset reasons: recognise the same mechanisms from the socket.
Mechanism mechanism_from_state(const Event& e, const CloseFacts& close) {
    switch (e.sk_kind) {
    case SockKind::none: return Mechanism::no_socket;
    case SockKind::timewait: return Mechanism::timewait;
    case SockKind::request: return Mechanism::unrecognised;
    case SockKind::full: break;
    }
    bool sent_fin = close.seen && !close.aborted;
    if (e.has_skb && (is_closing_state(e.sk_state) || (e.sk_state == TcpState::close && sent_fin)))
        return Mechanism::data_after_fin;
    if (e.has_skb) return Mechanism::unrecognised;
    uint32_t unread = close.seen ? close.unread_bytes : e.unread_bytes;
    if (unread > 0) return Mechanism::unread_at_close;
    if (linger_zero_in_force(e.opts)) return Mechanism::linger_zero;
    // A reset no segment triggered on an open socket nobody closed: a timer.
    if (!close.seen && (e.opts.keepalive || e.opts.has(SockOpt::tcp_user_timeout))) return Mechanism::timer_expired;
    return Mechanism::unrecognised;
}

bool reason_known(const Event& e) { return !e.reason_inferred && e.reason != ResetReason::none; }

Mechanism mechanism_of(const Event& e, const CloseFacts& close) {
    if (reason_known(e)) return mechanism_from_reason(e.reason);
    Mechanism from_state = mechanism_from_state(e, close);
    if (from_state != Mechanism::unrecognised || e.reason == ResetReason::none) return from_state;
    return mechanism_from_reason(e.reason);  // the loader's best-effort inference
}

// The facts every verdict on a sent reset starts from.
ResetEvidence evidence_of(const Event& e, const CloseFacts& close, uint32_t bar, Mechanism mechanism) {
    ResetEvidence ev;
    ev.mechanism = mechanism;
    ev.reason = e.reason;
    ev.reason_source = reason_known(e)                   ? ReasonSource::kernel
                       : e.reason == ResetReason::none ? ReasonSource::none
                                                         : ReasonSource::inferred;
    ev.sk_kind = e.sk_kind;
    ev.sk_state = e.sk_state;
    ev.close_seen = close.seen;
    ev.close_idle = close.idle;
    ev.close_aborted = close.aborted;
    ev.idle_gap_ms = close.seen ? close.idle_gap_ms : e.idle_rx_ms;
    ev.idle_bar_ms = bar;
    if (close.seen && e.ts_ns >= close.close_ts_ns)
        ev.after_close_ms = static_cast<uint32_t>((e.ts_ns - close.close_ts_ns) / 1'000'000);
    ev.unread_bytes = close.seen ? close.unread_bytes : e.unread_bytes;
    ev.linger_zero_in_force = linger_zero_in_force(e.opts);
    if (e.opts.has(SockOpt::tcp_user_timeout) && e.opts.user_timeout_ms > 0) ev.user_timeout_ms = e.opts.user_timeout_ms;
    if (e.opts.has(SockOpt::tcp_keepidle))
        ev.keepalive_probes = std::array<uint32_t, 3>{e.opts.keepidle_s, e.opts.keepintvl_s, e.opts.keepcnt};
    return ev;
}

FindingKind timewait_kind(const ResetEvidence& ev) {
    return ev.close_seen && ev.close_idle && !ev.close_aborted ? FindingKind::idle_close_race
                                                               : FindingKind::timewait_data;
}

// Without the close event the reset's own idle_rx (the dropped segment does not
// refresh it) is the best estimate of how quiet the connection was.
FindingKind data_after_fin_kind(ResetEvidence& ev) {
    ev.idle_from_reset = !ev.close_seen;
    bool idle = ev.close_seen ? ev.close_idle : ev.idle_gap_ms >= ev.idle_bar_ms;
    return idle ? FindingKind::idle_close_race : FindingKind::close_with_unread_data;
}

FindingKind unread_kind(const ResetEvidence& ev) {
    return ev.close_seen && ev.close_idle ? FindingKind::idle_close_race : FindingKind::close_with_unread_data;
}

FindingKind timer_kind(const ResetEvidence& ev) {
    return ev.user_timeout_ms ? FindingKind::user_timeout : FindingKind::keepalive_timeout;
}

}  // namespace

uint32_t idle_bar_ms(uint32_t threshold_ms, const DurationHistogram& local_closes) {
    if (local_closes.count() < kMinClosesForRelativeBar) return threshold_ms;
    uint32_t half_median = local_closes.percentile(0.5) / 2;
    if (half_median < kRelativeBarFloorMs) return threshold_ms;
    return std::min(threshold_ms, half_median);
}

uint32_t idle_gap_ms(const Event& close) {
    if (close.bytes_tx == 0) return close.idle_rx_ms;
    if (close.unread_bytes > 0) return close.idle_tx_ms;
    return std::min(close.idle_rx_ms, close.idle_tx_ms);
}

Verdict classify_reset_sent(const Event& e, const CloseFacts& close, uint32_t bar) {
    Verdict v;
    v.evidence = evidence_of(e, close, bar, mechanism_of(e, close));
    switch (v.evidence.mechanism) {
    case Mechanism::no_socket: v.kind = FindingKind::no_listener; break;
    case Mechanism::timewait: v.kind = timewait_kind(v.evidence); break;
    case Mechanism::data_after_fin: v.kind = data_after_fin_kind(v.evidence); break;
    case Mechanism::unread_at_close: v.kind = unread_kind(v.evidence); break;
    case Mechanism::linger_zero: v.kind = FindingKind::linger_abort; break;
    case Mechanism::timer_expired: v.kind = timer_kind(v.evidence); break;
    case Mechanism::reset_received:
    case Mechanism::unrecognised: v.kind = FindingKind::other; break;
    }
    return v;
}

Verdict classify_reset_received(const Event& e, TcpState state_before, FirstClose first_close) {
    Verdict v;
    v.kind = FindingKind::peer_reset;
    v.evidence.mechanism = Mechanism::reset_received;
    v.evidence.sk_kind = e.sk_kind;
    v.evidence.sk_state = e.sk_state != TcpState::unknown ? e.sk_state : state_before;
    v.evidence.first_close = first_close;
    return v;
}

bool is_abort_on_data(const Event& e) {
    if (reason_known(e)) return e.reason == ResetReason::tcp_abort_on_data;
    return e.sk_kind == SockKind::full && e.has_skb && (is_closing_state(e.sk_state) || e.sk_state == TcpState::close);
}

}  // namespace tcpwhy::classify
