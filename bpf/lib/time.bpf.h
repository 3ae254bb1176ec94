/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Jiffies to the units the ABI uses. The socket's timestamps (lrcvtime, lsndtime) are jiffies. */
#ifndef TCPWHY_LIB_TIME_BPF_H
#define TCPWHY_LIB_TIME_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

extern int CONFIG_HZ __kconfig __weak;

/* The kernel's HZ: CONFIG_HZ from its config (the loader supplies 250, the common value, when
 * libbpf finds no config to read; `tcpwhy doctor` says so). */
static __always_inline __u32 kernel_hz(void)
{
	return CONFIG_HZ ? CONFIG_HZ : 250;
}

/* Milliseconds from then to now, both jiffies; 0 for a timestamp from the future (none recorded yet). */
static __always_inline __u32 jiffies_delta_ms(__u32 now, __u32 then)
{
	__u32 delta = now - then;
	if ((__s32)delta < 0)
		return 0;
	return (__u64)delta * 1000 / kernel_hz();
}

static __always_inline __u32 jiffies_to_s(unsigned long j)
{
	return j / kernel_hz();
}

static __always_inline __u64 jiffies_to_us(unsigned long j)
{
	return (__u64)j * 1000000 / kernel_hz();
}

static __always_inline __u32 jiffies_now(void)
{
	return (__u32)bpf_jiffies64();
}

#endif /* TCPWHY_LIB_TIME_BPF_H */
