// Synthetic events for correlator and report tests: one connection's sockets as
// the kernel side would report them (kernel 6.18 shapes, see KERNEL-NOTES.md).
#pragma once

#include <string>

#include "tcpwhy/event.h"

namespace tcpwhy::test {

constexpr uint64_t ms(uint64_t v) { return v * 1'000'000; }
constexpr uint64_t sec(uint64_t v) { return v * 1'000'000'000; }

inline IpAddr ip(const char* text) { return *IpAddr::parse(text); }

// A backend socket: laddr:lport is the pod, raddr:rport the peer (by default a GCP LB).
struct Sock {
    uint64_t cookie = 1001;
    uint32_t netns = 4026532891;
    const char* laddr = "10.56.5.6";
    uint16_t lport = 8080;
    const char* raddr = "130.211.0.143";
    uint16_t rport = 51234;
    uint32_t pid = 4242;
    const char* comm = "node";
};

inline Event base(const Sock& s, EventType type, uint64_t ts) {
    Event e;
    e.type = type;
    e.ts_ns = ts;
    e.cookie = s.cookie;
    e.netns = s.netns;
    e.laddr = ip(s.laddr);
    e.raddr = ip(s.raddr);
    e.lport = s.lport;
    e.rport = s.rport;
    e.pid = s.pid;
    e.comm = s.comm;
    return e;
}

inline Event state(const Sock& s, uint64_t ts, TcpState from, TcpState to) {
    Event e = base(s, EventType::state, ts);
    e.old_state = from;
    e.new_state = to;
    return e;
}

inline Event accepted(const Sock& s, uint64_t ts) { return state(s, ts, TcpState::syn_recv, TcpState::established); }

struct CloseArgs {
    TcpState from = TcpState::established;
    TcpState to = TcpState::fin_wait1;
    uint32_t idle_rx_ms = 0, idle_tx_ms = 0, unread = 0;
    bool abort = false;
    uint64_t bytes_tx = 900;
};

inline Event close(const Sock& s, uint64_t ts, CloseArgs a) {
    Event e = base(s, EventType::close, ts);
    e.old_state = a.from;
    e.new_state = a.to;
    e.idle_rx_ms = a.idle_rx_ms;
    e.idle_tx_ms = a.idle_tx_ms;
    e.unread_bytes = a.unread;
    e.abort = a.abort;
    e.bytes_rx = 400;
    e.bytes_tx = a.bytes_tx;
    return e;
}

// The backend closes a connection quiet for idle_ms with a FIN.
inline Event idle_fin(const Sock& s, uint64_t ts, uint32_t idle_ms) {
    return close(s, ts, {.idle_rx_ms = idle_ms, .idle_tx_ms = idle_ms});
}

inline Event reset_sent(const Sock& s, uint64_t ts, const char* reason, SockKind kind, TcpState sk_state,
                        bool has_skb) {
    Event e = base(s, EventType::reset_sent, ts);
    e.pid = 0;  // softirq: no owner
    e.comm.clear();
    // By the kernel's name, as a trace spells it; "" for a kernel that gave none.
    e.reason = reset_reason_from_string(reason).value_or(ResetReason::unrecognised);
    e.reason_inferred = reason[0] == '\0';
    e.sk_kind = kind;
    e.sk_state = sk_state;
    e.has_skb = has_skb;
    return e;
}

inline Event reset_recv(const Sock& s, uint64_t ts, TcpState sk_state) {
    Event e = base(s, EventType::reset_recv, ts);
    e.pid = 0;
    e.comm.clear();
    e.sk_kind = SockKind::full;
    e.sk_state = sk_state;
    return e;
}

// By the kernel's names, as a trace spells them (the level is implied by the option).
inline Event setsockopt(const Sock& s, uint64_t ts, const char* /*level*/, const char* optname, int64_t value,
                        int64_t value2 = 0) {
    Event e = base(s, EventType::setsockopt, ts);
    e.opt = sock_opt_from_string(optname).value();
    e.value = value;
    e.value2 = value2;
    return e;
}

}  // namespace tcpwhy::test
