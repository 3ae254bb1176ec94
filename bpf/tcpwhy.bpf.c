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
 *   tp_btf/tcp_retransmit_synack  reqsk_timer_handler() -> inet_rtx_syn_ack(): reported only while
 *                               the listener's accept queue is full (its final ACK was dropped)
 *   tp_btf/kfree_skb            kfree_skb_reason(): only SKB_DROP_REASON_TCP_LISTEN_OVERFLOW, on
 *                               kernels that name it (a SYN or final ACK dropped at a full queue)
 *   tp_btf/signal_generate      __send_signal_locked(): SIGTERM, SIGINT, SIGQUIT, SIGKILL to a
 *                               process that listens (listener_owners)
 * Ordinary opens and ends are counted per backend (lib/tally.bpf.h) instead of sent.
 * Process exits need no hook of their own: the closes a dying process makes run in do_exit()
 * and carry the exit code (lib/process.bpf.h).
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
#include "core_fixes.bpf.h"
#include "lib/emit.bpf.h"
#include "lib/events.bpf.h"
#include "lib/opts.bpf.h"
#include "lib/process.bpf.h"
#include "lib/sock.bpf.h"
#include "lib/tally.bpf.h"
#include "lib/tcp.bpf.h"
#include "lib/time.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Knobs userspace sets before load (src/bpf/tracer.cpp), besides wakeup_bytes (lib/emit.bpf.h). */
/* true when fentry or kprobe on tcp_close builds the close event; set_state then leaves it alone */
const volatile bool close_from_tcp_close = false;
/* emit every state change, not only those the correlator needs (tcpwhy trace --all-states) */
const volatile bool all_state_changes = false;
/* The loader checks this against the header it was built with (abi.h). */
const volatile __u32 bpf_abi_version = TCPWHY_ABI_VERSION;

/*
 * What a state change adds beyond the transition, only where the correlator uses it: the
 * listener's queue and backlog (and who listens, for the signal hook), how idle a connection was
 * when the peer closed it, and what a socket still had to send when it went to CLOSE.
 */
static __always_inline void fill_state_details(struct tcpwhy_event *e, const struct sock *sk, int oldstate,
					       int newstate, bool task_owns)
{
	const struct tcp_sock *tp;

	if (newstate == TCP_LISTEN || oldstate == TCP_LISTEN) {
		e->state.acceptq_len = sk->sk_ack_backlog;
		e->state.acceptq_max = sk->sk_max_ack_backlog;
		if (task_owns && newstate == TCP_LISTEN)
			note_listener_owner();
		if (task_owns)
			fill_exit_btf(e, &e->state.exit_code);
		return;
	}
	if (newstate != TCP_CLOSE_WAIT && newstate != TCP_CLOSE)
		return;
	tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return;
	if (newstate == TCP_CLOSE) {
		e->state.send_queue_bytes = send_queue_bytes(tp->write_seq, tp->snd_una);
	} else if (oldstate == TCP_ESTABLISHED) {
		__u32 now = (__u32)bpf_jiffies64();
		/* a pure FIN refreshes neither timestamp; its sequence number is in bytes_received */
		e->state.idle_rx_ms = jiffies_delta_ms(now, tp->inet_conn.icsk_ack.lrcvtime);
		e->state.idle_tx_ms = jiffies_delta_ms(now, tp->lsndtime);
		e->state.bytes_rx = saturate_u32(data_received(tp->bytes_received, TCP_CLOSE_WAIT));
		e->state.bytes_tx = saturate_u32(tp->bytes_sent);
	}
}

enum tally_outcome { TALLIED, SEND_AS_BEFORE };

/*
 * Tally mode: opens and ordinary ends are counted, not sent; CLOSE->SYN_SENT is not sent (the
 * open is counted at ESTABLISHED, a failed connect is its SYN_SENT->CLOSE), nor a peer's FIN on a
 * busy connection (the close from CLOSE_WAIT implies it). Listeners are mirrored for the ends'
 * backend keys. Everything else goes on as before.
 */
static __always_inline enum tally_outcome tally_state_change(const struct sock *sk, int oldstate, int newstate)
{
	const struct tcp_sock *tp;

	if (newstate == TCP_LISTEN) {
		mirror_listener(sk->__sk_common.skc_net.net->ns.inum, sk->__sk_common.skc_num, true);
		return SEND_AS_BEFORE;
	}
	if (oldstate == TCP_LISTEN) {
		if (newstate == TCP_CLOSE)
			mirror_listener(sk->__sk_common.skc_net.net->ns.inum, sk->__sk_common.skc_num, false);
		return SEND_AS_BEFORE;
	}
	if (newstate == TCP_SYN_SENT)
		return TALLIED; /* counted at ESTABLISHED, or sent as SYN_SENT->CLOSE */
	if (newstate == TCP_ESTABLISHED) {
		if (oldstate != TCP_SYN_RECV && oldstate != TCP_SYN_SENT)
			return SEND_AS_BEFORE;
		return tally_open(sk, oldstate == TCP_SYN_SENT) ? TALLIED : SEND_AS_BEFORE;
	}
	if (!((oldstate == TCP_ESTABLISHED && (newstate == TCP_FIN_WAIT1 || newstate == TCP_CLOSE_WAIT)) ||
	      (oldstate == TCP_CLOSE_WAIT && newstate == TCP_LAST_ACK)))
		return SEND_AS_BEFORE;
	tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return SEND_AS_BEFORE;
	if (newstate == TCP_CLOSE_WAIT)
		return peer_fin_is_ordinary(tp) ? TALLIED : SEND_AS_BEFORE;
	return tally_end(tp, oldstate) ? TALLIED : SEND_AS_BEFORE;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct tcpwhy_event *e;
	bool close_here, task_owns;
	__u64 cookie;

	if (BPF_CORE_READ_BITFIELD(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (tallying()) {
		switch (tally_state_change(sk, oldstate, newstate)) {
		case TALLIED:
			return 0;
		case SEND_AS_BEFORE:
			break;
		}
	}
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
	fill_state_details(e, sk, oldstate, newstate, task_owns);
	submit_connection_event(e);
	return 0;
}

SEC("fentry/tcp_close")
int BPF_PROG(fentry_tcp_close, struct sock *sk, long timeout)
{
	const struct tcp_sock *tp;
	int state;

	if (!closes_connection(sk, &state) || close_will_be_tallied(sk, state))
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

	if (!closes_connection(sk, &state) || close_will_be_tallied(sk, state))
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

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(handle_send_reset, const struct sock *sk, const struct sk_buff *skb)
{
	int reason = -1;

	/* active resets have no triggering segment */
	if (skb ? !reset_reply_from_tp : !reset_active_from_tp)
		return 0;
	if (kernel_has_reset_reasons()) /* core_fixes.bpf.h */
		reason = (int)ctx[2];
	emit_reset_sent(sk, skb, reason, true);
	return 0;
}

/* tcp_v4/v6_send_reset() return without sending when the segment is itself a RST. */
static __always_inline bool segment_is_rst(const struct sk_buff *skb)
{
	return segment_flags(skb) & TCP_FLAG_RST_BIT;
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
	e->reset.idle_tx_ms = jiffies_delta_ms((__u32)bpf_jiffies64(), tp->lsndtime);
	e->reset.bytes_rx = saturate_u32(data_received(tp->bytes_received, e->reset.sk_state));
	e->reset.bytes_tx = saturate_u32(tp->bytes_sent);
	e->reset.send_queue_bytes = send_queue_bytes(tp->write_seq, tp->snd_una);
	submit_connection_event(e);
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

/*
 * A full accept queue. The event's cookie and local port are the listener's, its remote
 * endpoint the peer's; the queue is read as sk_acceptq_is_full() reads it.
 */
static __always_inline struct tcpwhy_event *reserve_overflow(const struct sock *listener, __u8 how)
{
	struct tcpwhy_event *e = reserve_event(TCPWHY_EV_LISTEN_OVERFLOW);

	if (!e)
		return NULL;
	e->cookie = bpf_get_socket_cookie((void *)listener);
	e->netns = listener->__sk_common.skc_net.net->ns.inum;
	e->cgroup_id = sk_cgroup_id_btf(listener);
	e->overflow.acceptq_len = listener->sk_ack_backlog;
	e->overflow.acceptq_max = listener->sk_max_ack_backlog;
	e->overflow.how = how;
	return e;
}

/*
 * tcp_check_req(): when syn_recv_sock() finds the accept queue full, the final ACK is dropped and
 * (tcp_abort_on_overflow = 0, the default) the request stays, so its timer sends the SYN-ACK again.
 * A SYN-ACK sent again while the queue is below its backlog is a lost packet, not an overflow:
 * nothing leaves the kernel for it.
 */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(handle_retransmit_synack, const struct sock *sk, const struct request_sock *req)
{
	const struct sock_common *peer = &req->__req_common;
	struct tcpwhy_event *e;

	if (sk->sk_ack_backlog < sk->sk_max_ack_backlog)
		return 0;
	e = reserve_overflow(sk, TCPWHY_OVF_SYNACK_RETRANSMIT);
	if (!e)
		return 0;
	e->family = peer->skc_family;
	if (e->family == AF_INET) {
		*(__u32 *)e->laddr = peer->skc_rcv_saddr;
		*(__u32 *)e->raddr = peer->skc_daddr;
	} else {
		__builtin_memcpy(e->laddr, &peer->skc_v6_rcv_saddr, sizeof(e->laddr));
		__builtin_memcpy(e->raddr, &peer->skc_v6_daddr, sizeof(e->raddr));
	}
	e->lport = peer->skc_num;
	e->rport = bpf_ntohs(peer->skc_dport);
	submit_event(e);
	return 0;
}

/* The running kernel's value of SKB_DROP_REASON_TCP_LISTEN_OVERFLOW (src/bpf/features.cpp reads
 * it from BTF; the numbering moves between kernels). The program loads only where it exists. */
const volatile __u32 listen_overflow_drop_reason = 0;

/* kfree_skb_reason() on every dropped packet: one compare and out, unless the accept queue was full. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(handle_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	struct tcpwhy_event *e;

	if ((__u32)reason != listen_overflow_drop_reason || !rx_sk)
		return 0;
	e = reserve_overflow(rx_sk, TCPWHY_OVF_DROP);
	if (!e)
		return 0;
	fill_addrs_from_skb(e, skb);
	submit_event(e);
	return 0;
}

/*
 * A stopping signal to a process that listens: a rollout's SIGTERM, the SIGKILL when the grace
 * period ends or the OOM killer strikes. Fires in the sender's context for every signal on the
 * node; a compare and a map lookup for the few that matter.
 */
SEC("tp_btf/signal_generate")
int BPF_PROG(handle_signal_generate, int sig, struct kernel_siginfo *info, struct task_struct *task, int group,
	     int result)
{
	struct tcpwhy_event *e;
	__u32 tgid;

	if (sig != SIGTERM && sig != SIGINT && sig != SIGQUIT && sig != SIGKILL)
		return 0;
	if (result == 1 /* TRACE_SIGNAL_IGNORED */)
		return 0;
	tgid = task->tgid;
	if (!is_listener_owner(tgid))
		return 0;
	note_draining(task->nsproxy ? task->nsproxy->net_ns->ns.inum : 0);
	e = reserve_event(TCPWHY_EV_SIGNAL);
	if (!e)
		return 0;
	e->pid = tgid;
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), task->group_leader->comm);
	e->netns = task->nsproxy ? task->nsproxy->net_ns->ns.inum : 0;
	e->flags |= TCPWHY_F_OWNER_KNOWN;
	e->signal.signal = sig;
	e->signal.sender_pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(e->signal.sender_comm, sizeof(e->signal.sender_comm));
	submit_event(e);
	return 0;
}
