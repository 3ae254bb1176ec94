/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* A socket's identity in the event: addresses, namespace, owner, flags. */
#ifndef TCPWHY_LIB_SOCK_BPF_H
#define TCPWHY_LIB_SOCK_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcpwhy/abi.h"
#include "tcpwhy.bpf.h"
#include "core_fixes.bpf.h"

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

/* byte 13 of the TCP header: CWR ECE URG ACK PSH RST SYN FIN */
#define TCP_FLAG_RST_BIT 0x04
#define TCP_FLAG_SYN_BIT 0x02
#define TCP_FLAG_ACK_BIT 0x10

/* The flags of the segment skb carries (0 when they cannot be read). */
static __always_inline __u8 segment_flags(const struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 flags = 0;

	bpf_probe_read_kernel(&flags, 1, head + th + 13);
	return flags;
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
 * accepted children take from their listener (core_fixes.bpf.h: 0 before 5.15).
 */
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

#endif /* TCPWHY_LIB_SOCK_BPF_H */
