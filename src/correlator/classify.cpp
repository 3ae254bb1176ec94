#include "classify.h"

#include <algorithm>
#include <array>
#include <string_view>

#include <fmt/format.h>

namespace tcpwhy::classify {
namespace {

// The mechanism behind a reset sent, before idle/not-idle decides the verdict.
enum class Shape {
    no_socket,        // no socket for the segment
    timewait,         // data to a TIME_WAIT socket
    data_after_fin,   // data arrived after our FIN (socket closing or closed)
    unread_at_close,  // closed with data still unread
    linger_zero,      // close() with SO_LINGER {1,0} (tcp_disconnect)
    timer_expired,    // keep-alive or user timeout
    unrecognised,
};

struct ReasonShape {
    std::string_view reason;
    Shape shape;
};

// Kernel sk_rst_reason names (prefix SK_RST_REASON_ removed) tcpwhy understands.
constexpr std::array kReasonShapes = {
    ReasonShape{"NO_SOCKET", Shape::no_socket},
    ReasonShape{"TCP_TIMEWAIT_SOCKET", Shape::timewait},
    ReasonShape{"TCP_ABORT_ON_DATA", Shape::data_after_fin},
    ReasonShape{"TCP_ABORT_ON_CLOSE", Shape::unread_at_close},
    ReasonShape{"TCP_DISCONNECT_WITH_DATA", Shape::unread_at_close},
    ReasonShape{"TCP_STATE", Shape::linger_zero},
    ReasonShape{"TCP_KEEPALIVE_TIMEOUT", Shape::timer_expired},
};

Shape shape_from_reason(std::string_view reason) {
    for (const auto& entry : kReasonShapes)
        if (entry.reason == reason) return entry.shape;
    return Shape::unrecognised;
}

bool is_closing_state(TcpState s) {
    return s == TcpState::fin_wait1 || s == TcpState::fin_wait2 || s == TcpState::closing;
}

bool linger_zero_in_force(const SockOpts& opts) {
    return opts.has(SockOpt::so_linger) && opts.linger_onoff && opts.linger_s == 0;
}

// Kernels without reset reasons: recognise the same mechanisms from the socket.
Shape shape_from_state(const Event& e, const CloseFacts& close) {
    switch (e.sk_kind) {
    case SockKind::none: return Shape::no_socket;
    case SockKind::timewait: return Shape::timewait;
    case SockKind::request: return Shape::unrecognised;
    case SockKind::full: break;
    }
    bool sent_fin = close.seen && !close.aborted;
    if (e.has_skb && (is_closing_state(e.sk_state) || (e.sk_state == TcpState::close && sent_fin)))
        return Shape::data_after_fin;
    if (e.has_skb) return Shape::unrecognised;
    uint32_t unread = close.seen ? close.unread_bytes : e.unread_bytes;
    if (unread > 0) return Shape::unread_at_close;
    if (linger_zero_in_force(e.opts)) return Shape::linger_zero;
    // A reset no segment triggered on an open socket nobody closed: a timer.
    if (!close.seen && (e.opts.keepalive || e.opts.has(SockOpt::tcp_user_timeout))) return Shape::timer_expired;
    return Shape::unrecognised;
}

bool reason_known(const Event& e) { return !e.reason_inferred && !e.reason.empty(); }

Shape shape_of(const Event& e, const CloseFacts& close) {
    if (reason_known(e)) return shape_from_reason(e.reason);
    Shape from_state = shape_from_state(e, close);
    if (from_state != Shape::unrecognised || e.reason.empty()) return from_state;
    return shape_from_reason(e.reason);  // the loader's best-effort inference
}

std::string reason_text(const Event& e) {
    if (reason_known(e)) return fmt::format("reason {}", e.reason);
    if (e.reason.empty()) return "no kernel reason; shape recognised from socket state";
    return fmt::format("reason {} (inferred from socket state)", e.reason);
}

// " 5 ms" (since the close), or "" when the close time is unknown or the reset came first.
std::string after_close(const Event& e, const CloseFacts& close) {
    if (!close.seen || e.ts_ns < close.close_ts_ns) return "";
    return fmt::format(" {} ms", (e.ts_ns - close.close_ts_ns) / 1'000'000);
}

Verdict timewait_verdict(const Event& e, const CloseFacts& close, uint32_t bar) {
    if (close.seen && close.idle && !close.aborted)
        return {ResetKind::idle_close_race,
                fmt::format("backend sent FIN after {} ms idle; peer data reached the TIME_WAIT socket{} after it: {}",
                            close.idle_gap_ms, after_close(e, close), reason_text(e))};
    if (close.seen)
        return {ResetKind::timewait_data,
                fmt::format("data to a TIME_WAIT socket; the backend's close was not an idle close ({} ms quiet, "
                            "idle means >= {} ms): {}",
                            close.idle_gap_ms, bar, reason_text(e))};
    return {ResetKind::timewait_data,
            fmt::format("data to a TIME_WAIT socket whose close was not seen: {}", reason_text(e))};
}

Verdict data_after_fin_verdict(const Event& e, const CloseFacts& close, uint32_t bar) {
    // Without the close event the reset's own idle_rx (the dropped segment does not
    // refresh it) is the best estimate of how quiet the connection was.
    uint32_t gap = close.seen ? close.idle_gap_ms : e.idle_rx_ms;
    bool idle = close.seen ? close.idle : gap >= bar;
    std::string source = close.seen ? "" : " (close not seen; idle time from the reset)";
    if (idle)
        return {ResetKind::idle_close_race,
                fmt::format("backend sent FIN after {} ms idle{}; peer data arrived{} after the FIN: {}", gap, source,
                            after_close(e, close), reason_text(e))};
    return {ResetKind::close_with_unread_data,
            fmt::format("peer data arrived after the backend's FIN on a busy connection ({} ms quiet{}, idle means "
                        ">= {} ms): {}",
                        gap, source, bar, reason_text(e))};
}

Verdict unread_verdict(const Event& e, const CloseFacts& close, uint32_t bar) {
    uint32_t unread = close.seen ? close.unread_bytes : e.unread_bytes;
    if (close.seen && close.idle)
        return {ResetKind::idle_close_race,
                fmt::format("backend closed with {} unread bytes that arrived just before the close, after {} ms "
                            "without sending: {}",
                            unread, close.idle_gap_ms, reason_text(e))};
    if (close.seen)
        return {ResetKind::close_with_unread_data,
                fmt::format("backend closed with {} unread bytes on a busy connection ({} ms quiet, idle means >= {} "
                            "ms): {}",
                            unread, close.idle_gap_ms, bar, reason_text(e))};
    return {ResetKind::close_with_unread_data,
            fmt::format("backend closed with {} unread bytes (close not seen, idle gap unknown): {}", unread,
                        reason_text(e))};
}

Verdict linger_verdict(const Event& e) {
    if (linger_zero_in_force(e.opts))
        return {ResetKind::linger_abort, fmt::format("close() with SO_LINGER {{1,0}} in force: {}", reason_text(e))};
    return {ResetKind::linger_abort,
            fmt::format("abortive close (tcp_disconnect) without SO_LINGER {{1,0}} seen set: {}", reason_text(e))};
}

Verdict timer_verdict(const Event& e) {
    const SockOpts& o = e.opts;
    if (o.has(SockOpt::tcp_user_timeout) && o.user_timeout_ms > 0)
        return {ResetKind::user_timeout, fmt::format("TCP_USER_TIMEOUT {} ms expired with the peer unresponsive: {}",
                                                     o.user_timeout_ms, reason_text(e))};
    std::string probes = o.has(SockOpt::tcp_keepidle)
                             ? fmt::format(" (TCP_KEEPIDLE {} s, TCP_KEEPINTVL {} s, TCP_KEEPCNT {})", o.keepidle_s,
                                           o.keepintvl_s, o.keepcnt)
                             : "";
    return {ResetKind::keepalive_timeout,
            fmt::format("keep-alive probes went unanswered{}: {}", probes, reason_text(e))};
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
    switch (shape_of(e, close)) {
    case Shape::no_socket:
        return {ResetKind::no_listener,
                fmt::format("no socket for the segment (a SYN to a port nobody listens on, or a connection this host "
                            "no longer has): {}",
                            reason_text(e))};
    case Shape::timewait: return timewait_verdict(e, close, bar);
    case Shape::data_after_fin: return data_after_fin_verdict(e, close, bar);
    case Shape::unread_at_close: return unread_verdict(e, close, bar);
    case Shape::linger_zero: return linger_verdict(e);
    case Shape::timer_expired: return timer_verdict(e);
    case Shape::unrecognised: break;
    }
    return {ResetKind::other,
            fmt::format("{} (socket {}, state {})", reason_text(e), to_string(e.sk_kind), to_string(e.sk_state))};
}

Verdict classify_reset_received(const Event& e, TcpState state_before, FirstClose first_close) {
    TcpState state = e.sk_state != TcpState::unknown ? e.sk_state : state_before;
    std::string context;
    if (first_close == FirstClose::local)
        context = " after our FIN";
    else if (first_close == FirstClose::remote)
        context = " after the peer's FIN (we kept using a connection the peer had closed)";
    return {ResetKind::peer_reset, fmt::format("reset received in {}{}", to_string(state), context)};
}

bool is_abort_on_data(const Event& e) {
    if (reason_known(e)) return e.reason == "TCP_ABORT_ON_DATA";
    return e.sk_kind == SockKind::full && e.has_skb && (is_closing_state(e.sk_state) || e.sk_state == TcpState::close);
}

}  // namespace tcpwhy::classify
