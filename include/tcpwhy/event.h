// The decoded event: what the correlator, the JSONL trace and every printer share.
// Nothing here knows about BPF; src/core/event_decode.cpp turns the kernel ABI
// (tcpwhy/abi.h) into this, and src/core/jsonl.cpp reads it back from a trace.
// Every enum has one name table (src/core/event.cpp); names appear only at the edges
// (trace lines, text, metrics labels).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tcpwhy {

// existing: a socket that was already there when tracing started (the daemon's socket
// iterator); new_state is its state then. listen_overflow: a full accept queue dropped a
// handshake or had a SYN-ACK sent again (the listener's cookie and port, the peer's address).
// signal: a stopping signal to a process that listens (pid/comm: the target).
// tally: a backend's ordinary connections since the last tally (no socket: see Event::tally).
enum class EventType : uint8_t {
    state = 1,
    close = 2,
    reset_sent = 3,
    reset_recv = 4,
    setsockopt = 5,
    existing = 6,
    listen_overflow = 7,
    signal = 8,
    tally = 9,
};
inline constexpr size_t kEventTypeCount = 10;  // arrays indexed by EventType (0 unused)

std::string_view to_string(EventType type);
std::optional<EventType> event_type_from_string(std::string_view name);

// TCP states, kernel numbering (include/net/tcp_states.h).
enum class TcpState : uint8_t {
    unknown = 0,
    established = 1,
    syn_sent = 2,
    syn_recv = 3,
    fin_wait1 = 4,
    fin_wait2 = 5,
    time_wait = 6,
    close = 7,
    close_wait = 8,
    last_ack = 9,
    listen = 10,
    closing = 11,
    new_syn_recv = 12,
};

std::string_view to_string(TcpState state);  // "ESTABLISHED", ...
std::optional<TcpState> tcp_state_from_string(std::string_view name);

// What kind of socket a reset was sent for.
// Which side of a connection the local port is on, as the kernel's listener mirror says
// (tallied sessions; tally records always). Unknown: the correlator decides (docs/correlator.md).
enum class Direction : uint8_t { unknown, inbound, outbound };

enum class SockKind : uint8_t { none = 0, full = 1, timewait = 2, request = 3 };
std::string_view to_string(SockKind kind);  // "none", "full", "timewait", "request"
std::optional<SockKind> sock_kind_from_string(std::string_view name);

// Why the kernel sent a reset: its enum sk_rst_reason (6.10+), whose numbering changes
// between kernels, mapped by name (the loader reads the running kernel's names from BTF).
// On older kernels decode infers one of the same names from the socket's state.
enum class ResetReason : uint8_t {
    none = 0,  // no reason: a reset received, or a kernel that gave none and nothing to infer from
    not_specified,
    no_socket,
    tcp_invalid_ack_sequence,
    tcp_rfc7323_paws,
    tcp_too_old_ack,
    tcp_ack_unsent_data,
    tcp_flags,
    tcp_old_ack,
    tcp_abort_on_data,
    tcp_timewait_socket,
    invalid_syn,
    tcp_abort_on_close,
    tcp_abort_on_linger,
    tcp_abort_on_memory,
    tcp_state,
    tcp_keepalive_timeout,
    tcp_disconnect_with_data,
    mptcp_rst_eunspec,
    mptcp_rst_emptcp,
    mptcp_rst_eresource,
    mptcp_rst_eprohibit,
    mptcp_rst_ewq2big,
    mptcp_rst_ebadperf,
    mptcp_rst_emiddlebox,
    error,
    unrecognised,  // a name this tcpwhy does not know (a newer kernel): `doctor` lists them
};
inline constexpr size_t kResetReasonCount = 27;
std::string_view to_string(ResetReason reason);  // the kernel's name without SK_RST_REASON_; "" for none
std::optional<ResetReason> reset_reason_from_string(std::string_view name);

// How a full accept queue showed itself.
enum class OverflowHow : uint8_t {
    unknown = 0,
    drop = 1,               // a SYN or final ACK dropped (skb:kfree_skb, SKB_DROP_REASON_TCP_LISTEN_OVERFLOW)
    synack_retransmit = 2,  // a SYN-ACK sent again while the queue was full (its final ACK had been dropped)
};
std::string_view to_string(OverflowHow how);  // "drop", "synack_retransmit", ""
std::optional<OverflowHow> overflow_how_from_string(std::string_view name);

// Signal numbers as names ("SIGTERM"), for the signals tcpwhy reports and the wait statuses it decodes.
std::string_view signal_name(int signal);  // "" for one it has no name for
std::optional<int> signal_from_name(std::string_view name);
// A wait(2) status: the signal that ended the process (0 when it exited), and its exit status.
inline int exit_signal(uint16_t status) { return status & 0x7f; }
inline int exit_status(uint16_t status) { return (status >> 8) & 0xff; }
// "SIGKILL", "SIGSEGV (core dumped)", "exit 1", "exit 0".
std::string exit_code_text(uint16_t status);

// An IPv4 or IPv6 address in network byte order (IPv4 in the first four bytes).
struct IpAddr {
    uint8_t family = 0;  // 4 or 6; 0 = none
    std::array<uint8_t, 16> bytes{};

    static std::optional<IpAddr> parse(std::string_view text);
    std::string to_string() const;
    bool operator==(const IpAddr&) const = default;
};

// An IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer) as plain IPv4, so one
// peer has one form whichever socket or stateless reset reported it.
IpAddr canonical(const IpAddr& addr);

// Timeout-related socket options a process set, as last set. Only fields whose
// bit is in set_mask were set; the rest are kernel defaults tcpwhy did not see.
enum class SockOpt : uint8_t {
    so_keepalive = 0,
    so_linger = 1,
    so_rcvtimeo = 2,
    so_sndtimeo = 3,
    tcp_keepidle = 4,
    tcp_keepintvl = 5,
    tcp_keepcnt = 6,
    tcp_user_timeout = 7,
    tcp_linger2 = 8,
    tcp_defer_accept = 9,
};
inline constexpr int kSockOptCount = 10;
std::string_view to_string(SockOpt opt);  // "SO_KEEPALIVE", "TCP_USER_TIMEOUT", ...
// Also the kernel's time-layout variants: SO_RCVTIMEO_OLD and _NEW are SO_RCVTIMEO.
std::optional<SockOpt> sock_opt_from_string(std::string_view name);
std::string_view level_name(SockOpt opt);  // "SOL_SOCKET" or "IPPROTO_TCP"

struct SockOpts {
    uint32_t set_mask = 0;
    bool keepalive = false;
    bool linger_onoff = false;
    int32_t linger_s = 0;
    uint32_t keepidle_s = 0;
    uint32_t keepintvl_s = 0;
    uint32_t keepcnt = 0;
    uint32_t user_timeout_ms = 0;
    int32_t linger2_s = 0;
    uint32_t defer_accept_s = 0;
    uint64_t rcvtimeo_us = 0;
    uint64_t sndtimeo_us = 0;

    bool has(SockOpt opt) const { return set_mask & (1u << static_cast<int>(opt)); }
    // The option's value in the unit its name implies (seconds, ms, us, count, 0/1).
    int64_t value(SockOpt opt) const;
    void set(SockOpt opt, int64_t value);
    bool operator==(const SockOpts&) const = default;
};

struct Event {
    EventType type = EventType::state;
    uint64_t ts_ns = 0;      // CLOCK_MONOTONIC nanoseconds
    uint64_t cookie = 0;     // socket cookie; 0 = no socket
    uint32_t netns = 0;      // network namespace inode
    IpAddr laddr, raddr;     // from the local socket's point of view
    uint16_t lport = 0, rport = 0;
    bool lb = false;         // raddr is in a load-balancer range (set by the consumer)
    // state, close, resets of connections (tallied sessions), tally: outbound when the local
    // port is not a listener, so the remote port names the service
    Direction direction = Direction::unknown;

    // Owner, recorded in process context; pid 0 = unknown.
    uint32_t pid = 0;
    std::string comm;
    uint64_t cgroup_id = 0;

    // state; close also fills these (the transition the close made)
    TcpState old_state = TcpState::unknown;
    TcpState new_state = TcpState::unknown;

    // close; also reset_sent/recv on full sockets, and state ESTABLISHED->CLOSE_WAIT (the peer's FIN)
    uint32_t idle_rx_ms = 0;    // since data last arrived
    uint32_t idle_tx_ms = 0;    // since data was last sent (not on reset_recv)
    uint32_t unread_bytes = 0;  // close; reset_sent/recv on full sockets
    // close; also ESTABLISHED->CLOSE_WAIT and resets of full sockets (there saturating at 4 GiB)
    uint64_t bytes_rx = 0, bytes_tx = 0;
    bool abort = false;         // close went straight to CLOSE (an RST, not a FIN)
    bool rst_received = false;  // the socket had received an RST before this event
    // close, reset_sent (full sockets), state ->CLOSE: bytes the application wrote that the peer
    // had not acknowledged (unsent or in flight); a reset discards them
    uint32_t send_queue_bytes = 0;

    // close, listener close (state LISTEN->CLOSE): run by a task in do_exit(), the process dying
    bool task_exiting = false;
    uint16_t exit_code = 0;    // its wait(2) status: signal in the low 7 bits, 0x80 core, exit status << 8
    bool oom_victim = false;   // the OOM killer had chosen that process

    // state ->LISTEN, LISTEN->CLOSE, existing LISTEN, listen_overflow: the accept queue
    uint32_t acceptq_len = 0;  // connections waiting for accept()
    uint32_t acceptq_max = 0;  // the backlog in force: min(listen() backlog, net.core.somaxconn)
    OverflowHow overflow_how = OverflowHow::unknown;  // listen_overflow

    // signal: the signal, and who sent it (pid/comm above are the target's)
    int signal = 0;
    uint32_t sender_pid = 0;
    std::string sender_comm;

    // reset_sent / reset_recv
    ResetReason reason = ResetReason::none;
    bool reason_inferred = false;  // the kernel gave none; tcpwhy inferred it from state
    SockKind sk_kind = SockKind::none;
    TcpState sk_state = TcpState::unknown;
    bool has_skb = false;          // a received segment triggered the reset
    bool syn = false;              // reset_sent: ... and it was a SYN: a connection refused

    // setsockopt
    SockOpt opt = SockOpt::so_keepalive;
    int64_t value = 0;    // int options; linger: onoff; timeouts: microseconds
    int64_t value2 = 0;   // linger: seconds

    SockOpts opts;  // options in force on the socket (tally: on the backend's first ordinary close)

    // tally: what the kernel counted for one backend instead of sending it (docs/trace-format.md).
    // The backend: netns, and lport (inbound) or rport (outbound); lb: its peers are the load
    // balancer; direction: outbound when keyed by the remote service port; pid/comm/cgroup_id:
    // the task of its latest ordinary close; bytes_rx/bytes_tx:
    // those of its ordinary ends. Counts are since the previous tally of the same backend.
    struct Tally {
        uint64_t opened = 0;               // connections that reached ESTABLISHED
        uint64_t closed_local_first = 0;   // ordinary ends the local side closed first
        uint64_t closed_remote_first = 0;  // ordinary ends after the peer's FIN
        uint64_t local_idle_ms = 0;        // sum of the quiet times before those local-first closes
    } tally;
};

}  // namespace tcpwhy
