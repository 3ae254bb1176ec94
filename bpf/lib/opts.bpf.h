/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The timeout-related socket options in force, read from the socket itself. */
#ifndef TCPWHY_LIB_OPTS_BPF_H
#define TCPWHY_LIB_OPTS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include "tcpwhy/abi.h"
#include "lib/sock.bpf.h"
#include "lib/time.bpf.h"

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
static __always_inline void fill_opts(struct tcpwhy_sockopts *o, const struct tcp_sock *tp)
{
	const struct sock *sk = &tp->inet_conn.icsk_inet.sk;
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

static __always_inline void fill_opts_in_force(struct tcpwhy_event *e, const struct tcp_sock *tp)
{
	fill_opts(&e->opts, tp);
}

#endif /* TCPWHY_LIB_OPTS_BPF_H */
