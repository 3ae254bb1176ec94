// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcpwhy kernel programs: the TCP connection lifecycle as compact per-socket events.
 *
 * Hooks and the call paths they sit on:
 *   tp_btf/inet_sock_set_state  tcp_set_state()      every state change; also where the
 *                                                     close event is built when no tcp_close hook loads
 *   fentry|kprobe/tcp_close     close(2) -> tcp_close()  process context: the closer, before the FIN/RST
 *   tp_btf/tcp_send_reset       tcp_v4/v6_send_reset(), tcp_send_active_reset() (6.10+: every reset)
 *   fentry|kprobe/tcp_send_active_reset, tcp_v4/v6_send_reset   the same, where the tracepoint misses some
 *   tp_btf/tcp_receive_reset    tcp_reset()
 *   cgroup/setsockopt           setsockopt(2), before the option is applied, every netns
 *
 * Userspace chooses which close and reset programs load (bpf_program__set_autoload) and
 * tells the programs through rodata.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcpwhy/abi.h"
#include "tcpwhy.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* true when fentry or kprobe on tcp_close builds the close event; set_state then leaves it alone */
const volatile bool close_from_tcp_close = false;
/* wake userspace only once this much data waits; otherwise it polls on a short timer */
const volatile __u64 wakeup_bytes = 1 << 20;
/* emit every state change, not only those the correlator needs (tcpwhy trace --all-states) */
const volatile bool all_state_changes = false;
/* The loader checks this against the header it was built with (abi.h). */
const volatile __u32 bpf_abi_version = TCPWHY_ABI_VERSION;

extern int CONFIG_HZ __kconfig __weak;

/* Written by every program, read by userspace (ring_reader). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by userspace before load */
} events SEC(".maps");

/* Events that could not be emitted, by enum tcpwhy_drop_reason. Written here, read by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPWHY_DROP__MAX);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* Events emitted, by enum tcpwhy_event_type. Written here, read by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPWHY_EV__MAX);
	__type(key, __u32);
	__type(value, __u64);
} emitted SEC(".maps");

static __always_inline void count(void *map, __u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(map, &idx);
	if (v)
		*v += 1;
}

static __always_inline struct tcpwhy_event *reserve_event(__u8 type)
{
	struct tcpwhy_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(&drops, TCPWHY_DROP_RINGBUF_FULL);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->type = type;
	e->ts_ns = bpf_ktime_get_ns();
	return e;
}

static __always_inline void submit_event(struct tcpwhy_event *e)
{
	__u8 type = e->type;
	/* A wake-up per event costs ~10 us on a VM; userspace polls instead. */
	__u64 flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
										      : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags);
	count(&emitted, type < TCPWHY_EV__MAX ? type : 0);
}

/* The kernel's HZ: CONFIG_HZ from its config; 250 (Debian's, and most distributions')
 * when libbpf finds no config to read it from (`tcpwhy doctor` says so). */
static __always_inline __u32 kernel_hz(void)
{
	return CONFIG_HZ ? CONFIG_HZ : 250;
}

static __always_inline __u32 jiffies_delta_ms(__u32 now, __u32 then)
{
	__u32 delta = now - then;
	if ((__s32)delta < 0) /* a timestamp from the future: none recorded yet */
		return 0;
	return (__u64)delta * 1000 / kernel_hz();
}

/* sock_flag(): bit `bit` (an enum sock_flags value, relocated by CO-RE) of skc_flags. */
static __always_inline bool sock_flag_set(unsigned long flags, int bit)
{
	return (flags >> (bit & 63)) & 1;
}

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* Addresses of a full socket. The local port comes from inet_sport: skc_num is 0 at close. */
static __always_inline void fill_addrs_from_sock(struct tcpwhy_event *e, const struct sock *sk)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (e->family == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)e->laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->raddr, sk, __sk_common.skc_daddr);
	} else {
		/* BPF_CORE_READ_INTO would copy sizeof(element): one byte of the array */
		bpf_core_read(e->laddr, sizeof(e->laddr), &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->raddr, sizeof(e->raddr), &sk->__sk_common.skc_v6_daddr);
	}
	e->lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

/* Timewait and request sockets have only sock_common: the local port is skc_num there. */
static __always_inline void fill_addrs_from_common(struct tcpwhy_event *e, const struct sock *sk)
{
	fill_addrs_from_sock(e, sk);
	e->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
}

/* Addresses of the segment that triggered a reset, seen from the local socket's side. */
static __always_inline bool fill_addrs_from_skb(struct tcpwhy_event *e, const struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 version = 0;
	struct tcphdr tcp;

	if (bpf_probe_read_kernel(&version, 1, head + nh))
		return false;
	version >>= 4;
	if (version == 4) {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return false;
		e->family = AF_INET;
		__builtin_memcpy(e->laddr, &ip.daddr, 4);
		__builtin_memcpy(e->raddr, &ip.saddr, 4);
	} else if (version == 6) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return false;
		e->family = AF_INET6;
		__builtin_memcpy(e->laddr, &ip6.daddr, 16);
		__builtin_memcpy(e->raddr, &ip6.saddr, 16);
	} else {
		return false;
	}
	if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th))
		return false;
	e->lport = bpf_ntohs(tcp.dest);
	e->rport = bpf_ntohs(tcp.source);
	return true;
}

/* The task on the CPU, where it is the socket's owner: connect, listen, close, setsockopt. */
static __always_inline void fill_owner_from_task(struct tcpwhy_event *e)
{
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->flags |= TCPWHY_F_OWNER_KNOWN;
}

/*
 * Where no task owns the moment (softirq, timers): the cgroup v2 the socket was created in, which
 * accepted children take from their listener. Kernels before 5.15 keep it in a tagged word: 0 there.
 */
static __always_inline __u64 sk_cgroup_id(const struct sock *sk)
{
	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return 0;
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

/* The same through a BTF pointer: plain loads the verifier makes fault-safe. */
static __always_inline __u64 sk_cgroup_id_btf(const struct sock *sk)
{
	struct cgroup *cgrp;

	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return 0;
	cgrp = sk->sk_cgrp_data.cgroup;
	return cgrp ? cgrp->kn->id : 0;
}

static __always_inline void fill_owner(struct tcpwhy_event *e, const struct sock *sk, bool task_owns, bool btf)
{
	if (task_owns)
		fill_owner_from_task(e);
	else
		e->cgroup_id = btf ? sk_cgroup_id_btf(sk) : sk_cgroup_id(sk);
}

/*
 * tcp_reset() sets sk_err before its tcp_done() changes the state to CLOSE; local aborts
 * (close with unread data, SO_LINGER {1,0}) leave it 0, timers set ETIMEDOUT.
 */
#define ERR_EPIPE 32
#define ERR_ECONNRESET 104

static __always_inline bool is_rst_error(int err)
{
	return err == ERR_ECONNRESET || err == ERR_EPIPE;
}

static __always_inline bool rst_received(const struct sock *sk)
{
	return is_rst_error(sk->sk_err);
}

static __always_inline __u32 jiffies_to_s(unsigned long j)
{
	return j / kernel_hz();
}

static __always_inline __u64 jiffies_to_us(unsigned long j)
{
	return (__u64)j * 1000000 / kernel_hz();
}

/* TCP_DEFER_ACCEPT is kept as SYN-ACK retransmits: the seconds they span (retrans_to_secs). */
static __always_inline __u32 defer_accept_secs(__u8 retrans)
{
	__u32 timeout = 1, period = 1; /* TCP_TIMEOUT_INIT, in seconds */

	if (!retrans)
		return 0;
	for (int i = 1; i < retrans && i < 32; i++) {
		timeout = timeout * 2 > 120 ? 120 : timeout * 2; /* TCP_RTO_MAX */
		period += timeout;
	}
	return period;
}

#define MAX_SCHEDULE_TIMEOUT_J 0x7fffffffffffffffUL

/*
 * The timeout options in force on the socket, read from it: the kernel's own values, whoever set
 * them and whenever (inherited from the listener, set before tracing began). A bit in set_mask
 * means "not the kernel's default". Values are at the kernel's resolution (jiffies).
 */
static __always_inline void fill_opts_in_force(struct tcpwhy_event *e, const struct tcp_sock *tp)
{
	const struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	struct tcpwhy_sockopts *o = &e->opts;
	unsigned long flags = sk->__sk_common.skc_flags;
	int keepopen_bit = bpf_core_enum_value(enum sock_flags, SOCK_KEEPOPEN);
	int linger_bit = bpf_core_enum_value(enum sock_flags, SOCK_LINGER);
	unsigned long rcvtimeo = sk->sk_rcvtimeo, sndtimeo = sk->sk_sndtimeo;
	int linger2 = tp->linger2;

	if (sock_flag_set(flags, keepopen_bit)) {
		o->set_mask |= 1u << TCPWHY_OPT_SO_KEEPALIVE;
		o->keepalive = 1;
	}
	if (sock_flag_set(flags, linger_bit)) {
		o->set_mask |= 1u << TCPWHY_OPT_SO_LINGER;
		o->linger_onoff = 1;
		o->linger_s = jiffies_to_s(sk->sk_lingertime);
	}
	if (rcvtimeo != MAX_SCHEDULE_TIMEOUT_J) {
		o->set_mask |= 1u << TCPWHY_OPT_SO_RCVTIMEO;
		o->rcvtimeo_us = jiffies_to_us(rcvtimeo);
	}
	if (sndtimeo != MAX_SCHEDULE_TIMEOUT_J) {
		o->set_mask |= 1u << TCPWHY_OPT_SO_SNDTIMEO;
		o->sndtimeo_us = jiffies_to_us(sndtimeo);
	}
	if (tp->keepalive_time) {
		o->set_mask |= 1u << TCPWHY_OPT_TCP_KEEPIDLE;
		o->keepidle_s = jiffies_to_s(tp->keepalive_time);
	}
	if (tp->keepalive_intvl) {
		o->set_mask |= 1u << TCPWHY_OPT_TCP_KEEPINTVL;
		o->keepintvl_s = jiffies_to_s(tp->keepalive_intvl);
	}
	if (tp->keepalive_probes) {
		o->set_mask |= 1u << TCPWHY_OPT_TCP_KEEPCNT;
		o->keepcnt = tp->keepalive_probes;
	}
	if (tp->inet_conn.icsk_user_timeout) {
		o->set_mask |= 1u << TCPWHY_OPT_TCP_USER_TIMEOUT;
		o->user_timeout_ms = tp->inet_conn.icsk_user_timeout;
	}
	if (linger2) {
		o->set_mask |= 1u << TCPWHY_OPT_TCP_LINGER2;
		o->linger2_s = linger2 < 0 ? -1 : (__s32)jiffies_to_s(linger2);
	}
	if (tp->inet_conn.icsk_accept_queue.rskq_defer_accept) {
		o->set_mask |= 1u << TCPWHY_OPT_TCP_DEFER_ACCEPT;
		o->defer_accept_s = defer_accept_secs(tp->inet_conn.icsk_accept_queue.rskq_defer_accept);
	}
}

/*
 * After the peer's FIN (CLOSE_WAIT, LAST_ACK, CLOSING) rcv_nxt and bytes_received include the FIN's
 * sequence number, and copied_seq passes it only once the application has read the end of file.
 */
static __always_inline bool peer_fin_received(int state)
{
	return state == TCP_CLOSE_WAIT || state == TCP_LAST_ACK || state == TCP_CLOSING;
}

static __always_inline __u32 data_unread(__u32 rcv_nxt, __u32 copied_seq, int state)
{
	__u32 unread = rcv_nxt - copied_seq;
	return unread && peer_fin_received(state) ? unread - 1 : unread;
}

static __always_inline __u64 data_received(__u64 bytes_received, int state)
{
	return bytes_received && peer_fin_received(state) ? bytes_received - 1 : bytes_received;
}

static __always_inline __u32 idle_rx_ms(const struct tcp_sock *tp)
{
	return jiffies_delta_ms((__u32)bpf_jiffies64(), BPF_CORE_READ(tp, inet_conn.icsk_ack.lrcvtime));
}

/*
 * tp_btf hands us a BTF pointer: plain loads (relocated by CO-RE, fault-safe) instead of one
 * bpf_probe_read_kernel call per field, which is most of what a state event costs otherwise.
 */
static __always_inline void fill_state_addrs(struct tcpwhy_event *e, const struct sock *sk, __u16 sport_be)
{
	const struct sock_common *common = &sk->__sk_common;

	e->netns = common->skc_net.net->ns.inum;
	e->family = common->skc_family;
	if (e->family == AF_INET) {
		*(__u32 *)e->laddr = common->skc_rcv_saddr;
		*(__u32 *)e->raddr = common->skc_daddr;
	} else {
		__builtin_memcpy(e->laddr, &common->skc_v6_rcv_saddr, sizeof(e->laddr));
		__builtin_memcpy(e->raddr, &common->skc_v6_daddr, sizeof(e->raddr));
	}
	e->lport = bpf_ntohs(sport_be); /* inet_sport: skc_num is 0 at close */
	e->rport = bpf_ntohs(common->skc_dport);
}

/*
 * The close event: idle times, bytes and unread data, before the FIN or RST leaves. Plain loads
 * through the tcp_sock bpf_skc_to_tcp_sock() gives (tp_btf, fentry).
 */
static __always_inline bool emit_close(const struct tcp_sock *tp, __u64 cookie, __u8 old_state, __u8 new_state,
				       bool task_owns)
{
	const struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	struct tcpwhy_event *e;
	__u32 now;

	e = reserve_event(TCPWHY_EV_CLOSE);
	if (!e)
		return false;
	now = (__u32)bpf_jiffies64();
	e->cookie = cookie;
	fill_state_addrs(e, sk, tp->inet_conn.icsk_inet.inet_sport);
	fill_owner(e, sk, task_owns, true);
	fill_opts_in_force(e, tp);
	e->close.idle_rx_ms = jiffies_delta_ms(now, tp->inet_conn.icsk_ack.lrcvtime);
	e->close.idle_tx_ms = jiffies_delta_ms(now, tp->lsndtime);
	e->close.unread_bytes = data_unread(tp->rcv_nxt, tp->copied_seq, old_state);
	e->close.old_state = old_state;
	e->close.new_state = new_state;
	e->close.bytes_rx = data_received(tp->bytes_received, old_state);
	e->close.bytes_tx = tp->bytes_acked;
	if (new_state == TCP_CLOSE)
		e->flags |= TCPWHY_F_ABORT;
	submit_event(e);
	return true;
}

/* emit_close() for kprobes, whose pointers are plain numbers: a probe read per field, no options. */
static __always_inline void emit_close_probed(const struct sock *sk, __u64 cookie, __u8 old_state, __u8 new_state)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	struct tcpwhy_event *e;
	__u32 now = (__u32)bpf_jiffies64();

	e = reserve_event(TCPWHY_EV_CLOSE);
	if (!e)
		return;
	e->cookie = cookie;
	e->netns = sk_netns(sk);
	fill_addrs_from_sock(e, sk);
	fill_owner_from_task(e); /* tcp_close() runs in the closer's context */
	e->close.idle_rx_ms = jiffies_delta_ms(now, BPF_CORE_READ(tp, inet_conn.icsk_ack.lrcvtime));
	e->close.idle_tx_ms = jiffies_delta_ms(now, BPF_CORE_READ(tp, lsndtime));
	e->close.unread_bytes = data_unread(BPF_CORE_READ(tp, rcv_nxt), BPF_CORE_READ(tp, copied_seq), old_state);
	e->close.old_state = old_state;
	e->close.new_state = new_state;
	e->close.bytes_rx = data_received(BPF_CORE_READ(tp, bytes_received), old_state);
	e->close.bytes_tx = BPF_CORE_READ(tp, bytes_acked);
	if (new_state == TCP_CLOSE)
		e->flags |= TCPWHY_F_ABORT;
	submit_event(e);
}

/* Transitions the local side makes when it closes; ->CLOSE after a received RST is the peer's doing. */
static __always_inline bool is_local_close(int oldstate, int newstate, const struct sock *sk)
{
	if (oldstate == TCP_ESTABLISHED && newstate == TCP_FIN_WAIT1)
		return true;
	if (oldstate == TCP_CLOSE_WAIT && newstate == TCP_LAST_ACK)
		return true;
	if (newstate == TCP_CLOSE && (oldstate == TCP_ESTABLISHED || oldstate == TCP_CLOSE_WAIT))
		return !rst_received(sk);
	return false;
}

/* Transitions only a process makes (connect, listen, close): the task on the CPU owns the socket. */
static __always_inline bool in_owner_context(int oldstate, int newstate, const struct sock *sk)
{
	if (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN || oldstate == TCP_LISTEN)
		return true; /* LISTEN->SYN_RECV is not recorded by default; with --all-states it is the listener's */
	if ((oldstate == TCP_ESTABLISHED && newstate == TCP_FIN_WAIT1) ||
	    (oldstate == TCP_CLOSE_WAIT && newstate == TCP_LAST_ACK))
		return true;
	/* an abort by close(2) or SO_LINGER {1,0} leaves sk_err 0; received RSTs, timers and
	 * tcp_abort() (ss -K) set it first */
	return newstate == TCP_CLOSE && (oldstate == TCP_ESTABLISHED || oldstate == TCP_CLOSE_WAIT) &&
	       sk->sk_err == 0;
}

/*
 * The state changes the correlator needs, out of the ~10 a connection makes: its first (how it
 * was opened: SYN_SENT, or the child's SYN_RECV->ESTABLISHED), who closed first
 * (ESTABLISHED->FIN_WAIT1 or ->CLOSE_WAIT), its end unless the local side closed it (the close
 * event is its end then: FIN_WAIT2->CLOSE and LAST_ACK->CLOSE say nothing more), and listeners.
 * Each event costs the traced connection time here (bench/README.md).
 */
static __always_inline bool state_change_wanted(int oldstate, int newstate)
{
	if (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN)
		return true;
	if (newstate == TCP_CLOSE)
		return oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV || oldstate == TCP_ESTABLISHED ||
		       oldstate == TCP_CLOSE_WAIT || oldstate == TCP_LISTEN;
	if (oldstate == TCP_ESTABLISHED)
		return newstate == TCP_FIN_WAIT1 || newstate == TCP_CLOSE_WAIT;
	/*
	 * Only passive opens pass through SYN_RECV. The child's LISTEN->SYN_RECV fires while it is
	 * being cloned, on some kernels (6.1) before its cookie is reset: SYN_RECV->ESTABLISHED,
	 * under the child's own cookie everywhere, is its first instead.
	 */
	return oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct tcpwhy_event *e;
	bool close_here, task_owns;
	__u64 cookie;

	if (BPF_CORE_READ_BITFIELD(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	close_here = !close_from_tcp_close && is_local_close(oldstate, newstate, sk);
	/* Nothing to emit: leave before any helper call (half the changes of a connection). */
	if (!close_here && !all_state_changes && !state_change_wanted(oldstate, newstate))
		return 0;

	cookie = bpf_get_socket_cookie((void *)sk);
	task_owns = in_owner_context(oldstate, newstate, sk);
	/* The close event carries this very transition (old and new state): no state event beside it. */
	if (close_here) {
		const struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
		if (tp && emit_close(tp, cookie, oldstate, newstate, task_owns) && !all_state_changes)
			return 0;
		if (!all_state_changes && !state_change_wanted(oldstate, newstate))
			return 0;
	}

	e = reserve_event(TCPWHY_EV_STATE);
	if (!e)
		return 0;
	e->cookie = cookie;
	fill_state_addrs(e, sk, BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	fill_owner(e, sk, task_owns, true);
	if (newstate == TCP_CLOSE && rst_received(sk))
		e->flags |= TCPWHY_F_RST_RECEIVED;
	e->state.old_state = oldstate;
	e->state.new_state = newstate;
	submit_event(e);
	return 0;
}

/* tcp_close(): the closing process, before tcp_close() changes state or purges the queue. */
static __always_inline bool closes_connection(const struct sock *sk, int *state)
{
	*state = BPF_CORE_READ(sk, __sk_common.skc_state);
	return *state == TCP_ESTABLISHED || *state == TCP_CLOSE_WAIT;
}

/* What tcp_close() is about to do: abort with unread data or SO_LINGER {1,0}, else send a FIN. */
static __always_inline __u8 state_after_close(int state, const struct sock *sk)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
	int linger_bit = bpf_core_enum_value(enum sock_flags, SOCK_LINGER);

	/* tcp_close() counts data only, not the peer's FIN */
	if (data_unread(BPF_CORE_READ(tp, rcv_nxt), BPF_CORE_READ(tp, copied_seq), state) > 0)
		return TCP_CLOSE;
	if (sock_flag_set(flags, linger_bit) && BPF_CORE_READ(sk, sk_lingertime) == 0)
		return TCP_CLOSE;
	return state == TCP_ESTABLISHED ? TCP_FIN_WAIT1 : TCP_LAST_ACK;
}

SEC("fentry/tcp_close")
int BPF_PROG(fentry_tcp_close, struct sock *sk, long timeout)
{
	const struct tcp_sock *tp;
	int state;

	if (!closes_connection(sk, &state))
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp)
		emit_close(tp, bpf_get_socket_cookie(sk), state, state_after_close(state, sk), true);
	return 0;
}

SEC("kprobe/tcp_close")
int BPF_KPROBE(kprobe_tcp_close, struct sock *sk)
{
	int state;

	if (!closes_connection(sk, &state))
		return 0;
	/* kprobes do not get the cookie helper: read the cookie set_state generated */
	emit_close_probed(sk, BPF_CORE_READ(sk, __sk_common.skc_cookie.counter), state, state_after_close(state, sk));
	return 0;
}

/*
 * Resets sent. Two hooks, each attached by exactly one path chosen by userspace:
 *   active: tcp_send_active_reset(sk, gfp[, reason]) -- close with unread data, SO_LINGER {1,0},
 *           keep-alive/user timeout; no segment triggered it (skb NULL on the tracepoint)
 *   reply:  tcp_v4/v6_send_reset(sk, skb[, reason]) -- a reply to a segment: no socket, a
 *           timewait socket, or a full socket (data after close)
 * tp_btf/tcp_send_reset serves both on kernels where it fires for every reset (6.10+, with the
 * reason); before that it skips timewait and socketless replies, so fentry or kprobe on the
 * functions take over there and the tracepoint program leaves their share alone.
 */
const volatile bool reset_active_from_tp = true;
const volatile bool reset_reply_from_tp = true;
/* the hooked functions take `enum sk_rst_reason reason` as their third argument (6.10+) */
const volatile bool active_reset_has_reason = false;
const volatile bool reply_reset_has_reason = false;

static __always_inline void emit_reset_sent(const struct sock *sk, const struct sk_buff *skb, int reason,
					    bool btf_ctx)
{
	struct tcpwhy_event *e;

	e = reserve_event(TCPWHY_EV_RESET_SENT);
	if (!e)
		return;
	e->reset.reason = reason;
	if (reason < 0)
		e->flags |= TCPWHY_F_REASON_INFERRED;
	if (skb) {
		e->flags |= TCPWHY_F_HAS_SKB;
		fill_addrs_from_skb(e, skb);
		if (!sk) {
			e->netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
		}
	}
	if (sk) {
		__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
		/* kprobes do not get the cookie helper: read the cookie that set_state generated
		 * (timewait sockets keep the full socket's) */
		e->cookie = btf_ctx ? bpf_get_socket_cookie((void *)sk)
				    : BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
		e->netns = sk_netns(sk);
		e->reset.sk_state = state;
		if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV) {
			e->reset.sk_kind = state == TCP_TIME_WAIT ? TCPWHY_SK_TIMEWAIT : TCPWHY_SK_REQUEST;
			if (!skb)
				fill_addrs_from_common(e, sk);
		} else {
			const struct tcp_sock *tp = (const struct tcp_sock *)sk;
			e->reset.sk_kind = TCPWHY_SK_FULL;
			if (!skb)
				fill_addrs_from_sock(e, sk);
			/* the task on the CPU may be the owner (close with unread data) or not (a
			 * segment, a timer): the socket's cgroup; the connection's events name the rest */
			fill_owner(e, sk, false, false);
			if (is_rst_error(BPF_CORE_READ(sk, sk_err)))
				e->flags |= TCPWHY_F_RST_RECEIVED;
			if (btf_ctx) {
				const struct tcp_sock *full = bpf_skc_to_tcp_sock((void *)sk);
				if (full)
					fill_opts_in_force(e, full);
			}
			e->reset.unread_bytes = data_unread(BPF_CORE_READ(tp, rcv_nxt), BPF_CORE_READ(tp, copied_seq), state);
			e->reset.idle_rx_ms = idle_rx_ms(tp);
		}
	} else {
		e->reset.sk_kind = TCPWHY_SK_NONE;
	}
	submit_event(e);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(handle_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	int reason = -1;

	/* active resets have no triggering segment */
	if (skb ? !reset_reply_from_tp : !reset_active_from_tp)
		return 0;
	/* The reason argument arrived with enum sk_rst_reason (6.10); its numbering varies by kernel. */
	if (bpf_core_type_exists(enum sk_rst_reason))
		reason = (int)ctx[2];
	emit_reset_sent(sk, skb, reason, true);
	return 0;
}

/* tcp_v4/v6_send_reset() return without sending when the segment is itself a RST. */
static __always_inline bool segment_is_rst(const struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 flags = 0;

	/* byte 13 of the TCP header: CWR ECE URG ACK PSH RST SYN FIN */
	bpf_probe_read_kernel(&flags, 1, head + th + 13);
	return flags & 0x04;
}

SEC("fentry/tcp_send_active_reset")
int BPF_PROG(fentry_active_reset, struct sock *sk)
{
	emit_reset_sent(sk, NULL, active_reset_has_reason ? (int)ctx[2] : -1, true);
	return 0;
}

SEC("fentry/tcp_v4_send_reset")
int BPF_PROG(fentry_v4_send_reset, const struct sock *sk, struct sk_buff *skb)
{
	if (segment_is_rst(skb))
		return 0;
	emit_reset_sent(sk, skb, reply_reset_has_reason ? (int)ctx[2] : -1, true);
	return 0;
}

SEC("fentry/tcp_v6_send_reset")
int BPF_PROG(fentry_v6_send_reset, const struct sock *sk, struct sk_buff *skb)
{
	if (segment_is_rst(skb))
		return 0;
	emit_reset_sent(sk, skb, reply_reset_has_reason ? (int)ctx[2] : -1, true);
	return 0;
}

SEC("kprobe/tcp_send_active_reset")
int BPF_KPROBE(kprobe_active_reset, struct sock *sk)
{
	emit_reset_sent(sk, NULL, active_reset_has_reason ? (int)PT_REGS_PARM3(ctx) : -1, false);
	return 0;
}

SEC("kprobe/tcp_v4_send_reset")
int BPF_KPROBE(kprobe_v4_send_reset, const struct sock *sk, struct sk_buff *skb)
{
	if (segment_is_rst(skb))
		return 0;
	emit_reset_sent(sk, skb, reply_reset_has_reason ? (int)PT_REGS_PARM3(ctx) : -1, false);
	return 0;
}

SEC("kprobe/tcp_v6_send_reset")
int BPF_KPROBE(kprobe_v6_send_reset, const struct sock *sk, struct sk_buff *skb)
{
	if (segment_is_rst(skb))
		return 0;
	emit_reset_sent(sk, skb, reply_reset_has_reason ? (int)PT_REGS_PARM3(ctx) : -1, false);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(handle_receive_reset, struct sock *sk)
{
	const struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	struct tcpwhy_event *e;

	if (!tp)
		return 0;
	e = reserve_event(TCPWHY_EV_RESET_RECV);
	if (!e)
		return 0;
	e->cookie = bpf_get_socket_cookie(sk);
	fill_state_addrs(e, sk, tp->inet_conn.icsk_inet.inet_sport);
	fill_owner(e, sk, false, true);
	fill_opts_in_force(e, tp);
	if (rst_received(sk))
		e->flags |= TCPWHY_F_RST_RECEIVED;
	e->reset.sk_kind = TCPWHY_SK_FULL;
	e->reset.sk_state = sk->__sk_common.skc_state;
	e->reset.reason = -1;
	e->reset.unread_bytes = data_unread(tp->rcv_nxt, tp->copied_seq, e->reset.sk_state);
	e->reset.idle_rx_ms = jiffies_delta_ms((__u32)bpf_jiffies64(), tp->inet_conn.icsk_ack.lrcvtime);
	submit_event(e);
	return 0;
}

/* Which option this is, as a TCPWHY_OPT_* bit, or -1 when tcpwhy does not watch it. */
static __always_inline int watched_option(int level, int optname)
{
	if (level == SOL_SOCKET) {
		switch (optname) {
		case SO_KEEPALIVE: return TCPWHY_OPT_SO_KEEPALIVE;
		case SO_LINGER: return TCPWHY_OPT_SO_LINGER;
		case SO_RCVTIMEO_OLD:
		case SO_RCVTIMEO_NEW: return TCPWHY_OPT_SO_RCVTIMEO;
		case SO_SNDTIMEO_OLD:
		case SO_SNDTIMEO_NEW: return TCPWHY_OPT_SO_SNDTIMEO;
		}
	} else if (level == SOL_TCP) {
		switch (optname) {
		case TCP_KEEPIDLE: return TCPWHY_OPT_TCP_KEEPIDLE;
		case TCP_KEEPINTVL: return TCPWHY_OPT_TCP_KEEPINTVL;
		case TCP_KEEPCNT: return TCPWHY_OPT_TCP_KEEPCNT;
		case TCP_USER_TIMEOUT: return TCPWHY_OPT_TCP_USER_TIMEOUT;
		case TCP_LINGER2: return TCPWHY_OPT_TCP_LINGER2;
		case TCP_DEFER_ACCEPT: return TCPWHY_OPT_TCP_DEFER_ACCEPT;
		}
	}
	return -1;
}

/* Runs before the kernel applies the option, so a value the kernel then rejects is recorded too. */
SEC("cgroup/setsockopt")
int handle_setsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	void *optval = ctx->optval;
	void *optval_end = ctx->optval_end;
	struct tcpwhy_event *e;
	__s64 value = 0, value2 = 0;
	int opt;

	/* The program sees only the first page of a large value; let the kernel use the original. */
	if (ctx->optlen > PAGE_SIZE) {
		ctx->optlen = 0;
		return 1;
	}
	if (!sk || sk->protocol != IPPROTO_TCP)
		return 1;
	opt = watched_option(ctx->level, ctx->optname);
	if (opt < 0)
		return 1;

	if (opt == TCPWHY_OPT_SO_LINGER) {
		struct { int onoff; int linger; } *l = optval;
		if ((void *)(l + 1) > optval_end)
			return 1;
		value = l->onoff;
		value2 = l->linger;
	} else if (opt == TCPWHY_OPT_SO_RCVTIMEO || opt == TCPWHY_OPT_SO_SNDTIMEO) {
		/* old and new timeval layouts are two 64-bit words on 64-bit kernels */
		__s64 *tv = optval;
		if ((void *)(tv + 2) > optval_end)
			return 1;
		value = tv[0] * 1000000 + tv[1];
	} else {
		int *v = optval;
		if ((void *)(v + 1) > optval_end)
			return 1;
		value = *v;
	}

	e = reserve_event(TCPWHY_EV_SETSOCKOPT);
	if (!e)
		return 1;
	{
		/* Neither bpf_get_socket_cookie nor pointer arithmetic on the context's socket is
		 * allowed here. The kernel's context (struct bpf_sockopt_kern) starts with the real
		 * struct sock *: read that pointer as a plain value, then the fields through it. */
		const struct sock *ksk = NULL;
		if (!bpf_probe_read_kernel(&ksk, sizeof(ksk), ctx) && ksk) {
			e->cookie = BPF_CORE_READ(ksk, __sk_common.skc_cookie.counter);
			e->netns = sk_netns(ksk);
		}
	}
	e->family = sk->family;
	/* context fields allow only 4-byte loads */
	if (sk->family == AF_INET) {
		((__u32 *)e->laddr)[0] = sk->src_ip4;
		((__u32 *)e->raddr)[0] = sk->dst_ip4;
	} else {
		((__u32 *)e->laddr)[0] = sk->src_ip6[0];
		((__u32 *)e->laddr)[1] = sk->src_ip6[1];
		((__u32 *)e->laddr)[2] = sk->src_ip6[2];
		((__u32 *)e->laddr)[3] = sk->src_ip6[3];
		((__u32 *)e->raddr)[0] = sk->dst_ip6[0];
		((__u32 *)e->raddr)[1] = sk->dst_ip6[1];
		((__u32 *)e->raddr)[2] = sk->dst_ip6[2];
		((__u32 *)e->raddr)[3] = sk->dst_ip6[3];
	}
	e->lport = sk->src_port;
	e->rport = bpf_ntohs(sk->dst_port);
	e->sockopt.level = ctx->level;
	e->sockopt.optname = ctx->optname;
	e->sockopt.value = value;
	e->sockopt.value2 = value2;
	e->sockopt.opt = opt;
	fill_owner_from_task(e);
	submit_event(e);
	return 1;
}
