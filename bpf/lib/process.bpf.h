/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Who is dying and who is being told to stop: the flag on closes that run in an exiting task,
 * and the processes that listen, so that the signal hook can stay silent for everyone else.
 */
#ifndef TCPWHY_LIB_PROCESS_BPF_H
#define TCPWHY_LIB_PROCESS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "tcpwhy/abi.h"
#include "tcpwhy.bpf.h"

/*
 * Processes that put a TCP socket into LISTEN (tgid -> when, ns). Written by the state program at
 * ->LISTEN in the listen(2) caller's context; read by the signal program, which reports a stopping
 * signal only to them. An LRU map: a process that stopped listening long ago ages out, and a pid
 * reused by another process costs at most one extra signal event.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} listener_owners SEC(".maps");

static __always_inline void note_listener_owner(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 now = bpf_ktime_get_ns();

	bpf_map_update_elem(&listener_owners, &tgid, &now, BPF_ANY);
}

static __always_inline bool is_listener_owner(__u32 tgid)
{
	return bpf_map_lookup_elem(&listener_owners, &tgid) != NULL;
}

/*
 * A close in the owner's context that runs from do_exit(): exit_signals() has set PF_EXITING and
 * do_exit() the exit code before exit_files() and the task work that closes the files, so the
 * close itself says how the process ended (a SIGKILL, a segfault, exit(1)), and signal->oom_mm
 * whether the OOM killer chose it. Nothing is read for the closes of live processes but one flag.
 */
static __always_inline void fill_exit_btf(struct tcpwhy_event *e, __u16 *exit_code)
{
	struct task_struct *task = bpf_get_current_task_btf();

	if (!(task->flags & PF_EXITING))
		return;
	e->flags |= TCPWHY_F_TASK_EXITING;
	*exit_code = (__u16)task->exit_code;
	if (task->signal->oom_mm)
		e->flags |= TCPWHY_F_OOM_VICTIM;
}

/* The same for kprobes, whose helpers give the task as a plain address. */
static __always_inline void fill_exit_probed(struct tcpwhy_event *e, __u16 *exit_code)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if (!(BPF_CORE_READ(task, flags) & PF_EXITING))
		return;
	e->flags |= TCPWHY_F_TASK_EXITING;
	*exit_code = (__u16)BPF_CORE_READ(task, exit_code);
	if (BPF_CORE_READ(task, signal, oom_mm))
		e->flags |= TCPWHY_F_OOM_VICTIM;
}

#endif /* TCPWHY_LIB_PROCESS_BPF_H */
