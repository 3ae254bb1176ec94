// `tcpwhy report`: replay recorded traces through the correlator and explain the resets.
#include <unistd.h>

#include <iostream>
#include <sstream>

#include "commands.h"
#include "tcpwhy/format.h"
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
        "  tcpwhy report --html postmortem.html trace.jsonl       # and a page to share (opens offline)\n"
        "  tcpwhy report --lb aws-alb --lb-ranges 10.0.0.0/16 trace.jsonl\n\n"
        "On a terminal, a long replay shows its progress on stderr (bytes read of the total,\n"
        "events/s, time left); piped or redirected, nothing.");
    auto options = std::make_shared<ReportOptions>();
    auto lb = std::make_shared<LbArgs>();
    auto conn = std::make_shared<std::string>();
    auto html = std::make_shared<std::string>();
    sub->add_option("trace", options->inputs, "Trace files ('-' for stdin)")->required();
    sub->add_flag("--json", options->json, "JSON output: findings[], backends, counts");
    sub->add_option("--conn", *conn, "Print the timeline of the connection with this peer (RADDR:RPORT)");
    sub->add_option("--html", *html,
                    "Also write a self-contained HTML postmortem to FILE: findings with the fix, per backend a\n"
                    "histogram of idle time before close against the LB idle timeout, a timeline of resets,\n"
                    "the affected connections. No external assets: it opens offline")
        ->option_text("FILE");
    add_lb_options(*sub, *lb);
    sub->add_option("--idle-threshold", options->idle_threshold_ms,
                    "Idle time (ms) before a close that counts as an idle close")
        ->capture_default_str();
    return [options, lb, conn, html] {
        ReportOptions opts = *options;
        opts.lb_preset = lb->preset;
        if (!lb->ranges.empty()) opts.lb_ranges = lb->ranges;
        if (lb->idle_timeout_s) opts.lb_idle_timeout_s = lb->idle_timeout_s;
        if (lb->response_timeout_s) opts.lb_response_timeout_s = lb->response_timeout_s;
        if (!conn->empty()) opts.conn = *conn;
        if (!html->empty()) opts.html = *html;
        // Progress on a long replay, on the terminal only: never in a pipe or a file.
        if (isatty(STDERR_FILENO)) opts.progress_fd = STDERR_FILENO;
        // The report quotes names (and, on a bad line, text) from the trace, which other
        // processes chose: rendered first, then printed with no control left in it.
        std::ostringstream out, err;
        int rc = run_report(opts, out, err);
        std::cout << terminal_safe_text(out.str()) << std::flush;
        std::cerr << terminal_safe_text(err.str()) << std::flush;
        return rc;
    };
}

}  // namespace tcpwhy::cli
