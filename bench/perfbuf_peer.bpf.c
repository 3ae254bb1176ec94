// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The baseline tcpwhy is measured against in bench/overhead: how the classic tools
 * (tcpstates and the like) watch TCP state changes. A classic tracepoint, and one
 * perf-buffer record per state change, each waking the reader.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct peer_event {
	__u64 ts_ns;
	__u64 skaddr;
	__u32 pid;
	__u16 sport, dport;
	__u16 family;
	__u8 oldstate, newstate;
	__u8 saddr[16], daddr[16];
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

SEC("tracepoint/sock/inet_sock_set_state")
int peer_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct peer_event e = {};

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	e.ts_ns = bpf_ktime_get_ns();
	e.skaddr = (__u64)ctx->skaddr;
	e.pid = bpf_get_current_pid_tgid() >> 32;
	e.sport = ctx->sport;
	e.dport = ctx->dport;
	e.family = ctx->family;
	e.oldstate = ctx->oldstate;
	e.newstate = ctx->newstate;
	/* the verifier allows no offset arithmetic on a tracepoint context: copy as tcpstates does */
	if (ctx->family == 2) {
		bpf_probe_read_kernel(e.saddr, 4, ctx->saddr);
		bpf_probe_read_kernel(e.daddr, 4, ctx->daddr);
	} else {
		bpf_probe_read_kernel(e.saddr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(e.daddr, 16, ctx->daddr_v6);
	}
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
