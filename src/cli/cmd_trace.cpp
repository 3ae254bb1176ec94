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
#include "tcpwhy/log.h"
#include "tcpwhy/netns.h"
#include "tcpwhy/session.h"
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

// What trace adds to the session: the event lines (text or JSON) on stdout, the JSONL trace
// file, and the live verdicts.
class TraceOutput final : public SessionSink {
public:
    TraceOutput(bool json, std::ofstream* file, WallClock clock) : json_(json), file_(file), clock_(clock) {}

    void on_event(const Event& e, const Workload* who) override {
        std::string line = file_ || json_ ? to_json_line(e) : std::string();
        if (file_) write_file(line);
        if (json_) {
            line += '\n';
            fwrite_unlocked(line.data(), 1, line.size(), stdout);  // one thread writes stdout
        } else {
            fmt::print("{}\n", format_event_line(e, clock_, who ? who->name() : std::string()));
        }
    }
    // Names go into the trace ahead of the events that need them, so `report` names them too.
    void on_workload(const WorkloadRecord& record) override {
        if (!file_ && !json_) return;
        std::string line = to_json_line(record);
        if (file_) write_file(line);
        if (json_) fmt::print("{}\n", line);
    }
    // Servers too: `report` then words the fix for the server that ran here.
    void on_server(const ServerRecord& record) override {
        if (!file_ && !json_) return;
        std::string line = to_json_line(record);
        if (file_) write_file(line);
        if (json_) fmt::print("{}\n", line);
    }
    void on_finding(const FindingUpdate& update) override {
        // Findings carry names from other processes: nothing in them reaches the terminal as a control.
        std::string line = terminal_safe_text(explain::live_line(update));
        if (json_) log::info(line);  // stdout stays pure JSON Lines
        else fmt::print("{}\n", line);
    }
    void on_tick(uint64_t) override { std::fflush(stdout); }

    uint64_t write_errors() const { return write_errors_; }

private:
    void write_file(const std::string& line) {
        *file_ << line << '\n';
        if (!*file_) {
            ++write_errors_;
            file_->clear();
        }
    }

    bool json_;
    std::ofstream* file_;
    WallClock clock_;
    uint64_t write_errors_ = 0;
};

void print_summary(const SessionCounts& counts, const KernelCounters& kernel, uint64_t wakeups,
                   uint64_t write_errors) {
    const auto& t = counts.by_type;
    log::info(fmt::format("{} events (state {}, close {}, reset_sent {}, reset_recv {}, setsockopt {}, existing {}, "
                          "tally {}); {} shown, {} filtered out",
                          counts.received, t[1], t[2], t[3], t[4], t[5], t[6],
                          t[static_cast<size_t>(EventType::tally)], counts.kept, counts.filtered));
    if (kernel.tally_full)
        log::info(fmt::format("{} ordinary connection events sent one by one: the kernel's tally map was full",
                              kernel.tally_full));
    log::info(fmt::format("dropped {} events (ring buffer full {}, malformed records {}){}", kernel.dropped(),
                          kernel.dropped_ringbuf_full, kernel.malformed_records,
                          kernel.dropped() ? " -- raise --ring-mb" : ""));
    uint64_t submitted = 0;
    for (auto n : kernel.emitted) submitted += n;
    uint64_t from_kernel = counts.received - t[static_cast<size_t>(EventType::existing)];
    // received < submitted only when a run stopped mid-drain: what the count of drops would miss
    log::info(fmt::format("the kernel submitted {} events; {} received", submitted, from_kernel));
    log::info(fmt::format("woken by the kernel {} times (the rest: polled every 25 ms)", wakeups));
    if (write_errors) log::warn(fmt::format("{} trace lines could not be written", write_errors));
}

int run_trace(const TraceArgs& args, size_t ring_mb) {
    set_libbpf_verbose(args.verbose);

    std::string error;
    auto config = correlator_config(args.lb);
    if (!config) return kExitUsage;
    SessionOptions session_options;
    session_options.config = *config;
    session_options.live_updates = true;
    session_options.servers = server_detection(args.naming);
    EventFilter& filter = session_options.filter;
    filter.only_lb = args.only_lb;
    if (args.port >= 0) filter.port = static_cast<uint16_t>(args.port);
    if (args.pid >= 0) filter.pid = static_cast<uint32_t>(args.pid);
    filter.pod = args.pod;
    filter.namespace_name = args.namespace_;
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
        tally_by(options, *config);
        tracer = Tracer::start(options);
    } catch (const TracerError& e) {
        print_error(e.what(), e.fix());
        return kExitFailure;
    }
    lower_cpu_priority(args.nice);
    const Tracer& kernel = *tracer;  // the session owns it from here

    Session session(std::move(tracer), std::move(resolver), std::move(session_options));
    if (out_file) out_file << to_json_line(session.header()) << '\n';
    log::info(fmt::format("tracing TCP on {} (close via {}; LB {}). Ctrl-C to stop.", session.status().kernel,
                          session.status().attach, config->describe_lb()));
    if (!args.json) fmt::print("{}\n", format_event_header());
    std::fflush(stdout);

    TraceOutput output(args.json, out_file ? &out_file : nullptr, WallClock::now());
    session.add_sink(output);
    // The sockets already open go first, so connections from before the start are known.
    ExistingSockets existing = session.start();
    for (const auto& why : existing.errors) log::warn(fmt::format("socket iterator: {}", why));

    // duration 0 means "until stopped": a deadline far beyond any run
    auto deadline = std::chrono::steady_clock::now() +
                    (args.duration_s > 0 ? std::chrono::milliseconds(static_cast<int64_t>(args.duration_s * 1000))
                                         : std::chrono::hours(24 * 365 * 10));
    while (!stop_requested() && std::chrono::steady_clock::now() < deadline) {
        session.pump(25);
        std::fflush(stdout);
    }
    session.finish();  // what arrived before the stop
    std::fflush(stdout);
    if (out_file) out_file.flush();
    print_summary(session.counts(), session.kernel(), kernel.wakeups(), output.write_errors());
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
