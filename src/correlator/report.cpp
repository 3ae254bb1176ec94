// `tcpwhy report`: options -> replay -> one of the renderers.
#include <charconv>
#include <ostream>

#include <fmt/format.h>

#include "correlator/addr.h"
#include "tcpwhy/report.h"

namespace tcpwhy {
namespace {

// Events a --conn timeline keeps; a peer port reused thousands of times in one
// trace would otherwise grow without bound.
constexpr size_t kMaxTimelineEvents = 10'000;

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
        err << "tcpwhy report: " << message << '\n';
        return code;
    };
    if (options.inputs.empty()) return fail(kReportInputError, "no trace file given (use - for stdin)");
    std::string error;
    auto ranges = options.lb_ranges ? std::optional<std::string_view>(*options.lb_ranges) : std::nullopt;
    auto config = CorrelatorConfig::from_options(options.lb_preset, ranges, options.lb_idle_timeout_s, &error);
    if (!config) return fail(kReportInputError, error);
    config->idle_threshold_ms = options.idle_threshold_ms;

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
    std::function<void(const Event&)> collect;
    if (peer) {
        collect = [&](const Event& e) {
            if (timeline.size() < kMaxTimelineEvents && touches_peer(e, peer->first, peer->second))
                timeline.push_back(e);
        };
    }
    if (int code = replay_traces(options.inputs, correlator, collect, stats, &error); code != kReportOk)
        return fail(code, error);

    for (const auto& warning : stats.warnings) err << "tcpwhy report: warning: " << warning << '\n';
    if (stats.bad_lines)
        err << fmt::format("tcpwhy report: skipped {} corrupt or truncated line{} (first: {})\n", stats.bad_lines,
                           stats.bad_lines == 1 ? "" : "s", stats.first_bad);

    if (peer)
        render_timeline(peer->first, peer->second, std::move(timeline),
                        correlator.connections_with_peer(peer->first, peer->second), out);
    else if (options.json)
        render_json_report(correlator, out);
    else
        render_text_report(correlator, stats, out);
    return kReportOk;
}

}  // namespace tcpwhy
