// Dropping privileges once the kernel programs are attached.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tcpwhy::daemon {

// CAP_* numbers (linux/capability.h) the daemon names.
inline constexpr int kCapDacReadSearch = 2;
inline constexpr int kCapSetpcap = 8;
inline constexpr int kCapNetAdmin = 12;
inline constexpr int kCapSysPtrace = 19;
inline constexpr int kCapSysAdmin = 21;
inline constexpr int kCapPerfmon = 38;
inline constexpr int kCapBpf = 39;

// One thread's privileges as the kernel reports them in /proc/self/task/TID/status.
struct ThreadPrivileges {
    uint64_t effective = 0, permitted = 0, inheritable = 0, ambient = 0, bounding = 0;
    bool no_new_privs = false;
};
// This thread's (the caller's).
ThreadPrivileges current_thread_privileges();
// Parses the Cap*: and NoNewPrivs: lines of a /proc status file's text.
ThreadPrivileges parse_status_privileges(const std::string& status_text);

// "cap_bpf,cap_sys_ptrace" ("none" when empty).
std::string capability_names(uint64_t mask);

struct CapabilityDrop {
    ThreadPrivileges after;
    // Dropping from the bounding set needs CAP_SETPCAP, which a pod with the DaemonSet's
    // capabilities does not have: then the bounding set stays as the runtime gave it, and
    // no_new_privs is what keeps an exec from regaining anything (its permitted set can only
    // shrink: security/commoncap.c).
    bool bounding_dropped = false;
    std::string error;  // empty: every step that this process may take was taken
};

// Leaves only `keep` (CAP_* numbers, where this thread has them) in the effective and
// permitted sets, clears the inheritable and ambient sets, drops everything else from the
// bounding set when CAP_SETPCAP allows, and sets no_new_privs. Capabilities and
// no_new_privs belong to a thread: this refuses (error) when the process has more than one
// thread, since the others would keep what they have.
CapabilityDrop drop_capabilities_except(const std::vector<int>& keep);

// The startup line's account, e.g. "effective and permitted cap_bpf,cap_sys_ptrace;
// bounding set left as given (no CAP_SETPCAP): cap_bpf,...; no_new_privs".
std::string describe_privileges(const ThreadPrivileges& p);

}  // namespace tcpwhy::daemon
