/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Constants the kernel keeps in headers that vmlinux.h (BTF) cannot carry. */
#ifndef TCPWHY_BPF_H
#define TCPWHY_BPF_H

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

#define SOL_SOCKET 1
#define SOL_TCP 6 /* IPPROTO_TCP */

/* asm-generic/socket.h; alpha, mips, parisc and sparc number these differently. */
#define SO_KEEPALIVE 9
#define SO_LINGER 13
#define SO_RCVTIMEO_OLD 20
#define SO_SNDTIMEO_OLD 21
#define SO_RCVTIMEO_NEW 66
#define SO_SNDTIMEO_NEW 67

/* uapi/linux/tcp.h */
#define TCP_KEEPIDLE 4
#define TCP_KEEPINTVL 5
#define TCP_KEEPCNT 6
#define TCP_LINGER2 8
#define TCP_DEFER_ACCEPT 9
#define TCP_USER_TIMEOUT 18

#define PAGE_SIZE 4096

/* include/linux/sched.h: the task is in do_exit() */
#define PF_EXITING 0x00000004

/* the signals that stop a server (asm-generic/signal.h) */
#define SIGHUP 1
#define SIGINT 2
#define SIGQUIT 3
#define SIGKILL 9
#define SIGTERM 15

#endif /* TCPWHY_BPF_H */
