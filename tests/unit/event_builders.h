// Synthetic events for correlator and report tests: one connection's sockets as
// the kernel side would report them (kernel 6.18 shapes, see KERNEL-NOTES.md).
#pragma once

#include <optional>
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
    uint32_t send_queue = 0;
    std::optional<uint16_t> exit_code;  // set: the close ran as the process exited (this wait status)
    bool oom_victim = false;
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
    e.send_queue_bytes = a.send_queue;
    e.task_exiting = a.exit_code.has_value();
    e.exit_code = a.exit_code.value_or(0);
    e.oom_victim = a.oom_victim;
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

// A listening socket on s's local port: it starts listening (backlog in force `backlog`) ...
inline Event listen_on(const Sock& s, uint64_t ts, uint32_t backlog = 511) {
    Sock l = s;
    l.raddr = "0.0.0.0";
    l.rport = 0;
    Event e = state(l, ts, TcpState::close, TcpState::listen);
    e.raddr = ip("0.0.0.0");
    e.acceptq_max = backlog;
    return e;
}

// ... or stops (closed by its process; by its exit when exit_code is set).
inline Event unlisten(const Sock& s, uint64_t ts, std::optional<uint16_t> exit_code = std::nullopt,
                      bool oom_victim = false) {
    Event e = listen_on(s, ts);
    e.old_state = TcpState::listen;
    e.new_state = TcpState::close;
    e.acceptq_max = 0;
    e.task_exiting = exit_code.has_value();
    e.exit_code = exit_code.value_or(0);
    e.oom_victim = oom_victim;
    return e;
}

// A SYN from s's peer refused with a reset: no socket listens on the port.
inline Event refused_syn(const Sock& s, uint64_t ts) {
    Sock none = s;
    none.cookie = 0;
    Event e = reset_sent(none, ts, "NO_SOCKET", SockKind::none, TcpState::unknown, true);
    e.syn = true;
    return e;
}

// A stopping signal to the process that owns s (pid and comm), sent by `sender`.
inline Event signal_to(const Sock& s, uint64_t ts, int signal, uint32_t sender_pid = 1,
                       const char* sender = "containerd-shim") {
    Event e = base(s, EventType::signal, ts);
    e.cookie = 0;
    e.laddr = e.raddr = IpAddr{};
    e.lport = e.rport = 0;
    e.signal = signal;
    e.sender_pid = sender_pid;
    e.sender_comm = sender;
    return e;
}

// The peer's FIN on an open connection, quiet idle_rx/idle_tx ms, after bytes_rx in and bytes_tx out.
inline Event peer_fin(const Sock& s, uint64_t ts, uint32_t idle_rx_ms, uint32_t idle_tx_ms, uint64_t bytes_rx = 300,
                      uint64_t bytes_tx = 900) {
    Event e = state(s, ts, TcpState::established, TcpState::close_wait);
    e.pid = 0;
    e.comm.clear();
    e.idle_rx_ms = idle_rx_ms;
    e.idle_tx_ms = idle_tx_ms;
    e.bytes_rx = bytes_rx;
    e.bytes_tx = bytes_tx;
    return e;
}

// s's listener found its accept queue full: a handshake from s's peer dropped (or its SYN-ACK sent again).
inline Event overflow(const Sock& s, uint64_t ts, uint32_t queue, uint32_t backlog,
                      OverflowHow how = OverflowHow::drop, uint64_t listener_cookie = 0) {
    Event e = base(s, EventType::listen_overflow, ts);
    e.cookie = listener_cookie;
    e.pid = 0;
    e.comm.clear();
    e.acceptq_len = queue;
    e.acceptq_max = backlog;
    e.overflow_how = how;
    return e;
}

// A connection the pod opened (s's local side is the pod's ephemeral port).
inline Event connected(const Sock& s, uint64_t ts) { return state(s, ts, TcpState::close, TcpState::syn_sent); }

}  // namespace tcpwhy::test
