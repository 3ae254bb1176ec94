/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Kernel differences tcpwhy meets, in one place. Each accessor asks BTF (CO-RE) which layout
 * the running kernel has, never a version number; the version named is where the change
 * landed upstream, for the reader. Userspace probes what BTF cannot tell a program (function
 * arity, which hooks load) and passes it in read-only data (src/bpf/tracer.cpp).
 */
#ifndef TCPWHY_CORE_FIXES_BPF_H
#define TCPWHY_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/*
 * The socket's cgroup v2. Since 5.15 sk_cgrp_data holds a plain `struct cgroup *`; before, it
 * was a tagged word (`val`, sharing bits with cgroup v1's classid and prioidx), which tcpwhy
 * does not decode: 0 there, and the owner's cgroup from process-context events names the
 * backend instead.
 *
 * Twins, because the verifier treats the pointers differently: _btf for BTF-typed pointers
 * (tp_btf, fentry), where plain loads are relocated and fault-safe; the other reads through
 * bpf_probe_read (kprobe pointers are plain numbers, and the reset path serves both).
 */
static __always_inline __u64 sk_cgroup_id(const struct sock *sk)
{
	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return 0;
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

static __always_inline __u64 sk_cgroup_id_btf(const struct sock *sk)
{
	struct cgroup *cgrp;

	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return 0;
	cgrp = sk->sk_cgrp_data.cgroup;
	return cgrp ? cgrp->kn->id : 0;
}

/*
 * Reset reasons. 6.10 added `enum sk_rst_reason` and passes it as the third argument of the
 * tcp_send_reset tracepoint and of tcp_v4/v6_send_reset() and tcp_send_active_reset(); its
 * numbering has changed since, so userspace names values from the running kernel's BTF (and
 * before 6.10 the tracepoint also misses timewait and socketless replies: the loader then
 * hooks the functions). -1: this kernel gives none.
 *
 * The tracepoint's arity follows the enum; the functions' arity userspace reads from their BTF
 * prototypes (active_reset_has_reason, reply_reset_has_reason in tcpwhy.bpf.c).
 */
static __always_inline bool kernel_has_reset_reasons(void)
{
	return bpf_core_type_exists(enum sk_rst_reason);
}

#endif /* TCPWHY_CORE_FIXES_BPF_H */
