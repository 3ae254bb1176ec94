#include "tcpwhy/top/view_model.h"

#include <langinfo.h>

#include <algorithm>
#include <ctime>
#include <numeric>

#include <fmt/format.h>

namespace tcpwhy::top {
namespace {

constexpr std::array<ColumnSpec, kColumnCount> kColumns = {{
    {Column::name, "POD", 22, false},
    {Column::namespace_name, "NAMESPACE", 11, false},
    {Column::port, "PORT", 7, true},
    {Column::process, "PROCESS", 14, false},
    {Column::live, "LIVE (IDLE)", 13, true},
    {Column::idle_closes, "IDLE CLOSES", 12, true},
    {Column::resets_sent, "RST RACE/O", 10, true},
    {Column::resets_received, "RST RECV", 8, true},
    {Column::sparkline, "RESETS 60s", 20, false},
    {Column::verdict, "VERDICT", 0, false},
}};
constexpr int kMinVerdictWidth = 22;

size_t index_of(Column column) { return static_cast<size_t>(column); }

std::string short_duration(uint32_t ms) {
    if (ms < 1000) return fmt::format("{}ms", ms);
    return fmt::format("{:.1f}s", ms / 1000.0);
}

uint64_t sum(std::span<const uint32_t> values) { return std::accumulate(values.begin(), values.end(), uint64_t{0}); }

std::string time_of_day(uint64_t ts_ns, const SnapshotHeader& header) {
    int64_t wall_ns = static_cast<int64_t>(header.wall_now_ns) -
                      (static_cast<int64_t>(header.now_ns) - static_cast<int64_t>(ts_ns));
    time_t seconds = static_cast<time_t>(wall_ns / 1'000'000'000);
    tm local{};
    localtime_r(&seconds, &local);
    return fmt::format("{:02}:{:02}:{:02}.{:03}", local.tm_hour, local.tm_min, local.tm_sec,
                       (wall_ns / 1'000'000) % 1000);
}

void rtrim(std::string& s) {
    while (!s.empty() && s.back() == ' ') s.pop_back();
}

int compare_rows(const SnapshotRow& a, const SnapshotRow& b, Column column) {
    auto cmp = [](const auto& x, const auto& y) { return x < y ? -1 : y < x ? 1 : 0; };
    switch (column) {
    case Column::name: return cmp(a.name, b.name);
    case Column::namespace_name: return cmp(a.namespace_name, b.namespace_name);
    case Column::port: return cmp(a.port, b.port);
    case Column::process: return cmp(a.process, b.process);
    case Column::live: return cmp(a.live_lb + a.live_other, b.live_lb + b.live_other);
    case Column::idle_closes: return cmp(a.idle_closes, b.idle_closes);
    case Column::resets_sent:
        return cmp(std::pair(a.resets_races, a.resets_other), std::pair(b.resets_races, b.resets_other));
    case Column::resets_received: return cmp(a.resets_received, b.resets_received);
    case Column::sparkline: return cmp(sum(a.resets_per_second), sum(b.resets_per_second));
    case Column::verdict:
        return cmp(std::tuple(verdict_rank(a.verdict), a.resets_races, a.resets_other + a.resets_received),
                   std::tuple(verdict_rank(b.verdict), b.resets_races, b.resets_other + b.resets_received));
    }
    return 0;
}

}  // namespace

Glyphs Glyphs::ascii() { return Glyphs{}; }

Glyphs Glyphs::utf8() {
    Glyphs g;
    g.unicode = true;
    g.arrow = "→";
    g.sort_down = "▼";
    g.sort_up = "▲";
    g.spark_zero = " ";
    g.spark_levels = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
    return g;
}

Glyphs Glyphs::for_locale() {
    std::string_view codeset = nl_langinfo(CODESET);
    return codeset == "UTF-8" ? utf8() : ascii();
}

std::span<const ColumnSpec> column_specs() { return kColumns; }

int verdict_rank(std::optional<FindingKind> verdict) {
    return verdict ? 1 + static_cast<int>(info(*verdict).severity) : 0;
}

bool matches(const SnapshotRow& row, const RowFilter& fixed, std::string_view filter) {
    auto contains = [](std::string_view haystack, std::string_view needle) {
        return haystack.find(needle) != std::string_view::npos;
    };
    if (!fixed.pod.empty() && !contains(row.name, fixed.pod) && !contains(row.pod, fixed.pod) &&
        !contains(std::to_string(row.netns), fixed.pod))
        return false;
    if (!fixed.namespace_name.empty() && row.namespace_name != fixed.namespace_name) return false;
    // The netns inode too: it names a backend until pods are named, and stays unique after.
    return filter.empty() || contains(row.name, filter) || contains(row.pod, filter) ||
           contains(row.namespace_name, filter) || contains(std::to_string(row.netns), filter) ||
           contains(row.node, filter);
}

std::vector<const SnapshotRow*> visible_rows(const Snapshot& snapshot, const RowFilter& fixed,
                                             const ViewState& state) {
    std::vector<const SnapshotRow*> rows;
    for (const auto& row : snapshot.rows)
        if (matches(row, fixed, state.filter)) rows.push_back(&row);
    std::stable_sort(rows.begin(), rows.end(), [&](const SnapshotRow* a, const SnapshotRow* b) {
        int by_column = compare_rows(*a, *b, state.sort);
        if (by_column != 0) return state.descending ? by_column > 0 : by_column < 0;
        if (a->resets_races != b->resets_races) return a->resets_races > b->resets_races;
        if (a->name != b->name) return a->name < b->name;
        if (a->node != b->node) return a->node < b->node;
        return a->key() < b->key();
    });
    return rows;
}

std::array<int, kColumnCount> layout(int width) {
    std::array<int, kColumnCount> widths{};
    for (size_t i = 0; i < kColumns.size(); ++i) widths[i] = kColumns[i].width;
    auto fixed_total = [&] {
        int total = 0;
        for (size_t i = 0; i + 1 < widths.size(); ++i)
            if (widths[i]) total += widths[i] + 1;  // and the space after it
        return total;
    };
    // Narrower terminals give up sparkline and long-name space first, in this order;
    // the drill-down still shows everything.
    const std::array<std::pair<Column, int>, 9> shrink = {{{Column::sparkline, 10},
                                                           {Column::live, 9},
                                                           {Column::name, 16},
                                                           {Column::process, 7},
                                                           {Column::namespace_name, 6},
                                                           {Column::idle_closes, 9},
                                                           {Column::sparkline, 0},
                                                           {Column::namespace_name, 0},
                                                           {Column::idle_closes, 0}}};
    for (auto [column, minimum] : shrink) {
        int excess = fixed_total() + kMinVerdictWidth - width;
        if (excess <= 0) break;
        int& w = widths[index_of(column)];
        w = std::max(minimum, w - excess);
    }
    widths.back() = std::max(0, width - fixed_total());
    return widths;
}

std::string drops_text(const SnapshotHeader& header) {
    return header.dropped_total ? fmt::format("DROPPED {} events", header.dropped_total) : "dropped 0";
}

std::string header_line(const SnapshotHeader& h) {
    std::string lb = h.lb_idle_timeout_s ? fmt::format("LB {} (idle timeout {} s)", h.lb_name, h.lb_idle_timeout_s)
                                         : std::string("LB none");
    return fmt::format("node {}  kernel {}  attach {}  {}", h.node.empty() ? "?" : h.node,
                       h.kernel.empty() ? "?" : h.kernel, h.attach.empty() ? "?" : h.attach, lb);
}

std::string view_header_line(const Snapshot& snapshot) {
    if (snapshot.nodes.empty()) return header_line(snapshot.header);
    const SnapshotHeader& h = snapshot.header;
    std::string names;
    for (const auto& n : snapshot.nodes) names += (names.empty() ? "" : ", ") + n.name;
    std::string lb = h.lb_idle_timeout_s ? fmt::format("LB {} (idle timeout {} s)", h.lb_name, h.lb_idle_timeout_s)
                                         : std::string("LB none");
    size_t answered = std::count_if(snapshot.nodes.begin(), snapshot.nodes.end(),
                                    [](const SnapshotNode& n) { return n.answered && n.problem.empty(); });
    std::string missing =
        answered == snapshot.nodes.size() ? "" : fmt::format(", {} not answering", snapshot.nodes.size() - answered);
    return fmt::format("{} nodes ({}){}  {}", snapshot.nodes.size(), names, missing, lb);
}

std::string view_drops_text(const Snapshot& snapshot) {
    std::string text = drops_text(snapshot.header);
    if (snapshot.nodes.empty() || snapshot.header.dropped_total == 0) return text;
    std::string where;
    for (const auto& n : snapshot.nodes)
        if (n.header.dropped_total) where += (where.empty() ? "" : ", ") + n.name;
    return fmt::format("{} ({})", text, where);
}

std::vector<std::string> node_lines(const Snapshot& snapshot) {
    std::vector<std::string> lines;
    size_t width = 0;
    for (const auto& n : snapshot.nodes) width = std::max(width, n.name.size());
    for (const auto& n : snapshot.nodes) {
        const SnapshotHeader& h = n.header;
        std::string state = n.answered ? fmt::format("kernel {}  attach {}  {}  {}", h.kernel.empty() ? "?" : h.kernel,
                                                     h.attach.empty() ? "?" : h.attach, rate_line(h), drops_text(h))
                                       : std::string("no view yet");
        if (!n.problem.empty()) state += fmt::format("  NOT ANSWERING: {}", n.problem);
        lines.push_back(fmt::format("{:<{}}  {}", n.name, width, state));
    }
    return lines;
}

std::string nodes_problem(const Snapshot& snapshot) {
    std::string text;
    for (const auto& n : snapshot.nodes)
        if (!n.problem.empty())
            text += fmt::format("{}{}{}", text.empty() ? "" : "; ", n.answered ? n.name + ": " : "", n.problem);
    return text;
}

int node_column_width(const Snapshot& snapshot) {
    if (snapshot.nodes.empty()) return 0;
    int width = 4;  // "NODE"
    for (const auto& row : snapshot.rows) width = std::max(width, display_width(row.node));
    return std::min(width, 24);
}

std::string node_titles(int node_width) { return node_width ? fit("NODE", node_width) + " " : ""; }

std::string node_cell(const SnapshotRow& row, int node_width) {
    return node_width ? fit(row.node, node_width) + " " : "";
}

std::string rate_line(const SnapshotHeader& h) {
    return fmt::format("{:.0f} events/s  {} events", h.events_per_s, h.events_total);
}

std::string column_titles(const std::array<int, kColumnCount>& widths, const ViewState& state, const Glyphs& glyphs) {
    std::string line;
    for (size_t i = 0; i < kColumns.size(); ++i) {
        if (widths[i] == 0) continue;
        std::string title(kColumns[i].title);
        if (kColumns[i].column == state.sort) title += std::string(state.descending ? glyphs.sort_down : glyphs.sort_up);
        if (!line.empty()) line += ' ';
        line += fit(title, widths[i], kColumns[i].right_align);
    }
    rtrim(line);
    return line;
}

std::string sparkline(std::span<const uint32_t> per_second, int width, const Glyphs& glyphs) {
    if (width <= 0 || per_second.empty()) return {};
    // Each character covers ceil(n / width) seconds, the newest at the right.
    size_t n = per_second.size(), per_char = (n + static_cast<size_t>(width) - 1) / static_cast<size_t>(width);
    size_t chars = (n + per_char - 1) / per_char;
    std::vector<uint64_t> folded(chars, 0);
    for (size_t i = 0; i < n; ++i) folded[chars - 1 - (n - 1 - i) / per_char] += per_second[i];
    uint64_t peak = *std::max_element(folded.begin(), folded.end());
    std::string out;
    for (uint64_t v : folded) {
        if (v == 0) {
            out += glyphs.spark_zero;
            continue;
        }
        size_t level = static_cast<size_t>((v * glyphs.spark_levels.size() + peak - 1) / peak);  // 1..8
        out += glyphs.spark_levels[std::clamp<size_t>(level, 1, glyphs.spark_levels.size()) - 1];
    }
    return out;
}

std::string cell_text(const SnapshotRow& row, Column column, int width, const Glyphs& glyphs) {
    switch (column) {
    case Column::name: return row.name;
    case Column::namespace_name: return row.namespace_name.empty() ? "-" : row.namespace_name;
    case Column::port: return row.outbound ? fmt::format("{}{}", glyphs.arrow, row.port) : fmt::format("{}", row.port);
    case Column::process: return row.process.empty() ? "?" : row.process;
    case Column::live: {
        // The longest idle among the open connections when they were last listed: after a fix,
        // connections idle longer than the old timeout and still open are the fix working. A
        // narrow column keeps the counts.
        std::string counts = fmt::format("{}/{}", row.live_lb, row.live_other);
        if (!row.live_sampled) return counts;
        std::string with_idle = fmt::format("{} ({})", counts, short_duration(row.live_idle_max_ms));
        return display_width(with_idle) <= width ? with_idle : counts;
    }
    case Column::idle_closes:
        return row.idle_closes ? fmt::format("{} p50 {}", row.idle_closes, short_duration(row.idle_p50_ms)) : "-";
    case Column::resets_sent: return fmt::format("{}/{}", row.resets_races, row.resets_other);
    case Column::resets_received: return fmt::format("{}", row.resets_received);
    case Column::sparkline: return sparkline(row.resets_per_second, width, glyphs);
    case Column::verdict: return row.verdict ? std::string(to_string(*row.verdict)) : "-";
    }
    return {};
}

std::string row_line(const SnapshotRow& row, const std::array<int, kColumnCount>& widths, const Glyphs& glyphs) {
    std::string line;
    for (size_t i = 0; i < kColumns.size(); ++i) {
        if (widths[i] == 0) continue;
        if (i) line += ' ';
        line += fit(cell_text(row, kColumns[i].column, widths[i], glyphs), widths[i], kColumns[i].right_align);
    }
    rtrim(line);
    return line;
}

std::string timeline_text(const SnapshotConnection& connection, const SnapshotHeader& header, const Glyphs& glyphs) {
    std::string out;
    uint64_t origin = 0;
    for (const auto& step : connection.timeline) {
        if (!out.empty()) out += fmt::format(" {} ", glyphs.arrow);
        out += step.what;
        if (step.ts_ns == 0) continue;
        if (origin == 0) {
            origin = step.ts_ns;
            out += " " + time_of_day(step.ts_ns, header);
        } else {
            out += fmt::format(" +{:.3f}s", static_cast<double>(static_cast<int64_t>(step.ts_ns - origin)) / 1e9);
        }
    }
    return out;
}

std::vector<DetailLine> detail_lines(const SnapshotRow& row, const SnapshotHeader& header, const Glyphs& glyphs,
                                     int width, size_t max_connections) {
    std::vector<DetailLine> lines;
    auto add_wrapped = [&](std::string_view text, int first_indent, int indent, LineRole role = LineRole::plain,
                           std::optional<FindingKind> kind = std::nullopt) {
        for (auto& line : wrap(text, width, first_indent, indent)) lines.push_back({std::move(line), role, kind});
    };
    auto add = [&](std::string text, LineRole role = LineRole::plain) { lines.push_back({std::move(text), role, {}}); };
    std::string who = row.name;
    if (!row.node.empty()) who += fmt::format("  node {}", row.node);
    if (!row.namespace_name.empty()) who += fmt::format("  namespace {}", row.namespace_name);
    if (!row.container.empty()) who += fmt::format("  container {}", row.container);
    who += row.outbound ? fmt::format("  outbound to port {}", row.port) : fmt::format("  port {}", row.port);
    if (!row.process.empty()) who += fmt::format("  process {}[{}]", row.process, row.pid);
    if (!row.pod.empty()) who += fmt::format("  netns {}", row.netns);
    add_wrapped(who, 0, 2, LineRole::title);
    if (!row.server_detail.empty()) add_wrapped("server: " + row.server_detail, 0, 2);
    std::string idle_now =
        row.live_sampled ? fmt::format(" (idle when listed: p50 {}, max {}, {} listed)", short_duration(row.live_idle_p50_ms),
                                       short_duration(row.live_idle_max_ms), row.live_sampled)
                         : "";
    add_wrapped(fmt::format("live connections {} from the LB, {} other{}; idle closes {}{}; resets sent to LB peers: {} "
                            "races, {} other; resets received {}",
                            row.live_lb, row.live_other, idle_now, row.idle_closes,
                            row.idle_closes ? fmt::format(" (p50 {})", short_duration(row.idle_p50_ms)) : "",
                            row.resets_races, row.resets_other, row.resets_received),
                0, 2);
    add(fmt::format("resets, last 60 s: [{}]",
                    sparkline(row.resets_per_second, static_cast<int>(row.resets_per_second.size()), glyphs)));
    add("");
    if (row.findings.empty()) {
        add("findings: none (nothing this backend did explains a reset)", LineRole::heading);
    } else {
        add("findings:", LineRole::heading);
        int n = 0;
        for (const auto& f : row.findings) {
            add_wrapped(fmt::format("{}. [{}] {}", ++n, to_string(f.kind), f.summary), 2, 6, LineRole::finding, f.kind);
            for (const auto& e : f.evidence) add_wrapped("evidence: " + e, 5, 15);
            if (!f.advice.empty()) add_wrapped("fix: " + f.advice, 5, 10, LineRole::fix);
            if (!f.connections.empty()) {
                std::string list;
                for (const auto& c : f.connections) list += (list.empty() ? "" : ", ") + c;
                add_wrapped("connections: " + list, 5, 18);
            }
        }
    }
    add("");
    if (row.connections.empty()) {
        add("recent connections: none in memory", LineRole::heading);
        return lines;
    }
    add("recent connections (newest first):", LineRole::heading);
    size_t shown = 0;
    for (const auto& c : row.connections) {
        if (shown++ == max_connections) break;
        std::string title =
            fmt::format("{} {} {}{}  {}", c.peer, glyphs.arrow, c.local, c.lb_peer ? "  LB" : "", to_string(c.end));
        if (c.verdict) title += fmt::format("  {}", to_string(*c.verdict));
        add_wrapped(title, 2, 4);
        add_wrapped(timeline_text(c, header, glyphs), 4, 6);
        if (!c.evidence.empty()) add_wrapped("why: " + c.evidence, 4, 9);
    }
    return lines;
}

std::string render_plain(const Snapshot& snapshot, const RowFilter& fixed, const ViewState& state,
                         const Glyphs& glyphs) {
    constexpr int kPlainWidth = 140;
    std::string out = fmt::format("tcpwhy top  {}  {}  {}\n", view_header_line(snapshot), rate_line(snapshot.header),
                                  view_drops_text(snapshot));
    for (const auto& line : node_lines(snapshot)) out += "  " + line + "\n";
    out += "\n";
    auto rows = visible_rows(snapshot, fixed, state);
    if (rows.empty()) {
        // A quiet backend is normal after a fix: connections opened before tracing and still idle
        // make no events, so the backend has no row until one of them opens, closes or resets.
        out += snapshot.rows.empty() ? "no TCP connections seen yet\n"
                                     : "no backend matches the filter yet (a backend shows up with its first "
                                       "connection event since tracing began; idle connections opened earlier "
                                       "show up when they close)\n";
        return out;
    }
    // With several nodes, a NODE column first; the rest keep the layout of one node's view.
    const int node_width = node_column_width(snapshot);
    auto widths = layout(kPlainWidth);
    std::string titles = node_titles(node_width) + column_titles(widths, state, glyphs);
    out += titles + "\n";
    for (const auto* row : rows) out += node_cell(*row, node_width) + row_line(*row, widths, glyphs) + "\n";
    for (const auto* row : rows) {
        if (row->findings.empty()) continue;
        out += row->node.empty() ? fmt::format("\n== {} ==\n", row->name)
                                 : fmt::format("\n== {} on {} ==\n", row->name, row->node);
        for (const auto& line : detail_lines(*row, snapshot.header, glyphs, kPlainWidth, 5)) out += line.text + "\n";
    }
    return out;
}

int display_width(std::string_view text) {
    return static_cast<int>(std::count_if(text.begin(), text.end(), [](char c) {
        return (static_cast<unsigned char>(c) & 0xC0) != 0x80;  // not a UTF-8 continuation byte
    }));
}

std::string fit(std::string_view text, int width, bool right_align) {
    if (width <= 0) return {};
    std::string out;
    int columns = 0;
    for (size_t i = 0; i < text.size() && columns <= width; ++i) {
        bool starts_char = (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80;
        if (starts_char && ++columns > width) break;
        out += text[i];
    }
    int pad = width - display_width(out);
    if (pad > 0) out = right_align ? std::string(pad, ' ') + out : out + std::string(pad, ' ');
    return out;
}

std::vector<std::string> wrap(std::string_view text, int width, int first_indent, int indent) {
    std::vector<std::string> lines;
    std::string line(static_cast<size_t>(first_indent), ' ');
    int used = first_indent;
    bool line_has_word = false;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t start = text.find_first_not_of(' ', pos);
        if (start == std::string_view::npos) break;
        int gap = static_cast<int>(start - pos);  // spaces inside a line are kept as written
        size_t end = std::min(text.find(' ', start), text.size());
        std::string_view word = text.substr(start, end - start);
        pos = end;
        int word_width = display_width(word);
        if (line_has_word && used + gap + word_width > width) {
            lines.push_back(std::move(line));
            line.assign(static_cast<size_t>(indent), ' ');
            used = indent;
            line_has_word = false;
        }
        if (line_has_word) {
            line.append(static_cast<size_t>(gap), ' ');
            used += gap;
        }
        line += word;  // a word longer than the line stays whole; the screen cuts it
        used += word_width;
        line_has_word = true;
    }
    if (line_has_word || lines.empty()) lines.push_back(std::move(line));
    return lines;
}

}  // namespace tcpwhy::top
