// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The TCP sockets that existed before tcpwhy started, as TCPWHY_EV_EXISTING events,
 * so that their later closes and resets are not orphans in the correlator.
 *
 * iter/tcp walks the listening and established hash tables of the network namespace
 * of the task that reads the iterator (bpf_iter_create() in userspace), one socket
 * per call; userspace reads one iterator per network namespace. Separate from
 * tcpwhy.bpf.c: it runs once at start and is detached right after.
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

SEC("iter/tcp")
int list_tcp_sockets(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	struct tcpwhy_event e;
	struct tcp_sock *tp;
	__u8 state;

	if (!skc)
		return 0;
	state = BPF_CORE_READ(skc, skc_state);
	/* Request sockets get their handshake events soon enough; timewait sockets end
	 * silently within 60 s, and a correlator record of them would only wait to expire. */
	if (state == TCP_NEW_SYN_RECV || state == TCP_TIME_WAIT || state == TCP_CLOSE)
		return 0;

	__builtin_memset(&e, 0, sizeof(e));
	e.type = TCPWHY_EV_EXISTING;
	e.ts_ns = bpf_ktime_get_ns();
	e.cookie = bpf_get_socket_cookie(skc);
	e.netns = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	e.family = BPF_CORE_READ(skc, skc_family);
	if (e.family == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)e.laddr, skc, skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e.raddr, skc, skc_daddr);
	} else {
		bpf_core_read(e.laddr, sizeof(e.laddr), &skc->skc_v6_rcv_saddr);
		bpf_core_read(e.raddr, sizeof(e.raddr), &skc->skc_v6_daddr);
	}
	/* a live socket's local port is skc_num (only a closing one has it zeroed) */
	e.lport = BPF_CORE_READ(skc, skc_num);
	e.rport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	e.existing.state = state;
	tp = bpf_skc_to_tcp_sock(skc);
	if (tp) { /* full sockets only */
		__u32 now = jiffies_now();
		e.existing.sock_ino = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_socket, file, f_inode, i_ino);
		/* how long it has been quiet now: what `top` shows of a keep-alive connection */
		e.existing.idle_rx_ms = jiffies_delta_ms(now, BPF_CORE_READ(tp, inet_conn.icsk_ack.lrcvtime));
		e.existing.idle_tx_ms = jiffies_delta_ms(now, BPF_CORE_READ(tp, lsndtime));
		if (state == TCP_LISTEN) { /* what `ss -lnt` shows as Recv-Q / Send-Q */
			e.existing.acceptq_len = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_ack_backlog);
			e.existing.acceptq_max = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_max_ack_backlog);
		}
	}
	bpf_seq_write(seq, &e, sizeof(e));
	return 0;
}
