// `tcpwhy report`: options -> replay -> one of the renderers.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <ostream>

#include <fmt/format.h>

#include "tcpwhy/addr.h"
#include "tcpwhy/report.h"

namespace tcpwhy {
namespace {

// Events a --conn timeline keeps; a peer port reused thousands of times in one
// trace would otherwise grow without bound.
constexpr size_t kMaxTimelineEvents = 10'000;
// Reset events the HTML timeline keeps (16 B each); the page says how many more there were.
constexpr size_t kMaxHtmlResetMarks = 1'000'000;
// Reset connections a report keeps per backend and kind, for the HTML table and timeline
// and the JSON's connection lists (a live session keeps 16).
constexpr size_t kReportConnectionsPerKind = 200;

bool touches_peer(const Event& e, const IpAddr& peer, uint16_t port) {
    return addr::same_endpoint(e.raddr, e.rport, peer, port) || addr::same_endpoint(e.laddr, e.lport, peer, port);
}

}  // namespace

std::optional<std::pair<IpAddr, uint16_t>> parse_peer(std::string_view text) {
    std::string_view host, port_text;
    if (text.starts_with('[')) {
        auto close = text.find("]:");
        if (close == std::string_view::npos) return std::nullopt;
        host = text.substr(1, close - 1);
        port_text = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos || text.find(':') != colon) return std::nullopt;  // bare IPv6 is ambiguous
        host = text.substr(0, colon);
        port_text = text.substr(colon + 1);
    }
    auto addr = IpAddr::parse(host);
    uint16_t port = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (!addr || port_text.empty() || ec != std::errc{} || end != port_text.data() + port_text.size())
        return std::nullopt;
    return std::pair{*addr, port};
}

int run_report(const ReportOptions& options, std::ostream& out, std::ostream& err) {
    auto fail = [&err](int code, const std::string& message) {
        err << "tcpwhy: " << message << '\n';
        return code;
    };
    if (options.inputs.empty()) return fail(kReportInputError, "no trace file given (use - for stdin)");
    std::string error;
    auto ranges = options.lb_ranges ? std::optional<std::string_view>(*options.lb_ranges) : std::nullopt;
    auto config = CorrelatorConfig::from_options(options.lb_preset, ranges, options.lb_idle_timeout_s, &error);
    if (!config) return fail(kReportInputError, error);
    config->idle_threshold_ms = options.idle_threshold_ms;
    if (options.html && options.conn)
        return fail(kReportInputError, "--html and --conn do not go together: the page covers every connection");
    if (options.html || options.json)
        config->recent_connections_per_kind = std::max(config->recent_connections_per_kind, kReportConnectionsPerKind);
    std::ofstream html_file;
    if (options.html) {
        html_file.open(*options.html, std::ios::out | std::ios::trunc);
        if (!html_file)
            return fail(kReportInputError,
                        fmt::format("cannot write the HTML report {}: {}", *options.html, std::strerror(errno)));
    }

    std::optional<std::pair<IpAddr, uint16_t>> peer;
    if (options.conn) {
        peer = parse_peer(*options.conn);
        if (!peer)
            return fail(kReportInputError, fmt::format("--conn '{}': expected RADDR:RPORT, e.g. 130.211.0.143:51234 "
                                                       "or [2600:2d00:1:b029::5]:51234",
                                                       *options.conn));
    }

    Correlator correlator(std::move(*config));
    if (peer) correlator.watch_peer(peer->first, peer->second);
    ReplayStats stats;
    std::vector<Event> timeline;
    std::vector<ResetMark> reset_marks;
    uint64_t dropped_marks = 0;
    std::function<void(const Event&)> collect;
    if (peer) {
        collect = [&](const Event& e) {
            if (timeline.size() < kMaxTimelineEvents && touches_peer(e, peer->first, peer->second))
                timeline.push_back(e);
        };
    } else if (options.html) {
        collect = [&](const Event& e) {
            if (e.type != EventType::reset_sent && e.type != EventType::reset_recv) return;
            if (reset_marks.size() < kMaxHtmlResetMarks) reset_marks.push_back({e.ts_ns, e.type == EventType::reset_sent});
            else ++dropped_marks;
        };
    }
    if (int code = replay_traces(options.inputs, correlator, collect, stats, &error); code != kReportOk)
        return fail(code, error);

    for (const auto& warning : stats.warnings) err << "tcpwhy: WARNING " << warning << '\n';
    if (stats.bad_lines)
        err << fmt::format("tcpwhy: WARNING skipped {} corrupt or truncated line{} (first: {})\n", stats.bad_lines,
                           stats.bad_lines == 1 ? "" : "s", stats.first_bad);

    if (peer)
        render_timeline(peer->first, peer->second, std::move(timeline),
                        correlator.connections_with_peer(peer->first, peer->second), out);
    else if (options.json)
        render_json_report(correlator, stats, out);
    else
        render_text_report(correlator, stats, out);
    if (options.html) {
        render_html_report(correlator, stats, reset_marks, dropped_marks, html_file);
        html_file.close();
        if (!html_file)
            return fail(kReportIoError, fmt::format("writing the HTML report {} failed: {}", *options.html,
                                                    std::strerror(errno)));
        err << fmt::format("tcpwhy: wrote the HTML report to {}\n", *options.html);
    }
    return kReportOk;
}

}  // namespace tcpwhy
