// `tcpwhy top`: the live view per backend (pod and port), full screen or as plain text.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <clocale>
#include <cstdio>
#include <optional>

#include <fmt/format.h>

#include "tcpwhy/bpf/tracer.h"
#include "commands.h"
#include "tcpwhy/format.h"
#include "tcpwhy/live_view.h"
#include "tcpwhy/log.h"
#include "tcpwhy/session.h"
#include "tcpwhy/top/daemon_client.h"
#include "tcpwhy/top/screen.h"
#include "tcpwhy/top/source_list.h"
#include "tcpwhy/top/view_model.h"

namespace tcpwhy::cli {
namespace {

using Clock = std::chrono::steady_clock;
// How often the live screen lists the open connections for their idle times.
constexpr uint64_t kLiveSampleIntervalNs = 5'000'000'000;

struct TopArgs {
    top::RowFilter filter;
    LbArgs lb;
    NamingArgs naming;
    std::vector<std::string> connect;  // daemons' sockets, or exec:COMMAND transports
    std::string connect_from;          // a command listing them, run again every connect_every_s
    double connect_every_s = 30.0;
    bool once = false;
    bool json = false;
    double interval_s = 1.0;
    bool no_colour = false;
    bool tracepoints_only = false;
    size_t ring_mb = 8;
    bool verbose = false;
    int nice = kDefaultNice;
};

// Where snapshots come from: this process's own tracer, or a daemon's socket.
class SnapshotSource {
public:
    virtual ~SnapshotSource() = default;
    // Lets time pass for up to wait_ms, doing the source's work (reading events).
    virtual void pump(int wait_ms) = 0;
    // The view as of now; nullopt and *error when it cannot be had this time.
    virtual std::optional<Snapshot> snapshot(std::string* error) = 0;
    // Whether pump() waits by itself (else the caller waits for keys instead).
    virtual bool pump_waits() const = 0;
    // Something new came in since the last snapshot() (a daemon's answer): worth drawing now.
    virtual bool updated() const { return false; }
    // What the view cannot show on its own ("" for nothing): said on the screen's problem line.
    virtual std::string notice() const { return ""; }
};

// This process's own session: the same pipeline as trace and the daemon.
class SessionSource final : public SnapshotSource {
public:
    explicit SessionSource(std::unique_ptr<Session> session) : session_(std::move(session)) {
        ExistingSockets existing = session_->start();
        for (const auto& why : existing.errors) log::warn(fmt::format("socket iterator: {}", why));
    }

    void pump(int wait_ms) override { session_->pump(wait_ms); }

    std::optional<Snapshot> snapshot(std::string*) override { return session_->view().snapshot(); }

    // --once: list the open connections right before the one snapshot, for their idle times.
    void sample_live() { session_->sample_live_sockets(); }

    bool pump_waits() const override { return true; }

private:
    std::unique_ptr<Session> session_;
};

// Running daemons, one or several (one per node): each asked once per refresh over a connection
// kept open, the answers waited for together. One daemon's view is shown as it is; several are
// merged into one view with a row per node and backend.
class DaemonSource final : public SnapshotSource {
public:
    DaemonSource(const std::vector<std::string>& sources, double interval_s, std::unique_ptr<top::SourceList> lister)
        : links_(sources),
          lister_(std::move(lister)),
          interval_(std::chrono::milliseconds(static_cast<int64_t>(interval_s * 1000))) {}

    // --connect-from without --connect: the first list, before anything can be asked.
    bool list_now(std::string* error) {
        auto sources = lister_->run_now(kFirstListTimeoutMs);
        if (!sources) return *error = lister_->problem(), false;
        links_.set_sources(*sources);
        return true;
    }

    void pump(int wait_ms) override {
        if (lister_)
            if (auto sources = lister_->poll(top::monotonic_ms())) {
                auto change = links_.set_sources(*sources);
                if (change.added || change.removed) {
                    last_change_ = fmt::format("nodes: {} added, {} gone (--connect-from)", change.added, change.removed);
                    last_change_at_ = Clock::now();
                }
                if (change.added) next_request_ = Clock::now();  // the new ones at once
            }
        if (Clock::now() >= next_request_) {
            next_request_ = Clock::now() + interval_;
            links_.request_all();
        }
        links_.wait(wait_ms);
    }

    // --once: one request each, every answer (or failure) in.
    void gather() {
        links_.request_all();
        while (!links_.all_settled() && !stop_requested()) links_.wait(100);
    }

    // nullopt with an empty *error: no answer yet, and nothing wrong so far.
    std::optional<Snapshot> snapshot(std::string* error) override {
        seen_answers_ = links_.answers_received();
        if (links_.size() == 1) {
            const top::DaemonLink& only = links_.link(0);
            if (!only.problem().empty() || !only.latest()) {
                *error = only.problem();
                return std::nullopt;
            }
            return only.latest();
        }
        auto answers = links_.answers();
        if (std::none_of(answers.begin(), answers.end(), [](const auto& a) { return a.snapshot.has_value(); })) {
            *error = top::nodes_problem(top::merge_snapshots(answers));
            if (error->empty()) *error = "no daemon has answered yet";
            return std::nullopt;
        }
        return top::merge_snapshots(answers);
    }

    bool pump_waits() const override { return true; }
    bool updated() const override { return links_.answers_received() != seen_answers_; }
    std::string notice() const override {
        if (lister_ && !lister_->problem().empty()) return lister_->problem();
        // a change is news for a few refreshes, not a standing problem
        return Clock::now() < last_change_at_ + kChangeShownFor ? last_change_ : "";
    }

private:
    static constexpr int64_t kFirstListTimeoutMs = 30000;
    top::DaemonLinks links_;
    std::unique_ptr<top::SourceList> lister_;
    static constexpr auto kChangeShownFor = std::chrono::seconds(10);
    std::string last_change_;
    Clock::time_point last_change_at_{};
    uint64_t seen_answers_ = 0;
    std::chrono::milliseconds interval_;
    Clock::time_point next_request_ = Clock::now();
};

int run_plain(SnapshotSource& source, const TopArgs& args) {
    if (auto* daemons = dynamic_cast<DaemonSource*>(&source)) daemons->gather();
    if (auto* own = dynamic_cast<SessionSource*>(&source)) {
        // gather for one interval first: a view of nothing explains nothing
        auto until = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(args.interval_s * 1000));
        while (!stop_requested() && Clock::now() < until) source.pump(25);
        own->sample_live();
    }
    std::string error;
    auto snapshot = source.snapshot(&error);
    if (!snapshot) {
        bool via_command = std::any_of(args.connect.begin(), args.connect.end(),
                                       [](const auto& c) { return c.starts_with(top::kExecPrefix); });
        print_error(terminal_safe_text(error.empty() ? "interrupted before any daemon answered" : error),
                    via_command ? "the command must carry the daemon's protocol on its stdin and stdout, e.g. "
                                  "exec:kubectl -n tcpwhy exec -i POD -- tcpwhy relay"
                                : "is `tcpwhy daemon` running with this --socket path? (see `tcpwhy daemon --help`)");
        return kExitFailure;
    }
    if (args.json) fmt::print("{}\n", to_json(*snapshot));
    else  // names from other processes and pods: no control reaches the terminal
        fmt::print("{}", terminal_safe_text(
                             top::render_plain(*snapshot, args.filter, top::ViewState{}, top::Glyphs::for_locale())));
    std::fflush(stdout);
    // Of several daemons, one that did not answer leaves the view incomplete: said, and exit 1.
    int missing = 0;
    for (const auto& node : snapshot->nodes) {
        if (node.problem.empty()) continue;
        ++missing;
        print_error(terminal_safe_text(
            fmt::format("{} not in the view: {}", node.answered ? node.name : "a daemon", node.problem)));
    }
    return missing ? kExitFailure : kExitOk;
}

int run_screen(std::optional<top::Terminal>& terminal, SnapshotSource& source, const TopArgs& args) {
    top::TopScreen screen(args.filter, top::Glyphs::for_locale(), !args.no_colour);
    // With our own tracer the tracer's poll is the wait; keys are read without waiting.
    terminal->set_key_wait_ms(source.pump_waits() ? 0 : 50);
    auto interval = std::chrono::milliseconds(static_cast<int64_t>(args.interval_s * 1000));

    Snapshot current;
    std::string problem;
    auto next_refresh = Clock::now();
    bool dirty = true;
    while (!stop_requested()) {
        if (source.pump_waits()) source.pump(25);
        if (Clock::now() >= next_refresh || source.updated()) {
            next_refresh = Clock::now() + interval;
            std::string error;
            if (auto s = source.snapshot(&error)) {
                current = std::move(*s);
                problem = top::nodes_problem(current);
                if (!problem.empty()) problem = "not answering: " + problem;
            } else if (!error.empty()) {
                problem = "cannot read the daemon's view: " + error;
            }
            if (std::string notice = source.notice(); !notice.empty())
                problem = problem.empty() ? notice : problem + "; " + notice;
            dirty = true;
        }
        for (int key = terminal->next_key(); key != -1; key = terminal->next_key()) {
            auto action = screen.on_key(key, current);
            if (action == top::TopScreen::Action::quit) return kExitOk;
            if (action == top::TopScreen::Action::redraw) dirty = true;
            if (!source.pump_waits()) terminal->set_key_wait_ms(0);  // drain what is queued, then wait again
        }
        if (!source.pump_waits()) terminal->set_key_wait_ms(50);
        if (dirty) screen.draw(current, problem);
        dirty = false;
    }
    return kExitOk;  // SIGINT/SIGTERM: the Terminal's destructor restores the screen
}

int run_top(const TopArgs& args) {
    set_libbpf_verbose(args.verbose);
    std::setlocale(LC_ALL, "");
    std::string error;
    auto config = correlator_config(args.lb);
    if (!config) return kExitUsage;
    if (!valid_ring_mb(args.ring_mb)) return kExitUsage;
    std::unique_ptr<WorkloadResolver> resolver;
    const bool from_daemons = !args.connect.empty() || !args.connect_from.empty();
    if (!from_daemons) {  // the daemon names its own backends
        resolver = make_resolver(args.naming, &error);
        if (!resolver && !args.naming.no_names) {
            print_error(error);
            return kExitUsage;
        }
    }
    bool plain = args.once || args.json || !isatty(STDOUT_FILENO);
    install_stop_handlers();  // before curses, which then leaves SIGINT/SIGTERM to us

    // The terminal first: an unusable one is reported before any program is loaded.
    std::optional<top::Terminal> terminal;
    if (!plain) {
        try {
            terminal.emplace();
        } catch (const std::runtime_error& e) {
            print_error(e.what(), "set TERM to your terminal (e.g. xterm-256color), or use --once for plain text");
            return kExitUsage;
        }
    }
    std::unique_ptr<SnapshotSource> source;
    if (from_daemons) {
        signal(SIGPIPE, SIG_IGN);  // a transport command that exited is a failed write, said on screen
        std::unique_ptr<top::SourceList> lister;
        // A single snapshot needs the list once: only when --connect gave none.
        if (!args.connect_from.empty() && (!plain || args.connect.empty()))
            lister = std::make_unique<top::SourceList>(
                args.connect_from, static_cast<int64_t>(args.connect_every_s * 1000));
        auto daemons = std::make_unique<DaemonSource>(args.connect, args.interval_s, std::move(lister));
        if (args.connect.empty() && !daemons->list_now(&error)) {
            terminal.reset();
            print_error(terminal_safe_text(error), "the command must print one --connect source a line and exit 0");
            return kExitFailure;
        }
        source = std::move(daemons);
    } else {
        try {
            TracerOptions options;
            options.ring_bytes = args.ring_mb << 20;
            options.allow_fentry = options.allow_kprobe = !args.tracepoints_only;
            tally_by(options, *config);
            SessionOptions session_options;
            session_options.config = *config;
            session_options.live_sample_interval_ns = kLiveSampleIntervalNs;
            session_options.servers = server_detection(args.naming);
            auto session = std::make_unique<Session>(Tracer::start(options), std::move(resolver),
                                                     std::move(session_options));
            lower_cpu_priority(args.nice);
            source = std::make_unique<SessionSource>(std::move(session));
        } catch (const TracerError& e) {
            terminal.reset();  // the message goes to the normal screen
            print_error(e.what(), e.fix());
            return kExitFailure;
        }
    }
    if (plain) return run_plain(*source, args);
    return run_screen(terminal, *source, args);
}

}  // namespace

Runner add_top(CLI::App& app) {
    auto* sub = app.add_subcommand(
        "top",
        "The live view, one row per backend (pod and port): live connections from the load\n"
        "balancer and others, idle closes, resets sent (keep-alive races / other) and received,\n"
        "a sparkline of resets over the last minute, and the verdict. Enter opens a backend: its\n"
        "findings with the fix, and its recent connections' timelines. `?` lists the keys.\n"
        "When stdout is not a terminal (kubectl exec without -t) it prints one plain snapshot.\n\n"
        "Examples:\n"
        "  tcpwhy top                                   # trace this node and show it live\n"
        "  tcpwhy top --pod web --lb aws-alb --lb-ranges 10.0.0.0/16\n"
        "  tcpwhy top --connect /run/tcpwhy/tcpwhy.sock # the view of a running `tcpwhy daemon`\n"
        "  tcpwhy top --connect A.sock --connect B.sock # several daemons in one view, a row per node\n"
        "  tcpwhy top --connect 'exec:kubectl -n tcpwhy exec -i tcpwhy-x2k9p -- tcpwhy relay'\n"
        "  kubectl tcpwhy top                           # every node of the cluster (the kubectl plugin)\n"
        "  tcpwhy top --once --interval 10              # trace 10 s, print one snapshot, exit");
    auto args = std::make_shared<TopArgs>();
    sub->add_option("--pod", args->filter.pod,
                    "Only backends whose pod name (or netns inode) contains this");
    sub->add_option("--namespace", args->filter.namespace_name,
                    "Only backends in this Kubernetes namespace");
    add_lb_options(*sub, args->lb);
    add_naming_options(*sub, args->naming);
    sub->add_option("--connect", args->connect,
                    "Read the view from a running `tcpwhy daemon` at this Unix socket instead of tracing here\n"
                    "(the daemon's default: /run/tcpwhy/tcpwhy.sock), or through a command whose stdin and\n"
                    "stdout carry its protocol: exec:COMMAND (e.g. exec:kubectl -n tcpwhy exec -i POD -- tcpwhy\n"
                    "relay). Repeat it for several daemons (one per node): one view, a row per node and backend")
        ->option_text("SOCKET|exec:COMMAND")
        ->check([](const std::string& value) {
            if (value.starts_with(top::kExecPrefix) &&
                value.find_first_not_of(' ', top::kExecPrefix.size()) == std::string::npos)
                return std::string("exec: needs a command, e.g. exec:kubectl -n tcpwhy exec -i POD -- tcpwhy relay");
            return std::string();
        });
    sub->add_option("--connect-from", args->connect_from,
                    "Take the --connect sources from a command's output, one a line, and run it again every\n"
                    "--connect-every seconds: the view follows nodes as they come and go (a node whose line\n"
                    "is gone leaves the view; a failed run leaves the nodes as they were, said on screen).\n"
                    "`kubectl tcpwhy top` runs it with `kubectl tcpwhy connects`")
        ->option_text("COMMAND");
    sub->add_option("--connect-every", args->connect_every_s, "Seconds between runs of the --connect-from command")
        ->check(CLI::Range(1.0, 86400.0))
        ->capture_default_str();
    sub->add_flag("--once", args->once,
                  "Print one plain-text snapshot and exit (automatic when stdout is not a terminal);\n"
                  "without --connect, after tracing for --interval seconds");
    sub->add_flag("--json", args->json, "Print one snapshot as JSON (the daemon's wire format) and exit");
    sub->add_option("--interval", args->interval_s, "Seconds between refreshes (and of tracing before --once)")
        ->check(CLI::Range(0.1, 3600.0))
        ->capture_default_str();
    sub->add_flag("--no-color", args->no_colour, "No colours, even where the terminal has them");
    sub->add_option("--ring-mb", args->ring_mb, "Ring buffer size in MiB (power of two)")->capture_default_str();
    add_nice_option(*sub, args->nice);
    sub->add_flag("--tracepoints-only", args->tracepoints_only, "Do not use fentry/kprobe even where available");
    sub->add_flag("-v,--verbose", args->verbose, "Show libbpf's log (verifier output on load failures)");
    return [args] { return run_top(*args); };
}

Runner add_relay(CLI::App& app) {
    auto* sub = app.add_subcommand(
        "relay",
        "Carry the daemon's control protocol between stdin/stdout and its Unix socket, so a\n"
        "transport that runs a command (kubectl exec -i) reaches a daemon inside its pod:\n"
        "`tcpwhy top --connect 'exec:kubectl -n tcpwhy exec -i POD -- tcpwhy relay'`. Ends when the\n"
        "daemon closes the connection (after stdin ends, once it has answered).");
    auto socket = std::make_shared<std::string>("/run/tcpwhy/tcpwhy.sock");
    sub->add_option("--socket", *socket, "The daemon's Unix socket")->capture_default_str();
    return [socket] {
        signal(SIGPIPE, SIG_IGN);  // a reader that went away is a write error, said below
        std::string error;
        int rc = top::relay(*socket, STDIN_FILENO, STDOUT_FILENO, &error);
        if (rc != 0)
            print_error(error,
                        "is `tcpwhy daemon` running with this --socket path? (and run as root: the socket is 0600)");
        return rc == 0 ? kExitOk : kExitFailure;
    };
}

}  // namespace tcpwhy::cli
