// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The TCP sockets open now, as TCPWHY_EV_EXISTING events. Separate from tcpwhy.bpf.c: these
 * programs run when userspace reads them, never on a kernel path.
 *
 * iter/tcp: the sockets that existed before tcpwhy started, so that their later closes and
 * resets are not orphans in the correlator. It walks the listening and established hash tables
 * of the network namespace of the task that reads the iterator (bpf_iter_create() in
 * userspace), so userspace enters each namespace in turn (CAP_SYS_ADMIN): once, at start.
 *
 * iter/task_file: the sockets processes hold, with the process, in every namespace at once, as
 * often as `top` wants their idle times. It needs no setns(), only the bpf() syscall on a link
 * made at start, so the daemon can still read it after dropping its capabilities. Sockets no
 * process holds (orphans closing) are not in it; the tracepoints see their ends.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcpwhy/abi.h"
#include "tcpwhy.bpf.h"
#include "lib/time.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Fills e from a socket; false for the states neither listing reports. tp: the socket as a full
 * TCP socket, NULL when it is not one; every read through it or skc is a probe read. */
static __always_inline bool fill_existing(struct tcpwhy_event *e, struct sock_common *skc, struct tcp_sock *tp,
					  __u64 cookie)
{
	__u8 state;

	state = BPF_CORE_READ(skc, skc_state);
	/* Request sockets get their handshake events soon enough; timewait sockets end
	 * silently within 60 s, and a correlator record of them would only wait to expire. */
	if (state == TCP_NEW_SYN_RECV || state == TCP_TIME_WAIT || state == TCP_CLOSE)
		return false;

	__builtin_memset(e, 0, sizeof(*e));
	e->type = TCPWHY_EV_EXISTING;
	e->ts_ns = bpf_ktime_get_ns();
	e->cookie = cookie;
	e->netns = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	e->family = BPF_CORE_READ(skc, skc_family);
	if (e->family == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)e->laddr, skc, skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->raddr, skc, skc_daddr);
	} else {
		bpf_core_read(e->laddr, sizeof(e->laddr), &skc->skc_v6_rcv_saddr);
		bpf_core_read(e->raddr, sizeof(e->raddr), &skc->skc_v6_daddr);
	}
	/* a live socket's local port is skc_num (only a closing one has it zeroed) */
	e->lport = BPF_CORE_READ(skc, skc_num);
	e->rport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	e->existing.state = state;
	if (tp) { /* full sockets only */
		__u32 now = jiffies_now();
		e->existing.sock_ino = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_socket, file, f_inode, i_ino);
		/* how long it has been quiet now: what `top` shows of a keep-alive connection */
		e->existing.idle_rx_ms = jiffies_delta_ms(now, BPF_CORE_READ(tp, inet_conn.icsk_ack.lrcvtime));
		e->existing.idle_tx_ms = jiffies_delta_ms(now, BPF_CORE_READ(tp, lsndtime));
		if (state == TCP_LISTEN) { /* what `ss -lnt` shows as Recv-Q / Send-Q */
			e->existing.acceptq_len = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_ack_backlog);
			e->existing.acceptq_max = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_max_ack_backlog);
		}
	}
	return true;
}

SEC("iter/tcp")
int list_tcp_sockets(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcpwhy_event e;

	if (!skc || !fill_existing(&e, skc, bpf_skc_to_tcp_sock(skc), bpf_get_socket_cookie(skc)))
		return 0;
	bpf_seq_write(ctx->meta->seq, &e, sizeof(e));
	return 0;
}

/* Every open file of every process (threads sharing a file table are visited once); a socket
 * shared by several processes (a listener after fork) once per process: userspace keeps one. */
SEC("iter/task_file")
int list_held_tcp_sockets(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct tcpwhy_event e;
	struct socket *sock;
	struct sock *sk;
	__u64 cookie;

	if (!task || !file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = sock->sk;
	if (!sk || BPF_CORE_READ_BITFIELD(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (sk->__sk_common.skc_family != AF_INET && sk->__sk_common.skc_family != AF_INET6)
		return 0;
	/*
	 * The verifier of 6.18.44 treats sock->sk here as untrusted, and the socket helpers
	 * (bpf_get_socket_cookie, bpf_skc_to_tcp_sock) refuse it, so the program did not load:
	 * the socket is read with probe reads instead. A socket a file holds is a full one, and
	 * TCP by the check above. Its cookie is the one the kernel handed out, 0 if nobody asked
	 * for one yet (userspace keeps one copy of each socket by its inode).
	 */
	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (!fill_existing(&e, &sk->__sk_common, (struct tcp_sock *)sk, cookie))
		return 0;
	e.pid = task->tgid;
	BPF_CORE_READ_STR_INTO(&e.comm, task, group_leader, comm);
	e.flags |= TCPWHY_F_OWNER_KNOWN;
	bpf_seq_write(ctx->meta->seq, &e, sizeof(e));
	return 0;
}
