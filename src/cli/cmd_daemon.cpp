// `tcpwhy daemon`: its options, what must be checked before anything loads, and the order
// of start-up (attach, list the sockets already open, drop privileges, serve). The daemon
// itself is src/daemon/daemon.cpp; design notes and limits: docs/daemon.md.
#include <sys/stat.h>
#include <unistd.h>

#include <optional>

#include <fmt/format.h>

#include "commands.h"
#include "tcpwhy/bpf/tracer.h"
#include "tcpwhy/daemon/archive.h"
#include "tcpwhy/daemon/capabilities.h"
#include "tcpwhy/daemon/daemon.h"
#include "tcpwhy/daemon/server.h"
#include "tcpwhy/daemon/units.h"
#include "tcpwhy/log.h"
#include "tcpwhy/session.h"

namespace tcpwhy::cli {
namespace {

using namespace tcpwhy::daemon;

constexpr const char* kVersion = "0.1.0";
// How often the daemon lists the open connections for their idle times (top's rows): a walk of
// every process's open files in the kernel, so less often than top's own 5 s.
constexpr uint64_t kDaemonLiveSampleIntervalNs = 10'000'000'000;

struct DaemonArgs {
    std::string archive = "/var/lib/tcpwhy/archive";
    std::string segment_size = "16M";
    std::string segment_age = "10m";
    std::string archive_max = "1G";
    std::string archive_max_age = "7d";
    std::string archive_min_free = "20%";
    std::string metrics_addr = "[::]:9090";
    size_t metrics_max_backends = 200;
    std::string socket = "/run/tcpwhy/tcpwhy.sock";
    LbArgs lb;
    NamingArgs naming;
    size_t ring_mb = 8;
    bool tracepoints_only = false;
    bool keep_capabilities = false;
    bool verbose = false;
    int nice = kDefaultNice;
};

std::optional<ArchiveLimits> parse_archive_limits(const DaemonArgs& args) {
    ArchiveLimits limits;
    struct Flag {
        const char* name;
        const std::string& text;
        uint64_t* out;
        bool duration;
    };
    // --archive-min-free: a size, or a share of the filesystem ("20%").
    limits.min_free_bytes = 0;
    limits.min_free_percent = 0;
    std::string min_free_size = args.archive_min_free;
    if (min_free_size.ends_with('%')) {
        auto percent = parse_size(min_free_size.substr(0, min_free_size.size() - 1));
        if (!percent || *percent >= 100) {
            print_error(fmt::format("--archive-min-free {}: not a share of the filesystem", args.archive_min_free),
                        "give a percentage below 100 (20%) or a size (512M)");
            return std::nullopt;
        }
        limits.min_free_percent = static_cast<uint32_t>(*percent);
        min_free_size = "0";
    }
    for (const auto& f : {Flag{"--segment-size", args.segment_size, &limits.segment_bytes, false},
                          Flag{"--segment-age", args.segment_age, &limits.segment_age_s, true},
                          Flag{"--archive-max", args.archive_max, &limits.total_bytes, false},
                          Flag{"--archive-max-age", args.archive_max_age, &limits.max_age_s, true},
                          Flag{"--archive-min-free", min_free_size, &limits.min_free_bytes, false}}) {
        auto value = f.duration ? parse_duration_s(f.text) : parse_size(f.text);
        if (!value) {
            print_error(fmt::format("{} {}: not a {}", f.name, f.text, f.duration ? "duration" : "size"),
                        f.duration ? "use seconds or a unit: 90s, 30m, 12h, 7d" : "use bytes or a unit: 64K, 16M, 1G");
            return std::nullopt;
        }
        *f.out = *value;
    }
    if (limits.segment_bytes == 0 || limits.segment_age_s == 0 || limits.total_bytes < 2 * limits.segment_bytes) {
        print_error(fmt::format("--archive-max {} must hold at least two segments of --segment-size {}",
                                args.archive_max, args.segment_size),
                    "raise --archive-max or lower --segment-size (both non-zero)");
        return std::nullopt;
    }
    return limits;
}

// Removes the socket file however the daemon ends but kill -9; the next start replaces a stale one.
struct SocketFile {
    std::string path;
    ~SocketFile() {
        if (!path.empty()) unlink(path.c_str());
    }
};

int run_daemon(const DaemonArgs& args) {
    set_libbpf_verbose(args.verbose);
    std::string error;
    auto config = correlator_config(args.lb);
    if (!config) return kExitUsage;
    if (!valid_ring_mb(args.ring_mb)) return kExitUsage;
    auto limits = parse_archive_limits(args);
    if (!limits) return kExitUsage;
    // The API client parses what the API server sends: its thread starts after the drop below.
    std::shared_ptr<KubeApiClient> kube_api;
    std::unique_ptr<WorkloadResolver> resolver = make_resolver(args.naming, &error, &kube_api);
    if (!resolver && !args.naming.no_names) {
        print_error(error);
        return kExitUsage;
    }

    // Everything that can be bad input is checked before the programs load: the
    // archive directory, a port in use, a second daemon on the socket.
    TraceHeader header = local_trace_header(*config);
    std::unique_ptr<Archive> archive;
    if (args.archive != "none") {
        archive = Archive::open(args.archive, *limits, header, &error);
        if (!archive) {
            print_error(error, "choose a writable --archive DIR (or --archive none)");
            return kExitUsage;
        }
        for (const auto& why : archive->refused()) log::warn(fmt::format("archive: {}", why));
    }
    Fd http_listener;
    if (args.metrics_addr != "off") {
        http_listener = listen_tcp(args.metrics_addr, &error);
        if (!http_listener) {
            print_error(error, "choose a free HOST:PORT with --metrics-addr (or --metrics-addr off)");
            return kExitUsage;
        }
    }
    Fd unix_listener;
    if (args.socket != "off") {
        auto slash = args.socket.rfind('/');
        if (slash != std::string::npos && slash > 0) mkdir(args.socket.substr(0, slash).c_str(), 0700);
        unix_listener = listen_unix(args.socket, &error);
        if (!unix_listener) {
            print_error(error, "choose another --socket PATH, or stop the other daemon");
            return kExitUsage;
        }
    }
    SocketFile socket_file{unix_listener ? args.socket : ""};

    install_stop_handlers();
    std::unique_ptr<Tracer> tracer;
    try {
        TracerOptions options;
        options.ring_bytes = args.ring_mb << 20;
        options.allow_fentry = options.allow_kprobe = !args.tracepoints_only;
        tally_by(options, *config);
        tracer = Tracer::start(options);
    } catch (const TracerError& e) {
        print_error(e.what(), e.fix());
        return kExitFailure;
    }
    lower_cpu_priority(args.nice);

    SessionOptions session_options;
    session_options.config = *config;
    session_options.shared = true;  // the server thread reads the view
    session_options.servers = server_detection(args.naming);
    session_options.header = header;  // the one the archive's segments start with
    // The open connections' idle times for `top --connect`, from the iterator the tracer made
    // before the capability drop below (the held sockets: no setns() needed after it).
    session_options.live_sample_interval_ns = kDaemonLiveSampleIntervalNs;
    Session session(std::move(tracer), std::move(resolver), std::move(session_options));
    Daemon daemon(session, std::move(archive),
                  DaemonSettings{args.metrics_max_backends, kVersion});

    // After attach, so a connection is either listed here or seen by the programs (or both).
    ExistingSockets existing = session.start();
    for (const auto& why : existing.errors) log::warn(fmt::format("socket iterator: {}", why));

    // Everything that needed privilege is done: programs attached, namespaces walked,
    // sockets bound. CAP_BPF stays so the drop and emit counters (BPF map reads) keep
    // working on kernels that check it for every bpf() call (before 6.5, unprivileged BPF off).
    // Before any thread starts: capabilities belong to threads.
    // CAP_SYS_PTRACE stays while names are resolved or servers detected: reading another
    // process's /proc/PID/ns/net, exe, root, environ and maps needs it (the ptrace access
    // check), and pods come and go.
    std::vector<int> keep{kCapBpf};
    if (session.resolver() || session.servers()) keep.push_back(kCapSysPtrace);
    std::string privileges = describe_privileges(current_thread_privileges());
    if (!args.keep_capabilities) {
        CapabilityDrop drop = drop_capabilities_except(keep);
        if (!drop.error.empty()) {
            print_error(fmt::format("could not drop capabilities: {}", drop.error),
                        "report this; --keep-capabilities runs without dropping (debugging only)");
            return kExitFailure;
        }
        privileges = describe_privileges(drop.after);
    }
    // Threads that parse outside input (the API client, the servers, exports) start from here on.
    if (kube_api) kube_api->start();

    log::info(fmt::format(
        "daemon tracing TCP on {} (close via {}; LB {}); {} connections existed in {} namespaces; "
        "metrics http://{}/metrics; socket {}; archive {}; capabilities: {}",
        session.status().kernel, session.status().attach, config->describe_lb(), existing.events.size(),
        existing.namespaces, http_listener ? local_address(http_listener) : "off", args.socket, args.archive,
        privileges));
    daemon.set_existing_connections(existing.events.size());
    return daemon.run(std::move(http_listener), std::move(unix_listener), [] { return stop_requested(); });
}

}  // namespace

Runner add_daemon(CLI::App& app) {
    auto* sub = app.add_subcommand(
        "daemon",
        "Trace continuously (one per node, e.g. as a DaemonSet): keep the JSONL trace in a rotating,\n"
        "compressed archive, serve Prometheus metrics and /healthz over HTTP, and serve `tcpwhy top\n"
        "--connect` and `tcpwhy export` on a Unix socket. Stops cleanly on SIGTERM/SIGINT.\n\n"
        "Examples:\n"
        "  tcpwhy daemon                                        # the defaults below\n"
        "  tcpwhy daemon --archive /var/lib/tcpwhy/archive --archive-max 2G --metrics-addr 127.0.0.1:9090\n"
        "  tcpwhy export --since 30m --gzip > incident.jsonl.gz   # then: tcpwhy report incident.jsonl.gz");
    auto args = std::make_shared<DaemonArgs>();
    sub->add_option("--archive", args->archive, "Archive directory for the trace segments ('none': keep no archive)")
        ->capture_default_str();
    sub->add_option("--segment-size", args->segment_size, "Start a new segment past this compressed size (64K, 16M)")
        ->capture_default_str();
    sub->add_option("--segment-age", args->segment_age, "Start a new segment after this long (90s, 10m, 1h)")
        ->capture_default_str();
    sub->add_option("--archive-max", args->archive_max, "Total archive size; the oldest segments are deleted first")
        ->capture_default_str();
    sub->add_option("--archive-max-age", args->archive_max_age, "Delete segments older than this (0: no age limit)")
        ->capture_default_str();
    sub->add_option("--archive-min-free", args->archive_min_free,
                    "Free space to leave on the archive's filesystem, a size or a share (20%: the kubelet\n"
                    "evicts pods below 10-15%): old segments go, then archiving pauses")
        ->capture_default_str();
    sub->add_option("--metrics-addr", args->metrics_addr,
                    "HOST:PORT for /metrics and /healthz ([::]: IPv6 and IPv4, 0.0.0.0: IPv4 only; 'off': none;\n"
                    "port 0: any free port, printed at start)")
        ->capture_default_str();
    sub->add_option("--metrics-max-backends", args->metrics_max_backends,
                    "At most this many (namespace, pod, port) label sets; the rest are folded into \"_other\"")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    sub->add_option("--socket", args->socket, "Unix socket (mode 0600) for `top --connect` and `export` ('off': none)")
        ->capture_default_str();
    add_lb_options(*sub, args->lb);
    add_naming_options(*sub, args->naming);
    sub->add_option("--ring-mb", args->ring_mb, "Ring buffer size in MiB (power of two)")->capture_default_str();
    add_nice_option(*sub, args->nice);
    sub->add_flag("--tracepoints-only", args->tracepoints_only, "Do not use fentry/kprobe even where available");
    sub->add_flag("--keep-capabilities", args->keep_capabilities,
                  "Do not drop capabilities after attaching (debugging only)");
    sub->add_flag("-v,--verbose", args->verbose, "Show libbpf's log (verifier output on load failures)");
    return [args] { return run_daemon(*args); };
}

}  // namespace tcpwhy::cli
