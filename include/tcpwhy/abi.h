/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kernel <-> userspace event ABI of tcpwhy: the one header both bpf/ and src/ include.
 *
 * Conventions: fixed-width fields only; times are CLOCK_MONOTONIC nanoseconds
 * (bpf_ktime_get_ns); addresses are in network byte order (IPv4 in the first 4
 * bytes); ports are in host byte order; units are in field names.
 * Every layout change bumps TCPWHY_ABI_VERSION; src/core/event_decode.cpp checks
 * sizes and offsets with static_assert, and the loader checks that the BPF object it
 * embeds was built from this same version (bpf_abi_version in its read-only data).
 */
#ifndef TCPWHY_ABI_H
#define TCPWHY_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define TCPWHY_ABI_VERSION 6
#define TCPWHY_COMM_LEN 16

enum tcpwhy_event_type {
	TCPWHY_EV_STATE = 1,      /* inet_sock_set_state */
	TCPWHY_EV_CLOSE = 2,      /* the local side closed or aborted the connection */
	TCPWHY_EV_RESET_SENT = 3, /* tcp_send_reset / tcp_send_active_reset / stateless reset */
	TCPWHY_EV_RESET_RECV = 4, /* tcp_receive_reset */
	TCPWHY_EV_SETSOCKOPT = 5, /* a timeout-related socket option was set */
	TCPWHY_EV_EXISTING = 6,   /* a socket that existed before tracing started (bpf/tcpwhy_iter.bpf.c) */
	TCPWHY_EV_LISTEN_OVERFLOW = 7, /* a full accept queue dropped a handshake or had a SYN-ACK sent again */
	TCPWHY_EV_SIGNAL = 8,     /* a stopping signal (SIGTERM, SIGINT, SIGQUIT, SIGKILL) to a process that listens */
	TCPWHY_EV_TALLY = 9,      /* no ring-buffer record: a backend's ordinary connections, read from the tally map */
	TCPWHY_EV__MAX = 10,      /* per-type counters have this many slots (0 unused) */
};

/* Why an event could not be emitted; per-CPU counters indexed by this. */
enum tcpwhy_drop_reason {
	TCPWHY_DROP_RINGBUF_FULL = 0,
	TCPWHY_DROP__MAX = 1,
};

/* Bits of tcpwhy_event.flags */
enum tcpwhy_event_flag {
	TCPWHY_F_OWNER_KNOWN = 1 << 0,     /* pid/comm/cgroup_id came from process context */
	TCPWHY_F_ABORT = 1 << 1,           /* close: the socket went straight to CLOSE (RST, not FIN) */
	TCPWHY_F_REASON_INFERRED = 1 << 2, /* reset: the kernel gave no reason; userspace infers one */
	TCPWHY_F_HAS_SKB = 1 << 3,         /* reset: a segment triggered it (addresses from the segment) */
	TCPWHY_F_RST_RECEIVED = 1 << 4,    /* the socket had received a RST before this event */
	TCPWHY_F_TASK_EXITING = 1 << 5,    /* close, listener close: run by a task in do_exit() (the process is dying) */
	TCPWHY_F_OOM_VICTIM = 1 << 6,      /* ... of a process the OOM killer chose (signal->oom_mm set) */
	TCPWHY_F_SYN = 1 << 7,             /* reset sent: the segment it answers is a SYN (a refused connection) */
	/* Tallying: a connection's open is counted, so its first record is usually its end. These say
	 * which side the local port is on, by the listener mirror, the rule that keys its tallies. */
	TCPWHY_F_DIRECTION_KNOWN = 1 << 8, /* state, close, reset on a connection: the mirror was asked */
	TCPWHY_F_OUTBOUND = 1 << 9,        /* ... and the local port is not a listener: the remote port names the service */
};

/* How a full accept queue showed itself (tcpwhy_overflow_data.how) */
enum tcpwhy_overflow_how {
	TCPWHY_OVF_DROP = 1,              /* a SYN or final ACK dropped: skb:kfree_skb, SKB_DROP_REASON_TCP_LISTEN_OVERFLOW */
	TCPWHY_OVF_SYNACK_RETRANSMIT = 2, /* a SYN-ACK sent again while the queue was full: its final ACK was dropped */
};

/* What kind of socket a reset was sent for */
enum tcpwhy_sk_kind {
	TCPWHY_SK_NONE = 0,     /* no socket: stateless reply */
	TCPWHY_SK_FULL = 1,     /* a full socket */
	TCPWHY_SK_TIMEWAIT = 2, /* a timewait socket (keeps the full socket's cookie) */
	TCPWHY_SK_REQUEST = 3,  /* a request socket (SYN_RECV mini socket) */
};

/* Socket options tcpwhy remembers; bit positions in tcpwhy_sockopts.set_mask */
enum tcpwhy_opt {
	TCPWHY_OPT_SO_KEEPALIVE = 0,
	TCPWHY_OPT_SO_LINGER = 1,
	TCPWHY_OPT_SO_RCVTIMEO = 2,
	TCPWHY_OPT_SO_SNDTIMEO = 3,
	TCPWHY_OPT_TCP_KEEPIDLE = 4,
	TCPWHY_OPT_TCP_KEEPINTVL = 5,
	TCPWHY_OPT_TCP_KEEPCNT = 6,
	TCPWHY_OPT_TCP_USER_TIMEOUT = 7,
	TCPWHY_OPT_TCP_LINGER2 = 8,
	TCPWHY_OPT_TCP_DEFER_ACCEPT = 9,
	TCPWHY_OPT__MAX = 10,
};

/* Timeout options in force on a socket; a set_mask bit means "not the kernel default" (only those are meaningful). */
struct tcpwhy_sockopts {
	__u32 set_mask;
	__u32 keepidle_s;
	__u32 keepintvl_s;
	__u32 keepcnt;
	__u32 user_timeout_ms;
	__s32 linger2_s;
	__u32 defer_accept_s;
	__u8 keepalive;
	__u8 linger_onoff;
	__u16 pad0;
	__s32 linger_s;
	__u32 pad1;
	__u64 rcvtimeo_us;
	__u64 sndtimeo_us;
};

struct tcpwhy_state_data {
	__u8 old_state; /* TCP_* numbering (include/net/tcp_states.h) */
	__u8 new_state;
	__u16 exit_code;        /* TCPWHY_F_TASK_EXITING: the task's exit code (wait(2) status: signal, core, status << 8) */
	__u32 send_queue_bytes; /* ->CLOSE of a full socket: written and not yet acknowledged (write_seq - snd_una) */
	__u32 idle_rx_ms;       /* ESTABLISHED->CLOSE_WAIT (the peer's FIN): since data last arrived */
	__u32 idle_tx_ms;       /* ESTABLISHED->CLOSE_WAIT: since data was last sent */
	__u32 acceptq_max;      /* ->LISTEN: the backlog in force, min(listen() backlog, net.core.somaxconn) */
	__u32 acceptq_len;      /* ->LISTEN, LISTEN->CLOSE: connections waiting for accept() */
	__u32 bytes_rx;         /* ESTABLISHED->CLOSE_WAIT: bytes received before the peer's FIN (saturates at 4 GiB) */
	__u32 bytes_tx;         /* ESTABLISHED->CLOSE_WAIT: bytes sent (bytes_sent, saturates at 4 GiB) */
};

struct tcpwhy_close_data {
	__u32 idle_rx_ms;   /* since data last arrived (icsk_ack.lrcvtime), jiffies resolution */
	__u32 idle_tx_ms;   /* since data was last sent (lsndtime) */
	__u32 unread_bytes; /* rcv_nxt - copied_seq */
	__u8 old_state;     /* state the close left */
	__u8 new_state;
	__u16 exit_code;    /* TCPWHY_F_TASK_EXITING: the task's exit code (wait(2) status) */
	__u64 bytes_rx;
	__u64 bytes_tx;
	__u32 send_queue_bytes; /* written by the application and not yet acknowledged (write_seq - snd_una) */
	__u32 pad;
};

struct tcpwhy_reset_data {
	__s32 reason;       /* kernel enum sk_rst_reason value, -1 when the kernel has none */
	__u8 sk_kind;       /* enum tcpwhy_sk_kind */
	__u8 sk_state;      /* TCP_* state of the socket when the reset left / arrived */
	__u8 pad[2];
	__u32 unread_bytes; /* full sockets: rcv_nxt - copied_seq */
	__u32 idle_rx_ms;   /* full sockets: since data last arrived */
	__u32 send_queue_bytes; /* full sockets: written and not yet acknowledged: what the reset discards */
	__u32 idle_tx_ms;   /* full sockets: since data was last sent */
	__u32 bytes_rx;     /* full sockets: bytes received (saturates at 4 GiB) */
	__u32 bytes_tx;     /* full sockets: bytes sent (saturates at 4 GiB) */
};

struct tcpwhy_setsockopt_data {
	__s32 level;   /* SOL_SOCKET or IPPROTO_TCP */
	__s32 optname; /* as the caller passed it (SO_RCVTIMEO_OLD or _NEW, ...) */
	__s64 value;   /* int options; linger: onoff; timeouts: microseconds */
	__s64 value2;  /* linger: seconds */
	__u8 opt;      /* enum tcpwhy_opt: which option this is, whatever its layout variant */
	__u8 pad[7];
};

struct tcpwhy_existing_data {
	__u8 state;      /* TCP_* state when the socket iterator saw it */
	__u8 pad[7];
	__u64 sock_ino;  /* inode of the socket's file (0: none, e.g. timewait): userspace finds the owner in /proc */
	__u32 idle_rx_ms; /* full sockets: since data last arrived, as of ts_ns */
	__u32 idle_tx_ms; /* full sockets: since data was last sent */
	__u32 acceptq_len; /* LISTEN: connections waiting for accept() */
	__u32 acceptq_max; /* LISTEN: the backlog in force */
};

/* A full accept queue. The event's local endpoint and cookie are the listener's, the remote one the peer's. */
struct tcpwhy_overflow_data {
	__u32 acceptq_len; /* connections waiting for accept() */
	__u32 acceptq_max; /* the backlog in force, min(listen() backlog, net.core.somaxconn) */
	__u8 how;          /* enum tcpwhy_overflow_how */
	__u8 pad[7];
};

/* A stopping signal to a process that listens (the event's pid and comm are the target's, netns its namespace). */
struct tcpwhy_signal_data {
	__u32 sender_pid; /* 0: the kernel (the OOM killer runs in the allocating task, which is named) */
	__u16 signal;
	__u8 pad[2];
	char sender_comm[TCPWHY_COMM_LEN];
};

struct tcpwhy_event {
	__u64 ts_ns;     /* CLOCK_MONOTONIC */
	__u64 cookie;    /* socket cookie; 0 when no socket */
	__u64 cgroup_id; /* owner's cgroup v2 id (0 unknown) */
	__u32 netns;     /* network namespace inode */
	__u32 pid;       /* owner's tgid (0 unknown) */
	char comm[TCPWHY_COMM_LEN];
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
	__u8 type;   /* enum tcpwhy_event_type */
	__u8 family; /* AF_INET / AF_INET6 */
	__u16 flags; /* enum tcpwhy_event_flag */
	union {
		struct tcpwhy_state_data state;
		struct tcpwhy_close_data close;
		struct tcpwhy_reset_data reset;
		struct tcpwhy_setsockopt_data sockopt;
		struct tcpwhy_existing_data existing;
		struct tcpwhy_overflow_data overflow;
		struct tcpwhy_signal_data signal;
	};
	struct tcpwhy_sockopts opts; /* options in force, read from the socket (close, reset_sent on a full socket, reset_recv) */
};

/*
 * Ordinary connections, counted instead of sent (bpf/lib/tally.bpf.h). A socket end is ordinary
 * when nothing about it can explain a failure: a FIN close (no abort), nothing unread, quiet less
 * than ordinary_idle_max_ms, no reset received, the closing task not exiting, its namespace not
 * draining (a stopping signal to a listener, a closed listener on the port). Opens
 * (SYN_RECV->ESTABLISHED, SYN_SENT->ESTABLISHED) are counted too. Everything else is an event.
 *
 * Keyed as the correlator keys backends: inbound by the listening port, outbound by the remote
 * service port; lb: the peer is a load balancer by the session's rule (lb_ranges map, or any
 * non-loopback peer for presets without ranges).
 */
struct tcpwhy_tally_key {
	__u32 netns;
	__u16 port;
	__u8 outbound; /* the local port is not a listener: the remote port names the service */
	__u8 lb;
};

/* Per CPU, cumulative, never reset or deleted: userspace sums the CPUs and takes differences. */
struct tcpwhy_tally_value {
	__u64 opened;              /* reached ESTABLISHED */
	__u64 closed_local_first;  /* ordinary ends the local side closed first (ESTABLISHED->FIN_WAIT1) */
	__u64 closed_remote_first; /* ordinary ends after the peer's FIN (CLOSE_WAIT->LAST_ACK) */
	__u64 local_idle_ms;       /* sum of the quiet times before the ordinary local-first closes */
	__u64 bytes_rx;            /* of the ordinary ends */
	__u64 bytes_tx;
	__u64 owner_ts_ns;         /* when pid/comm/cgroup_id were last written (the newest CPU's wins) */
	__u64 cgroup_id;           /* the closing task's */
	__u32 pid;                 /* the closing task's tgid (0: none seen yet) */
	__u32 opts_seen;           /* opts holds the options of the first ordinary close on this CPU */
	char comm[TCPWHY_COMM_LEN];
	struct tcpwhy_sockopts opts;
};

/*
 * The first backends each CPU meets, by a hash of their key (TCPWHY_TALLY_DIRECT_SLOTS slots, a
 * per-CPU array): finding a backend there is an index, not a hash-table walk. A backend whose
 * slot another already holds on that CPU is counted in the tally hash map instead. Cumulative
 * like it: userspace adds the two. key.netns 0: the slot is free (no namespace has inode 0).
 */
#define TCPWHY_TALLY_DIRECT_SLOTS 64
struct tcpwhy_tally_slot {
	struct tcpwhy_tally_key key;
	struct tcpwhy_tally_value value;
};

/* The kernel's mirror of the listening sockets: (netns, port) -> how many listen there now. */
struct tcpwhy_listener_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};

/* Up to this many load-balancer ranges are compared inline (rodata, a masked compare each); a
 * session with more puts them all in the lb_ranges LPM trie instead, which costs a trie walk. */
#define TCPWHY_LB_INLINE_MAX 8

/* One inline range: the peer matches when (addr & mask) == net, word by word, network order;
 * IPv4 uses word 0 only. family 0: unused slot. */
struct tcpwhy_lb_range {
	__u32 net[4];
	__u32 mask[4];
	__u32 family; /* 4 or 6 */
};

/* A load-balancer range in the lb_ranges LPM trie: prefixlen counts the family byte (8 + prefix). */
struct tcpwhy_lb_key {
	__u32 prefixlen;
	__u8 family; /* 4 or 6 */
	__u8 addr[16];
	__u8 pad[3];
};

#endif /* TCPWHY_ABI_H */
