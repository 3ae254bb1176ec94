// tcpwhy: why do TCP connections on this node end the way they do?
#include <csignal>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <sys/resource.h>
#include <algorithm>
#include <atomic>
#include <iostream>

#include <bpf/libbpf.h>
#include <fmt/format.h>

#include "commands.h"
#include "tcpwhy/log.h"

namespace tcpwhy::cli {
namespace {

std::atomic<bool> g_stop{false};

void on_stop_signal(int) { g_stop.store(true); }

}  // namespace

bool stop_requested() { return g_stop.load(); }

void install_stop_handlers() {
    struct sigaction sa{};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a blocking poll returns EINTR at once
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
}

namespace {

// libbpf's own log, into tcpwhy's: its warnings about a failed load always (they say why), the
// rest (the verifier's log among it) with -v. A message may come in pieces without a newline:
// they are joined into one line.
int libbpf_log(enum libbpf_print_level level, const char* format, va_list args) {
    bool load_failure = level == LIBBPF_WARN && strstr(format, "failed to load") != nullptr;
    if (!load_failure && !log::verbose()) return 0;
    thread_local std::string pending;
    char buffer[1024];
    int n = vsnprintf(buffer, sizeof(buffer), format, args);
    pending += buffer;
    if (pending.empty() || pending.back() != '\n') return n;
    pending.pop_back();
    if (load_failure) log::warn("libbpf: " + pending);
    else log::debug("libbpf: " + pending);
    pending.clear();
    return n;
}

}  // namespace

void set_libbpf_verbose(bool verbose) {
    log::set_verbose(verbose);
    libbpf_set_print(libbpf_log);
}

void add_lb_options(CLI::App& sub, LbArgs& lb) {
    sub.add_option("--lb", lb.preset, "Load balancer preset (ranges and idle timeout): gcp, aws-alb, aws-nlb, azure, none")
        ->capture_default_str();
    sub.add_option("--lb-ranges", lb.ranges,
                   "Load-balancer source ranges (CIDR,...), replacing the preset's (gcp: 130.211.0.0/22,\n"
                   "35.191.0.0/16 and Google's IPv6 ranges)");
    sub.add_option("--lb-idle-timeout", lb.idle_timeout_s, "The LB's idle timeout in seconds, replacing the preset's")
        ->check(CLI::PositiveNumber);
    sub.add_option("--lb-response-timeout", lb.response_timeout_s,
                   "How long the LB waits for a response, in seconds, replacing the preset's (gcp: the backend\n"
                   "service timeout, 30 s; aws-alb: 60 s): what lb_response_timeout findings compare against")
        ->check(CLI::PositiveNumber);
}

void add_naming_options(CLI::App& sub, NamingArgs& naming) {
    sub.add_option("--host-root", naming.host_root,
                   "Where the host's /proc, /sys/fs/cgroup, /run/netns and /var/log/pods are (in a\n"
                   "container: the host's / mounted read-only, e.g. /host)")
        ->capture_default_str()
        ->check(CLI::ExistingDirectory);
    sub.add_option("--pod-logs", naming.pod_logs,
                   "The kubelet's pod log directory (names pods and containers); default <host-root>/var/log/pods");
    sub.add_flag("--no-names", naming.no_names, "Do not resolve pod, container or namespace names");
    sub.add_flag("--no-servers", naming.no_servers,
                 "Do not detect which server each process runs (framework, version, its idle-timeout\n"
                 "knob): the fix is then worded generically");
    sub.add_flag("--kube-api", naming.kube_api,
                 "Also ask the Kubernetes API (in-cluster service account) for labels, pod IPs and\n"
                 "owners (Deployment, StatefulSet, ...) of this node's pods; names work without it");
    sub.add_option("--kube-api-url", naming.kube_api_url, "API server URL (default: from KUBERNETES_SERVICE_HOST/PORT)");
    sub.add_option("--kube-token-file", naming.kube_token_file, "Bearer token file (default: the service account's)");
    sub.add_option("--kube-ca-file", naming.kube_ca_file, "CA bundle for the API server (default: the service account's)");
    sub.add_option("--node-name", naming.node_name, "This node's name in the API (default: $NODE_NAME, else hostname)");
}

std::optional<tcpwhy::ServerDetectorOptions> server_detection(const NamingArgs& naming) {
    if (naming.no_servers) return std::nullopt;
    tcpwhy::ServerDetectorOptions options;
    options.host_root = naming.host_root;
    return options;
}

std::unique_ptr<tcpwhy::WorkloadResolver> make_resolver(const NamingArgs& naming, std::string* error,
                                                        std::shared_ptr<tcpwhy::KubeApiClient>* unstarted_api) {
    if (naming.no_names) return nullptr;
    tcpwhy::ResolverOptions options;
    options.host_root = naming.host_root;
    options.pod_logs = naming.pod_logs;
    auto resolver = std::make_unique<tcpwhy::WorkloadResolver>(options);
    if (naming.kube_api) {
        std::optional<tcpwhy::KubeApiOptions> api;
        if (!naming.kube_api_url.empty()) {
            api.emplace();
            api->url = naming.kube_api_url;
            if (const char* node = std::getenv("NODE_NAME")) api->node_name = node;
        } else {
            api = tcpwhy::KubeApiOptions::in_cluster(error);
            if (!api) {
                *error = "--kube-api: " + *error + "; give --kube-api-url, or drop --kube-api";
                return nullptr;
            }
        }
        if (!api->url.starts_with("https://")) {
            *error = fmt::format("--kube-api-url {}: the service-account token would cross the network in clear text; "
                                 "give the API server's https:// URL",
                                 api->url);
            return nullptr;
        }
        if (!naming.kube_token_file.empty()) api->token_file = naming.kube_token_file;
        if (!naming.kube_ca_file.empty()) api->ca_file = naming.kube_ca_file;
        if (!naming.node_name.empty()) api->node_name = naming.node_name;
        auto client = std::make_shared<tcpwhy::KubeApiClient>(*api);
        if (unstarted_api) *unstarted_api = client;
        else client->start();
        resolver->set_kube_api(client);
    }
    return resolver;
}

void tally_by(tcpwhy::TracerOptions& options, const tcpwhy::CorrelatorConfig& config) {
    // Backends split by local address are keyed by more than the kernel's tally knows.
    options.tally = !config.split_backends_by_laddr;
    options.lb_ranges = config.lb_ranges;
    options.lb_any_non_loopback_peer = config.lb_any_non_loopback_peer;
    // The relative idle bar never goes below its floor (100 ms), the absolute one below the threshold.
    options.ordinary_idle_max_ms = std::min<uint32_t>({100, config.idle_threshold_ms, config.lb_gave_up_after_ms});
    options.drain_window_ns = config.drain_window_ns;
}

std::optional<tcpwhy::CorrelatorConfig> correlator_config(const LbArgs& lb) {
    std::string error;
    auto config = tcpwhy::CorrelatorConfig::from_options(
        lb.preset, lb.ranges.empty() ? std::nullopt : std::optional<std::string_view>(lb.ranges),
        lb.idle_timeout_s ? std::optional(lb.idle_timeout_s) : std::nullopt, &error,
        lb.response_timeout_s ? std::optional(lb.response_timeout_s) : std::nullopt);
    if (!config)
        print_error(error, "--lb takes gcp, aws-alb, aws-nlb, azure or none; --lb-ranges comma-separated CIDRs, "
                           "e.g. 130.211.0.0/22,35.191.0.0/16");
    return config;
}

bool valid_ring_mb(size_t ring_mb) {
    if (ring_mb != 0 && (ring_mb & (ring_mb - 1)) == 0) return true;
    print_error(fmt::format("--ring-mb {} is not a power of two", ring_mb), "use 1, 2, 4, 8, 16, ...");
    return false;
}

void add_nice_option(CLI::App& sub, int& nice) {
    sub.add_option("--nice", nice,
                   "Run the event loop this many steps below the workload's CPU priority (0: the same). A\n"
                   "tracer should not take CPU from what it watches: the ring buffer absorbs the wait, and a\n"
                   "drop, if the ring ever fills, is counted and shown")
        ->check(CLI::Range(0, 19))
        ->capture_default_str();
}

void lower_cpu_priority(int nice) {
    if (nice <= 0) return;
    errno = 0;
    int current = getpriority(PRIO_PROCESS, 0);
    if (errno != 0 || setpriority(PRIO_PROCESS, 0, std::min(current + nice, 19)) != 0)
        log::warn(fmt::format("cannot lower the CPU priority ({}); running at the caller's", strerror(errno)));
}

void print_error(const std::string& problem, const std::string& fix) { log::error(problem, fix); }

}  // namespace tcpwhy::cli

int main(int argc, char** argv) {
    using namespace tcpwhy::cli;
    set_libbpf_verbose(false);
    CLI::App app{
        "tcpwhy traces the lifecycle of every TCP connection on this node with eBPF and explains its\n"
        "resets: which backend closed an idle keep-alive connection the load balancer still used,\n"
        "after how long, and what to change.\n\n"
        "Start with `tcpwhy doctor` (can this kernel be traced?), then `tcpwhy trace`.",
        "tcpwhy"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "tcpwhy 0.1.0");
    app.footer("Exit codes: 0 ok, 1 tracing failed, 2 bad input.\nDocs: README.md, docs/trace-format.md");

    std::vector<std::pair<CLI::App*, Runner>> commands;
    auto add = [&](Runner (*register_fn)(CLI::App&)) {
        size_t before = app.get_subcommands({}).size();
        Runner runner = register_fn(app);
        commands.emplace_back(app.get_subcommands({}).at(before), std::move(runner));
    };
    add(add_doctor);
    add(add_trace);
    add(add_report);
    add(add_daemon);
    add(add_export);
    add(add_top);
    add(add_relay);

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        print_error(e.what(), "see `tcpwhy --help` or `tcpwhy <command> --help`");
        return kExitUsage;
    }
    for (auto& [sub, run] : commands)
        if (sub->parsed()) return run();
    return kExitUsage;
}
