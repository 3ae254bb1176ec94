/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Ordinary connections counted in the kernel, per backend, instead of sent one by one: an open
 * and an ordinary end cost a map update each, not a ring-buffer record (include/tcpwhy/abi.h
 * says what "ordinary" means). Nothing is kept per socket: the backend key is worked out at each
 * end from the listener mirror, and whether an end is ordinary from the socket itself.
 * Only tcpwhy.bpf.c includes this (the maps live in one object).
 */
#ifndef TCPWHY_LIB_TALLY_BPF_H
#define TCPWHY_LIB_TALLY_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcpwhy/abi.h"
#include "tcpwhy.bpf.h"
#include "lib/emit.bpf.h"
#include "lib/opts.bpf.h"
#include "lib/tcp.bpf.h"
#include "lib/time.bpf.h"

/* Knobs userspace sets before load (src/bpf/tracer.cpp). */
/* count ordinary opens and ends instead of sending them (off with --all-states) */
const volatile bool tally_ordinary = false;
/* a close this quiet or more is an event: the correlator's idle bar never goes below it */
const volatile __u32 ordinary_idle_max_ms = 100;
/* presets without ranges: every peer that is not loopback is the load balancer */
const volatile bool lb_any_non_loopback = false;
/* after a stopping signal to a process listening in a namespace, its closes are events this long */
const volatile __u64 drain_window_ns = 120ULL * 1000000000ULL;
/* the session's LB ranges when they are few (the presets have 2-4): compared here, no trie walk */
const volatile __u32 lb_inline_count = 0;
const volatile struct tcpwhy_lb_range lb_inline[TCPWHY_LB_INLINE_MAX] = {};
/* more ranges than that: every one is in the lb_ranges trie */
const volatile bool lb_in_trie = false;

/* When the last stopping signal was noted (0: none this session): until a window has passed
 * since, ends look their namespace up in draining_netns; otherwise they need not. */
__u64 last_drain_ns = 0;

/* Written here at opens and ordinary ends; read (summed over CPUs) by userspace once a tick.
 * Allocated per backend as it first appears; full: the connection's records are sent instead. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct tcpwhy_tally_key);
	__type(value, struct tcpwhy_tally_value);
} tally SEC(".maps");

/* Each CPU's first backends, by a hash of their key (abi.h: tcpwhy_tally_slot). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPWHY_TALLY_DIRECT_SLOTS);
	__type(key, __u32);
	__type(value, struct tcpwhy_tally_slot);
} tally_direct SEC(".maps");

/* Tally updates that found the map full (the records were sent instead). Read by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tally_full SEC(".maps");

/* The listeners: written at ->LISTEN, LISTEN->CLOSE and at every accepted open; seeded by
 * userspace from the socket iterator. A port whose count fell to 0 (it stopped listening) keeps
 * its entry: the ends of its connections are a rollout's or a crash's, sent in full. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tcpwhy_listener_key);
	__type(value, __s32);
} listeners SEC(".maps");

/* Bumped after every change to the listener mirror, here and by userspace's seed: an answer a CPU
 * keeps from the mirror is good while this is what it was before that answer was looked up. */
__u32 listeners_gen = 0;

/* A CPU's latest answers from the mirror for ports in it, by a hash of (netns, port): the ports
 * that accept are asked at every open and end. A port not in it (a connect()'s ephemeral one, new
 * at every connection) is not kept, so as not to push those out. */
#define LISTENER_ANSWER_SLOTS 64
enum port_role { PORT_NOT_LISTENING, PORT_LISTENING, PORT_STOPPED_LISTENING };
struct listener_answer {
	__u32 netns; /* 0: empty */
	__u16 port;
	__u16 role;  /* enum port_role */
	__u32 gen;   /* listeners_gen before the lookup */
	__u32 pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LISTENER_ANSWER_SLOTS);
	__type(key, __u32);
	__type(value, struct listener_answer);
} listener_answers SEC(".maps");

/* The session's load-balancer ranges, filled by userspace before the programs attach. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, struct tcpwhy_lb_key);
	__type(value, __u8);
} lb_ranges SEC(".maps");

/* Namespaces where a process that listens was sent a stopping signal: netns -> when. Written by
 * the signal program; read at ends. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} draining_netns SEC(".maps");

/* userspace leaves tally_ordinary off with --all-states */
static __always_inline bool tallying(void)
{
	return tally_ordinary;
}

static __always_inline void note_draining(__u32 netns)
{
	__u64 now = bpf_ktime_get_ns();

	if (tally_ordinary) {
		bpf_map_update_elem(&draining_netns, &netns, &now, BPF_ANY);
		last_drain_ns = now;
	}
}

/* Whether netns had a stopping signal within the drain window. The map is looked at only
 * within a window of the last signal anywhere: most ends need no lookup. */
static __always_inline bool netns_draining(__u32 netns)
{
	__u64 last = last_drain_ns, now, *since;

	if (!last)
		return false;
	now = bpf_ktime_get_ns();
	if (now - last >= drain_window_ns)
		return false;
	since = bpf_map_lookup_elem(&draining_netns, &netns);
	return since && now - *since < drain_window_ns;
}

/* The inline ranges against a peer address in network order (IPv4: words[0] only). */
static __always_inline bool in_inline_ranges(const __u32 *words, __u32 family)
{
	__u32 i;

#pragma unroll
	for (i = 0; i < TCPWHY_LB_INLINE_MAX; i++) {
		if (i >= lb_inline_count)
			break;
		if (lb_inline[i].family != family)
			continue;
		if ((words[0] & lb_inline[i].mask[0]) != lb_inline[i].net[0])
			continue;
		if (family == 4)
			return true;
		if ((words[1] & lb_inline[i].mask[1]) == lb_inline[i].net[1] &&
		    (words[2] & lb_inline[i].mask[2]) == lb_inline[i].net[2] &&
		    (words[3] & lb_inline[i].mask[3]) == lb_inline[i].net[3])
			return true;
	}
	return false;
}

/* The correlator's rule (CorrelatorConfig::is_lb_peer) on the socket's peer. */
static __always_inline __u8 peer_is_lb(const struct sock_common *c)
{
	struct tcpwhy_lb_key key = {};
	__u32 words[4] = {};
	__u32 w0, w1, w2, v4;

	if (c->skc_family == AF_INET) {
		v4 = c->skc_daddr;
	} else {
		w0 = c->skc_v6_daddr.in6_u.u6_addr32[0];
		w1 = c->skc_v6_daddr.in6_u.u6_addr32[1];
		w2 = c->skc_v6_daddr.in6_u.u6_addr32[2];
		v4 = c->skc_v6_daddr.in6_u.u6_addr32[3];
		if (!(w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff))) {
			/* a plain IPv6 peer */
			if (lb_in_trie) {
				key.prefixlen = 8 + 128;
				key.family = 6;
				__builtin_memcpy(key.addr, &c->skc_v6_daddr, 16);
				if (bpf_map_lookup_elem(&lb_ranges, &key))
					return 1;
			} else {
				words[0] = w0;
				words[1] = w1;
				words[2] = w2;
				words[3] = v4;
				if (in_inline_ranges(words, 6))
					return 1;
			}
			return lb_any_non_loopback && !(w0 == 0 && w1 == 0 && w2 == 0 && v4 == bpf_htonl(1));
		}
	}
	/* IPv4, or IPv4-mapped on a dual-stack socket */
	if (lb_in_trie) {
		key.prefixlen = 8 + 32;
		key.family = 4;
		__builtin_memcpy(key.addr, &v4, 4);
		if (bpf_map_lookup_elem(&lb_ranges, &key))
			return 1;
	} else {
		words[0] = v4;
		if (in_inline_ranges(words, 4))
			return 1;
	}
	return lb_any_non_loopback && (bpf_ntohl(v4) >> 24) != 127;
}

_Static_assert((TCPWHY_TALLY_DIRECT_SLOTS & (TCPWHY_TALLY_DIRECT_SLOTS - 1)) == 0, "a power of two");
_Static_assert((LISTENER_ANSWER_SLOTS & (LISTENER_ANSWER_SLOTS - 1)) == 0, "a power of two");

/* The slot of a 64-bit key in an array of `slots` (a power of two): the top bits of a
 * multiplicative hash, so that the shift follows the array's size. */
static __always_inline __u32 slot_hash(__u64 bits, const __u32 slots)
{
	return (__u32)((bits * 0x9E3779B97F4A7C15ULL) >> (64 - __builtin_ctz(slots)));
}

/* What the mirror says of (netns, port) now, from this CPU's answers while the mirror has not
 * changed since, else from the mirror. */
static __always_inline enum port_role listener_role(__u32 netns, __u16 port)
{
	struct tcpwhy_listener_key k = { .netns = netns, .port = port };
	__u32 gen = listeners_gen, i = slot_hash(((__u64)netns << 16) | port, LISTENER_ANSWER_SLOTS);
	struct listener_answer *a = bpf_map_lookup_elem(&listener_answers, &i);
	enum port_role role;
	__s32 *n;

	if (a && a->netns == netns && a->port == port && a->gen == gen)
		return a->role;
	n = bpf_map_lookup_elem(&listeners, &k);
	if (!n)
		return PORT_NOT_LISTENING;
	role = *n > 0 ? PORT_LISTENING : PORT_STOPPED_LISTENING;
	if (a) {
		a->netns = netns;
		a->port = port;
		a->role = role;
		a->gen = gen;
	}
	return role;
}

/* The listener mirror: count a listener up or down. */
static __always_inline void mirror_listener(__u32 netns, __u16 port, bool up)
{
	struct tcpwhy_listener_key k = { .netns = netns, .port = port };
	__s32 one = 1, *n;

	n = bpf_map_lookup_elem(&listeners, &k);
	if (n)
		__sync_fetch_and_add(n, up ? 1 : -1);
	else if (up)
		bpf_map_update_elem(&listeners, &k, &one, BPF_NOEXIST);
	__sync_fetch_and_add(&listeners_gen, 1);
}

/* An accepted connection proves its port listens: a listener the seed missed is learned here. */
static __always_inline void mirror_accepting(__u32 netns, __u16 port)
{
	struct tcpwhy_listener_key k = { .netns = netns, .port = port };
	__s32 one = 1;

	if (listener_role(netns, port) != PORT_NOT_LISTENING)
		return;
	bpf_map_update_elem(&listeners, &k, &one, BPF_NOEXIST);
	__sync_fetch_and_add(&listeners_gen, 1);
}

/*
 * Submits an event about a connection, saying which side its local port is on when tallying:
 * the correlator meets most connections first at their end, and there the mirror, not a guess
 * from the port numbers, keys it as its tallies are keyed.
 */
static __always_inline void submit_connection_event(struct tcpwhy_event *e)
{
	if (tallying() && e->lport) {
		e->flags |= TCPWHY_F_DIRECTION_KNOWN;
		if (listener_role(e->netns, e->lport) == PORT_NOT_LISTENING)
			e->flags |= TCPWHY_F_OUTBOUND;
	}
	submit_event(e);
}

static __always_inline struct tcpwhy_tally_value *tally_slot(const struct tcpwhy_tally_key *k)
{
	__u64 bits = ((__u64)k->netns << 32) | ((__u32)k->port << 16) | ((__u32)k->outbound << 8) | k->lb;
	__u32 i = slot_hash(bits, TCPWHY_TALLY_DIRECT_SLOTS);
	struct tcpwhy_tally_slot *s = bpf_map_lookup_elem(&tally_direct, &i);
	struct tcpwhy_tally_value *v;
	struct tcpwhy_tally_value zero;

	if (s) {
		if (!s->key.netns) /* free on this CPU: the backend takes it */
			s->key = *k;
		if (s->key.netns == k->netns && s->key.port == k->port && s->key.outbound == k->outbound &&
		    s->key.lb == k->lb)
			return &s->value;
	}
	v = bpf_map_lookup_elem(&tally, k);
	if (v)
		return v;
	__builtin_memset(&zero, 0, sizeof(zero));
	/* NOEXIST: a backend another CPU adds at the same moment keeps its counts */
	bpf_map_update_elem(&tally, k, &zero, BPF_NOEXIST);
	v = bpf_map_lookup_elem(&tally, k);
	if (!v)
		count(&tally_full, 0);
	return v;
}

/* An open (->ESTABLISHED). False: not counted (the map is full); send it instead. */
static __always_inline bool tally_open(const struct sock *sk, bool outbound)
{
	const struct sock_common *c = &sk->__sk_common;
	struct tcpwhy_tally_key k = {};
	struct tcpwhy_tally_value *v;

	k.netns = c->skc_net.net->ns.inum;
	k.outbound = outbound;
	if (outbound) {
		k.port = bpf_ntohs(c->skc_dport);
	} else {
		k.port = c->skc_num;
		mirror_accepting(k.netns, k.port);
	}
	k.lb = peer_is_lb(c);
	v = tally_slot(&k);
	if (!v)
		return false;
	v->opened += 1;
	return true;
}

/* The peer's FIN (ESTABLISHED->CLOSE_WAIT) is an event only when the connection had been quiet
 * (an LB giving up on a request, an upstream's idle close); else the close from CLOSE_WAIT implies
 * it. The quiet time is the receive side's: it only grows after the FIN, so a close from
 * CLOSE_WAIT whose peer FIN was sent is never ordinary either. */
static __always_inline bool peer_fin_is_ordinary(const struct tcp_sock *tp)
{
	return jiffies_delta_ms(jiffies_now(), tp->inet_conn.icsk_ack.lrcvtime) < ordinary_idle_max_ms;
}

/*
 * A local close by FIN: ESTABLISHED->FIN_WAIT1 (local side first) or CLOSE_WAIT->LAST_ACK (after
 * the peer's FIN), in the closing task's context. Counts it and returns true when it is ordinary;
 * false: build the close event as before. Plain loads through the BTF pointer (tp_btf).
 */
static __always_inline bool tally_end(const struct tcp_sock *tp, int oldstate)
{
	const struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	const struct sock_common *c = &sk->__sk_common;
	struct task_struct *task = bpf_get_current_task_btf();
	struct tcpwhy_tally_key k = {};
	struct tcpwhy_tally_value *v;
	__u32 now = jiffies_now(), idle_rx, idle_tx, gap;
	__u64 bytes_tx = tp->bytes_acked;
	__u16 lport;
	__u32 pid;

	if (data_unread(tp->rcv_nxt, tp->copied_seq, oldstate))
		return false;
	if (rst_received(sk) || (task->flags & PF_EXITING))
		return false;
	idle_rx = jiffies_delta_ms(now, tp->inet_conn.icsk_ack.lrcvtime);
	idle_tx = jiffies_delta_ms(now, tp->lsndtime);
	/* classify::idle_gap_ms; after the peer's FIN, the receive side only (peer_fin_is_ordinary) */
	gap = oldstate == TCP_ESTABLISHED && bytes_tx ? (idle_rx < idle_tx ? idle_rx : idle_tx) : idle_rx;
	if (gap >= ordinary_idle_max_ms)
		return false;

	k.netns = c->skc_net.net->ns.inum;
	if (netns_draining(k.netns))
		return false;
	lport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	switch (listener_role(k.netns, lport)) {
	case PORT_NOT_LISTENING:
		k.outbound = 1;
		k.port = bpf_ntohs(c->skc_dport);
		break;
	case PORT_STOPPED_LISTENING:
		return false; /* the port stopped listening: a rollout's or a crash's end */
	case PORT_LISTENING:
		k.port = lport;
		break;
	}
	k.lb = peer_is_lb(c);
	v = tally_slot(&k);
	if (!v)
		return false;
	if (oldstate == TCP_ESTABLISHED) {
		v->closed_local_first += 1;
		v->local_idle_ms += gap;
	} else {
		v->closed_remote_first += 1;
	}
	v->bytes_rx += data_received(tp->bytes_received, oldstate);
	v->bytes_tx += bytes_tx;
	pid = bpf_get_current_pid_tgid() >> 32;
	if (v->pid != pid) {
		v->pid = pid;
		v->cgroup_id = bpf_get_current_cgroup_id();
		bpf_get_current_comm(v->comm, sizeof(v->comm));
		v->owner_ts_ns = bpf_ktime_get_ns();
	}
	if (!v->opts_seen) {
		fill_opts(&v->opts, tp);
		v->opts_seen = 1;
	}
	return true;
}

/*
 * The same question in tcp_close() (fentry, kprobe), just before the state change the state
 * program counts: there the close event is built only for the ends it will not count. Read
 * through probe reads (kprobe pointers are plain numbers). Every condition can only turn from
 * ordinary to not between the two moments (time passes, the socket is locked), never back, so
 * an end is counted or sent, never both.
 */
static __always_inline bool close_will_be_tallied(const struct sock *sk, int state)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	__u32 now = jiffies_now(), idle_rx, idle_tx, gap;
	struct task_struct *task;
	__u32 netns;

	if (!tallying())
		return false;
	if (state_after_close(state, sk) == TCP_CLOSE)
		return false;
	if (is_rst_error(BPF_CORE_READ(sk, sk_err)))
		return false;
	task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, flags) & PF_EXITING)
		return false;
	idle_rx = jiffies_delta_ms(now, BPF_CORE_READ(tp, inet_conn.icsk_ack.lrcvtime));
	idle_tx = jiffies_delta_ms(now, BPF_CORE_READ(tp, lsndtime));
	gap = state == TCP_ESTABLISHED && BPF_CORE_READ(tp, bytes_acked) ? (idle_rx < idle_tx ? idle_rx : idle_tx)
									 : idle_rx;
	if (gap >= ordinary_idle_max_ms)
		return false;
	netns = sk_netns(sk);
	if (netns_draining(netns))
		return false;
	return listener_role(netns, bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport))) !=
	       PORT_STOPPED_LISTENING;
}

#endif /* TCPWHY_LIB_TALLY_BPF_H */
