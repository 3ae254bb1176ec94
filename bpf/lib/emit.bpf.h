/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The ring buffer every program writes and the counters userspace reads. Each map says who
 * writes and who reads it. Only tcpwhy.bpf.c includes this (the maps live in one object).
 */
#ifndef TCPWHY_LIB_EMIT_BPF_H
#define TCPWHY_LIB_EMIT_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "tcpwhy/abi.h"

/* wake userspace only once this much data waits; otherwise it polls on a short timer */
const volatile __u64 wakeup_bytes = 1 << 20;

/* Written by every program (reserve_event/submit_event); read by userspace's ring reader. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by userspace before load */
} events SEC(".maps");

/* Events that could not be emitted, by enum tcpwhy_drop_reason. Written here; read by
 * userspace's counters (trace's summary, the daemon's drop metric). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPWHY_DROP__MAX);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* Events emitted, by enum tcpwhy_event_type. Written by submit_event; read by userspace's counters. */
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

#endif /* TCPWHY_LIB_EMIT_BPF_H */
