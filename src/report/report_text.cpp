// Printers for `tcpwhy report`: text (findings, backends, counts) and one connection's
// timeline. Facts from the correlator, words from explain.
#include <algorithm>
#include <map>
#include <ostream>

#include <fmt/format.h>

#include "tcpwhy/explain.h"
#include "tcpwhy/report.h"
#include "report_nodes.h"
#include "trace_clock.h"

namespace tcpwhy {
namespace {

// A finding's text lists its newest connections (JSON and HTML carry every one kept).
constexpr size_t kTextConnectionsPerFinding = 10;

std::string seconds_text(uint64_t ms) {
    if (ms < 1000) return fmt::format("{} ms", ms);
    return fmt::format("{:.1f} s", ms / 1000.0);
}

std::string opts_text(const SockOpts& opts) {
    std::string out;
    for (int i = 0; i < kSockOptCount; ++i) {
        auto opt = static_cast<SockOpt>(i);
        if (!opts.has(opt)) continue;
        if (!out.empty()) out += ' ';
        out += fmt::format("{}={}", to_string(opt), opts.value(opt));
    }
    return out.empty() ? "-" : out;
}

// "idle_close_race 23, peer_reset 2", or "-".
std::string reset_counts_text(const std::array<uint64_t, kFindingKindCount>& counts,
                              std::optional<FindingKind> skip = std::nullopt) {
    std::string out;
    for (const KindInfo& row : finding_kinds()) {
        uint64_t n = counts[static_cast<size_t>(row.kind)];
        if (row.kind == skip || n == 0) continue;
        if (!out.empty()) out += ", ";
        out += fmt::format("{} {}", row.name, n);
    }
    return out.empty() ? "-" : out;
}

// node: "" in a report of one node; else the finding says where it is.
void render_finding(const Finding& f, int number, std::string_view node, std::ostream& out) {
    explain::Words words = explain::words(f);
    out << fmt::format("{}. [{}] {}{}\n", number, to_string(f.kind), node.empty() ? "" : fmt::format("on {}: ", node),
                       words.summary);
    if (std::string server = explain::server_line(f.backend); !server.empty())
        out << fmt::format("   server: {}\n", server);
    for (const auto& line : words.evidence) out << fmt::format("   evidence: {}\n", line);
    if (!words.lb_symptom.empty()) out << fmt::format("   lb: {}\n", words.lb_symptom);
    if (!f.connections.empty()) {
        size_t shown = std::min(f.connections.size(), kTextConnectionsPerFinding);
        std::string list;
        for (size_t i = 0; i < shown; ++i) list += (list.empty() ? "" : ", ") + explain::four_tuple(f.connections[i]);
        std::string more = f.count > shown ? fmt::format(" (most recent {} of {})", shown, f.count) : "";
        out << fmt::format("   connections{}: {}\n", more, list);
    }
    out << fmt::format("   fix: {}\n\n", words.advice);
}

// With several nodes the table gains a NODE column first; with one it is as it always was.
void render_backends(std::span<const ReportNode> nodes, std::ostream& out) {
    const bool several = nodes.size() > 1;
    std::vector<std::pair<const ReportNode*, BackendProfile>> backends;
    for (const auto& node : nodes)
        for (auto& b : node.correlator->backends()) backends.emplace_back(&node, std::move(b));
    out << "Backends\n";
    if (backends.empty()) {
        out << "  (none seen)\n\n";
        return;
    }
    size_t node_width = 4;
    for (const auto& node : nodes) node_width = std::max(node_width, node.name.size());
    auto node_cell = [&](std::string_view text) {
        return several ? fmt::format("{:<{}} ", text, node_width) : std::string();
    };
    constexpr auto kRow = "  {}{:<20} {:<7} {:<16} {:>7} {:>14} {:>5} {:>6} {:>8} {:>8} {:>8} {:>6}  {:<28} {}\n";
    out << fmt::format(kRow, node_cell("NODE"), "WHO", "PORT", "PROCESS", "PID", "CONNS LB/OTHER", "LIVE", "IDLE",
                       "P50", "P90", "MAX", "RACES", "OTHER RESETS", "OPTIONS");
    constexpr auto kRace = static_cast<size_t>(FindingKind::idle_close_race);
    for (const auto& [node, b] : backends) {
        std::array<uint64_t, kFindingKindCount> all{};
        for (size_t k = 0; k < all.size(); ++k) all[k] = b.resets_lb[k] + b.resets_other[k];
        std::string netns = b.id.pod.empty()               ? fmt::format("netns:{}", b.id.netns)
                            : b.id.namespace_name.empty() ? b.id.pod
                                                          : b.id.namespace_name + "/" + b.id.pod;
        std::string port = b.id.outbound ? fmt::format("->{}", b.id.port) : std::to_string(b.id.port);
        bool idle = b.idle_close.samples > 0;
        out << fmt::format(
            kRow, node_cell(node->name), netns, port, b.comm.empty() ? "-" : b.comm,
            b.pid ? std::to_string(b.pid) : "-", fmt::format("{}/{}", b.connections_lb, b.connections_other),
            b.live_connections, b.idle_close.samples, idle ? seconds_text(b.idle_close.p50_ms) : "-",
            idle ? seconds_text(b.idle_close.p90_ms) : "-", idle ? seconds_text(b.idle_close.max_ms) : "-", all[kRace],
            reset_counts_text(all, FindingKind::idle_close_race), opts_text(b.opts));
    }
    // What runs behind each backend, where it was detected (live, or the trace's `server` lines).
    bool header = false;
    for (const auto& [node, b] : backends) {
        std::string server = explain::server_line(b);
        if (server.empty()) continue;
        if (!header) out << "\n  servers\n";
        header = true;
        std::string who = b.id.pod.empty() ? fmt::format("netns:{}", b.id.netns) : b.id.pod;
        out << fmt::format("  {}{:<20} {:<7} {}\n", node_cell(node->name), who,
                           b.id.outbound ? fmt::format("->{}", b.id.port) : std::to_string(b.id.port), server);
    }
    out << '\n';
}

// Per node: where and when (wall time, from its own clock), how much, what was found; then the
// cluster's line. Only in a report of several nodes.
void render_nodes(std::span<const ReportNode> nodes, std::ostream& out) {
    size_t node_width = 7;
    for (const auto& node : nodes) node_width = std::max(node_width, node.name.size());
    constexpr auto kRow = "  {:<{}} {:<8} {:<18} {:<27} {:<27} {:>8} {:>6} {:>6} {:>8}  {}\n";
    out << "Nodes\n";
    out << fmt::format(kRow, "NODE", node_width, "BOOT", "KERNEL", "FIRST EVENT", "LAST EVENT", "EVENTS", "CONNS",
                       "RACES", "FINDINGS", "OTHER RESETS");
    constexpr auto kRace = static_cast<size_t>(FindingKind::idle_close_race);
    uint64_t findings = 0;
    for (const auto& node : nodes) {
        const ReplayStats& stats = *node.stats;
        report::TraceClock clock(stats);
        CorrelatorCounts c = node.correlator->counts();
        size_t n = node.correlator->findings().size();
        findings += n;
        std::string kernel = stats.headers.empty() ? "-" : stats.headers.front().kernel;
        bool span = stats.events > 0;
        out << fmt::format(kRow, node.name, node_width, node.key.boot_id.empty() ? "-" : node.key.boot_id.substr(0, 8),
                           kernel.empty() ? "-" : kernel, span ? clock.wall(stats.first_ts_ns) : "-",
                           span ? clock.wall(stats.last_ts_ns) : "-", c.events, c.connections, c.resets[kRace], n,
                           reset_counts_text(c.resets, FindingKind::idle_close_race));
    }
    CorrelatorCounts all = report::total_counts(nodes);
    report::WallSpan wall = report::wall_span(nodes);
    out << fmt::format(kRow, "cluster", node_width, fmt::format("{} nodes", nodes.size()), "",
                       wall.first_ns ? report::wall_text(wall.first_ns) : "-",
                       wall.last_ns ? report::wall_text(wall.last_ns) : "-", all.events, all.connections,
                       all.resets[kRace], findings, reset_counts_text(all.resets, FindingKind::idle_close_race));
    out << '\n';
}

void render_counts(std::span<const ReportNode> nodes, std::ostream& out) {
    CorrelatorCounts c = report::total_counts(nodes);
    const auto& t = c.events_by_type;
    out << "Counts\n";
    out << fmt::format("  events       {} (state {}, close {}, reset_sent {}, reset_recv {}, setsockopt {})\n",
                       c.events, t[1], t[2], t[3], t[4], t[5]);
    out << fmt::format("  connections  {} seen, {} in memory, {} expired silent, {} evicted over the cap\n",
                       c.connections, c.live_connections, c.expired_stale, c.evicted_over_cap);
    out << fmt::format("  resets       {}{}\n", reset_counts_text(c.resets),
                       c.follow_up_resets ? fmt::format(" (+{} more for segments of connections already reset)",
                                                        c.follow_up_resets)
                                          : "");
    out << fmt::format("  lb           {}\n", nodes.front().correlator->config().describe_lb());
    if (nodes.size() == 1) {
        const ReplayStats& stats = *nodes.front().stats;
        if (stats.last_ts_ns > stats.first_ts_ns)
            out << fmt::format("  trace        {:.1f} s of events\n", (stats.last_ts_ns - stats.first_ts_ns) / 1e9);
    } else {
        out << fmt::format("  nodes        {} (each node's times on its own clock)\n", nodes.size());
    }
    report::BadLines bad = report::bad_lines(nodes);
    if (bad.count) out << fmt::format("  bad lines    {} skipped (first: {})\n", bad.count, bad.first);
}

std::string owner(const Event& e) { return e.pid ? fmt::format(" by {}[{}]", e.comm, e.pid) : ""; }

// ", as the process exited (SIGKILL, OOM kill)", or "".
std::string exiting(const Event& e) {
    if (!e.task_exiting) return "";
    return fmt::format(", as the process exited ({}{})", exit_code_text(e.exit_code), e.oom_victim ? ", OOM kill" : "");
}

std::string describe_event(const Event& e) {
    switch (e.type) {
    case EventType::state:
        return fmt::format("{} -> {}{}", to_string(e.old_state), to_string(e.new_state), exiting(e));
    case EventType::close:
        return fmt::format("{} -> {}{}, idle rx {} ms / tx {} ms, unread {} B, rx {} B, tx {} B{}{}{}",
                           to_string(e.old_state), to_string(e.new_state), e.abort ? " (abort)" : "", e.idle_rx_ms,
                           e.idle_tx_ms, e.unread_bytes, e.bytes_rx, e.bytes_tx,
                           e.send_queue_bytes ? fmt::format(", {} B unacknowledged", e.send_queue_bytes) : "",
                           owner(e), exiting(e));
    case EventType::reset_sent:
        return fmt::format("{}{}, socket {} in {}{}",
                           e.reason == ResetReason::none ? "no reason" : to_string(e.reason),
                           e.reason_inferred ? " (inferred)" : "", to_string(e.sk_kind), to_string(e.sk_state),
                           e.has_skb ? ", triggered by a received segment" : "");
    case EventType::reset_recv: return fmt::format("in {}", to_string(e.sk_state));
    case EventType::listen_overflow:
        return fmt::format("accept queue full ({} waiting, backlog {}): {}", e.acceptq_len, e.acceptq_max,
                           e.overflow_how == OverflowHow::drop ? "handshake dropped" : "SYN-ACK sent again");
    case EventType::signal:
        return fmt::format("{} to {}[{}] from {}[{}]", signal_name(e.signal), e.comm, e.pid, e.sender_comm, e.sender_pid);
    case EventType::existing: return fmt::format("already {} when tracing started{}", to_string(e.new_state), owner(e));
    case EventType::tally:
        return fmt::format("{} ordinary connections opened, {} closed locally first, {} after the peer's FIN",
                           e.tally.opened, e.tally.closed_local_first, e.tally.closed_remote_first);
    case EventType::setsockopt:
        return fmt::format("{} {} = {}{}{}", level_name(e.opt), to_string(e.opt), e.value,
                           e.opt == SockOpt::so_linger ? fmt::format(",{}", e.value2) : "", owner(e));
    }
    return "";
}

}  // namespace

void render_text_report(std::span<const ReportNode> nodes, std::ostream& out) {
    const bool several = nodes.size() > 1;
    // Every node's findings, in the order one node's are in.
    std::vector<std::pair<const ReportNode*, Finding>> findings;
    for (const auto& node : nodes)
        for (auto& f : node.correlator->findings()) findings.emplace_back(&node, std::move(f));
    std::stable_sort(findings.begin(), findings.end(),
                     [](const auto& a, const auto& b) { return finding_before(a.second, b.second); });
    out << "Findings\n";
    if (findings.empty())
        out << "  none: no classified resets and no backend closing idle connections before the LB\n\n";
    int number = 1;
    for (const auto& [node, f] : findings) render_finding(f, number++, several ? node->name : "", out);
    render_backends(nodes, out);
    if (several) render_nodes(nodes, out);
    render_counts(nodes, out);
}

void render_text_report(const Correlator& correlator, const ReplayStats& stats, std::ostream& out) {
    ReportNode only = report::single_node(correlator, stats);
    render_text_report(std::span<const ReportNode>(&only, 1), out);
}

void render_timeline(const IpAddr& raddr, uint16_t rport, std::vector<Event> events,
                     const std::vector<ConnectionRecord>& records, std::ostream& out) {
    out << fmt::format("Connection {}\n", format_endpoint(raddr, rport));
    if (events.empty() && records.empty()) {
        out << "  no events in the trace for this peer\n";
        return;
    }
    std::stable_sort(events.begin(), events.end(), [](const Event& a, const Event& b) { return a.ts_ns < b.ts_ns; });
    uint64_t t0 = events.empty() ? 0 : events.front().ts_ns;
    // One block per socket: the backend's, and the peer's own when it was traced too.
    std::map<uint64_t, std::vector<const Event*>> by_cookie;
    for (const auto& e : events) by_cookie[e.cookie].push_back(&e);
    for (const auto& [cookie, list] : by_cookie) {
        const Event& first = *list.front();
        out << fmt::format("\n  socket {} {}->{} (netns {})\n", cookie, format_endpoint(first.raddr, first.rport),
                           format_endpoint(first.laddr, first.lport), first.netns);
        for (const Event* e : list)
            out << fmt::format("    +{:>9.3f} s  {:<10}  {}\n", (e->ts_ns - t0) / 1e9, to_string(e->type),
                               describe_event(*e));
        for (const auto& r : records) {
            if (r.cookie != cookie) continue;
            out << fmt::format("    opened {}, first close {}, ended {}", to_string(r.opened), to_string(r.first_close),
                               to_string(r.end));
            if (r.close_ts_ns)
                out << fmt::format(", quiet {} before the local close", seconds_text(r.idle_before_close_ms));
            out << '\n';
            if (r.reset)
                out << fmt::format("    verdict: {}: {}\n", to_string(*r.reset),
                                   r.evidence ? explain::evidence(*r.evidence) : std::string());
        }
    }
}

}  // namespace tcpwhy
