// `tcpwhy doctor`: can this node be traced, and by which attach path?
#include <unistd.h>

#include <fmt/format.h>

#include "tcpwhy/bpf/tracer.h"
#include "commands.h"
#include "tcpwhy/format.h"

namespace tcpwhy::cli {
namespace {

// How many of the kernel's reset reasons tcpwhy names, and which it does not know (a kernel newer
// than this tcpwhy: they show as UNRECOGNISED in traces).
std::string reset_reasons_text(const std::vector<std::string>& kernel_names) {
    if (kernel_names.empty()) return "none in this kernel: inferred from socket state";
    std::string unknown;
    for (const auto& name : kernel_names)
        if (!name.empty() && name != "MAX" && !reset_reason_from_string(name)) unknown += (unknown.empty() ? "" : ", ") + name;
    std::string text = fmt::format("enum sk_rst_reason, {} names decoded from BTF", kernel_names.size());
    if (!unknown.empty()) text += fmt::format("; unknown to this tcpwhy (shown as UNRECOGNISED): {}", unknown);
    return text;
}

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

// Names: what a scan of this node finds and what it had to skip. Never fails doctor.
void report_naming(const NamingArgs& naming) {
    fmt::print("names (pod, container, namespace):\n");
    auto row = [](std::string_view name, const std::string& value) { fmt::print("  {:<16} {}\n", name, value); };
    if (naming.no_names) {
        row("resolution", "off (--no-names)");
        return;
    }
    std::string error;
    auto resolver = make_resolver(naming, &error);
    if (!resolver) {
        row("resolution", "OFF: " + error);
        return;
    }
    resolver->scan(WallClock::now().mono_ns);
    const auto& c = resolver->counters();
    auto table = resolver->table();
    size_t by_kind[6] = {};
    for (const auto& [netns, w] : table->netns_entries()) by_kind[static_cast<int>(w.kind)]++;
    row("host root", naming.host_root);
    row("processes", fmt::format("{} read in {:.1f} ms; host netns {}", c.processes_seen, c.last_scan_us / 1000.0,
                                 resolver->host_netns() ? std::to_string(resolver->host_netns()) : "UNKNOWN"));
    row("pods", fmt::format("{} in {} ({} entries not <namespace>_<pod>_<uid>)", c.pods,
                            resolver->options().pod_logs,
                            c.malformed_pod_dirs));
    row("namespaces", fmt::format("{} known: {} pods, {} `ip netns` names, {} containers, {} processes",
                                  table->netns_count(), by_kind[static_cast<int>(WorkloadKind::pod)],
                                  by_kind[static_cast<int>(WorkloadKind::netns)],
                                  by_kind[static_cast<int>(WorkloadKind::container)],
                                  by_kind[static_cast<int>(WorkloadKind::process)]));
    row("cgroups", c.cgroup2_root.empty()
                       ? std::string("no cgroup v2 tree: hostNetwork pods are named by process only")
                       : fmt::format("{} container/pod cgroups under {} ({} malformed kubepods names)",
                                     table->cgroup_count(), c.cgroup2_root, c.malformed_cgroups));
    row("skipped", fmt::format("{} permission denied, {} vanished, {} unreadable{}", c.permission_denied,
                               c.vanished_pids, c.unreadable_entries,
                               c.first_problem.empty() ? "" : " (first: " + terminal_safe(c.first_problem) + ")"));
    if (!naming.kube_api) {
        row("kube api", "off (--kube-api adds labels, pod IPs and owners)");
        return;
    }
    // Give the API a few seconds to answer the first list.
    for (int i = 0; i < 50; ++i) {
        if (resolver->kube_api()->status().synced || resolver->kube_api()->status().errors) break;
        usleep(100'000);
    }
    auto api = resolver->kube_api()->status();
    row("kube api", api.synced ? fmt::format("synced: {} pods on this node", api.pods)
                               : fmt::format("NOT SYNCED ({} errors): {}", api.errors, api.last_error));
}

int run_doctor(bool force_tracepoints, const NamingArgs& naming) {
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
    row("reset reasons", reset_reasons_text(f.reset_reason_names));
    row("minimum", !f.can_trace()                ? std::string("not probed: no CAP_BPF/CAP_PERFMON")
                   : f.below_minimum().empty() ? std::string("yes (Linux 5.12: the socket cookie in tracing programs)")
                                               : "NO: " + f.below_minimum() + "; tcpwhy needs Linux 5.12 or newer");
    row("fentry", f.fentry ? "yes" : "no: " + f.fentry_why_not);
    row("kprobe", f.kprobe ? "yes" : "no: " + f.kprobe_why_not);

    report_naming(naming);

    try {
        TracerOptions options;
        options.allow_fentry = options.allow_kprobe = !force_tracepoints;
        options.tally = true;  // as trace, top and the daemon run
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
        fmt::print("  {:<12} {}\n", "tally",
                   tracer->tallies() ? "ordinary connections counted per backend in the kernel, one record a "
                                       "second each (trace --all-states sends every state change instead)"
                                     : "off: every connection is sent");
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
    auto naming = std::make_shared<NamingArgs>();
    add_naming_options(*sub, *naming);
    return [force_tp, naming] { return run_doctor(*force_tp, *naming); };
}

}  // namespace tcpwhy::cli
