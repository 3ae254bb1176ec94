// What the running kernel offers tcpwhy: probed once, before anything loads.
#pragma once

#include <map>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tcpwhy {

// A kernel function tcpwhy may hook with fentry or kprobe.
struct FunctionTarget {
    bool in_btf = false;       // fentry needs the function in kernel BTF
    bool in_kallsyms = false;  // a kprobe needs the symbol under its plain name
    int btf_params = -1;       // parameter count from BTF (-1 unknown)
};

struct KernelFeatures {
    std::string release;             // uname -r
    bool btf = false;                // /sys/kernel/btf/vmlinux
    bool kernel_config = false;      // /proc/config.gz or /boot/config-*: CONFIG_HZ readable
    bool root = false;
    bool cap_bpf = false, cap_perfmon = false, cap_sys_admin = false, cap_net_admin = false;
    std::optional<std::string> cgroup2_path;  // where cgroup v2 is mounted
    std::optional<std::string> tracefs_path;  // where tracefs is mounted
    bool fentry = false;             // a fentry program on tcp_close loads and attaches
    std::string fentry_why_not;
    // Tracing programs (tp_btf) may call bpf_get_socket_cookie (Linux 5.12): every event is
    // keyed by the socket's cookie, so below that tcpwhy cannot trace at all.
    bool socket_cookie_in_tracing = false;
    std::string socket_cookie_why_not;
    bool kprobe = false;             // the kprobe PMU exists and tcp_close is probeable
    std::string kprobe_why_not;
    // Names of enum sk_rst_reason values without the SK_RST_REASON_ prefix, indexed by
    // value; empty when the kernel has no reset reasons (before 6.10).
    std::vector<std::string> reset_reason_names;
    // tcp_close, tcp_send_active_reset, tcp_v4_send_reset, tcp_v6_send_reset, by name.
    std::map<std::string, FunctionTarget> functions;
    // The tracepoints tcpwhy's optional hooks use, found in BTF (btf_trace_<name>), with their
    // argument count: kfree_skb, tcp_retransmit_synack, signal_generate.
    std::map<std::string, int> tracepoints;
    // The value of SKB_DROP_REASON_TCP_LISTEN_OVERFLOW in this kernel's enum skb_drop_reason
    // (6.16+); unset where a full accept queue drops without naming a reason.
    std::optional<uint32_t> listen_overflow_drop_reason;

    // The reasons and the tracepoint that fires for every reset (timewait, no socket) came
    // together in 6.10; before, tp_btf/tcp_send_reset sees only resets of full sockets.
    bool reset_tracepoint_complete() const { return !reset_reason_names.empty(); }
    // The tracepoint's argument count (its BTF prototype's, the context pointer aside), -1 when absent.
    int tracepoint_args(const std::string& name) const {
        auto it = tracepoints.find(name);
        return it == tracepoints.end() ? -1 : it->second;
    }
    FunctionTarget function(const std::string& name) const {
        auto it = functions.find(name);
        return it == functions.end() ? FunctionTarget{} : it->second;
    }

    // What this kernel lacks of what tcpwhy needs, with the version that brought it; empty when
    // nothing is missing (or it could not be probed without privileges).
    std::string below_minimum() const;

    // Enough privilege to load tracing programs: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
    bool can_trace() const { return cap_sys_admin || (cap_bpf && cap_perfmon); }
};

KernelFeatures probe_kernel_features();

}  // namespace tcpwhy
