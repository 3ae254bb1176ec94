// What the running kernel offers tcpwhy: probed once, before anything loads.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace tcpwhy {

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
    bool kprobe = false;             // the kprobe PMU exists and tcp_close is probeable
    std::string kprobe_why_not;
    // Names of enum sk_rst_reason values without the SK_RST_REASON_ prefix, indexed by
    // value; empty when the kernel has no reset reasons (before 6.10).
    std::vector<std::string> reset_reason_names;

    // Enough privilege to load tracing programs: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
    bool can_trace() const { return cap_sys_admin || (cap_bpf && cap_perfmon); }
};

KernelFeatures probe_kernel_features();

}  // namespace tcpwhy
