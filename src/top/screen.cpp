#include "tcpwhy/top/screen.h"

#include <ncursesw/curses.h>

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

#include "tcpwhy/format.h"

namespace tcpwhy::top {
namespace {

enum ColourPair : short { kRed = 1, kYellow, kGreen, kCyan };

constexpr int kEscape = 27;
constexpr int kFirstRowLine = 3;  // header, status, column titles

bool is_enter(int key) { return key == '\n' || key == '\r' || key == KEY_ENTER; }
bool is_backspace(int key) { return key == KEY_BACKSPACE || key == 127 || key == 8; }

// Draws text cut to the screen's width: curses would wrap it onto the next line.
void put(int y, int x, std::string_view text, int width, int attributes = A_NORMAL, bool keep_blanks = false) {
    if (width - x <= 0) return;
    std::string cut = fit(terminal_safe(text), width - x);  // names come from other processes and pods
    while (!keep_blanks && !cut.empty() && cut.back() == ' ') cut.pop_back();
    attron(attributes);
    mvaddstr(y, x, cut.c_str());
    attroff(attributes);
}

constexpr std::string_view kHelp[] = {
    "tcpwhy top: one row per backend (pod and port; netns until pods are named)",
    "",
    "  Up/Down, j/k   select a backend      PgUp/PgDn, Home/End   move faster",
    "  Enter, Right   its findings with the fix, and its recent connections' timelines",
    "  Esc, Left      back from the details",
    "  /              filter by pod or namespace (type, Enter keeps it, Esc clears it)",
    "  1..9, 0        sort by that column (again: reverse)     < >  previous / next column   r  reverse",
    "  q              quit                                     ?   this help",
    "",
    "Columns:",
    "  NODE           the node (a view of several daemons: top --connect A --connect B ...)",
    "  LIVE LB/O      open connections from load-balancer peers / from others",
    "  IDLE CLOSES    connections the backend closed after being idle, and the median idle time",
    "  RST RACE/O     resets sent to LB peers: keep-alive races / other kinds (every peer with --lb none)",
    "  RST RECV       resets received from peers",
    "  RESETS 60s     every reset of the backend per second over the last minute, newest at the right",
    "  VERDICT        the most important finding (idle_close_race: the LB's requests hit closing connections)",
    "",
    "Press any key to go back.",
};

}  // namespace

// ---- Terminal -----------------------------------------------------------------

Terminal::Terminal() {
    // newterm, unlike initscr, reports an unusable terminal instead of exiting.
    screen_ = newterm(nullptr, stdout, stdin);
    if (screen_ == nullptr)
        throw std::runtime_error(fmt::format("cannot drive this terminal (TERM={})",
                                             std::getenv("TERM") ? std::getenv("TERM") : "unset"));
    cbreak();  // keys at once; Ctrl-C still raises SIGINT, which ends the loop and restores the terminal
    noecho();
    keypad(stdscr, TRUE);
    set_escdelay(25);
    curs_set(0);
    if (has_colors()) {
        start_color();
        use_default_colors();
        init_pair(kRed, COLOR_RED, -1);
        init_pair(kYellow, COLOR_YELLOW, -1);
        init_pair(kGreen, COLOR_GREEN, -1);
        init_pair(kCyan, COLOR_CYAN, -1);
    }
}

Terminal::~Terminal() {
    curs_set(1);
    endwin();
    delscreen(screen_);
}

void Terminal::set_key_wait_ms(int ms) { timeout(ms); }

int Terminal::next_key() { return getch(); }

// ---- TopScreen ----------------------------------------------------------------

TopScreen::TopScreen(RowFilter fixed, Glyphs glyphs, bool colour)
    : fixed_(std::move(fixed)), glyphs_(glyphs), colour_(colour && has_colors()) {}

int TopScreen::colour(int pair) const { return colour_ ? COLOR_PAIR(pair) : A_NORMAL; }

int TopScreen::severity_attributes(Severity severity) const {
    switch (severity) {
    case Severity::critical: return colour(kRed) | A_BOLD;
    case Severity::warning: return colour(kYellow);
    case Severity::notice: return colour(kCyan);
    }
    return A_NORMAL;
}

TopScreen::Action TopScreen::on_key(int key, const Snapshot& snapshot) {
    if (key == KEY_RESIZE) return Action::redraw;
    switch (mode_) {
    case Mode::table: return on_table_key(key, snapshot);
    case Mode::filter: return on_filter_key(key);
    case Mode::detail: return on_detail_key(key);
    case Mode::help: mode_ = help_return_; return Action::redraw;
    }
    return Action::none;
}

TopScreen::Action TopScreen::on_table_key(int key, const Snapshot& snapshot) {
    switch (key) {
    case 'q':
    case 'Q': return Action::quit;
    case '?':
        help_return_ = Mode::table;
        mode_ = Mode::help;
        break;
    case '/':
        filter_before_ = state_.filter;
        mode_ = Mode::filter;
        break;
    case kEscape: state_.filter.clear(); break;
    case KEY_UP:
    case 'k': move_selection(snapshot, -1); break;
    case KEY_DOWN:
    case 'j': move_selection(snapshot, 1); break;
    case KEY_PPAGE: move_selection(snapshot, -page_rows_); break;
    case KEY_NPAGE: move_selection(snapshot, page_rows_); break;
    case KEY_HOME: move_selection(snapshot, -1'000'000); break;
    case KEY_END: move_selection(snapshot, 1'000'000); break;
    case '<':
    case ',': cycle_sort(kColumnCount - 1); break;
    case '>':
    case '.': cycle_sort(1); break;
    case 'r': state_.descending = !state_.descending; break;
    default:
        if (key >= '0' && key <= '9') {  // 1..9 and 0: the columns in order; again: reverse
            auto column = static_cast<Column>(key == '0' ? kColumnCount - 1 : key - '1');
            if (column == state_.sort) state_.descending = !state_.descending;
            else sort_by(column);
            break;
        }
        if (!is_enter(key) && key != KEY_RIGHT) return Action::none;
        if (visible_rows(snapshot, fixed_, state_).empty()) return Action::none;
        mode_ = Mode::detail;
        detail_scroll_ = 0;
        break;
    }
    return Action::redraw;
}

TopScreen::Action TopScreen::on_filter_key(int key) {
    if (is_enter(key)) {
        mode_ = Mode::table;
    } else if (key == kEscape) {
        state_.filter = filter_before_;
        mode_ = Mode::table;
    } else if (is_backspace(key)) {
        if (!state_.filter.empty()) state_.filter.pop_back();
    } else if (key >= 32 && key < 127) {
        state_.filter += static_cast<char>(key);
    } else {
        return Action::none;
    }
    selected_key_.clear();  // the first matching row
    return Action::redraw;
}

TopScreen::Action TopScreen::on_detail_key(int key) {
    int page = std::max(1, LINES - 4);
    switch (key) {
    case 'q':
    case 'Q': return Action::quit;
    case '?':
        help_return_ = Mode::detail;
        mode_ = Mode::help;
        break;
    case kEscape:
    case KEY_LEFT:
    case KEY_BACKSPACE:
    case 127:
    case 8: mode_ = Mode::table; break;
    case KEY_UP:
    case 'k': detail_scroll_ = std::max(0, detail_scroll_ - 1); break;
    case KEY_DOWN:
    case 'j': detail_scroll_ = std::min(std::max(0, detail_lines_ - 1), detail_scroll_ + 1); break;
    case KEY_PPAGE: detail_scroll_ = std::max(0, detail_scroll_ - page); break;
    case KEY_NPAGE: detail_scroll_ = std::min(std::max(0, detail_lines_ - 1), detail_scroll_ + page); break;
    case KEY_HOME: detail_scroll_ = 0; break;
    default: return Action::none;
    }
    return Action::redraw;
}

void TopScreen::cycle_sort(int step) {
    sort_by(static_cast<Column>((static_cast<int>(state_.sort) + step) % kColumnCount));
}

// Names read best A to Z; counts and verdicts biggest first.
void TopScreen::sort_by(Column column) {
    state_.sort = column;
    state_.descending = column != Column::name && column != Column::namespace_name && column != Column::process;
}

void TopScreen::move_selection(const Snapshot& snapshot, int delta) {
    auto rows = visible_rows(snapshot, fixed_, state_);
    if (rows.empty()) return;
    auto it = std::find_if(rows.begin(), rows.end(), [&](const auto* r) { return r->key() == selected_key_; });
    long index = it == rows.end() ? 0 : it - rows.begin();
    index = std::clamp<long>(index + delta, 0, static_cast<long>(rows.size()) - 1);
    selected_key_ = rows[static_cast<size_t>(index)]->key();
}

void TopScreen::draw(const Snapshot& snapshot, std::string_view problem) {
    int height = LINES, width = COLS;
    erase();
    int x = draw_header(snapshot, width);
    switch (mode_) {
    case Mode::table:
    case Mode::filter: draw_table(snapshot, x, width, height); break;
    case Mode::detail: draw_detail(snapshot, x, width, height); break;
    case Mode::help: draw_help(width, height); break;
    }
    if (mode_ == Mode::filter)
        draw_status(fmt::format("filter (pod or namespace): {}_   Enter: keep  Esc: cancel", state_.filter), width,
                    height, A_BOLD);
    else if (!problem.empty())
        draw_status(problem, width, height, colour(kRed) | A_BOLD);
    refresh();  // one update of the physical screen per frame
}

// Line 0: where and how tcpwhy traces. Line 1 starts with the rates and drops, so a
// narrow terminal still shows them; draw_table/draw_detail continue it at x.
int TopScreen::draw_header(const Snapshot& snapshot, int width) {
    std::string title = "tcpwhy top  ";
    put(0, 0, title, width, A_BOLD);
    put(0, display_width(title), view_header_line(snapshot), width);
    std::string rates = rate_line(snapshot.header) + "  ";
    put(1, 0, rates, width);
    int x = display_width(rates);
    bool drops = snapshot.header.dropped_total > 0;
    std::string dropped = view_drops_text(snapshot);
    put(1, x, dropped, width, drops ? (colour(kRed) | A_BOLD | (colour_ ? 0 : A_REVERSE)) : 0);
    return x + display_width(dropped) + 2;
}

void TopScreen::draw_status(std::string_view text, int width, int height, int attributes) {
    put(height - 1, 0, fit(text, width), width, attributes, true);
}

void TopScreen::draw_table(const Snapshot& snapshot, int x, int width, int height) {
    auto rows = visible_rows(snapshot, fixed_, state_);
    auto selected = std::find_if(rows.begin(), rows.end(), [&](const auto* r) { return r->key() == selected_key_; });
    if (selected == rows.end() && !rows.empty()) {
        selected = rows.begin();
        selected_key_ = rows.front()->key();
    }
    std::string column = std::string(column_specs()[static_cast<size_t>(state_.sort)].title);
    std::string shown = rows.size() == snapshot.rows.size() ? fmt::format("{} backends", rows.size())
                                                           : fmt::format("{} of {} backends", rows.size(),
                                                                         snapshot.rows.size());
    std::string filter = state_.filter.empty() ? "" : fmt::format("  filter: \"{}\"", state_.filter);
    put(1, x,
        fmt::format("{}{}  sorted by {}  |  Enter: details  /: filter  < >: sort  ?: help  q: quit", shown, filter,
                    column),
        width, colour(kCyan));

    // With several nodes a NODE column comes first; the others keep their layout in the rest.
    const int node_width = node_column_width(snapshot);
    const int node_x = node_width ? node_width + 1 : 0;
    auto widths = layout(width - node_x);
    put(2, 0, fit(node_titles(node_width) + column_titles(widths, state_, glyphs_), width), width, A_REVERSE | A_BOLD);

    int first_line = kFirstRowLine, last_line = height - 2;  // the last line is the status line
    page_rows_ = std::max(1, last_line - first_line + 1);
    if (rows.empty()) {
        put(first_line, 0,
            snapshot.rows.empty() ? "no TCP connections seen yet" : "no backend matches the filter (Esc clears it)",
            width);
        return;
    }
    long selected_index = selected - rows.begin();
    long top = std::max(0L, selected_index - page_rows_ + 1);
    for (long i = top; i < static_cast<long>(rows.size()) && first_line + (i - top) <= last_line; ++i) {
        const SnapshotRow& row = *rows[static_cast<size_t>(i)];
        int y = first_line + static_cast<int>(i - top);
        bool is_selected = i == selected_index;
        int base = is_selected ? A_REVERSE : A_NORMAL;
        if (is_selected) put(y, 0, std::string(static_cast<size_t>(width), ' '), width, base, true);
        // Cell by cell, so the verdict and the sparkline carry their own colour.
        if (node_width) put(y, 0, node_cell(row, node_width), width, base, is_selected);
        int cell_x = node_x;
        for (size_t c = 0; c < column_specs().size(); ++c) {
            const ColumnSpec& spec = column_specs()[c];
            int w = widths[c];
            if (w == 0) continue;
            std::string text = fit(cell_text(row, spec.column, w, glyphs_), w, spec.right_align);
            int attributes = base;
            if (spec.column == Column::verdict) {
                attributes |= row.verdict ? severity_attributes(info(*row.verdict).severity) : colour(kGreen);
            } else if (spec.column == Column::sparkline) {
                attributes |= colour(kRed);
            }
            put(y, cell_x, text, width, attributes, is_selected);
            cell_x += w + 1;
        }
    }
    const SnapshotRow& current = *rows[static_cast<size_t>(selected_index)];
    if (mode_ != Mode::filter)
        draw_status(fmt::format("{}{}: {}", current.node.empty() ? "" : current.node + " ", current.name,
                                current.findings.empty() ? "no findings" : current.findings.front().summary),
                    width, height, A_NORMAL);
}

void TopScreen::draw_detail(const Snapshot& snapshot, int x, int width, int height) {
    auto it = std::find_if(snapshot.rows.begin(), snapshot.rows.end(),
                           [&](const SnapshotRow& r) { return r.key() == selected_key_; });
    put(1, x, "details  |  Esc/Left: back  Up/Down PgUp/PgDn: scroll  q: quit", width, colour(kCyan));
    if (it == snapshot.rows.end()) {
        put(3, 0, "this backend is gone from the view (Esc: back)", width);
        detail_lines_ = 0;
        return;
    }
    auto lines = detail_lines(*it, snapshot.header, glyphs_, width);
    detail_lines_ = static_cast<int>(lines.size());
    detail_scroll_ = std::min(detail_scroll_, std::max(0, detail_lines_ - 1));
    for (int y = 2, i = detail_scroll_; y < height - 1 && i < detail_lines_; ++y, ++i) {
        const DetailLine& line = lines[static_cast<size_t>(i)];
        int attributes = A_NORMAL;
        switch (line.role) {
        case LineRole::title:
        case LineRole::heading: attributes = A_BOLD; break;
        case LineRole::fix: attributes = colour(kGreen) | A_BOLD; break;
        case LineRole::finding: attributes = line.kind ? severity_attributes(info(*line.kind).severity) : A_NORMAL; break;
        case LineRole::plain: break;
        }
        put(y, 0, line.text, width, attributes);
    }
    if (detail_lines_ > height - 3)
        draw_status(fmt::format("line {} of {}", detail_scroll_ + 1, detail_lines_), width, height, A_NORMAL);
}

void TopScreen::draw_help(int width, int height) {
    for (size_t i = 0; i < std::size(kHelp) && 2 + static_cast<int>(i) < height - 1; ++i)
        put(2 + static_cast<int>(i), 0, kHelp[i], width, i == 0 ? A_BOLD : A_NORMAL);
}

}  // namespace tcpwhy::top
