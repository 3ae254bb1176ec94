// The full-screen terminal of `tcpwhy top` (ncurses): the table of backends, the `/`
// filter, the drill-down of one backend and the help. It draws a Snapshot it is given
// and turns keys into view changes; where snapshots come from is the caller's business.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "tcpwhy/top/view_model.h"

struct screen;  // ncurses' SCREEN

namespace tcpwhy::top {

// The curses session: the terminal in cbreak/no-echo mode on the alternate screen
// while it lives, restored by the destructor (also when unwinding). One at a time.
class Terminal {
public:
    Terminal();  // throws std::runtime_error when the terminal cannot be driven (TERM unknown)
    ~Terminal();
    Terminal(const Terminal&) = delete;
    Terminal& operator=(const Terminal&) = delete;

    // getch() waits at most this long for a key (0: never waits).
    void set_key_wait_ms(int ms);
    // The next key, or -1 when none came in time.
    int next_key();

private:
    ::screen* screen_ = nullptr;
};

class TopScreen {
public:
    enum class Action { none, redraw, quit };

    TopScreen(RowFilter fixed, Glyphs glyphs, bool colour);

    Action on_key(int key, const Snapshot& snapshot);
    // Erases and redraws everything, then one refresh: no flicker. `problem` is shown
    // in the status line (e.g. the daemon cannot be reached).
    void draw(const Snapshot& snapshot, std::string_view problem = {});

private:
    enum class Mode { table, filter, detail, help };

    int draw_header(const Snapshot& snapshot, int width);  // returns where line 1 continues
    void draw_table(const Snapshot& snapshot, int x, int width, int height);
    void draw_detail(const Snapshot& snapshot, int x, int width, int height);
    void draw_help(int width, int height);
    void draw_status(std::string_view text, int width, int height, int attributes);
    Action on_table_key(int key, const Snapshot& snapshot);
    Action on_filter_key(int key);
    Action on_detail_key(int key);
    void move_selection(const Snapshot& snapshot, int delta);
    void cycle_sort(int step);
    void sort_by(Column column);
    int colour(int pair) const;
    int severity_attributes(Severity severity) const;  // a kind's severity as a colour (kinds.h)

    RowFilter fixed_;
    Glyphs glyphs_;
    bool colour_ = false;
    ViewState state_;
    Mode mode_ = Mode::table;
    Mode help_return_ = Mode::table;  // where any key leaves the help
    std::string selected_key_;    // SnapshotRow::key() of the selected row, kept across re-sorts
    std::string filter_before_;   // restored when the filter prompt is cancelled
    int detail_scroll_ = 0;
    int detail_lines_ = 0;        // lines of the last drawn drill-down, to bound scrolling
    int page_rows_ = 10;          // rows of the table that fit, for PgUp/PgDn
};

}  // namespace tcpwhy::top
