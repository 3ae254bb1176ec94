// Subcommands register their options on the CLI and return what runs them.
#pragma once

#include <functional>
#include <optional>

#include <CLI/CLI.hpp>

#include "tcpwhy/bpf/tracer.h"
#include "tcpwhy/correlator.h"
#include "tcpwhy/server_detector.h"
#include "tcpwhy/workload_resolver.h"

namespace tcpwhy::cli {

// Exit codes every subcommand shares.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // tracing failed at run time (kernel refused, I/O error)
inline constexpr int kExitUsage = 2;    // bad input: flags, CIDRs, files, namespaces

using Runner = std::function<int()>;

// --lb, --lb-ranges, --lb-idle-timeout, --lb-response-timeout: shared by trace and report so both
// read traces alike.
struct LbArgs {
    std::string preset = "gcp";
    std::string ranges;               // empty: the preset's
    uint32_t idle_timeout_s = 0;      // 0: the preset's
    uint32_t response_timeout_s = 0;  // 0: the preset's
};
void add_lb_options(CLI::App& sub, LbArgs& lb);
// The correlator's config from those options; on a bad preset or range list prints the
// one-line error (with the fix) and returns nullopt: the caller exits kExitUsage.
std::optional<tcpwhy::CorrelatorConfig> correlator_config(const LbArgs& lb);
// Ordinary connections counted in the kernel by the config's rules (LB ranges, the idle bar's
// floor, the drain window); --all-states (options.all_state_changes) turns it off.
void tally_by(tcpwhy::TracerOptions& options, const tcpwhy::CorrelatorConfig& config);
// --ring-mb: a power of two, else the one-line error and false.
bool valid_ring_mb(size_t ring_mb);

// --nice: how far below the traced workload's CPU priority the event loop runs (default 10).
constexpr int kDefaultNice = 10;
void add_nice_option(CLI::App& sub, int& nice);
// Lowers the calling thread's CPU priority by `nice` (0: unchanged); says so on stderr if it
// cannot, and carries on.
void lower_cpu_priority(int nice);

// --host-root, --pod-logs, --no-names: where pod, container and namespace names come from.
struct NamingArgs {
    std::string host_root = "/";
    std::string pod_logs;  // empty: <host-root>/var/log/pods
    bool no_names = false;
    bool no_servers = false;  // --no-servers: no server detection (framework, version, knobs)
    bool kube_api = false;  // --kube-api: labels, pod IP and owner from the API server
    std::string kube_api_url, kube_token_file, kube_ca_file, node_name;  // overrides of the in-cluster defaults
};
void add_naming_options(CLI::App& sub, NamingArgs& naming);

// The resolver the options describe (nullptr with --no-names), its API client started
// when --kube-api is on. On a bad option returns nullptr and sets *error. With
// `unstarted_api`, the client is handed back there instead of started: the caller starts
// its thread once privileges are dropped.
std::unique_ptr<tcpwhy::WorkloadResolver> make_resolver(const NamingArgs& naming, std::string* error,
                                                        std::shared_ptr<tcpwhy::KubeApiClient>* unstarted_api = nullptr);

// The server detection the options describe: under --host-root; nullopt with --no-servers.
std::optional<tcpwhy::ServerDetectorOptions> server_detection(const NamingArgs& naming);

Runner add_doctor(CLI::App& app);
Runner add_trace(CLI::App& app);
Runner add_report(CLI::App& app);
Runner add_daemon(CLI::App& app);
Runner add_export(CLI::App& app);
Runner add_top(CLI::App& app);
Runner add_relay(CLI::App& app);

// One-line error on stderr: "tcpwhy: <problem>" and, when given, "  fix: <remedy>".
void print_error(const std::string& problem, const std::string& fix = {});

// libbpf's own log: only load failures unless verbose (then the verifier log too).
void set_libbpf_verbose(bool verbose);

// Set by SIGINT/SIGTERM; long-running commands poll it.
bool stop_requested();
void install_stop_handlers();

}  // namespace tcpwhy::cli
