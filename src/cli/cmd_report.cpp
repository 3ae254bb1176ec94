// `tcpwhy report`: replay recorded traces through the correlator and explain the resets.
#include <iostream>

#include "cli/commands.h"
#include "tcpwhy/report.h"

namespace tcpwhy::cli {

Runner add_report(CLI::App& app) {
    auto* sub = app.add_subcommand(
        "report",
        "Explain the resets in recorded traces (postmortem): findings with advice first, then a\n"
        "table per backend, then counts. Reads JSONL traces from `tcpwhy trace -o`, plain or gzip.\n\n"
        "Examples:\n"
        "  tcpwhy report trace.jsonl\n"
        "  tcpwhy report --json trace.jsonl.gz\n"
        "  tcpwhy report --conn 130.211.0.143:51234 trace.jsonl   # one connection's timeline\n"
        "  tcpwhy report --lb aws-alb --lb-ranges 10.0.0.0/16 trace.jsonl");
    auto options = std::make_shared<ReportOptions>();
    auto idle_timeout = std::make_shared<uint32_t>(0);
    auto ranges = std::make_shared<std::string>();
    auto conn = std::make_shared<std::string>();
    sub->add_option("trace", options->inputs, "Trace files ('-' for stdin)")->required();
    sub->add_flag("--json", options->json, "JSON output: findings[], backends, counts");
    sub->add_option("--conn", *conn, "Print the timeline of the connection with this peer (RADDR:RPORT)");
    sub->add_option("--lb", options->lb_preset, "Load balancer preset: gcp, aws-alb, aws-nlb, azure, none")
        ->capture_default_str();
    sub->add_option("--lb-ranges", *ranges, "Load-balancer source ranges (CIDR,...), replacing the preset's");
    sub->add_option("--lb-idle-timeout", *idle_timeout, "The LB's idle timeout in seconds, replacing the preset's")
        ->check(CLI::PositiveNumber);
    sub->add_option("--idle-threshold", options->idle_threshold_ms,
                    "Idle time (ms) before a close that counts as an idle close")
        ->capture_default_str();
    return [options, idle_timeout, ranges, conn] {
        ReportOptions opts = *options;
        if (!ranges->empty()) opts.lb_ranges = *ranges;
        if (!conn->empty()) opts.conn = *conn;
        if (*idle_timeout) opts.lb_idle_timeout_s = *idle_timeout;
        return run_report(opts, std::cout, std::cerr);
    };
}

}  // namespace tcpwhy::cli
