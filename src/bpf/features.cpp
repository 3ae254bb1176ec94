#include "tcpwhy/bpf/features.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>

#include <fmt/format.h>

#include "tcpwhy/fd.h"

namespace tcpwhy {
namespace {

constexpr int kCapNetAdmin = 12;
constexpr int kCapSysAdmin = 21;
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;

uint64_t effective_caps() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("CapEff:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
    return 0;
}

std::optional<std::string> mount_point_of(const std::string& fstype) {
    std::ifstream mounts("/proc/self/mounts");
    std::string line;
    while (std::getline(mounts, line)) {
        std::istringstream fields(line);
        std::string dev, dir, type;
        fields >> dev >> dir >> type;
        if (type == fstype) return dir;
    }
    return std::nullopt;
}

struct BtfDeleter {
    void operator()(btf* b) const { btf__free(b); }
};
using BtfPtr = std::unique_ptr<btf, BtfDeleter>;

// Loads and attaches an empty fentry program on tcp_close: the only reliable test,
// since some kernels accept the load and refuse the attach, others refuse the load.
bool probe_fentry(const btf* vmlinux, std::string& why_not) {
    int func_id = btf__find_by_name_kind(vmlinux, "tcp_close", BTF_KIND_FUNC);
    if (func_id < 0) {
        why_not = "tcp_close not in kernel BTF";
        return false;
    }
    bpf_insn insns[2] = {};
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = 0
    insns[1].code = BPF_JMP | BPF_EXIT;
    LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_FENTRY,
                .attach_btf_id = static_cast<__u32>(func_id));
    Fd prog(bpf_prog_load(BPF_PROG_TYPE_TRACING, "tcpwhy_probe", "GPL", insns, 2, &opts));
    if (!prog) {
        why_not = fmt::format("load refused: {}", strerror(errno));
        return false;
    }
    Fd link(bpf_raw_tracepoint_open(nullptr, prog.get()));
    if (!link) {
        why_not = fmt::format("attach refused: {}", strerror(errno));
        return false;
    }
    return true;
}

// Loads (never attaches) a tp_btf program on inet_sock_set_state that asks for its socket's
// cookie: the verifier of a kernel before 5.12 refuses the helper in tracing programs.
bool probe_socket_cookie_in_tracing(const btf* vmlinux, std::string& why_not) {
    int target = btf__find_by_name_kind(vmlinux, "btf_trace_inet_sock_set_state", BTF_KIND_TYPEDEF);
    if (target < 0) {
        why_not = "the kernel has no inet_sock_set_state tracepoint in BTF (Linux 5.5)";
        return false;
    }
    bpf_insn insns[5] = {};
    insns[0].code = BPF_LDX | BPF_MEM | BPF_DW;  // r1 = ctx[0], the struct sock *
    insns[0].dst_reg = BPF_REG_1;
    insns[0].src_reg = BPF_REG_1;
    insns[1].code = BPF_JMP | BPF_CALL;  // bpf_get_socket_cookie(r1)
    insns[1].imm = BPF_FUNC_get_socket_cookie;
    insns[2].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = 0
    insns[3].code = BPF_JMP | BPF_EXIT;
    char log[4096] = {};
    LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_RAW_TP,
                .attach_btf_id = static_cast<__u32>(target), .log_level = 1, .log_size = sizeof(log), .log_buf = log);
    Fd prog(bpf_prog_load(BPF_PROG_TYPE_TRACING, "tcpwhy_cookie", "GPL", insns, 4, &opts));
    if (prog) return true;
    if (errno == EPERM) {  // not a verdict on the kernel
        why_not = "not probed: the load was refused (Operation not permitted)";
        return true;
    }
    why_not = std::strstr(log, "unknown func") || std::strstr(log, "not allowed") || std::strstr(log, "invalid func")
                  ? "tracing programs cannot call bpf_get_socket_cookie (Linux 5.12)"
                  : fmt::format("a tracing program asking for a socket's cookie was refused: {}", strerror(errno));
    return false;
}

std::vector<std::string> reset_reason_names(const btf* vmlinux) {
    std::vector<std::string> names;
    int id = btf__find_by_name_kind(vmlinux, "sk_rst_reason", BTF_KIND_ENUM);
    if (id <= 0) return names;
    const btf_type* type = btf__type_by_id(vmlinux, id);
    const struct btf_enum* values = ::btf_enum(type);
    constexpr std::string_view kPrefix = "SK_RST_REASON_";
    for (int i = 0; i < btf_vlen(type); ++i) {
        std::string_view name = btf__name_by_offset(vmlinux, values[i].name_off);
        if (name.starts_with(kPrefix)) name.remove_prefix(kPrefix.size());
        if (values[i].val < 0 || values[i].val > 4096) continue;  // SK_RST_REASON_MAX is a small count
        if (static_cast<size_t>(values[i].val) >= names.size()) names.resize(values[i].val + 1);
        names[values[i].val] = name;
    }
    return names;
}

// The tracepoints of the optional hooks: btf_trace_<name> is a typedef of a pointer to the
// prototype (void *ctx, args...).
constexpr std::array kOptionalTracepoints = {"kfree_skb", "tcp_retransmit_synack", "signal_generate"};

void find_tracepoints(const btf* vmlinux, std::map<std::string, int>& tracepoints) {
    for (const char* name : kOptionalTracepoints) {
        int id = btf__find_by_name_kind(vmlinux, fmt::format("btf_trace_{}", name).c_str(), BTF_KIND_TYPEDEF);
        if (id <= 0) continue;
        const btf_type* ptr = btf__type_by_id(vmlinux, btf__type_by_id(vmlinux, id)->type);
        const btf_type* proto = ptr && btf_is_ptr(ptr) ? btf__type_by_id(vmlinux, ptr->type) : nullptr;
        tracepoints[name] = proto && btf_is_func_proto(proto) ? btf_vlen(proto) - 1 : -1;
    }
}

std::optional<uint32_t> enum_value(const btf* vmlinux, const char* type, std::string_view value_name) {
    int id = btf__find_by_name_kind(vmlinux, type, BTF_KIND_ENUM);
    if (id <= 0) return std::nullopt;
    const btf_type* t = btf__type_by_id(vmlinux, id);
    const struct btf_enum* values = ::btf_enum(t);
    for (int i = 0; i < btf_vlen(t); ++i)
        if (btf__name_by_offset(vmlinux, values[i].name_off) == value_name) return static_cast<uint32_t>(values[i].val);
    return std::nullopt;
}

constexpr std::array kHookedFunctions = {"tcp_close", "tcp_send_active_reset", "tcp_v4_send_reset",
                                         "tcp_v6_send_reset"};

void find_functions_in_btf(const btf* vmlinux, std::map<std::string, FunctionTarget>& functions) {
    for (const char* name : kHookedFunctions) {
        int id = btf__find_by_name_kind(vmlinux, name, BTF_KIND_FUNC);
        if (id <= 0) continue;
        const btf_type* proto = btf__type_by_id(vmlinux, btf__type_by_id(vmlinux, id)->type);
        functions[name].in_btf = true;
        if (proto && btf_is_func_proto(proto)) functions[name].btf_params = btf_vlen(proto);
    }
}

// Symbols renamed by the compiler (tcp_v4_send_reset.isra.0) do not count: kprobes attach by name.
void find_functions_in_kallsyms(std::map<std::string, FunctionTarget>& functions) {
    std::ifstream syms("/proc/kallsyms");
    std::string address, type, name;
    while (syms >> address >> type >> name) {
        syms.ignore(std::numeric_limits<std::streamsize>::max(), '\n');  // module column
        for (const char* wanted : kHookedFunctions)
            if (name == wanted) functions[name].in_kallsyms = true;
    }
}

bool probe_kprobe(const std::map<std::string, FunctionTarget>& functions, std::string& why_not) {
    if (!std::filesystem::exists("/sys/bus/event_source/devices/kprobe/type")) {
        why_not = "kernel built without kprobes (no kprobe PMU)";
        return false;
    }
    auto close = functions.find("tcp_close");
    if (close != functions.end() && close->second.in_kallsyms) return true;
    why_not = "tcp_close not in /proc/kallsyms";
    return false;
}

}  // namespace

std::string KernelFeatures::below_minimum() const {
    if (!socket_cookie_in_tracing) return socket_cookie_why_not;
    return {};
}

KernelFeatures probe_kernel_features() {
    KernelFeatures f;
    utsname u{};
    if (uname(&u) == 0) f.release = u.release;
    f.btf = std::filesystem::exists("/sys/kernel/btf/vmlinux");
    f.kernel_config = std::filesystem::exists("/proc/config.gz") ||
                      std::filesystem::exists("/boot/config-" + f.release);
    f.root = geteuid() == 0;
    uint64_t caps = effective_caps();
    auto has = [caps](int cap) { return (caps >> cap) & 1; };
    f.cap_bpf = has(kCapBpf);
    f.cap_perfmon = has(kCapPerfmon);
    f.cap_sys_admin = has(kCapSysAdmin);
    f.cap_net_admin = has(kCapNetAdmin);
    f.cgroup2_path = mount_point_of("cgroup2");
    f.tracefs_path = mount_point_of("tracefs");

    BtfPtr vmlinux(f.btf ? btf__load_vmlinux_btf() : nullptr);
    if (vmlinux) {
        f.reset_reason_names = reset_reason_names(vmlinux.get());
        find_functions_in_btf(vmlinux.get(), f.functions);
        find_tracepoints(vmlinux.get(), f.tracepoints);
        f.listen_overflow_drop_reason =
            enum_value(vmlinux.get(), "skb_drop_reason", "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW");
        if (f.can_trace()) {
            f.fentry = probe_fentry(vmlinux.get(), f.fentry_why_not);
            f.socket_cookie_in_tracing = probe_socket_cookie_in_tracing(vmlinux.get(), f.socket_cookie_why_not);
        } else {
            f.socket_cookie_in_tracing = true;  // unknown: the privilege check speaks first
            f.fentry_why_not = "not probed: no CAP_BPF/CAP_PERFMON";
        }
    } else {
        f.fentry_why_not = "no kernel BTF";
    }
    find_functions_in_kallsyms(f.functions);
    f.kprobe = probe_kprobe(f.functions, f.kprobe_why_not);
    return f;
}

}  // namespace tcpwhy
