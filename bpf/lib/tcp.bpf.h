/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* What a TCP socket's fields mean at the moments tcpwhy looks: data unread and received,
 * idle time, and which state changes matter. */
#ifndef TCPWHY_LIB_TCP_BPF_H
#define TCPWHY_LIB_TCP_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "tcpwhy.bpf.h"
#include "lib/sock.bpf.h"
#include "lib/time.bpf.h"

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

/* Bytes the application wrote that the peer has not acknowledged: unsent or in flight. A reset
 * discards them; at a FIN close the kernel still sends them. */
static __always_inline __u32 send_queue_bytes(__u32 write_seq, __u32 snd_una)
{
	__u32 queued = write_seq - snd_una;
	return (__s32)queued < 0 ? 0 : queued;
}

static __always_inline __u32 saturate_u32(__u64 v)
{
	return v > 0xffffffffULL ? 0xffffffffU : (__u32)v;
}

static __always_inline __u32 idle_rx_ms(const struct tcp_sock *tp)
{
	return jiffies_delta_ms((__u32)bpf_jiffies64(), BPF_CORE_READ(tp, inet_conn.icsk_ack.lrcvtime));
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

#endif /* TCPWHY_LIB_TCP_BPF_H */
