#include "tcpwhy/daemon/capabilities.h"

#include <dirent.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace tcpwhy::daemon {
namespace {

// linux/capability.h, in order; numbers past the table print as cap_N.
constexpr std::array<const char*, 41> kCapabilityNames = {
    "cap_chown",          "cap_dac_override",   "cap_dac_read_search", "cap_fowner",        "cap_fsetid",
    "cap_kill",           "cap_setgid",         "cap_setuid",          "cap_setpcap",       "cap_linux_immutable",
    "cap_net_bind_service", "cap_net_broadcast", "cap_net_admin",      "cap_net_raw",       "cap_ipc_lock",
    "cap_ipc_owner",      "cap_sys_module",     "cap_sys_rawio",       "cap_sys_chroot",    "cap_sys_ptrace",
    "cap_sys_pacct",      "cap_sys_admin",      "cap_sys_boot",        "cap_sys_nice",      "cap_sys_resource",
    "cap_sys_time",       "cap_sys_tty_config", "cap_mknod",           "cap_lease",         "cap_audit_write",
    "cap_audit_control",  "cap_setfcap",        "cap_mac_override",    "cap_mac_admin",     "cap_syslog",
    "cap_wake_alarm",     "cap_block_suspend",  "cap_audit_read",      "cap_perfmon",       "cap_bpf",
    "cap_checkpoint_restore"};

int last_capability() {
    std::ifstream in("/proc/sys/kernel/cap_last_cap");
    int last = 40;
    in >> last;
    return std::clamp(last, 0, 63);
}

size_t thread_count() {
    size_t n = 0;
    if (DIR* d = opendir("/proc/self/task")) {
        while (dirent* e = readdir(d))
            if (e->d_name[0] != '.') ++n;
        closedir(d);
    }
    return n;
}

bool has(uint64_t mask, int cap) { return (mask >> cap) & 1; }

}  // namespace

ThreadPrivileges parse_status_privileges(const std::string& text) {
    ThreadPrivileges p;
    std::istringstream lines(text);
    std::string line;
    auto hex = [](const std::string& l) { return std::stoull(l.substr(l.find(':') + 1), nullptr, 16); };
    while (std::getline(lines, line)) {
        if (line.rfind("CapEff:", 0) == 0) p.effective = hex(line);
        else if (line.rfind("CapPrm:", 0) == 0) p.permitted = hex(line);
        else if (line.rfind("CapInh:", 0) == 0) p.inheritable = hex(line);
        else if (line.rfind("CapAmb:", 0) == 0) p.ambient = hex(line);
        else if (line.rfind("CapBnd:", 0) == 0) p.bounding = hex(line);
        else if (line.rfind("NoNewPrivs:", 0) == 0) p.no_new_privs = std::stoi(line.substr(11)) != 0;
    }
    return p;
}

ThreadPrivileges current_thread_privileges() {
    std::ifstream in(fmt::format("/proc/self/task/{}/status", static_cast<long>(syscall(SYS_gettid))));
    std::stringstream ss;
    ss << in.rdbuf();
    return parse_status_privileges(ss.str());
}

std::string capability_names(uint64_t mask) {
    std::string names;
    for (int cap = 0; cap < 64; ++cap) {
        if (!has(mask, cap)) continue;
        if (!names.empty()) names += ',';
        names += cap < static_cast<int>(kCapabilityNames.size()) ? std::string(kCapabilityNames[cap])
                                                                 : fmt::format("cap_{}", cap);
    }
    return names.empty() ? "none" : names;
}

CapabilityDrop drop_capabilities_except(const std::vector<int>& keep) {
    CapabilityDrop result;
    auto fail = [&](std::string message) {
        result.error = std::move(message);
        result.after = current_thread_privileges();
        return result;
    };
    if (size_t threads = thread_count(); threads != 1)
        return fail(fmt::format("{} threads run already; the others would keep every capability they have", threads));
    ThreadPrivileges before = current_thread_privileges();
    uint64_t keep_mask = 0;
    for (int cap : keep) keep_mask |= uint64_t{1} << cap;
    keep_mask &= before.permitted;  // capset cannot add what the thread does not have

    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        return fail(fmt::format("cannot clear the ambient set: {}", strerror(errno)));
    // Only with CAP_SETPCAP, and before capset takes it away.
    if (has(before.effective, kCapSetpcap)) {
        for (int cap = 0; cap <= last_capability(); ++cap) {
            if (has(keep_mask, cap)) continue;
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
                return fail(fmt::format("cannot drop {} from the bounding set: {}", capability_names(uint64_t{1} << cap),
                                        strerror(errno)));
        }
        result.bounding_dropped = true;
    }
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    for (int i = 0; i < 2; ++i) {
        data[i].effective = data[i].permitted = static_cast<uint32_t>(keep_mask >> (32 * i));
        data[i].inheritable = 0;
    }
    if (syscall(SYS_capset, &header, data) != 0) return fail(fmt::format("capset: {}", strerror(errno)));
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return fail(fmt::format("cannot set no_new_privs: {}", strerror(errno)));
    result.after = current_thread_privileges();
    return result;
}

std::string describe_privileges(const ThreadPrivileges& p) {
    std::string text = p.effective == p.permitted
                           ? fmt::format("effective and permitted {}", capability_names(p.effective))
                           : fmt::format("effective {}, permitted {}", capability_names(p.effective),
                                         capability_names(p.permitted));
    if (p.inheritable || p.ambient)
        text += fmt::format(", inheritable {}, ambient {}", capability_names(p.inheritable), capability_names(p.ambient));
    uint64_t extra_bounding = p.bounding & ~p.permitted;
    if (extra_bounding == 0) text += "; bounding set the same";
    else if (p.no_new_privs)
        text += fmt::format("; bounding set also {} (no CAP_SETPCAP to drop them; no_new_privs: an exec cannot gain them)",
                            capability_names(extra_bounding));
    else
        text += fmt::format("; bounding set also {}", capability_names(extra_bounding));
    text += p.no_new_privs ? "; no_new_privs" : "; no_new_privs NOT set";
    return text;
}

}  // namespace tcpwhy::daemon
