// `tcpwhy report --html FILE`: one self-contained page (inline CSS, SVG and a few lines
// of JS; nothing fetched, so it opens offline and can be attached to a postmortem).
// Everything that comes from a trace (process names, pod names, reasons, evidence) is
// HTML-escaped: a trace is input, and a process can name itself `<script>`.
#include <algorithm>
#include <cmath>
#include <ctime>
#include <map>
#include <ostream>

#include <fmt/format.h>

#include "tcpwhy/explain.h"
#include "tcpwhy/report.h"
#include "report_nodes.h"
#include "trace_clock.h"

namespace tcpwhy {
namespace {

constexpr size_t kMaxTableRows = 500;
// A finding lists its newest connections inline; the table below has every one kept.
constexpr size_t kConnectionsPerFinding = 10;

std::string escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
        }
    }
    return out;
}

std::string duration_text(uint64_t ms) {
    if (ms < 1000) return fmt::format("{} ms", ms);
    if (ms < 120'000) return fmt::format("{:.1f} s", ms / 1000.0);
    return fmt::format("{:.0f} s", ms / 1000.0);
}

using report::TraceClock;

std::string_view kind_colour(FindingKind kind) { return info(kind).colour; }

constexpr std::string_view kStyle = R"(
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d232b;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#c6ccd4}
main{padding:16px 28px;max-width:1280px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:14px 18px;margin:0 0 16px}
h2{font-size:17px;margin:0 0 10px}h3{font-size:15px;margin:8px 0}
.finding{border-left:5px solid var(--k);padding:6px 12px;margin:10px 0;background:#fbfbfc}
.kind{display:inline-block;font:12px ui-monospace,monospace;color:#fff;background:var(--k);border-radius:3px;padding:1px 6px}
.advice{background:#eef7ee;border:1px solid #b7dcb7;border-radius:4px;padding:8px 10px;margin-top:8px}
.evidence,.conns{color:#4a5563;font-size:13px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #e6e9ed;vertical-align:top}
th{background:#f0f2f5;position:sticky;top:0}
.table-wrap{overflow-x:auto}#connections td.evidence{min-width:18em;white-space:normal}
#connections td.peer{white-space:nowrap}
.num{text-align:right;white-space:nowrap}td.mono{white-space:nowrap}.muted{color:#7a8591}
svg text{font:11px system-ui,sans-serif;fill:#39424e}
.chart{overflow-x:auto}.none{color:#2f7d32;font-weight:600}
)";

// Keeps the page usable offline with many rows: filter the connection table by kind.
constexpr std::string_view kScript = R"(
(function(){
  var select=document.getElementById('kind-filter');
  if(select){
    select.addEventListener('change',function(){
      var rows=document.querySelectorAll('#connections tbody tr');
      for(var i=0;i<rows.length;i++){
        rows[i].style.display=(select.value===''||rows[i].dataset.kind===select.value)?'':'none';
      }
    });
  }
  // A headless browser test checks the script ran, and that the page fits its window.
  var fits=document.documentElement.scrollWidth<=window.innerWidth;
  var wraps=document.querySelectorAll('.table-wrap');
  for(var w=0;w<wraps.length;w++)fits=fits&&wraps[w].scrollWidth<=wraps[w].clientWidth;
  document.body.setAttribute('data-fits',fits?'yes':'no');
  document.body.setAttribute('data-script','ran');
})();
)";

// A finding and the node it is on ("" in a report of one node: nothing to say).
struct NodeFinding {
    std::string_view node;
    Finding finding;
};

// "node-a · " before a backend's name in a report of several nodes.
std::string node_prefix(std::string_view node) { return node.empty() ? "" : escape(node) + " · "; }

void render_findings(const std::vector<NodeFinding>& findings, std::ostream& out) {
    out << "<section id=\"findings\"><h2>Findings</h2>\n";
    if (findings.empty())
        out << "<p class=\"none\">None: no classified resets and no backend closing idle connections before the "
               "load balancer.</p>\n";
    int number = 1;
    for (const auto& [node, f] : findings) {
        auto kind = to_string(f.kind);
        explain::Words words = explain::words(f);
        out << fmt::format("<div class=\"finding\" style=\"--k:{}\" data-kind=\"{}\" data-severity=\"{}\"{}>",
                           kind_colour(f.kind), kind, to_string(info(f.kind).severity),
                           node.empty() ? "" : fmt::format(" data-node=\"{}\"", escape(node)));
        out << fmt::format("<p><b>{}.</b> <span class=\"kind\">{}</span> {}{}</p>\n", number++, kind,
                           node.empty() ? "" : fmt::format("on <b class=\"node\">{}</b>: ", escape(node)),
                           escape(words.summary));
        if (std::string server = explain::server_line(f.backend); !server.empty())
            out << fmt::format("<p class=\"server\">server: {}</p>\n", escape(server));
        for (const auto& line : words.evidence)
            out << fmt::format("<p class=\"evidence\">evidence: {}</p>\n", escape(line));
        if (!words.lb_symptom.empty())
            out << fmt::format("<p class=\"evidence symptom\">load balancer: {}</p>\n", escape(words.lb_symptom));
        if (!f.connections.empty()) {
            size_t shown = std::min(f.connections.size(), kConnectionsPerFinding);
            std::string list;
            for (size_t i = 0; i < shown; ++i)
                list += (list.empty() ? "" : ", ") + escape(explain::four_tuple(f.connections[i]));
            std::string more = f.count > shown ? fmt::format(" (most recent {} of {})", shown, f.count) : "";
            out << fmt::format("<p class=\"conns\">connections{}: <span class=\"mono\">{}</span></p>\n", more, list);
        }
        out << fmt::format("<div class=\"advice\"><b>Fix:</b> {}</div></div>\n", escape(words.advice));
    }
    out << "</section>\n";
}

// Idle-before-close per backend on a log time axis, with the LB's idle timeout marked:
// a backend whose bars sit left of the line closes connections the LB still holds.
void render_histogram(const BackendProfile& b, uint32_t lb_timeout_s, std::ostream& out) {
    constexpr double kWidth = 760, kHeight = 190, kLeft = 46, kRight = 16, kTop = 26, kBottom = 34;
    const double lb_ms = lb_timeout_s * 1000.0;
    double lo_ms = 10, hi_ms = std::max(lb_ms * 2, 10'000.0);
    uint64_t peak = 1;
    for (const auto& [low, count] : b.idle_histogram) {
        lo_ms = std::min(lo_ms, std::max(1.0, low * 0.8));
        hi_ms = std::max(hi_ms, DurationHistogram::bucket_high(DurationHistogram::bucket_of(low)) * 1.25);
        peak = std::max(peak, count);
    }
    const double log_lo = std::log10(lo_ms), log_hi = std::log10(hi_ms), plot_w = kWidth - kLeft - kRight,
                 plot_h = kHeight - kTop - kBottom;
    auto x_of = [&](double ms) { return kLeft + (std::log10(std::max(ms, lo_ms)) - log_lo) / (log_hi - log_lo) * plot_w; };

    out << fmt::format("<div class=\"chart\"><svg class=\"histogram\" role=\"img\" width=\"{0}\" height=\"{1}\" "
                       "viewBox=\"0 0 {0} {1}\" xmlns=\"http://www.w3.org/2000/svg\">"
                       "<title>idle before close, {2}</title>\n",
                       kWidth, kHeight, escape(explain::backend_label(b)));
    out << fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#9aa3ad\"/>\n", kLeft,
                       kTop + plot_h, kLeft + plot_w);
    for (double tick = std::pow(10, std::ceil(log_lo)); tick <= hi_ms; tick *= 10)
        out << fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#e3e6ea\"/>"
                           "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
                           x_of(tick), kTop, kTop + plot_h, kTop + plot_h + 14,
                           tick < 1000 ? fmt::format("{:.0f} ms", tick) : fmt::format("{:.0f} s", tick / 1000));
    out << fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", kLeft - 4, kTop + 8, peak);
    out << fmt::format("<text x=\"{}\" y=\"{}\">idle before the backend's close (log scale)</text>\n", kLeft,
                       kHeight - 4);
    for (const auto& [low, count] : b.idle_histogram) {
        uint32_t high = DurationHistogram::bucket_high(DurationHistogram::bucket_of(low));
        double x0 = x_of(low), x1 = std::max(x_of(high + 1.0), x0 + 6);
        double h = plot_h * static_cast<double>(count) / static_cast<double>(peak);
        out << fmt::format("<rect class=\"bar\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" "
                           "fill=\"#3b75af\"><title>{}–{}: {} close{}</title></rect>\n",
                           x0, kTop + plot_h - h, x1 - x0, h, duration_text(low), duration_text(high), count,
                           count == 1 ? "" : "s");
    }
    if (b.idle_close.samples) {
        double x = x_of(b.idle_close.p50_ms);
        out << fmt::format("<text class=\"p50\" x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\" fill=\"#3b75af\">"
                           "backend closes after {} (p50)</text>\n",
                           x, kTop - 8, duration_text(b.idle_close.p50_ms));
    }
    if (lb_timeout_s) {
        double x = x_of(lb_ms);
        out << fmt::format("<line class=\"lb-timeout\" x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" "
                           "stroke=\"#d6453d\" stroke-width=\"2\" stroke-dasharray=\"5,3\"/>"
                           "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"end\" fill=\"#d6453d\">LB idle timeout {4} s"
                           "</text>\n",
                           x, kTop - 4, kTop + plot_h, kTop - 8, lb_timeout_s);
    }
    out << "</svg></div>\n";
}

void render_backends(std::span<const ReportNode> nodes, std::ostream& out) {
    const bool several = nodes.size() > 1;
    std::vector<std::pair<std::string_view, BackendProfile>> backends;
    for (const auto& node : nodes)
        for (auto& b : node.correlator->backends())
            backends.emplace_back(several ? std::string_view(node.name) : std::string_view(), std::move(b));
    const uint32_t lb_timeout_s = nodes.front().correlator->config().lb_idle_timeout_s;
    out << "<section id=\"backends\"><h2>Backends: idle time before the backend closes</h2>\n";
    if (backends.empty()) out << "<p class=\"muted\">No backends seen.</p>\n";
    // Backends that closed idle connections get a chart, those first; on a busy node the
    // rest (clients, backends the peer always closes) are one line each at the end.
    std::stable_partition(backends.begin(), backends.end(),
                          [](const auto& nb) { return !nb.second.idle_histogram.empty(); });
    for (const auto& [node, b] : backends) {
        out << fmt::format("<div class=\"backend\"{}><h3>{}{}</h3>\n",
                           node.empty() ? "" : fmt::format(" data-node=\"{}\"", escape(node)), node_prefix(node),
                           escape(explain::backend_label(b)));
        if (std::string server = explain::server_line(b); !server.empty())
            out << fmt::format("<p class=\"server\">server: {}</p>\n", escape(server));
        uint64_t resets = b.resets_total();
        out << fmt::format("<p class=\"muted\">{} connections from the LB, {} from others; {} closed by the "
                           "backend first, {} by the peer; {} resets",
                           b.connections_lb, b.connections_other, b.closed_local_first, b.closed_remote_first, resets);
        if (b.idle_close.samples)
            out << fmt::format("; idle closes p50 {}, p90 {}, max {} ({} closes{})",
                               duration_text(b.idle_close.p50_ms), duration_text(b.idle_close.p90_ms),
                               duration_text(b.idle_close.max_ms), b.idle_close.samples,
                               b.idle_close.exact ? "" : ", percentiles ±3%");
        out << "</p>\n";
        if (b.idle_histogram.empty()) out << "<p class=\"muted\">No idle closes by this backend.</p>\n";
        else render_histogram(b, lb_timeout_s, out);
        out << "</div>\n";
    }
    out << "</section>\n";
}

// A reset connection, the node it is on, and its time on a scale every node shares (wall time
// where the node's clock is known).
struct NodeRecord {
    size_t node = 0;
    ConnectionRecord record;
    uint64_t at_ns = 0;
};

// Resets over time: one row per kind (per node and kind with several nodes), a mark per
// classified reset connection, and under them every reset event of the traces per time bin
// (complete, unclassified). Each node's times are mapped to wall time with its own clock.
void render_reset_timeline(const std::vector<NodeRecord>& records, const std::vector<ResetMark>& marks,
                           uint64_t dropped_marks, std::span<const ReportNode> nodes,
                           const std::vector<TraceClock>& clocks, std::ostream& out) {
    out << "<section id=\"timeline\"><h2>Timeline of resets</h2>\n";
    if (records.empty() && marks.empty()) {
        out << "<p class=\"none\">No resets in the trace.</p></section>\n";
        return;
    }
    const bool several = nodes.size() > 1;
    uint64_t t0 = 0, last = 0;
    bool any = false;
    for (size_t i = 0; i < nodes.size(); ++i) {
        const ReplayStats& stats = *nodes[i].stats;
        if (!stats.events) continue;
        uint64_t first = clocks[i].wall_or_trace_ns(stats.first_ts_ns);
        t0 = any ? std::min(t0, first) : first;
        last = std::max(last, clocks[i].wall_or_trace_ns(stats.last_ts_ns));
        any = true;
    }
    uint64_t t1 = std::max(last, t0 + 1'000'000'000);
    std::vector<std::pair<size_t, FindingKind>> rows;  // (node, kind); node 0 for all with one node
    auto row_of = [&](const NodeRecord& r) { return std::pair{several ? r.node : 0, *r.record.reset}; };
    for (const auto& r : records)
        if (std::find(rows.begin(), rows.end(), row_of(r)) == rows.end()) rows.push_back(row_of(r));
    std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    auto row_label = [&](const std::pair<size_t, FindingKind>& row) {
        return several ? fmt::format("{} · {}", nodes[row.first].name, to_string(row.second))
                       : std::string(to_string(row.second));
    };
    size_t longest = 0;
    for (const auto& row : rows) longest = std::max(longest, row_label(row).size());
    constexpr double kWidth = 900, kRight = 36, kRow = 24, kBars = 60, kTop = 8;
    // Node names can be long (GKE's are 40 characters): the labels take what they need.
    const double kLeft = several ? std::clamp(6.5 * static_cast<double>(longest) + 12, 170.0, 420.0) : 170.0;
    const double plot_w = kWidth - kLeft - kRight;
    const double rows_h = kRow * static_cast<double>(rows.size());
    const double height = kTop + rows_h + kBars + 40;
    auto x_of = [&](uint64_t ts) {
        return kLeft + plot_w * static_cast<double>(std::clamp(ts, t0, t1) - t0) / static_cast<double>(t1 - t0);
    };
    out << fmt::format("<div class=\"chart\"><svg class=\"timeline\" role=\"img\" width=\"{0}\" height=\"{1}\" "
                       "viewBox=\"0 0 {0} {1}\" xmlns=\"http://www.w3.org/2000/svg\"><title>resets over time</title>\n",
                       kWidth, height);
    for (size_t row = 0; row < rows.size(); ++row) {
        double y = kTop + kRow * static_cast<double>(row) + kRow / 2;
        out << fmt::format(
            "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>"
            "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#eef0f3\"/>\n",
            kLeft - 6, y + 4, escape(row_label(rows[row])), kLeft, y, kLeft + plot_w, y);
    }
    for (const auto& nr : records) {
        const auto& r = nr.record;
        size_t row = static_cast<size_t>(std::find(rows.begin(), rows.end(), row_of(nr)) - rows.begin());
        double y = kTop + kRow * static_cast<double>(row) + kRow / 2;
        out << fmt::format(
            "<circle class=\"reset\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4\" fill=\"{}\" "
            "fill-opacity=\"0.8\"><title>{}{} {} {}</title></circle>\n",
            x_of(nr.at_ns), y, kind_colour(*r.reset), node_prefix(several ? nodes[nr.node].name : ""),
            escape(clocks[nr.node].wall(r.last_ts_ns)), to_string(*r.reset), escape(explain::four_tuple(r)));
    }
    // Every reset event per bin: how many there were, even beyond the classified ones kept.
    constexpr int kBins = 120;
    std::array<uint64_t, kBins> bins{};
    for (const auto& m : marks) {
        uint64_t at = m.node < clocks.size() ? clocks[m.node].wall_or_trace_ns(m.ts_ns) : m.ts_ns;
        bins[std::min<size_t>(kBins - 1, static_cast<size_t>((x_of(at) - kLeft) / plot_w * kBins))]++;
    }
    uint64_t peak = std::max<uint64_t>(1, *std::max_element(bins.begin(), bins.end()));
    double base = kTop + rows_h + kBars;
    auto sent = std::count_if(marks.begin(), marks.end(), [](const ResetMark& m) { return m.sent; });
    out << fmt::format("<text x=\"{0}\" y=\"{1:.1f}\" text-anchor=\"end\">all reset events</text>"
                       "<text x=\"{0}\" y=\"{2:.1f}\" text-anchor=\"end\">{3} sent, {4} received</text>\n",
                       kLeft - 6, base - kBars / 2, base - kBars / 2 + 13, sent, marks.size() - static_cast<size_t>(sent));
    for (int i = 0; i < kBins; ++i) {
        if (!bins[static_cast<size_t>(i)]) continue;
        double h = (kBars - 8) * static_cast<double>(bins[static_cast<size_t>(i)]) / static_cast<double>(peak);
        out << fmt::format("<rect class=\"bin\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" "
                           "fill=\"#9aa3ad\"><title>{} reset events</title></rect>\n",
                           kLeft + plot_w * i / kBins, base - h, std::max(1.0, plot_w / kBins - 1), h,
                           bins[static_cast<size_t>(i)]);
    }
    out << fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#9aa3ad\"/>\n", kLeft, base,
                       kLeft + plot_w);
    for (int i = 0; i <= 4; ++i) {
        uint64_t ts = t0 + (t1 - t0) * static_cast<uint64_t>(i) / 4;
        out << fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">+{:.1f} s</text>\n", x_of(ts),
                           base + 16, (ts - t0) / 1e9);
    }
    // With one node its clock says when t0 was; with several, t0 is already wall time where known.
    std::string origin = !several                   ? clocks[0].wall(nodes[0].stats->first_ts_ns)
                         : clocks[0].known() && any ? report::wall_text(t0)
                                                    : fmt::format("{:.3f} s", t0 / 1e9);
    out << fmt::format("<text x=\"{}\" y=\"{:.1f}\">{} from {}</text>\n", kLeft, base + 32,
                       several ? "time" : "trace time", escape(origin));
    out << "</svg></div>\n";
    if (dropped_marks)
        out << fmt::format("<p class=\"muted\">{} further reset events are not in the bars (the page keeps the first "
                           "{}).</p>\n",
                           dropped_marks, marks.size());
    out << "</section>\n";
}

void render_connections(const std::vector<NodeRecord>& records, std::span<const ReportNode> nodes,
                        const std::vector<TraceClock>& clocks, std::ostream& out) {
    out << "<section id=\"connections-section\"><h2>Affected connections</h2>\n";
    if (records.empty()) {
        out << "<p class=\"none\">No reset connections.</p></section>\n";
        return;
    }
    const bool several = nodes.size() > 1;
    std::map<std::string_view, int> kinds;
    for (const auto& r : records) kinds[to_string(*r.record.reset)]++;
    out << "<p><label>kind <select id=\"kind-filter\"><option value=\"\">all</option>";
    for (const auto& [kind, n] : kinds) out << fmt::format("<option value=\"{0}\">{0} ({1})</option>", kind, n);
    out << fmt::format(
        "</select></label> <span class=\"muted\">newest first; the report keeps the last {} per "
        "backend and kind{}</span></p>\n",
        nodes.front().correlator->config().recent_connections_per_kind, several ? " on each node" : "");
    // Each connection's backend by name (pod, ip-netns name, ...) when naming found one, on its own node.
    std::vector<std::vector<BackendProfile>> backends;
    for (const auto& node : nodes) backends.push_back(node.correlator->backends());
    auto backend_of = [&](const NodeRecord& nr) -> std::string {
        const ConnectionRecord& r = nr.record;
        std::string prefix = several ? nodes[nr.node].name + " · " : "";
        const BackendProfile* best = nullptr;
        for (const auto& b : backends[nr.node]) {
            if (b.id.netns != r.netns) continue;
            if (!b.id.outbound && b.id.port == r.lport) return prefix + explain::backend_label(b);
            if (b.id.outbound && b.id.port == r.rport) best = &b;
        }
        return prefix + (best ? explain::backend_label(*best) : fmt::format("netns {}", r.netns));
    };
    // Twelve facts per connection in nine columns, so the table fits a 1280 px window: the
    // endpoints share one cell, and so do the lifecycle steps; the evidence wraps.
    out << "<div class=\"table-wrap\"><table id=\"connections\"><thead><tr><th>reset at</th><th>verdict</th>"
           "<th>backend</th><th>peer → local</th><th>LB</th><th>opened · first close · ended</th>"
           "<th class=\"num\">idle before close</th><th class=\"num\">rx / tx</th><th>evidence</th></tr></thead>"
           "<tbody>\n";
    size_t shown = 0;
    for (auto it = records.rbegin(); it != records.rend() && shown < kMaxTableRows; ++it, ++shown) {
        const auto& r = it->record;
        auto kind = to_string(*r.reset);
        std::string reason = r.reset_reason == ResetReason::none ? "" : fmt::format(" ({})", to_string(r.reset_reason));
        out << fmt::format(
            "<tr data-kind=\"{0}\"{15}><td class=\"mono\">{1}</td><td><span class=\"kind\" style=\"--k:{2}\">{0}</span>"
            "</td><td>{3}</td><td class=\"mono peer\">{4}<br>→ {5}</td><td>{6}</td><td>{7} · {8} · {9}{10}</td>"
            "<td class=\"num\">{11}</td><td class=\"num\">{12} B / {13} B</td><td class=\"evidence\">{14}</td></tr>\n",
            kind, escape(clocks[it->node].time_of_day(r.last_ts_ns)), kind_colour(*r.reset), escape(backend_of(*it)),
            escape(format_endpoint(r.raddr, r.rport)), escape(format_endpoint(r.laddr, r.lport)),
            r.lb_peer ? "yes" : "no", to_string(r.opened), to_string(r.first_close), to_string(r.end), reason,
            r.close_ts_ns ? duration_text(r.idle_before_close_ms) : "-", r.bytes_rx, r.bytes_tx,
            escape(r.evidence ? explain::evidence(*r.evidence) : std::string()),
            several ? fmt::format(" data-node=\"{}\"", escape(nodes[it->node].name)) : "");
    }
    out << "</tbody></table></div>\n";
    if (records.size() > shown)
        out << fmt::format("<p class=\"muted\">{} older connections not shown.</p>\n", records.size() - shown);
    out << "</section>\n";
}

// Per node: its boot, kernel, span in wall time, counts and findings; then the cluster's row.
void render_nodes(std::span<const ReportNode> nodes, const std::vector<TraceClock>& clocks, std::ostream& out) {
    constexpr auto kRace = static_cast<size_t>(FindingKind::idle_close_race);
    out << "<section id=\"nodes\"><h2>Nodes</h2><div class=\"table-wrap\"><table><thead><tr><th>node</th>"
           "<th>boot</th><th>kernel</th><th>first event</th><th>last event</th><th class=\"num\">events</th>"
           "<th class=\"num\">connections</th><th class=\"num\">races</th><th class=\"num\">other resets</th>"
           "<th class=\"num\">findings</th></tr></thead><tbody>\n";
    constexpr auto kRow =
        "<tr{}><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"mono\">{}</td>"
        "<td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>"
        "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\n";
    auto others = [](const CorrelatorCounts& c) {
        uint64_t n = 0;
        for (size_t k = 0; k < c.resets.size(); ++k) n += k == kRace ? 0 : c.resets[k];
        return n;
    };
    size_t findings = 0;
    for (size_t i = 0; i < nodes.size(); ++i) {
        const ReplayStats& stats = *nodes[i].stats;
        CorrelatorCounts c = nodes[i].correlator->counts();
        size_t n = nodes[i].correlator->findings().size();
        findings += n;
        bool span = stats.events > 0;
        out << fmt::format(kRow, fmt::format(" data-node=\"{}\"", escape(nodes[i].name)), escape(nodes[i].name),
                           escape(nodes[i].key.boot_id.empty() ? "-" : nodes[i].key.boot_id.substr(0, 8)),
                           escape(stats.headers.empty() ? "-" : stats.headers.front().kernel),
                           span ? escape(clocks[i].wall(stats.first_ts_ns)) : "-",
                           span ? escape(clocks[i].wall(stats.last_ts_ns)) : "-", c.events, c.connections,
                           c.resets[kRace], others(c), n);
    }
    CorrelatorCounts all = report::total_counts(nodes);
    report::WallSpan wall = report::wall_span(nodes);
    out << fmt::format(kRow, " class=\"cluster\"", fmt::format("<b>cluster</b> ({} nodes)", nodes.size()), "", "",
                       wall.first_ns ? report::wall_text(wall.first_ns) : "-",
                       wall.last_ns ? report::wall_text(wall.last_ns) : "-", all.events, all.connections,
                       all.resets[kRace], others(all), findings);
    out << "</tbody></table></div></section>\n";
}

void render_counts(std::span<const ReportNode> nodes, std::ostream& out) {
    CorrelatorCounts c = report::total_counts(nodes);
    const auto& t = c.events_by_type;
    out << "<section id=\"counts\"><h2>Counts</h2><table>\n";
    out << fmt::format("<tr><th>events</th><td>{} (state {}, close {}, reset_sent {}, reset_recv {}, setsockopt {})"
                       "</td></tr>\n",
                       c.events, t[1], t[2], t[3], t[4], t[5]);
    out << fmt::format("<tr><th>connections</th><td>{} seen, {} expired silent, {} evicted over the cap</td></tr>\n",
                       c.connections, c.expired_stale, c.evicted_over_cap);
    out << fmt::format("<tr><th>load balancer</th><td>{}</td></tr>\n",
                       escape(nodes.front().correlator->config().describe_lb()));
    report::BadLines bad = report::bad_lines(nodes);
    if (bad.count)
        out << fmt::format("<tr><th>bad lines</th><td>{} skipped (first: {})</td></tr>\n", bad.count,
                           escape(bad.first));
    out << "</table></section>\n";
}

}  // namespace

void render_html_report(std::span<const ReportNode> nodes, const std::vector<ResetMark>& marks, uint64_t dropped_marks,
                        std::ostream& out) {
    const bool several = nodes.size() > 1;
    std::vector<TraceClock> clocks;
    for (const auto& node : nodes) clocks.emplace_back(*node.stats);
    std::vector<NodeFinding> findings;
    std::vector<NodeRecord> records;
    uint64_t events = 0;
    for (size_t i = 0; i < nodes.size(); ++i) {
        for (auto& f : nodes[i].correlator->findings())
            findings.push_back({several ? std::string_view(nodes[i].name) : std::string_view(), std::move(f)});
        for (auto& r : nodes[i].correlator->recent_resets()) {
            uint64_t at = clocks[i].wall_or_trace_ns(r.last_ts_ns);
            records.push_back({i, std::move(r), at});
        }
        events += nodes[i].stats->events;
    }
    std::stable_sort(findings.begin(), findings.end(),
                     [](const auto& a, const auto& b) { return finding_before(a.finding, b.finding); });
    std::stable_sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.at_ns < b.at_ns; });
    const ReplayStats& first = *nodes.front().stats;
    std::string host = first.headers.empty() ? "" : first.headers.front().hostname;
    std::string kernel = first.headers.empty() ? "" : first.headers.front().kernel;

    out << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">";
    std::string title = several ? fmt::format("{} nodes", nodes.size()) : escape(host);
    out << fmt::format("<title>tcpwhy report{}</title>\n", title.empty() ? "" : " — " + title);
    out << "<style>" << kStyle << "</style></head>\n<body>\n<header><h1>tcpwhy: why did these TCP connections "
        << "end the way they did?</h1>\n";
    if (!several) {
        out << fmt::format(
            "<p>{}{}{}; trace from {} to {} ({:.1f} s, {} events)</p></header>\n<main>\n",
            host.empty() ? "" : "node " + escape(host), kernel.empty() ? "" : ", kernel " + escape(kernel),
            first.headers.size() > 1 ? fmt::format(" and {} more traces", first.headers.size() - 1) : "",
            escape(clocks[0].wall(first.first_ts_ns)), escape(clocks[0].wall(first.last_ts_ns)),
            first.last_ts_ns > first.first_ts_ns ? (first.last_ts_ns - first.first_ts_ns) / 1e9 : 0.0, first.events);
    } else {
        std::string names;
        for (const auto& node : nodes) names += (names.empty() ? "" : ", ") + escape(node.name);
        report::WallSpan wall = report::wall_span(nodes);
        out << fmt::format(
            "<p>{} nodes: {}; from {} to {} ({} events; each node's times from its own clock)</p>"
            "</header>\n<main>\n",
            nodes.size(), names, wall.first_ns ? report::wall_text(wall.first_ns) : "-",
            wall.last_ns ? report::wall_text(wall.last_ns) : "-", events);
    }
    render_findings(findings, out);
    render_backends(nodes, out);
    render_reset_timeline(records, marks, dropped_marks, nodes, clocks, out);
    render_connections(records, nodes, clocks, out);
    if (several) render_nodes(nodes, clocks, out);
    render_counts(nodes, out);
    out << "</main>\n<script>" << kScript << "</script>\n</body></html>\n";
}

void render_html_report(const Correlator& correlator, const ReplayStats& stats, const std::vector<ResetMark>& marks,
                        uint64_t dropped_marks, std::ostream& out) {
    ReportNode only = report::single_node(correlator, stats);
    render_html_report(std::span<const ReportNode>(&only, 1), marks, dropped_marks, out);
}

}  // namespace tcpwhy
