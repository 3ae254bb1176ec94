#include "tcpwhy/decode.h"

#include <cstddef>
#include <cstring>

namespace tcpwhy {

// The ABI is shared with BPF C: pin the layout so a change on one side fails the build.
static_assert(sizeof(tcpwhy_sockopts) == 56);
static_assert(sizeof(tcpwhy_event) == 184);
static_assert(offsetof(tcpwhy_event, comm) == 32);
static_assert(offsetof(tcpwhy_event, laddr) == 48);
static_assert(offsetof(tcpwhy_event, lport) == 80);
static_assert(offsetof(tcpwhy_event, type) == 84);
static_assert(offsetof(tcpwhy_event, state) == 88);
static_assert(offsetof(tcpwhy_event, existing.sock_ino) == 96);
static_assert(offsetof(tcpwhy_event, opts) == 128);
static_assert(sizeof(tcpwhy_state_data) == 32 && sizeof(tcpwhy_close_data) == 40 && sizeof(tcpwhy_reset_data) == 32);
static_assert(offsetof(tcpwhy_event, close.exit_code) == 102 && offsetof(tcpwhy_event, close.send_queue_bytes) == 120);
static_assert(offsetof(tcpwhy_event, state.bytes_rx) == 112 && offsetof(tcpwhy_event, signal.sender_comm) == 96);
static_assert(sizeof(tcpwhy_state_data) == 32 && offsetof(tcpwhy_event, reset.bytes_tx) == 116);
static_assert(offsetof(tcpwhy_event, overflow.how) == 96);
static_assert(offsetof(tcpwhy_event, sockopt.opt) == 112);
static_assert(static_cast<size_t>(TCPWHY_EV__MAX) == kEventTypeCount);
static_assert(static_cast<int>(SockOpt::tcp_defer_accept) == TCPWHY_OPT_TCP_DEFER_ACCEPT);
static_assert(kSockOptCount == TCPWHY_OPT__MAX);
static_assert(static_cast<int>(EventType::tally) == TCPWHY_EV_TALLY);
static_assert(sizeof(tcpwhy_tally_key) == 8 && offsetof(tcpwhy_tally_key, outbound) == 6);
static_assert(sizeof(tcpwhy_tally_value) == 144);
static_assert(offsetof(tcpwhy_tally_value, pid) == 64 && offsetof(tcpwhy_tally_value, comm) == 72);
static_assert(offsetof(tcpwhy_tally_value, opts) == 88);
static_assert(sizeof(tcpwhy_tally_slot) == 152 && offsetof(tcpwhy_tally_slot, value) == 8);
static_assert(sizeof(tcpwhy_listener_key) == 8);
static_assert(sizeof(tcpwhy_lb_key) == 24 && offsetof(tcpwhy_lb_key, addr) == 5);

namespace {

constexpr int kAfInet = 2;
constexpr int kAfInet6 = 10;

IpAddr decode_addr(uint8_t family, const uint8_t (&bytes)[16]) {
    IpAddr addr;
    addr.family = family == kAfInet ? 4 : family == kAfInet6 ? 6 : 0;
    std::memcpy(addr.bytes.data(), bytes, addr.family == 4 ? 4 : 16);
    return canonical(addr);
}

SockOpts decode_opts(const tcpwhy_sockopts& raw) {
    SockOpts o;
    o.set_mask = raw.set_mask;
    o.keepalive = raw.keepalive;
    o.linger_onoff = raw.linger_onoff;
    o.linger_s = raw.linger_s;
    o.keepidle_s = raw.keepidle_s;
    o.keepintvl_s = raw.keepintvl_s;
    o.keepcnt = raw.keepcnt;
    o.user_timeout_ms = raw.user_timeout_ms;
    o.linger2_s = raw.linger2_s;
    o.defer_accept_s = raw.defer_accept_s;
    o.rcvtimeo_us = raw.rcvtimeo_us;
    o.sndtimeo_us = raw.sndtimeo_us;
    return o;
}

TcpState state_of(uint8_t raw) {
    return raw <= static_cast<uint8_t>(TcpState::new_syn_recv) ? static_cast<TcpState>(raw) : TcpState::unknown;
}

}  // namespace

ResetReasonMap reset_reason_map(const std::vector<std::string>& kernel_names) {
    ResetReasonMap map;
    map.reserve(kernel_names.size());
    for (const auto& name : kernel_names)
        map.push_back(name.empty() ? ResetReason::none
                                   : reset_reason_from_string(name).value_or(ResetReason::unrecognised));
    return map;
}

ResetReason infer_reset_reason(const Event& e) {
    switch (e.sk_kind) {
    case SockKind::none: return ResetReason::no_socket;
    case SockKind::timewait: return ResetReason::tcp_timewait_socket;
    case SockKind::request: return ResetReason::not_specified;
    case SockKind::full: break;
    }
    switch (e.sk_state) {
    case TcpState::fin_wait1:
    case TcpState::fin_wait2:
    case TcpState::closing:
    case TcpState::last_ack:
        // data arrived after the local side shut down its receive direction
        if (e.has_skb) return ResetReason::tcp_abort_on_data;
        break;
    case TcpState::close:
        // a segment reached a socket that had shut down; tcp_reset() had already closed it
        if (e.has_skb) return ResetReason::tcp_abort_on_data;
        if (e.unread_bytes > 0) return ResetReason::tcp_abort_on_close;
        if (e.opts.has(SockOpt::so_linger) && e.opts.linger_onoff && e.opts.linger_s == 0)
            return ResetReason::tcp_state;
        break;
    case TcpState::established:
    case TcpState::close_wait:
        if (!e.has_skb && (e.opts.keepalive || e.opts.user_timeout_ms)) return ResetReason::tcp_keepalive_timeout;
        break;
    default: break;
    }
    return ResetReason::not_specified;
}

Event decode_event(const tcpwhy_event& raw, const ResetReasonMap& reasons) {
    Event e;
    e.type = static_cast<EventType>(raw.type);
    e.ts_ns = raw.ts_ns;
    e.cookie = raw.cookie;
    e.netns = raw.netns;
    e.laddr = decode_addr(raw.family, raw.laddr);
    e.raddr = decode_addr(raw.family, raw.raddr);
    e.lport = raw.lport;
    e.rport = raw.rport;
    if (raw.flags & TCPWHY_F_OWNER_KNOWN) {
        e.pid = raw.pid;
        e.comm.assign(raw.comm, strnlen(raw.comm, sizeof(raw.comm)));
    }
    e.cgroup_id = raw.cgroup_id;  // also outside the owner's context: the socket's own cgroup
    e.rst_received = raw.flags & TCPWHY_F_RST_RECEIVED;
    if (raw.flags & TCPWHY_F_DIRECTION_KNOWN)
        e.direction = raw.flags & TCPWHY_F_OUTBOUND ? Direction::outbound : Direction::inbound;
    e.task_exiting = raw.flags & TCPWHY_F_TASK_EXITING;
    e.oom_victim = raw.flags & TCPWHY_F_OOM_VICTIM;
    e.opts = decode_opts(raw.opts);
    switch (e.type) {
    case EventType::state:
        e.old_state = state_of(raw.state.old_state);
        e.new_state = state_of(raw.state.new_state);
        if (e.task_exiting) e.exit_code = raw.state.exit_code;
        if (e.new_state == TcpState::listen || e.old_state == TcpState::listen) {
            e.acceptq_len = raw.state.acceptq_len;
            e.acceptq_max = raw.state.acceptq_max;
        } else if (e.new_state == TcpState::close) {
            e.send_queue_bytes = raw.state.send_queue_bytes;
        } else if (e.old_state == TcpState::established && e.new_state == TcpState::close_wait) {
            e.idle_rx_ms = raw.state.idle_rx_ms;
            e.idle_tx_ms = raw.state.idle_tx_ms;
            e.bytes_rx = raw.state.bytes_rx;
            e.bytes_tx = raw.state.bytes_tx;
        }
        break;
    case EventType::close:
        e.old_state = state_of(raw.close.old_state);
        e.new_state = state_of(raw.close.new_state);
        e.idle_rx_ms = raw.close.idle_rx_ms;
        e.idle_tx_ms = raw.close.idle_tx_ms;
        e.unread_bytes = raw.close.unread_bytes;
        e.bytes_rx = raw.close.bytes_rx;
        e.bytes_tx = raw.close.bytes_tx;
        e.abort = raw.flags & TCPWHY_F_ABORT;
        e.send_queue_bytes = raw.close.send_queue_bytes;
        if (e.task_exiting) e.exit_code = raw.close.exit_code;
        break;
    case EventType::reset_sent:
    case EventType::reset_recv:
        e.sk_kind = static_cast<SockKind>(raw.reset.sk_kind <= 3 ? raw.reset.sk_kind : 0);
        e.sk_state = state_of(raw.reset.sk_state);
        e.unread_bytes = raw.reset.unread_bytes;
        // before ESTABLISHED the socket has no receive timestamp yet
        if (e.sk_state != TcpState::syn_sent && e.sk_state != TcpState::syn_recv) e.idle_rx_ms = raw.reset.idle_rx_ms;
        e.has_skb = raw.flags & TCPWHY_F_HAS_SKB;
        if (e.sk_kind == SockKind::full) {
            e.send_queue_bytes = raw.reset.send_queue_bytes;
            e.bytes_rx = raw.reset.bytes_rx;
            e.bytes_tx = raw.reset.bytes_tx;
            // as idle_rx: no send timestamp before ESTABLISHED
            if (e.sk_state != TcpState::syn_sent && e.sk_state != TcpState::syn_recv) e.idle_tx_ms = raw.reset.idle_tx_ms;
        }
        e.syn = raw.flags & TCPWHY_F_SYN;
        if (e.type == EventType::reset_sent) {
            auto reason = raw.reset.reason;
            if (reason >= 0 && static_cast<size_t>(reason) < reasons.size() && reasons[reason] != ResetReason::none) {
                e.reason = reasons[reason];
            } else {
                e.reason = infer_reset_reason(e);
                e.reason_inferred = true;
            }
        }
        break;
    case EventType::existing:
        e.new_state = state_of(raw.existing.state);
        e.idle_rx_ms = raw.existing.idle_rx_ms;
        e.idle_tx_ms = raw.existing.idle_tx_ms;
        if (e.new_state == TcpState::listen) {
            e.acceptq_len = raw.existing.acceptq_len;
            e.acceptq_max = raw.existing.acceptq_max;
        }
        break;
    case EventType::listen_overflow:
        e.acceptq_len = raw.overflow.acceptq_len;
        e.acceptq_max = raw.overflow.acceptq_max;
        e.overflow_how = raw.overflow.how <= static_cast<uint8_t>(OverflowHow::synack_retransmit)
                             ? static_cast<OverflowHow>(raw.overflow.how)
                             : OverflowHow::unknown;
        break;
    case EventType::signal:
        e.signal = raw.signal.signal;
        e.sender_pid = raw.signal.sender_pid;
        e.sender_comm.assign(raw.signal.sender_comm, strnlen(raw.signal.sender_comm, sizeof(raw.signal.sender_comm)));
        break;
    case EventType::tally: break;  // not a ring-buffer record: decode_tally()
    case EventType::setsockopt:
        // The kernel emits only the options it watches (TCPWHY_OPT_*); anything else would be a
        // mismatched object, and is clamped rather than trusted as an index.
        e.opt = raw.sockopt.opt < TCPWHY_OPT__MAX ? static_cast<SockOpt>(raw.sockopt.opt) : SockOpt::so_keepalive;
        e.value = raw.sockopt.value;
        e.value2 = raw.sockopt.value2;
        break;
    }
    return e;
}

Event decode_tally(const tcpwhy_tally_key& key, const tcpwhy_tally_value& delta, uint64_t ts_ns) {
    Event e;
    e.type = EventType::tally;
    e.ts_ns = ts_ns;
    e.netns = key.netns;
    e.lb = key.lb;
    e.direction = key.outbound ? Direction::outbound : Direction::inbound;
    (key.outbound ? e.rport : e.lport) = key.port;
    e.tally.opened = delta.opened;
    e.tally.closed_local_first = delta.closed_local_first;
    e.tally.closed_remote_first = delta.closed_remote_first;
    e.tally.local_idle_ms = delta.local_idle_ms;
    e.bytes_rx = delta.bytes_rx;
    e.bytes_tx = delta.bytes_tx;
    if (delta.pid) {
        e.pid = delta.pid;
        e.comm.assign(delta.comm, strnlen(delta.comm, sizeof(delta.comm)));
        e.cgroup_id = delta.cgroup_id;
    }
    if (delta.opts_seen) e.opts = decode_opts(delta.opts);
    return e;
}

}  // namespace tcpwhy
