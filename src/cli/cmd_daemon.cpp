// `tcpwhy daemon`: trace continuously on a node; keep a rotating archive of the trace,
// serve Prometheus metrics and /healthz, and answer `tcpwhy top --connect` and
// `tcpwhy export` on a Unix socket. Design notes and limits: docs/daemon.md.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <list>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tcpwhy/bpf/tracer.h"
#include "commands.h"
#include "tcpwhy/daemon/archive.h"
#include "tcpwhy/daemon/capabilities.h"
#include "tcpwhy/bpf/existing_sockets.h"
#include "tcpwhy/daemon/export.h"
#include "tcpwhy/daemon/metrics.h"
#include "tcpwhy/daemon/server.h"
#include "tcpwhy/daemon/units.h"
#include "tcpwhy/correlator.h"
#include "tcpwhy/format.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/live_view.h"

namespace tcpwhy::cli {
namespace {

using namespace tcpwhy::daemon;

constexpr const char* kVersion = "0.1.0";
constexpr int64_t kHealthyLoopAgeMs = 10'000;  // /healthz fails when the event loop has not turned for this long
constexpr size_t kMaxConcurrentExports = 2;

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

int64_t mono_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::string hostname() {
    std::array<char, 256> buf{};
    gethostname(buf.data(), buf.size() - 1);
    return buf.data();
}

// Exports run on threads of their own: a long one must not hold up /healthz or the event loop.
class Exports {
public:
    bool start(std::function<void()> work) {
        std::lock_guard lock(mutex_);
        reap_locked();
        if (running_.size() >= kMaxConcurrentExports) return false;
        auto done = std::make_shared<std::atomic<bool>>(false);
        running_.push_back({std::thread([work = std::move(work), done] {
                                work();
                                done->store(true);
                            }),
                            done});
        return true;
    }
    ~Exports() {
        std::lock_guard lock(mutex_);
        for (auto& r : running_) r.thread.join();
    }

private:
    struct Running {
        std::thread thread;
        std::shared_ptr<std::atomic<bool>> done;
    };
    void reap_locked() {
        for (auto it = running_.begin(); it != running_.end();) {
            if (it->done->load()) {
                it->thread.join();
                it = running_.erase(it);
            } else {
                ++it;
            }
        }
    }
    std::mutex mutex_;
    std::list<Running> running_;
};

std::string error_json(const std::string& message) { return nlohmann::json{{"error", message}}.dump(); }

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

TraceHeader make_header(const CorrelatorConfig& config) {
    // Any pair of readings taken before the first event works as the trace's clock base.
    WallClock clock = WallClock::now();
    utsname u{};
    uname(&u);
    TraceHeader header;
    header.hostname = hostname();
    header.kernel = u.release;
    header.mono_start_ns = clock.mono_ns;
    header.wall_start_ns = clock.wall_ns;
    header.lb_ranges = config.lb_ranges.to_string();
    return header;
}

// Removes the socket file however the daemon ends but kill -9; the next start replaces a stale one.
struct SocketFile {
    std::string path;
    ~SocketFile() {
        if (!path.empty()) unlink(path.c_str());
    }
};

// The running daemon: the tracer's events go to the archive, the live view and the
// metrics; the server thread reads them through http() and control().
class Daemon {
public:
    Daemon(const DaemonArgs& args, const CorrelatorConfig& config, std::unique_ptr<Tracer> tracer,
           std::unique_ptr<Archive> archive, const TraceHeader& header, std::unique_ptr<WorkloadResolver> resolver)
        : args_(args),
          config_(config),
          tracer_(std::move(tracer)),
          archive_(std::move(archive)),
          header_line_(to_json_line(header)),
          resolver_(std::move(resolver)),
          view_(config),
          metrics_(view_.correlator().config()) {
        if (resolver_) {
            view_.correlator().set_workloads(resolver_->table());
            // Every segment starts with the names known so far, so an export of any time range names them.
            if (archive_) archive_->set_preamble([table = resolver_->table()] {
                std::string lines;
                for (const auto& [netns, w] : table->netns_entries())
                    lines += to_json_line(WorkloadRecord{netns, 0, w}) + '\n';
                for (const auto& [cgroup_id, w] : table->cgroup_entries())
                    lines += to_json_line(WorkloadRecord{0, cgroup_id, w}) + '\n';
                return lines;
            });
            resolver_->take_changes();  // the first segment's preamble carries them
        }
        status_.node = header.hostname;
        status_.kernel = header.kernel;
        status_.attach = tracer_->attach_summary();
    }

    // Each event of the session, the socket iterator's first.
    void on_event(Event& e) {
        e.lb = config_.is_lb_peer(e.raddr);
        ++consumed_;
        std::lock_guard lock(mutex_);  // a name lookup may rescan: the server thread reads the names
        if (resolver_) {
            resolver_->resolve(e, e.ts_ns);
            write_workloads();
        }
        if (archive_) archive_->write(to_json_line(e));
        view_.on_event(e);
        metrics_.on_event(e, view_.correlator().backend_of(e));
    }
    // New or changed names go into the archive ahead of the events that need them.
    void write_workloads() {
        for (const auto& record : resolver_->take_changes())
            if (archive_) archive_->write(to_json_line(record));
    }
    void learned_existing(size_t count) {
        std::lock_guard lock(mutex_);
        existing_ = count;
    }

    // Until SIGTERM/SIGINT; then drains the ring buffer, stops the server and exports,
    // finishes the archive and detaches every program.
    int run(Fd http_listener, Fd unix_listener) {
        std::optional<Server> server;
        server.emplace(std::move(http_listener), std::move(unix_listener),
                       ServerHandlers{[this](const std::string& path) { return http(path); },
                                      [this](const std::string& line, Fd& client) { return control(line, client); }});
        auto sink = [this](Event& e) { on_event(e); };
        auto next_tick = std::chrono::steady_clock::now();
        heartbeat_ms_ = mono_ms();
        while (!stop_requested()) {
            tracer_->poll(25, sink);
            heartbeat_ms_ = mono_ms();
            auto now = std::chrono::steady_clock::now();
            if (now < next_tick) continue;
            next_tick = now + std::chrono::seconds(1);
            tick();
        }

        tracer_->poll(0, sink);
        stopping_ = true;
        server.reset();
        exports_.reset();  // joins them; they stop at their next line
        KernelCounters kernel = tracer_->counters();
        tracer_.reset();  // detaches every program and frees the maps: nothing is pinned
        std::string archived;
        if (archive_) {
            archive_->close();
            auto a = archive_->stats();
            archived = fmt::format("; archived {} lines in {} segments ({} write errors)", a.lines_written, a.segments,
                                   a.write_errors);
        }
        fmt::print(stderr, "tcpwhy: daemon stopped: {} events, {} dropped in the kernel{}\n", consumed_,
                   kernel.dropped(), archived);
        return kExitOk;
    }

private:
    // About once a second: the view's clock, archive limits, warnings.
    void tick() {
        KernelCounters kernel = tracer_->counters();
        status_.events_total = consumed_;
        status_.dropped_total = kernel.dropped();
        {
            std::lock_guard lock(mutex_);
            kernel_ = kernel;
            if (resolver_) {
                resolver_->tick(WallClock::now().mono_ns);
                write_workloads();
            }
            view_.tick(WallClock::now().mono_ns, status_);
        }
        if (archive_) {
            archive_->maintain(time(nullptr));
            auto a = archive_->stats();
            if (a.write_errors > archive_errors_reported_) {
                fmt::print(stderr,
                           "tcpwhy: WARNING archive: {} write errors so far ({} lines not archived); last: {}\n",
                           a.write_errors, a.lines_dropped_write_error + a.lines_dropped_low_disk, a.last_error);
                archive_errors_reported_ = a.write_errors;
            }
        }
        if (kernel.dropped() > drops_reported_) {
            fmt::print(stderr, "tcpwhy: WARNING {} events dropped in the kernel so far -- raise --ring-mb\n",
                       kernel.dropped());
            drops_reported_ = kernel.dropped();
        }
    }

    HttpResponse http(const std::string& path) {
        constexpr const char* kText = "text/plain; charset=utf-8";
        if (path == "/healthz") {
            int64_t age = mono_ms() - heartbeat_ms_.load();
            if (age > kHealthyLoopAgeMs) return {503, kText, fmt::format("event loop stalled for {} ms\n", age)};
            std::string body = "ok\n";
            if (archive_) {
                auto a = archive_->stats();
                if (a.write_errors)
                    body += fmt::format("archive: {} write errors, last: {}\n", a.write_errors, a.last_error);
            }
            return {200, kText, body};
        }
        // Rendered at most once a second however often it is asked for (any pod can ask).
        if (path == "/metrics")
            return {200, "text/plain; version=0.0.4; charset=utf-8",
                    render_prometheus(metrics_snapshot(), args_.metrics_max_backends), 1000};
        if (path == "/") return {200, kText, "tcpwhy daemon: /metrics (Prometheus), /healthz\n"};
        return {404, kText, "not found: try /metrics or /healthz\n"};
    }

    MetricsSnapshot metrics_snapshot() {
        MetricsSnapshot snap;
        {
            std::lock_guard lock(mutex_);
            const Correlator& c = view_.correlator();
            snap.backends = c.backends();
            snap.findings = c.findings();
            snap.counts = c.counts();
            snap.events_by_type = metrics_.events_by_type();
            snap.resets_sent = metrics_.resets_sent();
            snap.resets_received = metrics_.resets_received();
            snap.event_series_folded = metrics_.folded();
            snap.kernel = kernel_;
            snap.existing_connections = existing_;
        }
        if (archive_) snap.archive = archive_->stats();
        snap.lb_name = config_.lb_name;
        snap.uptime_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
        snap.version = kVersion;
        snap.kernel_release = status_.kernel;
        snap.attach = status_.attach;
        return snap;
    }

    // The control protocol (include/tcpwhy/live_view.h). nullopt: the export took the connection.
    std::optional<std::string> control(const std::string& line, Fd& client) {
        auto request = nlohmann::json::parse(line, nullptr, false);
        if (!request.is_object() || !request.contains("cmd") || !request["cmd"].is_string())
            return error_json(R"(expected one JSON object per line, e.g. {"cmd":"snapshot"})");
        std::string cmd = request["cmd"];
        if (cmd == "snapshot") {
            std::lock_guard lock(mutex_);
            return view_.snapshot_json();
        }
        if (cmd != "export") return error_json(fmt::format("unknown cmd '{}': snapshot or export", cmd));
        if (!archive_) return error_json("this daemon keeps no archive (--archive none)");
        auto since = request.value("since_s", nlohmann::json(1800));
        if (!since.is_number_unsigned()) return error_json("since_s must be a non-negative number of seconds");
        return start_export(since.get<uint64_t>(), client);
    }

    std::optional<std::string> start_export(uint64_t since_s, Fd& client) {
        uint64_t now_ns = WallClock::now().wall_ns;
        uint64_t cutoff_ns = since_s >= now_ns / 1'000'000'000ull ? 0 : now_ns - since_s * 1'000'000'000ull;
        archive_->rotate();  // what was written up to now becomes a closed segment, read whole
        auto segments = archive_->segments_since(static_cast<time_t>(cutoff_ns / 1'000'000'000ull));
        auto owned = std::make_shared<Fd>(std::move(client));
        bool started = exports_->start([this, owned, segments, cutoff_ns] {
            stream_export(owned->get(), segments, cutoff_ns);
        });
        if (started) return std::nullopt;
        client = std::move(*owned);
        return error_json(fmt::format("{} exports are running already; try again shortly", kMaxConcurrentExports));
    }

    // On an export thread: the segments as one JSONL stream, in blocking writes of up to 256 KiB.
    void stream_export(int fd, const std::vector<ArchiveSegment>& segments, uint64_t cutoff_ns) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        std::string buffer;
        auto flush = [&] {
            std::string_view rest = buffer;
            while (!rest.empty()) {
                ssize_t n = send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) return false;
                rest.remove_prefix(static_cast<size_t>(n));
            }
            buffer.clear();
            return true;
        };
        export_segments(segments, cutoff_ns, header_line_, [&](std::string_view line) {
            if (stopping_.load()) return false;
            buffer.append(line);
            buffer += '\n';
            return buffer.size() < (256 << 10) || flush();
        });
        flush();
    }

    const DaemonArgs& args_;
    const CorrelatorConfig& config_;
    std::unique_ptr<Tracer> tracer_;
    std::unique_ptr<Archive> archive_;
    const std::string header_line_;
    const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
    LiveStatus status_;  // event loop only
    uint64_t consumed_ = 0, drops_reported_ = 0, archive_errors_reported_ = 0;

    std::unique_ptr<WorkloadResolver> resolver_;  // nullptr with --no-names; its table is read under mutex_
    std::mutex mutex_;  // guards what the server thread reads: view_, metrics_, kernel_, existing_, names
    LiveView view_;
    EventMetrics metrics_;
    KernelCounters kernel_;
    uint64_t existing_ = 0;

    std::atomic<int64_t> heartbeat_ms_{0};
    std::atomic<bool> stopping_{false};
    std::optional<Exports> exports_{std::in_place};  // declared last: its threads use the members above
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
    if (resolver) resolver->scan(WallClock::now().mono_ns);

    // Everything that can be bad input is checked before the programs load: the
    // archive directory, a port in use, a second daemon on the socket.
    TraceHeader header = make_header(*config);
    std::unique_ptr<Archive> archive;
    if (args.archive != "none") {
        archive = Archive::open(args.archive, *limits, header, &error);
        if (!archive) {
            print_error(error, "choose a writable --archive DIR (or --archive none)");
            return kExitUsage;
        }
        for (const auto& why : archive->refused()) fmt::print(stderr, "tcpwhy: WARNING archive: {}\n", why);
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
        tracer = Tracer::start(options);
    } catch (const TracerError& e) {
        print_error(e.what(), e.fix());
        return kExitFailure;
    }
    lower_cpu_priority(args.nice);

    // After attach, so a connection is either listed here or seen by the programs (or both).
    ExistingSockets existing;
    try {
        existing = list_existing_sockets();
    } catch (const std::exception& e) {
        fmt::print(stderr, "tcpwhy: WARNING {}: connections open before the start will look new\n", e.what());
    }
    for (const auto& why : existing.errors) fmt::print(stderr, "tcpwhy: WARNING socket iterator: {}\n", why);

    // Everything that needed privilege is done: programs attached, namespaces walked,
    // sockets bound. CAP_BPF stays so the drop and emit counters (BPF map reads) keep
    // working on kernels that check it for every bpf() call (before 6.5, unprivileged BPF off).
    // Before any thread starts: capabilities belong to threads.
    // CAP_SYS_PTRACE stays while names are resolved: reading another process's
    // /proc/PID/ns/net needs it (the ptrace access check), and pods come and go.
    std::vector<int> keep{kCapBpf};
    if (resolver) keep.push_back(kCapSysPtrace);
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

    std::string attach = tracer->attach_summary();
    Daemon daemon(args, *config, std::move(tracer), std::move(archive), header, std::move(resolver));
    for (auto& e : existing.events) daemon.on_event(e);
    daemon.learned_existing(existing.events.size());

    fmt::print(stderr,
               "tcpwhy: daemon tracing TCP on {} (close via {}; LB {}); {} connections existed in {} namespaces; "
               "metrics http://{}/metrics; socket {}; archive {}; capabilities: {}\n",
               header.kernel, attach, config->describe_lb(), existing.events.size(), existing.namespaces,
               http_listener ? local_address(http_listener) : "off", args.socket, args.archive, privileges);
    return daemon.run(std::move(http_listener), std::move(unix_listener));
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
