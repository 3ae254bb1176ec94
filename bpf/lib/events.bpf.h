/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Building the close and reset events, shared by the entry points that see them. */
#ifndef TCPWHY_LIB_EVENTS_BPF_H
#define TCPWHY_LIB_EVENTS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "tcpwhy/abi.h"
#include "lib/emit.bpf.h"
#include "lib/opts.bpf.h"
#include "lib/process.bpf.h"
#include "lib/sock.bpf.h"
#include "lib/tally.bpf.h"
#include "lib/tcp.bpf.h"
#include "lib/time.bpf.h"

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
	if (task_owns)
		fill_exit_btf(e, &e->close.exit_code);
	fill_opts_in_force(e, tp);
	e->close.send_queue_bytes = send_queue_bytes(tp->write_seq, tp->snd_una);
	e->close.idle_rx_ms = jiffies_delta_ms(now, tp->inet_conn.icsk_ack.lrcvtime);
	e->close.idle_tx_ms = jiffies_delta_ms(now, tp->lsndtime);
	e->close.unread_bytes = data_unread(tp->rcv_nxt, tp->copied_seq, old_state);
	e->close.old_state = old_state;
	e->close.new_state = new_state;
	e->close.bytes_rx = data_received(tp->bytes_received, old_state);
	e->close.bytes_tx = tp->bytes_acked;
	if (new_state == TCP_CLOSE)
		e->flags |= TCPWHY_F_ABORT;
	submit_connection_event(e);
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
	fill_exit_probed(e, &e->close.exit_code);
	e->close.send_queue_bytes = send_queue_bytes(BPF_CORE_READ(tp, write_seq), BPF_CORE_READ(tp, snd_una));
	e->close.idle_rx_ms = jiffies_delta_ms(now, BPF_CORE_READ(tp, inet_conn.icsk_ack.lrcvtime));
	e->close.idle_tx_ms = jiffies_delta_ms(now, BPF_CORE_READ(tp, lsndtime));
	e->close.unread_bytes = data_unread(BPF_CORE_READ(tp, rcv_nxt), BPF_CORE_READ(tp, copied_seq), old_state);
	e->close.old_state = old_state;
	e->close.new_state = new_state;
	e->close.bytes_rx = data_received(BPF_CORE_READ(tp, bytes_received), old_state);
	e->close.bytes_tx = BPF_CORE_READ(tp, bytes_acked);
	if (new_state == TCP_CLOSE)
		e->flags |= TCPWHY_F_ABORT;
	submit_connection_event(e);
}

/*
 * A reset sent: for a full socket, a timewait or request socket (sock_common only), or none
 * (a stateless reply: the addresses are the segment's). btf_ctx: sk is a BTF pointer (tp_btf,
 * fentry), where helpers like bpf_get_socket_cookie and bpf_skc_to_tcp_sock are allowed;
 * kprobes pass plain numbers and read fields with probe reads.
 */
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
		if ((segment_flags(skb) & (TCP_FLAG_SYN_BIT | TCP_FLAG_ACK_BIT)) == TCP_FLAG_SYN_BIT)
			e->flags |= TCPWHY_F_SYN;
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
			e->reset.idle_tx_ms = jiffies_delta_ms((__u32)bpf_jiffies64(), BPF_CORE_READ(tp, lsndtime));
			e->reset.send_queue_bytes =
				send_queue_bytes(BPF_CORE_READ(tp, write_seq), BPF_CORE_READ(tp, snd_una));
			e->reset.bytes_rx = saturate_u32(data_received(BPF_CORE_READ(tp, bytes_received), state));
			e->reset.bytes_tx = saturate_u32(BPF_CORE_READ(tp, bytes_sent));
		}
	} else {
		e->reset.sk_kind = TCPWHY_SK_NONE;
	}
	/* a request socket's or a stateless reply's port is one a SYN was sent to: not the mirror's question */
	if (e->reset.sk_kind == TCPWHY_SK_FULL || e->reset.sk_kind == TCPWHY_SK_TIMEWAIT)
		submit_connection_event(e);
	else
		submit_event(e);
}

#endif /* TCPWHY_LIB_EVENTS_BPF_H */
