// `tcpwhy report`: options -> replay -> one of the renderers.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>
#include <ostream>

#include <fmt/format.h>

#include "tcpwhy/addr.h"
#include "tcpwhy/progress.h"
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

// --conn: the peer's timeline on each node it was seen on (an LB address and port can recur on
// several nodes); with one node, as it always was.
void render_connection(const std::pair<IpAddr, uint16_t>& peer, const std::vector<std::unique_ptr<NodeReplay>>& nodes,
                       std::map<const NodeReplay*, std::vector<Event>>& timelines, std::ostream& out) {
    std::vector<std::pair<const NodeReplay*, std::vector<ConnectionRecord>>> seen;
    for (const auto& node : nodes) {
        auto records = node->correlator.connections_with_peer(peer.first, peer.second);
        if (!records.empty() || timelines.count(node.get())) seen.emplace_back(node.get(), std::move(records));
    }
    if (seen.size() <= 1) {
        const NodeReplay* only = seen.empty() ? nullptr : seen.front().first;
        render_timeline(peer.first, peer.second, only ? std::move(timelines[only]) : std::vector<Event>{},
                        seen.empty() ? std::vector<ConnectionRecord>{} : seen.front().second, out);
        return;
    }
    for (size_t i = 0; i < seen.size(); ++i) {
        auto& [node, records] = seen[i];
        out << fmt::format("{}On node {}:\n", i ? "\n" : "", node->name);
        render_timeline(peer.first, peer.second, std::move(timelines[node]), records, out);
    }
}

}  // namespace

std::vector<ReportNode> report_nodes(const std::vector<std::unique_ptr<NodeReplay>>& nodes) {
    std::vector<ReportNode> view;
    for (const auto& node : nodes) view.push_back({node->name, node->key, &node->correlator, &node->stats});
    return view;
}

std::string replay_progress_line(const ReplayProgress& p, double elapsed_s) {
    // Short enough for an 80-column terminal; what matters most first, since a narrower one cuts the end.
    std::string line = "report: " + pace_text(p.bytes_read, p.bytes_total, p.events, elapsed_s);
    if (p.files > 1) line += fmt::format(", file {} of {}", std::min(p.file_index + 1, p.files), p.files);
    return line;
}

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
    auto config = CorrelatorConfig::from_options(options.lb_preset, ranges, options.lb_idle_timeout_s, &error,
                                                 options.lb_response_timeout_s);
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

    // One correlator per node-boot: cookies, netns inodes and clocks of different nodes never meet.
    std::vector<std::unique_ptr<NodeReplay>> nodes;
    std::map<const NodeReplay*, uint32_t> node_index;
    std::map<const NodeReplay*, std::vector<Event>> timelines;
    size_t timeline_events = 0;
    std::vector<ResetMark> reset_marks;
    uint64_t dropped_marks = 0;
    ReplayHooks hooks;
    hooks.on_node = [&](NodeReplay& node) {
        node_index.emplace(&node, static_cast<uint32_t>(node_index.size()));
        if (peer) node.correlator.watch_peer(peer->first, peer->second);
    };
    if (peer) {
        hooks.on_event = [&](const NodeReplay& node, const Event& e) {
            if (timeline_events < kMaxTimelineEvents && touches_peer(e, peer->first, peer->second)) {
                timelines[&node].push_back(e);
                ++timeline_events;
            }
        };
    } else if (options.html) {
        hooks.on_event = [&](const NodeReplay& node, const Event& e) {
            if (e.type != EventType::reset_sent && e.type != EventType::reset_recv) return;
            if (reset_marks.size() < kMaxHtmlResetMarks)
                reset_marks.push_back({e.ts_ns, e.type == EventType::reset_sent, node_index.at(&node)});
            else
                ++dropped_marks;
        };
    }
    ProgressMeter meter(options.progress_fd);
    ReplayProgressFn progress;
    if (meter.active())
        progress = [&meter](const ReplayProgress& p) { meter.update([&] { return replay_progress_line(p, meter.elapsed_s()); }); };
    int code = replay_nodes(options.inputs, *config, hooks, nodes, &error, progress);
    meter.finish();  // before anything else is printed
    if (code != kReportOk) return fail(code, error);

    uint64_t bad_lines = 0;
    std::string first_bad;
    for (const auto& node : nodes) {
        for (const auto& warning : node->stats.warnings) err << "tcpwhy: WARNING " << warning << '\n';
        if (node->stats.bad_lines && first_bad.empty()) first_bad = node->stats.first_bad;
        bad_lines += node->stats.bad_lines;
    }
    if (bad_lines)
        err << fmt::format("tcpwhy: WARNING skipped {} corrupt or truncated line{} (first: {})\n", bad_lines,
                           bad_lines == 1 ? "" : "s", first_bad);

    // An empty input still gets the empty report it always had.
    if (nodes.empty()) nodes.push_back(std::make_unique<NodeReplay>(NodeKey{}, *config));
    std::vector<ReportNode> view = report_nodes(nodes);
    if (peer) {
        render_connection(*peer, nodes, timelines, out);
    } else if (options.json) {
        render_json_report(view, out);
    } else {
        render_text_report(view, out);
    }
    if (options.html) {
        render_html_report(view, reset_marks, dropped_marks, html_file);
        html_file.close();
        if (!html_file)
            return fail(kReportIoError, fmt::format("writing the HTML report {} failed: {}", *options.html,
                                                    std::strerror(errno)));
        err << fmt::format("tcpwhy: wrote the HTML report to {}\n", *options.html);
    }
    return kReportOk;
}

}  // namespace tcpwhy
