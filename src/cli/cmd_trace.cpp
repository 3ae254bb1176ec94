// `tcpwhy trace`: stream every TCP connection's lifecycle events on this node.
#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>

#include <bpf/libbpf.h>
#include <fmt/format.h>

#include "tcpwhy/bpf/tracer.h"
#include "commands.h"
#include "tcpwhy/cidr.h"
#include "tcpwhy/correlator.h"
#include "tcpwhy/explain.h"
#include "tcpwhy/format.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/netns.h"
#include "tcpwhy/workload_resolver.h"

namespace tcpwhy::cli {
namespace {

struct TraceArgs {
    bool json = false;
    std::string output;
    double duration_s = 0;
    LbArgs lb;
    bool only_lb = false;
    int port = -1;
    std::string netns;
    int pid = -1;
    bool tracepoints_only = false;
    bool all_states = false;
    bool verbose = false;
    NamingArgs naming;
    std::string pod;        // substring of the pod (or netns/host) name
    std::string namespace_; // Kubernetes namespace, exact
    int nice = kDefaultNice;
};

struct Filter {
    const CorrelatorConfig* lb = nullptr;  // the correlator's rule for what counts as the LB
    bool only_lb = false;
    std::optional<uint16_t> port;
    std::optional<uint32_t> netns;
    std::optional<uint32_t> pid;
    std::string pod;
    std::string namespace_;

    bool keep(const Event& e, const Workload* who) const {
        if (only_lb && !e.lb) return false;
        if (port && e.lport != *port && e.rport != *port) return false;
        if (netns && e.netns != *netns) return false;
        if (pid && e.pid != *pid) return false;
        if (!pod.empty() && (!who || who->name().find(pod) == std::string::npos)) return false;
        if (!namespace_.empty() && (!who || who->namespace_name != namespace_)) return false;
        return true;
    }
};

std::string hostname() {
    std::array<char, 256> buf{};
    gethostname(buf.data(), buf.size() - 1);
    return buf.data();
}

struct Totals {
    std::array<uint64_t, 8> by_type{};
    uint64_t shown = 0;
    uint64_t filtered = 0;
    uint64_t write_errors = 0;
};

void print_summary(const Totals& totals, const KernelCounters& kernel, uint64_t wakeups) {
    uint64_t received = 0;
    for (auto n : totals.by_type) received += n;
    fmt::print(stderr,
               "tcpwhy: {} events (state {}, close {}, reset_sent {}, reset_recv {}, setsockopt {}); {} shown, {} "
               "filtered out\n",
               received, totals.by_type[1], totals.by_type[2], totals.by_type[3], totals.by_type[4], totals.by_type[5],
               totals.shown, totals.filtered);
    fmt::print(stderr, "tcpwhy: dropped {} events (ring buffer full {}, malformed records {}){}\n", kernel.dropped(),
               kernel.dropped_ringbuf_full, kernel.malformed_records,
               kernel.dropped() ? " -- raise --ring-mb" : "");
    uint64_t submitted = 0;
    for (auto n : kernel.emitted) submitted += n;
    // received < submitted only when a run stopped mid-drain: what the count of drops would miss
    fmt::print(stderr, "tcpwhy: the kernel submitted {} events; {} received\n", submitted, received);
    fmt::print(stderr, "tcpwhy: woken by the kernel {} times (the rest: polled every 25 ms)\n", wakeups);
    if (totals.write_errors) fmt::print(stderr, "tcpwhy: {} trace lines could not be written\n", totals.write_errors);
}

int run_trace(const TraceArgs& args, size_t ring_mb) {
    set_libbpf_verbose(args.verbose);

    Filter filter;
    std::string error;
    auto config = correlator_config(args.lb);
    if (!config) return kExitUsage;
    filter.lb = &*config;
    filter.only_lb = args.only_lb;
    if (args.port >= 0) filter.port = static_cast<uint16_t>(args.port);
    if (args.pid >= 0) filter.pid = static_cast<uint32_t>(args.pid);
    filter.pod = args.pod;
    filter.namespace_ = args.namespace_;
    if (args.naming.no_names && (!args.pod.empty() || !args.namespace_.empty())) {
        print_error("--pod and --namespace need names", "drop --no-names");
        return kExitUsage;
    }
    if (!args.netns.empty()) {
        filter.netns = resolve_netns(args.netns, &error);
        if (!filter.netns) {
            print_error(error);
            return kExitUsage;
        }
    }
    if (!valid_ring_mb(ring_mb)) return kExitUsage;

    std::unique_ptr<WorkloadResolver> resolver = make_resolver(args.naming, &error);
    if (!resolver && !args.naming.no_names) {
        print_error(error);
        return kExitUsage;
    }

    std::ofstream out_file;
    if (!args.output.empty()) {
        out_file.open(args.output, std::ios::out | std::ios::trunc);
        if (!out_file) {
            print_error(fmt::format("cannot write trace file {}: {}", args.output, strerror(errno)),
                        "choose a writable path for -o");
            return kExitUsage;
        }
    }

    install_stop_handlers();
    std::unique_ptr<Tracer> tracer;
    try {
        TracerOptions options;
        options.ring_bytes = ring_mb << 20;
        options.allow_fentry = options.allow_kprobe = !args.tracepoints_only;
        options.all_state_changes = args.all_states;
        tracer = Tracer::start(options);
    } catch (const TracerError& e) {
        print_error(e.what(), e.fix());
        return kExitFailure;
    }
    lower_cpu_priority(args.nice);

    WallClock clock = WallClock::now();
    if (out_file) {
        TraceHeader header;
        utsname u{};
        uname(&u);
        header.hostname = hostname();
        header.kernel = u.release;
        header.mono_start_ns = clock.mono_ns;
        header.wall_start_ns = clock.wall_ns;
        header.lb_ranges = config->lb_ranges.to_string();
        out_file << to_json_line(header) << '\n';
    }
    fmt::print(stderr, "tcpwhy: tracing TCP on {} (close via {}; LB {}). Ctrl-C to stop.\n",
               tracer->features().release, tracer->attach_summary(), config->describe_lb());
    if (!args.json) fmt::print("{}\n", format_event_header());
    std::fflush(stdout);

    // The same correlator `tcpwhy report` runs: live verdicts as they are reached.
    Correlator correlator(*config);
    if (resolver) {
        resolver->scan(WallClock::now().mono_ns);
        correlator.set_workloads(resolver->table());
    }
    // Names go into the trace ahead of the events that need them, so `report` names them too.
    auto write_workloads = [&] {
        if (!resolver) return;
        for (const auto& record : resolver->take_changes()) {
            if (!out_file && !args.json) continue;
            std::string line = to_json_line(record);
            if (out_file) out_file << line << '\n';
            if (args.json) fmt::print("{}\n", line);
        }
    };
    write_workloads();
    auto next_verdict_check = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    auto print_verdicts = [&] {
        for (const auto& update : correlator.take_live_updates(WallClock::now().mono_ns)) {
            // Findings carry names from other processes: nothing in them reaches the terminal as a control.
            std::string line = terminal_safe_text(explain::live_line(update));
            if (args.json) fmt::print(stderr, "tcpwhy: {}\n", line);  // stdout stays pure JSON Lines
            else fmt::print("{}\n", line);
        }
    };

    Totals totals;
    uint64_t drops_seen = 0;
    // duration 0 means "until stopped": a deadline far beyond any run
    auto deadline = std::chrono::steady_clock::now() +
                    (args.duration_s > 0 ? std::chrono::milliseconds(static_cast<int64_t>(args.duration_s * 1000))
                                         : std::chrono::hours(24 * 365 * 10));
    auto next_drop_check = std::chrono::steady_clock::now();
    auto sink = [&](Event& e) {
        e.lb = filter.lb->is_lb_peer(e.raddr);
        totals.by_type[static_cast<size_t>(e.type) & 7]++;
        const Workload* who = resolver ? resolver->resolve(e, e.ts_ns) : nullptr;
        if (!filter.keep(e, who)) {
            totals.filtered++;
            return;
        }
        correlator.on_event(e);  // findings follow the filters: --netns pod explains that pod
        totals.shown++;
        write_workloads();
        std::string json = out_file || args.json ? to_json_line(e) : std::string();
        if (out_file) {
            out_file << json << '\n';
            if (!out_file) {
                totals.write_errors++;
                out_file.clear();
            }
        }
        if (args.json) {
            json += '\n';
            fwrite_unlocked(json.data(), 1, json.size(), stdout);  // one thread writes stdout
        } else {
            fmt::print("{}\n", format_event_line(e, clock, who ? who->name() : std::string()));
        }
    };

    while (!stop_requested()) {
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline) break;
        tracer->poll(25, sink);
        if (now >= next_verdict_check) {
            next_verdict_check = now + std::chrono::seconds(1);
            correlator.expire(WallClock::now().mono_ns);
            if (resolver) resolver->tick(WallClock::now().mono_ns);
            write_workloads();
            print_verdicts();
        }
        std::fflush(stdout);
        if (now >= next_drop_check) {
            next_drop_check = now + std::chrono::seconds(1);
            auto dropped = tracer->counters().dropped();
            if (dropped > drops_seen) {
                fmt::print(stderr, "tcpwhy: WARNING {} events dropped in the kernel so far (ring buffer full)\n",
                           dropped);
                drops_seen = dropped;
            }
        }
    }
    tracer->poll(0, sink);  // what arrived before the stop
    correlator.expire(WallClock::now().mono_ns);
    print_verdicts();
    std::fflush(stdout);
    if (out_file) out_file.flush();
    print_summary(totals, tracer->counters(), tracer->wakeups());
    return kExitOk;
}

}  // namespace

Runner add_trace(CLI::App& app) {
    auto* sub = app.add_subcommand(
        "trace",
        "Stream TCP connection lifecycle events: state changes, local closes (with how long the\n"
        "connection sat idle), resets sent (with the kernel's reason) and received, and\n"
        "timeout-related setsockopt calls. Addresses are from the local socket's side.\n\n"
        "Examples:\n"
        "  tcpwhy trace --only-lb                 # only peers in the LB ranges\n"
        "  tcpwhy trace --netns pod --port 8080   # one namespace (ip netns name) and port\n"
        "  tcpwhy trace -o /tmp/t.jsonl --duration 60   # record a trace for `tcpwhy report`");
    auto args = std::make_shared<TraceArgs>();
    auto ring_mb = std::make_shared<size_t>(8);
    sub->add_flag("--json", args->json, "Print JSON Lines on stdout instead of aligned text");
    sub->add_option("-o,--output", args->output, "Also write the JSONL trace (postmortem format) to FILE");
    sub->add_option("--duration", args->duration_s, "Stop after S seconds (default: until Ctrl-C/SIGTERM)")
        ->check(CLI::NonNegativeNumber);
    add_lb_options(*sub, args->lb);
    sub->add_flag("--only-lb", args->only_lb, "Show only connections whose peer is in an LB range");
    sub->add_option("--port", args->port, "Show only connections with this local or remote port")
        ->check(CLI::Range(0, 65535));
    sub->add_option("--netns", args->netns, "Show only this network namespace (inode, or name from `ip netns`)");
    sub->add_option("--pid", args->pid, "Show only sockets owned by this process")->check(CLI::NonNegativeNumber);
    sub->add_option("--pod", args->pod, "Show only workloads whose name contains this (pod, `ip netns` name, host)");
    sub->add_option("--namespace", args->namespace_, "Show only pods in this Kubernetes namespace");
    add_naming_options(*sub, args->naming);
    sub->add_option("--ring-mb", *ring_mb, "Ring buffer size in MiB (power of two)")->capture_default_str();
    add_nice_option(*sub, args->nice);
    sub->add_flag("--tracepoints-only", args->tracepoints_only, "Do not use fentry/kprobe even where available");
    sub->add_flag("--all-states", args->all_states,
                  "Show every state change (SYN_SENT->ESTABLISHED, FIN_WAIT1->FIN_WAIT2, ...), not only the\n"
                  "opening, first close, end and listener changes that findings use; costs more per connection");
    sub->add_flag("-v,--verbose", args->verbose, "Show libbpf's log (verifier output on load failures)");
    return [args, ring_mb] { return run_trace(*args, *ring_mb); };
}

}  // namespace tcpwhy::cli
