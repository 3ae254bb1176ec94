// `tcpwhy report --json`: every fact the correlator holds about the traces, and next to
// each finding the words the text report shows. Schema: docs/report-json.md; its version
// is kReportJsonVersion, bumped on any change a consumer could trip over.
#include <algorithm>
#include <ostream>

#include <nlohmann/json.hpp>

#include "tcpwhy/explain.h"
#include "tcpwhy/report.h"
#include "report_nodes.h"
#include "trace_clock.h"

namespace tcpwhy {
namespace {

using nlohmann::ordered_json;

ordered_json or_null(const std::string& text) { return text.empty() ? ordered_json(nullptr) : ordered_json(text); }

template <typename T>
ordered_json or_null(const std::optional<T>& value) {
    return value ? ordered_json(*value) : ordered_json(nullptr);
}

ordered_json idle_json(const IdleStats& idle) {
    return {{"samples", idle.samples},
            {"p50_ms", idle.p50_ms},
            {"p90_ms", idle.p90_ms},
            {"max_ms", idle.max_ms},
            {"exact", idle.exact}};
}

// The detected server: what detection read, and what tcpwhy knows of its idle timeout.
ordered_json server_json(const ServerInfo& s) {
    const KnobSpec& knob = knowledge(s.kind).idle;
    const IdleDefault d = idle_default(s);
    auto ms_or_null = [&](uint32_t ms) { return d.kind == DefaultKind::value ? ordered_json(ms) : ordered_json(nullptr); };
    return {{"kind", to_string(s.kind)},
            {"name", s.kind == ServerKind::unknown ? std::string() : server_display(s)},
            {"version", s.version},
            {"runtime", s.runtime},
            {"framework", s.framework},
            {"module", s.module},
            {"worker", s.worker},
            {"configured_idle_ms", s.configured_idle_ms ? ordered_json(*s.configured_idle_ms) : ordered_json(nullptr)},
            {"configured_by", s.configured_by},
            {"via", s.via},
            {"exe", s.exe},
            {"idle_timeout",
             {{"knob", std::string(knob.name)},
              {"default", to_string(d.kind)},
              {"default_ms", ms_or_null(d.setting_ms)},
              {"closes_at_ms", ms_or_null(d.closes_at_ms)},
              {"note", std::string(d.why.empty() ? knob.note : d.why)},
              {"source", std::string(knob.source)}}}};
}

ordered_json backend_key_json(const BackendProfile& b, const std::string& node) {
    const BackendId& id = b.id;
    ordered_json j = {{"node", node},
                      {"netns", id.netns},
                      {"port", id.port},
                      {"direction", id.outbound ? "outbound" : "inbound"},
                      {"laddr", id.laddr.family ? id.laddr.to_string() : ""},
                      {"comm", b.comm},
                      {"pid", b.pid}};
    if (!id.pod.empty()) j["pod"] = id.pod;
    if (!id.namespace_name.empty()) j["namespace"] = id.namespace_name;
    if (!id.container.empty()) j["container"] = id.container;
    if (id.workload != WorkloadKind::unknown) j["workload"] = to_string(id.workload);
    j["label"] = explain::backend_label(b);
    if (b.server) j["server"] = server_json(*b.server);
    return j;
}

ordered_json evidence_json(const ResetEvidence& ev) {
    ordered_json j = {{"mechanism", to_string(ev.mechanism)},
                      {"reason", or_null(std::string(to_string(ev.reason)))},
                      {"reason_source", to_string(ev.reason_source)},
                      {"socket", to_string(ev.sk_kind)},
                      {"socket_state", to_string(ev.sk_state)},
                      {"close_seen", ev.close_seen},
                      {"close_idle", ev.close_idle},
                      {"close_aborted", ev.close_aborted},
                      {"idle_gap_ms", ev.idle_gap_ms},
                      {"idle_gap_from_reset", ev.idle_from_reset},
                      {"idle_bar_ms", ev.idle_bar_ms},
                      {"after_close_ms", or_null(ev.after_close_ms)},
                      {"unread_bytes", ev.unread_bytes},
                      {"first_close", to_string(ev.first_close)},
                      {"linger_zero_in_force", ev.linger_zero_in_force},
                      {"user_timeout_ms", or_null(ev.user_timeout_ms)},
                      {"send_queue_bytes", ev.send_queue_bytes},
                      {"closed_by_exit", ev.closed_by_exit},
                      {"closed_while_draining", ev.closed_while_draining},
                      {"peer_idle_ms", or_null(ev.peer_idle_ms)}};
    if (ev.keepalive_probes)
        j["keepalive"] = {{"idle_s", (*ev.keepalive_probes)[0]},
                          {"interval_s", (*ev.keepalive_probes)[1]},
                          {"count", (*ev.keepalive_probes)[2]}};
    else
        j["keepalive"] = nullptr;
    return j;
}

ordered_json option_change_json(const SockOptChange& c, const report::TraceClock& clock) {
    return {{"option", to_string(c.opt)},
            {"value", c.value},
            {"value2", c.value2},
            {"previous", or_null(c.previous)},
            {"pid", c.pid},
            {"comm", c.comm},
            {"ts_ns", c.ts_ns},
            {"time", or_null(clock.rfc3339(c.ts_ns))},
            {"text", explain::option_change(c)}};
}

ordered_json connection_json(const ConnectionRecord& r, const report::TraceClock& clock) {
    ordered_json j = {{"cookie", r.cookie},
                      {"netns", r.netns},
                      {"peer", format_endpoint(r.raddr, r.rport)},
                      {"local", format_endpoint(r.laddr, r.lport)},
                      {"lb_peer", r.lb_peer},
                      {"opened", to_string(r.opened)},
                      {"first_close", to_string(r.first_close)},
                      {"end", to_string(r.end)},
                      {"aborted", r.aborted},
                      {"first_ts_ns", r.first_ts_ns},
                      {"close_ts_ns", r.close_ts_ns},
                      {"reset_ts_ns", r.reset_ts_ns},
                      {"last_ts_ns", r.last_ts_ns},
                      {"reset_time", or_null(clock.rfc3339(r.reset_ts_ns ? r.reset_ts_ns : r.last_ts_ns))},
                      {"idle_before_close_ms", r.close_ts_ns ? ordered_json(r.idle_before_close_ms) : nullptr},
                      {"unread_at_close", r.unread_at_close},
                      {"bytes_rx", r.bytes_rx},
                      {"bytes_tx", r.bytes_tx},
                      {"kind", r.reset ? ordered_json(to_string(*r.reset)) : nullptr},
                      {"reset_reason", or_null(std::string(to_string(r.reset_reason)))}};
    j["evidence"] = r.evidence ? evidence_json(*r.evidence) : nullptr;
    j["evidence_text"] = r.evidence ? ordered_json(explain::evidence(*r.evidence)) : nullptr;
    return j;
}

ordered_json ts_json(uint64_t ts_ns) { return ts_ns ? ordered_json(ts_ns) : ordered_json(nullptr); }

// The facts of the kinds about a backend's life (docs/report-json.md, `facts`); null for the others.
ordered_json facts_json(const Finding& f, const report::TraceClock& clock) {
    if (f.drain) {
        const DrainFacts& d = *f.drain;
        return {{"stops", d.stops},
                {"pid", d.pid},
                {"comm", d.comm},
                {"listener_close_ts_ns", ts_json(d.listener_close_ts_ns)},
                {"listener_close_time", or_null(clock.rfc3339(d.listener_close_ts_ns))},
                {"signal", d.signal ? ordered_json(std::string(signal_name(d.signal))) : nullptr},
                {"signal_sender", or_null(d.signal_sender)},
                {"signal_ts_ns", ts_json(d.signal_ts_ns)},
                {"signal_to_close_ms", or_null(d.signal_to_close_ms)},
                {"last_refused_ts_ns", ts_json(d.last_refused_ts_ns)},
                {"drain_lag_ms", d.drain_lag_ms},
                {"max_drain_lag_ms", d.max_drain_lag_ms},
                {"refused", d.refused},
                {"refused_lb", d.refused_lb},
                {"pooled_resets", d.pooled_resets},
                {"in_flight", d.in_flight},
                {"killed_after_ms", or_null(d.killed_after_ms)},
                {"relisten_after_ms", or_null(d.relisten_after_ms)},
                {"exit", d.exit_code ? ordered_json(exit_code_text(*d.exit_code)) : nullptr}};
    }
    if (f.crash) {
        const CrashFacts& c = *f.crash;
        int sig = exit_signal(c.exit_code);
        return {{"crashes", c.crashes},
                {"pid", c.pid},
                {"comm", c.comm},
                {"ts_ns", c.ts_ns},
                {"time", or_null(clock.rfc3339(c.ts_ns))},
                {"exit", exit_code_text(c.exit_code)},
                {"signal", sig ? ordered_json(std::string(signal_name(sig))) : nullptr},
                {"exit_status", sig ? nullptr : ordered_json(exit_status(c.exit_code))},
                {"oom_victim", c.oom_victim},
                {"connections", c.connections},
                {"connections_lb", c.connections_lb},
                {"in_flight", c.in_flight},
                {"mid_response", c.mid_response},
                {"aborted", c.aborted},
                {"listener_closed", c.listener_closed},
                {"refused", c.refused},
                {"refused_lb", c.refused_lb},
                {"refused_for_ms", or_null(c.refused_for_ms)},
                {"restarted_after_ms", or_null(c.restarted_after_ms)}};
    }
    if (f.overflow) {
        const OverflowFacts& o = *f.overflow;
        ordered_json seconds = ordered_json::array();
        for (auto [ts, n] : o.per_second) seconds.push_back({ts, n});
        return {{"drops", o.drops},
                {"synack_retransmits", o.synack_retransmits},
                {"lb", o.lb},
                {"backlog", o.backlog},
                {"max_queue", o.max_queue},
                {"peak_per_second", o.peak_per_second},
                {"seconds", o.seconds},
                {"per_second", std::move(seconds)}};
    }
    if (f.lb_timeout) {
        const LbTimeoutFacts& t = *f.lb_timeout;
        return {{"connections", t.connections},
                {"by_reset", t.by_reset},
                {"waited", idle_json(t.waited)},
                {"lb_response_timeout_s", t.lb_response_timeout_s}};
    }
    if (f.upstream)
        return {{"upstream_idle_close", idle_json(f.upstream->upstream_idle_close)},
                {"client_idle_below_ms", f.upstream->client_idle_below_ms}};
    return nullptr;
}

ordered_json finding_json(const Finding& f, const report::TraceClock& clock, const std::string& node) {
    const KindInfo& kind = info(f.kind);
    explain::Words words = explain::words(f);
    ordered_json connections = ordered_json::array();
    for (const auto& r : f.connections) connections.push_back(connection_json(r, clock));
    return {{"kind", kind.name},
            {"severity", to_string(kind.severity)},
            {"backend", backend_key_json(f.backend, node)},
            {"count", f.count},
            {"count_lb", f.count_lb},
            {"count_other", f.count_other},
            {"first_ts_ns", f.first_ts_ns},
            {"last_ts_ns", f.last_ts_ns},
            {"first_time", or_null(clock.rfc3339(f.first_ts_ns))},
            {"last_time", or_null(clock.rfc3339(f.last_ts_ns))},
            {"idle_close", f.idle_close ? idle_json(*f.idle_close) : nullptr},
            {"lb", {{"name", f.lb.name}, {"range", f.lb.range}, {"idle_timeout_s", f.lb.idle_timeout_s}}},
            {"evidence", f.evidence ? evidence_json(*f.evidence) : nullptr},
            {"linked_change", f.linked_change ? option_change_json(*f.linked_change, clock) : nullptr},
            {"summary", words.summary},
            {"evidence_text", words.evidence},
            {"advice", words.advice},
            {"lb_symptom", or_null(words.lb_symptom)},
            {"facts", facts_json(f, clock)},
            {"connections", std::move(connections)},
            {"connections_not_kept", f.connections_not_kept}};
}

ordered_json by_kind_json(const std::array<uint64_t, kFindingKindCount>& counts) {
    ordered_json j = ordered_json::object();
    for (const KindInfo& row : finding_kinds())
        if (row.counts_resets) j[std::string(row.name)] = counts[static_cast<size_t>(row.kind)];
    return j;
}

ordered_json backend_json(const BackendProfile& b, const report::TraceClock& clock, const std::string& node) {
    ordered_json j = backend_key_json(b, node);
    ordered_json histogram = ordered_json::array();
    for (const auto& [low, count] : b.idle_histogram) histogram.push_back({low, count});
    ordered_json options = ordered_json::object();
    for (int i = 0; i < kSockOptCount; ++i) {
        auto opt = static_cast<SockOpt>(i);
        if (b.opts.has(opt)) options[std::string(to_string(opt))] = b.opts.value(opt);
    }
    ordered_json changes = ordered_json::array();
    for (const auto& c : b.opt_changes) changes.push_back(option_change_json(c, clock));
    j["connections_lb"] = b.connections_lb;
    j["connections_other"] = b.connections_other;
    j["live_connections"] = b.live_connections;
    j["closed_local_first"] = b.closed_local_first;
    j["closed_remote_first"] = b.closed_remote_first;
    j["aborted_local"] = b.aborted_local;
    j["idle_close"] = b.idle_close.samples ? idle_json(b.idle_close) : nullptr;
    j["idle_histogram_ms"] = std::move(histogram);
    j["resets_lb"] = by_kind_json(b.resets_lb);
    j["resets_other"] = by_kind_json(b.resets_other);
    j["options"] = std::move(options);
    j["option_changes"] = std::move(changes);
    return j;
}

ordered_json counts_json(const CorrelatorCounts& c, uint64_t bad_lines, const std::string& first_bad) {
    ordered_json by_type = ordered_json::object();
    for (size_t t = 1; t < kEventTypeCount; ++t)
        by_type[std::string(to_string(static_cast<EventType>(t)))] = c.events_by_type[t];
    return {{"events", c.events},
            {"events_by_type", std::move(by_type)},
            {"connections", c.connections},
            {"live_connections", c.live_connections},
            {"expired_stale", c.expired_stale},
            {"evicted_over_cap", c.evicted_over_cap},
            {"backends_overflowed", c.backends_overflowed},
            {"ignored_events", c.ignored_events},
            {"local_reset_recv", c.local_reset_recv},
            {"follow_up_resets", c.follow_up_resets},
            {"resets", by_kind_json(c.resets)},
            {"bad_lines", bad_lines},
            {"first_bad_line", or_null(first_bad)}};
}

ordered_json span_json(uint64_t first_ts_ns, uint64_t last_ts_ns, const std::string& first_time,
                       const std::string& last_time) {
    return {{"first_ts_ns", first_ts_ns},
            {"last_ts_ns", last_ts_ns},
            {"first_time", or_null(first_time)},
            {"last_time", or_null(last_time)}};
}

}  // namespace

void render_json_report(std::span<const ReportNode> nodes, std::ostream& out) {
    const CorrelatorConfig& config = nodes.front().correlator->config();
    ordered_json traces = ordered_json::array();
    ordered_json node_list = ordered_json::array();
    std::vector<std::pair<Finding, ordered_json>> findings;  // every node's, merged in findings() order below
    ordered_json backends = ordered_json::array();
    for (const auto& node : nodes) {
        const ReplayStats& stats = *node.stats;
        report::TraceClock clock(stats);
        for (const auto& h : stats.headers)
            traces.push_back({{"node", node.name},
                              {"hostname", h.hostname},
                              {"boot_id", or_null(h.boot_id)},
                              {"kernel", h.kernel},
                              {"mono_start_ns", h.mono_start_ns},
                              {"wall_start_ns", h.wall_start_ns},
                              {"lb_ranges", h.lb_ranges}});
        auto node_findings = node.correlator->findings();
        const size_t finding_count = node_findings.size();
        for (auto& f : node_findings) {
            ordered_json j = finding_json(f, clock, node.name);
            findings.emplace_back(std::move(f), std::move(j));
        }
        for (const auto& b : node.correlator->backends()) backends.push_back(backend_json(b, clock, node.name));
        node_list.push_back({{"name", node.name},
                             {"hostname", node.key.hostname},
                             {"boot_id", or_null(node.key.boot_id)},
                             {"kernel", stats.headers.empty() ? "" : stats.headers.front().kernel},
                             {"traces", stats.headers.size()},
                             {"span", span_json(stats.first_ts_ns, stats.last_ts_ns, clock.rfc3339(stats.first_ts_ns),
                                                clock.rfc3339(stats.last_ts_ns))},
                             {"findings", finding_count},
                             {"counts", counts_json(node.correlator->counts(), stats.bad_lines, stats.first_bad)}});
    }
    std::stable_sort(findings.begin(), findings.end(),
                     [](const auto& a, const auto& b) { return finding_before(a.first, b.first); });
    ordered_json finding_list = ordered_json::array();
    for (auto& [f, j] : findings) finding_list.push_back(std::move(j));

    // A span in trace time exists for one node only: the clocks of different nodes do not compare.
    ordered_json span;
    if (nodes.size() == 1) {
        span = node_list[0]["span"];
    } else {
        report::WallSpan wall = report::wall_span(nodes);
        span = span_json(0, 0, wall.first_ns ? report::wall_rfc3339(wall.first_ns) : "",
                         wall.last_ns ? report::wall_rfc3339(wall.last_ns) : "");
    }
    report::BadLines bad = report::bad_lines(nodes);
    ordered_json j = {
        {"schema", "tcpwhy-report"},
        {"version", kReportJsonVersion},
        {"traces", std::move(traces)},
        {"span", std::move(span)},
        {"nodes", std::move(node_list)},
        {"lb",
         {{"name", config.lb_name},
          {"description", config.lb_description},
          {"ranges", config.lb_ranges.to_string()},
          {"any_non_loopback_peer", config.lb_any_non_loopback_peer},
          {"idle_timeout_s", config.lb_idle_timeout_s},
          {"response_timeout_s", config.lb_response_timeout_s}}},
        {"findings", std::move(finding_list)},
        {"backends", std::move(backends)},
        {"counts", counts_json(report::total_counts(nodes), bad.count, bad.first)},
    };
    // A trace is outside input: a process name with bytes that are not UTF-8 must not stop the report.
    out << j.dump(2, ' ', false, ordered_json::error_handler_t::replace) << '\n';
}

void render_json_report(const Correlator& correlator, const ReplayStats& stats, std::ostream& out) {
    ReportNode only = report::single_node(correlator, stats);
    render_json_report(std::span<const ReportNode>(&only, 1), out);
}

}  // namespace tcpwhy
