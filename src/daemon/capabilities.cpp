#include "tcpwhy/daemon/capabilities.h"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

namespace tcpwhy::daemon {
namespace {

int last_capability() {
    std::ifstream in("/proc/sys/kernel/cap_last_cap");
    int last = 40;
    in >> last;
    return last;
}

std::string capability_name(int cap) {
    switch (cap) {
    case 0: return "cap_chown";
    case 1: return "cap_dac_override";
    case 2: return "cap_dac_read_search";
    case 5: return "cap_kill";
    case 12: return "cap_net_admin";
    case 19: return "cap_sys_ptrace";
    case 21: return "cap_sys_admin";
    case 24: return "cap_sys_resource";
    case 38: return "cap_perfmon";
    case 39: return "cap_bpf";
    default: return fmt::format("cap_{}", cap);
    }
}

}  // namespace

bool drop_capabilities_except(const std::vector<int>& keep, std::string* error) {
    auto kept = [&](int cap) { return std::find(keep.begin(), keep.end(), cap) != keep.end(); };
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
        *error = fmt::format("cannot clear ambient capabilities: {}", strerror(errno));
        return false;
    }
    // The bounding set first: dropping from it needs CAP_SETPCAP, which capset removes next.
    for (int cap = 0; cap <= last_capability(); ++cap) {
        if (kept(cap)) continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
            *error = fmt::format("cannot drop {} from the bounding set: {}", capability_name(cap), strerror(errno));
            return false;
        }
    }
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    for (int cap : keep) {
        data[cap / 32].effective |= 1u << (cap % 32);
        data[cap / 32].permitted |= 1u << (cap % 32);
    }
    if (syscall(SYS_capset, &header, data) != 0) {
        *error = fmt::format("capset: {}", strerror(errno));
        return false;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        *error = fmt::format("cannot set no_new_privs: {}", strerror(errno));
        return false;
    }
    return true;
}

std::string effective_capabilities() {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (syscall(SYS_capget, &header, data) != 0) return "unknown";
    std::string names;
    for (int cap = 0; cap < 64; ++cap)
        if (data[cap / 32].effective & (1u << (cap % 32))) names += (names.empty() ? "" : ",") + capability_name(cap);
    return names.empty() ? "none" : names;
}

}  // namespace tcpwhy::daemon
