#include "tcpwhy/decode.h"

#include <cstddef>
#include <cstring>

namespace tcpwhy {

// The ABI is shared with BPF C: pin the layout so a change on one side fails the build.
static_assert(sizeof(tcpwhy_sockopts) == 56);
static_assert(sizeof(tcpwhy_event) == 176);
static_assert(offsetof(tcpwhy_event, comm) == 32);
static_assert(offsetof(tcpwhy_event, laddr) == 48);
static_assert(offsetof(tcpwhy_event, lport) == 80);
static_assert(offsetof(tcpwhy_event, type) == 84);
static_assert(offsetof(tcpwhy_event, state) == 88);
static_assert(offsetof(tcpwhy_event, existing.sock_ino) == 96);
static_assert(offsetof(tcpwhy_event, opts) == 120);
static_assert(static_cast<int>(SockOpt::tcp_defer_accept) == TCPWHY_OPT_TCP_DEFER_ACCEPT);
static_assert(kSockOptCount == TCPWHY_OPT__MAX);

namespace {

constexpr int kAfInet = 2;
constexpr int kAfInet6 = 10;

IpAddr decode_addr(uint8_t family, const uint8_t (&bytes)[16]) {
    IpAddr addr;
    addr.family = family == kAfInet ? 4 : family == kAfInet6 ? 6 : 0;
    std::memcpy(addr.bytes.data(), bytes, addr.family == 4 ? 4 : 16);
    return addr;
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

std::string_view level_name(int level) {
    switch (level) {
    case 1: return "SOL_SOCKET";
    case 6: return "IPPROTO_TCP";
    }
    return "?";
}

std::string_view optname_name(int level, int optname) {
    if (level == 1) {
        switch (optname) {
        case 9: return "SO_KEEPALIVE";
        case 13: return "SO_LINGER";
        case 20: return "SO_RCVTIMEO_OLD";
        case 21: return "SO_SNDTIMEO_OLD";
        case 66: return "SO_RCVTIMEO_NEW";
        case 67: return "SO_SNDTIMEO_NEW";
        }
    } else if (level == 6) {
        switch (optname) {
        case 4: return "TCP_KEEPIDLE";
        case 5: return "TCP_KEEPINTVL";
        case 6: return "TCP_KEEPCNT";
        case 8: return "TCP_LINGER2";
        case 9: return "TCP_DEFER_ACCEPT";
        case 18: return "TCP_USER_TIMEOUT";
        }
    }
    return "?";
}

TcpState state_of(uint8_t raw) {
    return raw <= static_cast<uint8_t>(TcpState::new_syn_recv) ? static_cast<TcpState>(raw) : TcpState::unknown;
}

}  // namespace

std::string infer_reset_reason(const Event& e) {
    switch (e.sk_kind) {
    case SockKind::none: return "NO_SOCKET";
    case SockKind::timewait: return "TCP_TIMEWAIT_SOCKET";
    case SockKind::request: return "NOT_SPECIFIED";
    case SockKind::full: break;
    }
    switch (e.sk_state) {
    case TcpState::fin_wait1:
    case TcpState::fin_wait2:
    case TcpState::closing:
    case TcpState::last_ack:
        // data arrived after the local side shut down its receive direction
        if (e.has_skb) return "TCP_ABORT_ON_DATA";
        break;
    case TcpState::close:
        // a segment reached a socket that had shut down; tcp_reset() had already closed it
        if (e.has_skb) return "TCP_ABORT_ON_DATA";
        if (e.unread_bytes > 0) return "TCP_ABORT_ON_CLOSE";
        if (e.opts.has(SockOpt::so_linger) && e.opts.linger_onoff && e.opts.linger_s == 0) return "TCP_STATE";
        break;
    case TcpState::established:
    case TcpState::close_wait:
        if (!e.has_skb && (e.opts.keepalive || e.opts.user_timeout_ms)) return "TCP_KEEPALIVE_TIMEOUT";
        break;
    default: break;
    }
    return "NOT_SPECIFIED";
}

Event decode_event(const tcpwhy_event& raw, const ResetReasonNames& reasons) {
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
    e.opts = decode_opts(raw.opts);
    switch (e.type) {
    case EventType::state:
        e.old_state = state_of(raw.state.old_state);
        e.new_state = state_of(raw.state.new_state);
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
        break;
    case EventType::reset_sent:
    case EventType::reset_recv:
        e.sk_kind = static_cast<SockKind>(raw.reset.sk_kind <= 3 ? raw.reset.sk_kind : 0);
        e.sk_state = state_of(raw.reset.sk_state);
        e.unread_bytes = raw.reset.unread_bytes;
        // before ESTABLISHED the socket has no receive timestamp yet
        if (e.sk_state != TcpState::syn_sent && e.sk_state != TcpState::syn_recv) e.idle_rx_ms = raw.reset.idle_rx_ms;
        e.has_skb = raw.flags & TCPWHY_F_HAS_SKB;
        if (e.type == EventType::reset_sent) {
            auto reason = raw.reset.reason;
            if (reason >= 0 && static_cast<size_t>(reason) < reasons.size() && !reasons[reason].empty()) {
                e.reason = reasons[reason];
            } else {
                e.reason = infer_reset_reason(e);
                e.reason_inferred = true;
            }
        }
        break;
    case EventType::existing: e.new_state = state_of(raw.existing.state); break;
    case EventType::setsockopt:
        e.level = level_name(raw.sockopt.level);
        e.optname = optname_name(raw.sockopt.level, raw.sockopt.optname);
        e.value = raw.sockopt.value;
        e.value2 = raw.sockopt.value2;
        break;
    }
    return e;
}

}  // namespace tcpwhy
