// `tcpwhy doctor`: can this node be traced, and by which attach path?
#include <fmt/format.h>

#include "bpf/tracer.h"
#include "cli/commands.h"

namespace tcpwhy::cli {
namespace {

std::string privileges(const KernelFeatures& f) {
    std::string caps;
    auto add = [&](bool has, const char* name) {
        if (!has) return;
        if (!caps.empty()) caps += ", ";
        caps += name;
    };
    add(f.cap_sys_admin, "CAP_SYS_ADMIN");
    add(f.cap_bpf, "CAP_BPF");
    add(f.cap_perfmon, "CAP_PERFMON");
    add(f.cap_net_admin, "CAP_NET_ADMIN");
    return fmt::format("{}{}", f.root ? "root; " : "not root; ", caps.empty() ? "no capabilities" : caps);
}

int run_doctor(bool force_tracepoints) {
    KernelFeatures f = probe_kernel_features();
    auto row = [](std::string_view name, const std::string& value) { fmt::print("  {:<16} {}\n", name, value); };
    fmt::print("tcpwhy doctor\n");
    row("kernel", f.release);
    row("BTF", f.btf ? "yes (/sys/kernel/btf/vmlinux)" : "NO (/sys/kernel/btf/vmlinux missing)");
    row("kernel config", f.kernel_config ? "yes (CONFIG_HZ read from it)"
                                         : "no (/proc/config.gz, /boot/config-*): idle times assume HZ=250");
    row("privileges", privileges(f));
    row("cgroup v2", f.cgroup2_path.value_or("NOT MOUNTED (setsockopt hook off)"));
    row("tracefs", f.tracefs_path.value_or("not mounted (not needed: tcpwhy attaches tp_btf and kprobe via PMU)"));
    row("reset reasons", !f.reset_reason_names.empty()
                             ? fmt::format("enum sk_rst_reason, {} names decoded from BTF", f.reset_reason_names.size())
                             : "none in this kernel: inferred from socket state");
    row("fentry", f.fentry ? "yes" : "no: " + f.fentry_why_not);
    row("kprobe", f.kprobe ? "yes" : "no: " + f.kprobe_why_not);

    try {
        TracerOptions options;
        options.allow_fentry = options.allow_kprobe = !force_tracepoints;
        require_tracing_support(f);
        fmt::print("hooks (loaded and attached now, then detached):\n");
        auto tracer = Tracer::start(options, f);
        bool all = true;
        for (const auto& hook : tracer->hooks()) {
            fmt::print("  {:<12} {}\n", hook.hook, hook.attached.empty() ? "NOT ATTACHED" : hook.attached);
            if (!hook.limitation.empty()) fmt::print("  {:<12}   limited: {}\n", "", hook.limitation);
            for (const auto& why : hook.passed_over) fmt::print("  {:<12}   passed over: {}\n", "", why);
            all = all && !hook.attached.empty();
        }
        fmt::print("result: {}\n", all ? "OK: every hook attached" : "DEGRADED: tracing works without the hooks above");
    } catch (const TracerError& e) {
        fmt::print("result: tcpwhy cannot trace here\n");
        print_error(e.what(), e.fix());
        return kExitFailure;
    }
    return kExitOk;
}

}  // namespace

Runner add_doctor(CLI::App& app) {
    auto* sub = app.add_subcommand("doctor",
                                   "Check that this kernel can be traced: BTF, privileges, mounts, and which attach\n"
                                   "path each hook gets (fentry, kprobe or tracepoint) and why. Exits 1 with a fix\n"
                                   "when tracing cannot work.");
    auto force_tp = std::make_shared<bool>(false);
    sub->add_flag("--tracepoints-only", *force_tp, "Test the tracepoint path even where fentry/kprobe work");
    return [force_tp] { return run_doctor(*force_tp); };
}

}  // namespace tcpwhy::cli
