// Replay benchmark for `tcpwhy report`: how fast the correlator eats a trace, and whether its
// memory depends on the trace's length. Generates a synthetic trace (keep-alive connections
// from LB addresses to 50 backends, a tenth of them ending in an idle-close race), then, each
// in a child process so peak RSS is its own:
//   read     the file line by line, nothing parsed (the I/O floor, the baseline)
//   parse    read + parse every line into an Event
//   replay   read + parse + correlate (what `tcpwhy report` does)
// for the full trace and for one a third as long (both past the live-connection cap), and prints events/s, the ratio to the baseline,
// and peak RSS. Figures, not assertions: see bench/README.md.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "tcpwhy/correlator.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/report.h"
#ifdef TCPWHY_BENCH_SIMDJSON
#include "jsonl_simdjson.h"
#endif

using namespace tcpwhy;

namespace {

constexpr int kEventsPerConnection = 9;

Event base_event(uint64_t conn, uint64_t ts_ns) {
    Event e;
    e.ts_ns = ts_ns;
    e.cookie = conn + 1;
    e.netns = 4026530000u + static_cast<uint32_t>(conn % 50);
    e.laddr = *IpAddr::parse("10.56.5.6");
    e.raddr.family = 4;
    e.raddr.bytes = {130, 211, static_cast<uint8_t>((conn >> 8) & 3), static_cast<uint8_t>(conn & 0xff)};
    e.lport = 8080;
    e.rport = static_cast<uint16_t>(1024 + conn % 60000);
    e.lb = true;
    e.pid = 1000 + static_cast<uint32_t>(conn % 50);
    e.comm = "node";
    return e;
}

Event state(uint64_t conn, uint64_t ts, TcpState from, TcpState to) {
    Event e = base_event(conn, ts);
    e.type = EventType::state;
    e.old_state = from;
    e.new_state = to;
    return e;
}

// Opening half of a connection (4 events): accepted, keep-alive options set.
void write_open(std::ofstream& out, uint64_t conn, uint64_t ts) {
    out << to_json_line(state(conn, ts, TcpState::listen, TcpState::syn_recv)) << '\n';
    out << to_json_line(state(conn, ts + 50'000, TcpState::syn_recv, TcpState::established)) << '\n';
    Event opt = base_event(conn, ts + 100'000);
    opt.type = EventType::setsockopt;
    opt.opt = SockOpt::so_keepalive;
    opt.value = 1;
    out << to_json_line(opt) << '\n';
    opt.opt = SockOpt::tcp_keepidle;
    opt.value = 60;
    opt.ts_ns += 1000;
    out << to_json_line(opt) << '\n';
}

// Closing half (5 events): the backend closes after idling; every tenth connection gets the LB's next
// request after the FIN, and a reset from the timewait socket.
void write_close(std::ofstream& out, uint64_t conn, uint64_t ts, uint32_t idle_ms) {
    Event close = base_event(conn, ts);
    close.type = EventType::close;
    close.old_state = TcpState::established;
    close.new_state = TcpState::fin_wait1;
    close.idle_rx_ms = close.idle_tx_ms = idle_ms;
    close.bytes_rx = 300;
    close.bytes_tx = 1200;
    close.opts.set(SockOpt::so_keepalive, 1);
    close.opts.set(SockOpt::tcp_keepidle, 60);
    out << to_json_line(close) << '\n';
    out << to_json_line(state(conn, ts + 1, TcpState::established, TcpState::fin_wait1)) << '\n';
    out << to_json_line(state(conn, ts + 100'000, TcpState::fin_wait1, TcpState::fin_wait2)) << '\n';
    out << to_json_line(state(conn, ts + 200'000, TcpState::fin_wait2, TcpState::close)) << '\n';
    Event last = base_event(conn, ts + 2'000'000);
    if (conn % 10 == 0) {
        last.type = EventType::reset_sent;
        last.reason = ResetReason::tcp_timewait_socket;
        last.sk_kind = SockKind::timewait;
        last.sk_state = TcpState::time_wait;
        last.has_skb = true;
        last.pid = 0;
        last.comm.clear();
    } else {
        last.type = EventType::setsockopt;  // same count as the race connections
        last.opt = SockOpt::tcp_user_timeout;
        last.value = 30000;
    }
    out << to_json_line(last) << '\n';
}

// `connections` connections, `window` of them open at any time, each idle ~6 s before the close.
uint64_t generate(const std::string& path, uint64_t connections, uint64_t window) {
    std::ofstream out(path, std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + path);
    const uint64_t step_ns = 6'000'000'000ull / window;
    uint64_t lines = 0;
    for (uint64_t t = 0; t < connections + window; ++t) {
        uint64_t ts = 1'000'000'000ull + t * step_ns;
        if (t < connections) write_open(out, t, ts), lines += 4;
        if (t >= window) {
            uint64_t conn = t - window;
            write_close(out, conn, ts, 6000 + static_cast<uint32_t>(conn % 7)), lines += 5;
        }
        if (t % 1'000'000 == 0 && t) fmt::print(stderr, "  generated {} connections\n", t);
    }
    return lines;
}

double cpu_seconds(const rusage& usage) {
    auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

struct Run {
    double seconds = 0;      // wall clock
    double cpu_seconds = 0;  // user + system: the time it had a core (the machine may be shared)
    uint64_t events = 0;
    long peak_rss_kb = 0;
    std::string summary;
};

// Runs `work` in a child so its peak RSS is its own; the child reports through a pipe.
template <typename Work>
Run in_child(Work work) {
    int fds[2];
    if (pipe(fds)) throw std::runtime_error("pipe");
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        auto start = std::chrono::steady_clock::now();
        auto [events, summary] = work();
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        auto text = fmt::format("{} {} {}", secs, events, summary);
        (void)!write(fds[1], text.data(), text.size());
        _exit(0);
    }
    close(fds[1]);
    std::string text;
    char buf[512];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof(buf))) > 0) text.append(buf, n);
    close(fds[0]);
    int status = 0;
    rusage usage{};
    wait4(pid, &status, 0, &usage);
    Run run;
    char summary[256] = {};
    std::sscanf(text.c_str(), "%lf %lu %255[^\n]", &run.seconds, &run.events, summary);
    run.summary = summary;
    run.peak_rss_kb = usage.ru_maxrss;
    run.cpu_seconds = cpu_seconds(usage);
    return run;
}

Run read_only(const std::string& path) {
    return in_child([&] {
        std::string error;
        auto reader = TraceReader::open(path, &error);
        uint64_t lines = 0;
        while (reader->next_line()) ++lines;
        return std::pair(lines, std::string("lines read"));
    });
}

Run parse_only(const std::string& path) {
    return in_child([&] {
        std::string error;
        auto reader = TraceReader::open(path, &error);
        uint64_t events = 0;
        ParsedLine parsed;
        while (auto line = reader->next_line()) {
            parse_json_line(*line, parsed);
            if (parsed.kind == LineKind::event) ++events;
        }
        return std::pair(events, std::string("events parsed (tcpwhy's reader, src/core/jsonl.cpp)"));
    });
}

#ifdef TCPWHY_BENCH_SIMDJSON
Run parse_simdjson(const std::string& path) {
    return in_child([&] {
        std::string error;
        auto reader = TraceReader::open(path, &error);
        bench::SimdjsonLineParser parser;
        uint64_t events = 0;
        ParsedLine parsed;
        while (auto line = reader->next_line()) {
            parser.parse(*line, parsed);
            if (parsed.kind == LineKind::event) ++events;
        }
        return std::pair(events, std::string("events parsed (simdjson On-Demand, bench/jsonl_simdjson.cpp)"));
    });
}

// simdjson as it is meant for JSON lines: iterate_many over blocks of whole lines (4 MiB read
// at a time), instead of one document per call.
Run parse_simdjson_many(const std::string& path) {
    return in_child([&] {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw std::runtime_error("open " + path);
        constexpr size_t kBlock = 4 << 20;
        std::vector<char> buf(kBlock + bench::simdjson_padding());
        size_t pending = 0;
        bench::SimdjsonLineParser parser;
        ParsedLine parsed;
        uint64_t events = 0;
        auto count = [&](const ParsedLine& p) { events += p.kind == LineKind::event; };
        while (true) {
            ssize_t n = ::read(fd, buf.data() + pending, kBlock - pending);
            if (n < 0) throw std::runtime_error("read " + path);
            size_t filled = pending + static_cast<size_t>(n);
            std::string_view text(buf.data(), filled);
            size_t last = text.rfind('\n');
            size_t whole = n == 0 ? filled : last == std::string_view::npos ? 0 : last + 1;  // at the end: all that is left
            if (whole == 0 && filled == kBlock) throw std::runtime_error("a line longer than the block");
            if (whole > 0) parser.parse_many(text.substr(0, whole), parsed, count);
            if (n == 0) break;
            std::memmove(buf.data(), buf.data() + whole, filled - whole);
            pending = filled - whole;
        }
        close(fd);
        return std::pair(events, std::string("events parsed (simdjson iterate_many over 4 MiB blocks)"));
    });
}

// Both readers must read every line the same, or the race between them means nothing.
std::string compare_readers(const std::string& path) {
    std::string error;
    auto reader = TraceReader::open(path, &error);
    bench::SimdjsonLineParser parser;
    ParsedLine ours, theirs;
    uint64_t lines = 0, differ = 0;
    while (auto line = reader->next_line()) {
        ++lines;
        parse_json_line(*line, ours);
        parser.parse(*line, theirs);
        if (ours.kind != theirs.kind || (ours.kind == LineKind::event && to_json_line(ours.event) != to_json_line(theirs.event)))
            ++differ;
    }
    return fmt::format("simdjson and tcpwhy's reader: {} of {} lines read differently", differ, lines);
}
#endif

Run replay(const std::string& path) {
    return in_child([&] {
        Correlator correlator;
        ReplayStats stats;
        std::string error;
        replay_traces({path}, correlator, [](const Event&) {}, stats, &error);
        auto counts = correlator.counts();
        auto findings = correlator.findings();
        return std::pair(stats.events, fmt::format("{} connections, {} live at end, {} evicted, {} findings",
                                                   counts.connections, counts.live_connections,
                                                   counts.evicted_over_cap, findings.size()));
    });
}

// A whole `tcpwhy report` (parse, replay, the text report) of a build, as a process: how a
// build before a change compares with this one on the same trace, in the same run.
Run report_process(const std::string& tcpwhy, const std::string& path, uint64_t events) {
    auto start = std::chrono::steady_clock::now();
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        execl(tcpwhy.c_str(), tcpwhy.c_str(), "report", path.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    int status = 0;
    rusage usage{};
    wait4(pid, &status, 0, &usage);
    Run run;
    run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    run.events = events;
    run.peak_rss_kb = usage.ru_maxrss;
    run.cpu_seconds = cpu_seconds(usage);
    run.summary = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? tcpwhy : fmt::format("{} FAILED", tcpwhy);
    return run;
}

long resident_kb() {
    std::ifstream statm("/proc/self/statm");
    long size = 0, resident = 0;
    statm >> size >> resident;
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

// What the correlator holds per open connection, as bench/ingest.py measures it live: the
// growth of the process's resident memory with `open` connections accepted and not closed,
// divided by their number (the live state, the table that finds it, everything else per
// connection). In a child, so the memory is its own.
void hold_connections(uint64_t open) {
    int fds[2];
    if (pipe(fds)) throw std::runtime_error("pipe");
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        Correlator correlator;
        // Warm up what does not grow per connection (backends, their histograms, the first slab).
        for (uint64_t conn = 0; conn < 1000; ++conn) {
            correlator.on_event(state(open + conn, 1, TcpState::listen, TcpState::syn_recv));
            correlator.on_event(state(open + conn, 2, TcpState::syn_recv, TcpState::established));
        }
        long before = resident_kb();
        for (uint64_t conn = 0; conn < open; ++conn) {
            uint64_t ts = 1'000'000'000ull + conn * 1000;
            correlator.on_event(state(conn, ts, TcpState::listen, TcpState::syn_recv));
            correlator.on_event(state(conn, ts + 500, TcpState::syn_recv, TcpState::established));
        }
        long after = resident_kb();
        auto counts = correlator.counts();
        auto text = fmt::format("  hold {:>7} open connections: {:>6.1f} B per live connection ({} live, {} evicted; "
                                "sizeof(LiveConn) {} B)\n",
                                open, (after - before) * 1024.0 / static_cast<double>(counts.live_connections - 1000),
                                counts.live_connections, counts.evicted_over_cap, Correlator::live_connection_bytes());
        (void)!write(fds[1], text.data(), text.size());
        _exit(0);
    }
    close(fds[1]);
    char buf[512];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof(buf))) > 0) fwrite(buf, 1, static_cast<size_t>(n), stdout);
    close(fds[0]);
    waitpid(pid, nullptr, 0);
}

// Rates per CPU second: the figure for one core, whatever else the machine runs meanwhile (every
// stage is one thread); the wall clock is printed beside it.
void print_row(const char* name, const Run& run, const Run& baseline) {
    double rate = run.events / run.cpu_seconds;
    double base_rate = baseline.events / baseline.cpu_seconds;
    fmt::print("  {:<8} {:>12} {:>8.2f} s {:>8.2f} s {:>12.0f}/s {:>7.3f} {:>9.1f} MiB   {}\n", name, run.events,
               run.seconds, run.cpu_seconds, rate, rate / base_rate, run.peak_rss_kb / 1024.0, run.summary);
}

void print_header() {
    fmt::print("  {:<8} {:>12} {:>10} {:>10} {:>14} {:>7} {:>13}\n", "stage", "events", "wall", "cpu", "rate (cpu)",
               "ratio", "peak RSS");
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"tcpwhy replay benchmark (events/s and peak RSS of `tcpwhy report`'s pipeline)"};
    uint64_t connections = 1'200'000, window = 100'000;
    std::string dir = "/tmp";
    bool keep = false, reuse = false;
    int repeat = 3;
    std::vector<std::string> stages = {"read", "parse", "simdjson", "simdjson-many", "replay", "report", "other", "compare", "memory"};
    app.add_option("--connections", connections, "Connections in the full trace (9 events each)")
        ->capture_default_str();
    app.add_option("--window", window, "Connections open at once")->capture_default_str();
    app.add_option("--dir", dir, "Where to write the generated traces")->capture_default_str();
    app.add_flag("--keep", keep, "Keep the generated traces");
    app.add_flag("--reuse", reuse, "Use the traces a run with --keep left in --dir (same --connections and --window)");
    std::string build, other_build;
    app.add_option("--build", build, "This build's directory, for its `tcpwhy report` (default: the one holding bench/)");
    app.add_option("--other-build", other_build,
                   "Another build's directory (e.g. the commit before a change): its `tcpwhy report` runs on the\n"
                   "same traces, in the same run, as the row `other`");
    app.add_option("--repeat", repeat, "Runs of each stage (interleaved); the one with the least CPU time is shown")
        ->capture_default_str();
    app.add_option("--stages", stages,
                   "Rows to run: read (always, the baseline), parse, simdjson (a line at a time), simdjson-many\n"
                   "(iterate_many; row sj-many), replay, report, other, compare (the\n"
                   "two readers line by line), memory (bytes per live connection)")
        ->delimiter(',')
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    if (build.empty()) {
        std::string self = std::filesystem::canonical("/proc/self/exe").string();
        build = std::filesystem::path(self).parent_path().parent_path().string();
    }
    auto wanted = [&](std::string_view stage) { return std::find(stages.begin(), stages.end(), stage) != stages.end(); };

    std::string full = dir + "/tcpwhy-bench-full.jsonl", third = dir + "/tcpwhy-bench-third.jsonl";
    uint64_t full_lines = 0, third_lines = 0;
    if (reuse && std::filesystem::exists(full) && std::filesystem::exists(third)) {
        full_lines = connections * kEventsPerConnection;  // what generate() writes
        third_lines = (connections / 3) * kEventsPerConnection;
    } else {
        fmt::print(stderr, "generating {} connections ({} events) in {} ...\n", connections,
                   connections * kEventsPerConnection, full);
        full_lines = generate(full, connections, window);
        third_lines = generate(third, connections / 3, window);
    }

    for (auto [label, path, lines] : {std::tuple("full trace", full, full_lines), std::tuple("a third as long", third, third_lines)}) {
        fmt::print("{}: {} events, {} connections, {} open at once\n", label, lines, lines / kEventsPerConnection,
                   window);
        print_header();
        // Each stage `repeat` times, interleaved (a slow moment of the machine falls on every stage
        // alike), keeping each stage's run with the least CPU time.
        std::vector<std::pair<std::string, std::function<Run()>>> rows;
        rows.emplace_back("read", [&] { return read_only(path); });
        if (wanted("parse")) rows.emplace_back("parse", [&] { return parse_only(path); });
#ifdef TCPWHY_BENCH_SIMDJSON
        if (wanted("simdjson")) rows.emplace_back("simdjson", [&] { return parse_simdjson(path); });
        if (wanted("simdjson-many")) rows.emplace_back("sj-many", [&] { return parse_simdjson_many(path); });
#endif
        if (wanted("replay")) rows.emplace_back("replay", [&] { return replay(path); });
        if (wanted("report")) rows.emplace_back("report", [&] { return report_process(build + "/tcpwhy", path, lines); });
        if (wanted("other") && !other_build.empty())
            rows.emplace_back("other", [&] { return report_process(other_build + "/tcpwhy", path, lines); });
        std::vector<Run> best(rows.size());
        for (int round = 0; round < repeat; ++round)
            for (size_t i = 0; i < rows.size(); ++i) {
                Run run = rows[i].second();
                if (round == 0 || run.cpu_seconds < best[i].cpu_seconds) best[i] = run;
            }
        for (size_t i = 0; i < rows.size(); ++i) print_row(rows[i].first.c_str(), best[i], best[0]);
        std::fflush(stdout);
    }
#ifdef TCPWHY_BENCH_SIMDJSON
    if (wanted("compare")) fmt::print("{}\n", compare_readers(third));
#endif
    if (wanted("memory")) {
        fmt::print("memory per live connection (correlator, {} connections at most):\n",
                   CorrelatorConfig{}.max_live_connections);
        std::fflush(stdout);
        for (uint64_t open : {100'000ull, 200'000ull, 250'000ull}) hold_connections(open);
    }
    if (!keep) {
        std::remove(full.c_str());
        std::remove(third.c_str());
    }
    return 0;
}
