// What `tcpwhy top` shows of a snapshot, without a terminal: which rows (filters),
// in which order (sort column), the columns' text, the drill-down's lines and the
// plain-text snapshot of --once. The ncurses screen (screen.h) only places these.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tcpwhy/live_view.h"

namespace tcpwhy::top {

// Characters for arrows and sparklines: Unicode when the locale is UTF-8, else ASCII.
struct Glyphs {
    bool unicode = false;
    std::string_view arrow = "->";
    std::string_view sort_down = "v", sort_up = "^";
    std::string_view spark_zero = ".";
    std::array<std::string_view, 8> spark_levels = {":", "-", "=", "+", "*", "#", "%", "@"};

    static Glyphs ascii();
    static Glyphs utf8();
    // From the current locale (call setlocale(LC_ALL, "") first).
    static Glyphs for_locale();
};

enum class Column : uint8_t {
    name,
    namespace_name,
    port,
    process,
    live,
    idle_closes,
    resets_sent,
    resets_received,
    sparkline,
    verdict,
};
inline constexpr int kColumnCount = 10;

struct ColumnSpec {
    Column column;
    std::string_view title;
    int width;  // preferred; the verdict takes what is left
    bool right_align;
};
std::span<const ColumnSpec> column_specs();

// Filters the user gave on the command line (--pod, --namespace).
struct RowFilter {
    std::string pod;             // matches the pod name (or "netns <inode>")
    std::string namespace_name;  // the Kubernetes namespace, exactly (as `trace --namespace`)
};

struct ViewState {
    Column sort = Column::verdict;
    bool descending = true;
    std::string filter;  // `/`: substring of pod (or "netns <inode>"), namespace or netns inode
};

// How a row's verdict sorts: 0 nothing found, else 1 + the kind's severity (kinds.h).
int verdict_rank(std::optional<FindingKind> verdict);

bool matches(const SnapshotRow& row, const RowFilter& fixed, std::string_view filter);
// Rows that pass both filters, in the view's order (ties: most races, then name).
std::vector<const SnapshotRow*> visible_rows(const Snapshot& snapshot, const RowFilter& fixed, const ViewState& state);

// Column widths for a terminal `width` columns wide: shrinks the sparkline and the
// wide text columns before anything disappears. The last entry is the verdict's.
std::array<int, kColumnCount> layout(int width);

std::string header_line(const SnapshotHeader& header);  // node, kernel, attach path, LB and its idle timeout
std::string rate_line(const SnapshotHeader& header);    // events/s and events so far
std::string drops_text(const SnapshotHeader& header);   // "dropped 0" / "DROPPED 12 events"

// A view of several nodes (Snapshot::nodes) says so where a daemon's own view names its node:
// "3 nodes (node-a, node-b, node-c)  LB gcp (idle timeout 600 s)", drops with the nodes that had
// them, a line per node (kernel, attach path, rates, drops, or why it did not answer), and what
// went wrong, for the status line ("" when every node answered). One node: as header_line() etc.
std::string view_header_line(const Snapshot& snapshot);
std::string view_drops_text(const Snapshot& snapshot);
std::vector<std::string> node_lines(const Snapshot& snapshot);
std::string nodes_problem(const Snapshot& snapshot);
// The NODE column that comes first in a view of several nodes: its width (0: no such column) and text.
int node_column_width(const Snapshot& snapshot);
std::string node_titles(int node_width);                        // "NODE    " and the space after it, or ""
std::string node_cell(const SnapshotRow& row, int node_width);  // likewise
std::string column_titles(const std::array<int, kColumnCount>& widths, const ViewState& state, const Glyphs& glyphs);
std::string cell_text(const SnapshotRow& row, Column column, int width, const Glyphs& glyphs);
std::string row_line(const SnapshotRow& row, const std::array<int, kColumnCount>& widths, const Glyphs& glyphs);

// Resets per second folded into `width` characters, scaled to the row's busiest second.
std::string sparkline(std::span<const uint32_t> per_second, int width, const Glyphs& glyphs);

// "opened (accepted) 21:30:01.204 -> last data +0.003s -> idle 6.0 s -> backend closed (FIN) +6.004s -> ..."
std::string timeline_text(const SnapshotConnection& connection, const SnapshotHeader& header, const Glyphs& glyphs);

// What a drill-down line is, so the screen styles it without reading its text.
enum class LineRole : uint8_t { plain, title, heading, finding, fix };
struct DetailLine {
    std::string text;
    LineRole role = LineRole::plain;
    std::optional<FindingKind> kind;  // role finding: which
};

// The drill-down of one row: its identity and counts, findings with evidence and
// advice, recent connections with timelines; wrapped to `width`.
std::vector<DetailLine> detail_lines(const SnapshotRow& row, const SnapshotHeader& header, const Glyphs& glyphs,
                                     int width, size_t max_connections = 10);

// The whole plain-text snapshot (--once): header, the table, then the details of
// every row with a finding.
std::string render_plain(const Snapshot& snapshot, const RowFilter& fixed, const ViewState& state,
                         const Glyphs& glyphs);

// Text wrapped at spaces to `width` (UTF-8 aware), continuation lines indented by `indent`.
std::vector<std::string> wrap(std::string_view text, int width, int first_indent, int indent);
// Display columns of UTF-8 text (every character tcpwhy prints is one column wide).
int display_width(std::string_view text);
// Cut or pad to exactly `width` columns.
std::string fit(std::string_view text, int width, bool right_align = false);

}  // namespace tcpwhy::top
