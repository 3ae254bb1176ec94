// `tcpwhy top` as an on-call engineer uses it: in a real terminal (tmux) while the
// keep-alive race runs between the lb and pod namespaces, and piped (plain text).
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <regex>

#include "harness.h"
#include "tcpwhy/live_view.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {

constexpr uint16_t kPort = 8080;

std::string shell_quote(std::string_view text) {
    std::string out = "'";
    for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

std::string capture_output(const std::string& command) {
    std::string out;
    FILE* pipe = popen(command.c_str(), "r");
    if (!pipe) return out;
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
    pclose(pipe);
    return out;
}

// The backend idles past the idle bar (1 s), closes; the LB's next request crosses the
// FIN and is reset: an idle_close_race, over and over, until destroyed.
class KeepAliveRace {
public:
    explicit KeepAliveRace(const LbAndPod& net)
        : net_(net), listener_(net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); })) {
        thread_ = std::thread([this] {
            try {
                while (!stop_) race_once();
            } catch (const std::exception& e) {
                std::lock_guard lock(mutex_);
                error_ = e.what();
            }
        });
    }
    ~KeepAliveRace() {
        stop_ = true;
        thread_.join();
    }
    std::string error() {
        std::lock_guard lock(mutex_);
        return error_;
    }

private:
    void race_once() {
        std::vector<std::pair<Fd, Fd>> connections;  // (lb side, pod side)
        for (int i = 0; i < 2; ++i) {
            Fd client = net_.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); });
            Fd server = accept_one(listener_);
            send_all(client, "GET / HTTP/1.1\r\nHost: pod\r\n\r\n");
            recv_some(server);
            send_all(server, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            recv_some(client);
            connections.emplace_back(std::move(client), std::move(server));
        }
        for (int i = 0; i < 12 && !stop_; ++i) sleep_ms(100);  // idle 1.2 s
        for (auto& [client, server] : connections) {
            server.reset();  // the backend's idle timeout fires
            send(client.get(), "GET /next HTTP/1.1\r\n\r\n", 22, MSG_NOSIGNAL);  // the LB reuses it: reset
        }
        sleep_ms(50);
    }

    const LbAndPod& net_;
    Fd listener_;
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::string error_;
    std::thread thread_;
};

// A tmux server of its own (-L), with one session running `command`; killed on destruction.
class Tmux {
public:
    Tmux(const std::string& command, int width = 200, int height = 80) {
        static int sessions = 0;
        socket_ = fmt::format("tcpwhy-test-{}-{}", getpid(), ++sessions);
        run(fmt::format("tmux -L {} -f /dev/null new-session -d -s top -x {} -y {} {}", socket_, width, height,
                        shell_quote(command)));
    }
    ~Tmux() { std::system(fmt::format("tmux -L {} kill-server >/dev/null 2>&1", socket_).c_str()); }
    Tmux(const Tmux&) = delete;
    Tmux& operator=(const Tmux&) = delete;

    std::string screen() const {
        return capture_output(fmt::format("tmux -L {} capture-pane -p -t top 2>/dev/null", socket_));
    }
    // With the escape sequences of colours and attributes.
    std::string screen_with_attributes() const {
        return capture_output(fmt::format("tmux -L {} capture-pane -p -e -t top 2>/dev/null", socket_));
    }
    void resize(int width, int height) const {
        run(fmt::format("tmux -L {} resize-window -t top -x {} -y {}", socket_, width, height));
    }
    // Literal text (-l), or key names such as Enter, Escape, C-c.
    void type(const std::string& text) const {
        run(fmt::format("tmux -L {} send-keys -t top -l {}", socket_, shell_quote(text)));
    }
    void key(const std::string& name) const { run(fmt::format("tmux -L {} send-keys -t top {}", socket_, name)); }

    // Waits until the screen satisfies `ok`; returns the last screen either way.
    template <typename Predicate>
    std::string wait_for(Predicate ok, int timeout_ms = 15000) const {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        std::string text = screen();
        while (!ok(text) && std::chrono::steady_clock::now() < deadline) {
            sleep_ms(100);
            text = screen();
        }
        return text;
    }

private:
    std::string socket_;
};

bool has(const std::string& text, std::string_view needle) { return text.find(needle) != std::string::npos; }

// The row of a backend: "netns <inode>" until pods are named, the `ip netns` name after.
// Groups: 1/2 live LB/other, 3 idle closes, 4/5 resets sent races/other, 6 received, 7 verdict.
std::optional<std::smatch> backend_row(const std::string& screen, const Netns& ns, bool outbound) {
    // LIVE is "lb/other", and "(longest idle)" once the open connections were listed.
    std::regex row(fmt::format(R"((?:netns {}|{})\s+\S+\s+{}{}\s+\S+\s+(\d+)/(\d+)(?: \(\S+\))?\s+(\d+ p50 \S+|-)\s+)"
                               R"((\d+)/(\d+)\s+(\d+).*?(\S+)\n)",
                               ns.inode(), ns.name(), outbound ? R"((?:->|→))" : "", kPort));
    std::smatch match;
    if (!std::regex_search(screen, match, row)) return std::nullopt;
    return match;
}

uint64_t races_in(const std::smatch& row) { return std::stoull(row[4].str()); }

bool tty_restored(const std::string& screen) {
    // `stty -a` after top exits: canonical mode and echo are back on.
    return std::regex_search(screen, std::regex(R"((^|\s)icanon(\s|$))")) &&
           std::regex_search(screen, std::regex(R"((^|\s)echo(\s|$))"));
}

// A shell in the terminal runs top (its pid in pid_file), then reports how it ended and the tty modes.
std::string top_in_shell(const std::string& top_args, const std::string& pid_file = "/dev/null") {
    return fmt::format(
        "LANG=C.UTF-8 sh -c \"echo \\$\\$ >{}; exec {} top {}\"; echo \"top exited rc=$?\"; stty -a; sleep 600",
        pid_file, TCPWHY_BINARY, top_args);
}

}  // namespace

TEST_CASE("top in a terminal: the racing backend's row, filtering, drill-down, q restores the terminal") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    Tmux tmux(top_in_shell("--interval 0.5 --lb gcp --tracepoints-only"));
    // Race once top traces, so the timelines start at the accept.
    REQUIRE(has(tmux.wait_for([](const std::string& s) { return has(s, "RST RACE/O"); }), "RST RACE/O"));
    KeepAliveRace race(net);

    // The pod's row: races counted, the verdict named.
    std::string screen = tmux.wait_for([&](const std::string& s) {
        auto row = backend_row(s, net.pod, false);
        return row && races_in(*row) > 0 && (*row)[7].str() == "idle_close_race";
    });
    INFO(screen);
    INFO(race.error());
    auto pod_row = backend_row(screen, net.pod, false);
    REQUIRE(pod_row);
    CHECK(races_in(*pod_row) > 0);
    CHECK((*pod_row)[7].str() == "idle_close_race");
    CHECK(has(screen, "attach tp_btf"));
    CHECK(has(screen, "LB gcp (idle timeout 600 s)"));
    CHECK(has(screen, "dropped 0"));
    // The verdict of a race is red (SGR 31, alone or with bold/reverse).
    CHECK(std::regex_search(tmux.screen_with_attributes(),
                            std::regex("\x1b\\[[0-9;]*31[0-9;]*m *idle_close_race")));

    // Resized narrower: redrawn to fit, the drops still on screen.
    tmux.resize(100, 30);  // the sparkline is the first column to go
    screen = tmux.wait_for([&](const std::string& s) {
        return has(s, "dropped 0") && backend_row(s, net.pod, false).has_value() && !has(s, "RESETS 60s");
    });
    INFO(screen);
    CHECK(backend_row(screen, net.pod, false));
    for (const auto& line : std::vector<std::string>{"dropped 0", "VERDICT"}) CHECK(has(screen, line));
    tmux.resize(200, 80);

    // The LB side's sockets are a backend too (outbound to 8080), until filtered out.
    screen = tmux.wait_for([&](const std::string& s) { return backend_row(s, net.lb, true).has_value(); });
    CHECK(backend_row(screen, net.lb, true));

    // `/` filters by pod (here the netns inode) as you type; Enter keeps the filter. The table
    // shows the filter while it is typed too: wait for the prompt to go, so the next Enter is
    // the table's.
    tmux.type("/");
    tmux.type(std::to_string(net.pod.inode()));
    tmux.key("Enter");
    screen = tmux.wait_for([&](const std::string& s) {
        return has(s, fmt::format("filter: \"{}\"", net.pod.inode())) && !backend_row(s, net.lb, true) &&
               !has(s, "filter (pod or namespace):");
    });
    INFO(screen);
    CHECK(has(screen, fmt::format("filter: \"{}\"", net.pod.inode())));
    CHECK_FALSE(backend_row(screen, net.lb, true));
    CHECK(backend_row(screen, net.pod, false));

    // Enter opens the (only, selected) pod row: the finding with its fix, and timelines:
    // opened -> last data -> idle -> backend closed -> reset, with times.
    tmux.key("Enter");
    // With the kernel's tallies the open is counted, not timed: the timeline starts at the last data.
    std::regex timeline(R"(opened \(accepted\)( \d\d:\d\d:\d\d\.\d{3} → last data \+\d+\.\d{3}s| earlier \(counted\) → )"
                        R"(last data \d\d:\d\d:\d\d\.\d{3}) → idle 1\.\d s → )"
                        R"(backend closed \(FIN\) \+1\.\d{3}s → reset sent TCP_(ABORT_ON_DATA|TIMEWAIT_SOCKET): )"
                        R"(idle_close_race \+1\.\d{3}s)");
    screen = tmux.wait_for([&](const std::string& s) {
        return has(s, "[idle_close_race]") && has(s, "fix: ") && std::regex_search(s, timeline);
    });
    INFO(screen);
    CHECK(has(screen, "findings:"));
    CHECK(has(screen, "[idle_close_race]"));
    CHECK(has(screen, "fix: make the server's idle timeout longer than the LB's (600 s)"));
    CHECK(has(screen, "recent connections (newest first):"));
    CHECK(std::regex_search(screen, timeline));

    // Back to the table, clear the filter: the LB side's row is back.
    tmux.key("Escape");
    screen = tmux.wait_for([&](const std::string& s) { return has(s, "RST RACE/O"); });
    tmux.key("Escape");
    screen = tmux.wait_for([&](const std::string& s) { return backend_row(s, net.lb, true).has_value(); });
    CHECK(backend_row(screen, net.lb, true));

    // Sorting: 1 is the first column (names A to Z), again reverses; > moves to the next column.
    tmux.type("1");
    screen = tmux.wait_for([](const std::string& s) { return has(s, "POD▲"); });
    CHECK(has(screen, "POD▲"));
    CHECK(has(screen, "sorted by POD"));
    tmux.type("1");
    screen = tmux.wait_for([](const std::string& s) { return has(s, "POD▼"); });
    CHECK(has(screen, "POD▼"));
    tmux.type(">");
    screen = tmux.wait_for([](const std::string& s) { return has(s, "NAMESPACE▲"); });
    CHECK(has(screen, "sorted by NAMESPACE"));

    // `?` shows the help; any key returns.
    tmux.type("?");
    screen = tmux.wait_for([&](const std::string& s) { return has(s, "Press any key to go back."); });
    CHECK(has(screen, "filter by pod or namespace"));
    tmux.type(" ");
    screen = tmux.wait_for([&](const std::string& s) { return has(s, "RST RACE/O"); });
    CHECK(has(screen, "RST RACE/O"));

    // q quits with 0 and the terminal is as it was.
    tmux.type("q");
    screen = tmux.wait_for([](const std::string& s) { return has(s, "top exited rc=") && has(s, "icanon"); });
    INFO(screen);
    CHECK(has(screen, "top exited rc=0"));
    CHECK(tty_restored(screen));
    CHECK_FALSE(has(screen, "RST RACE/O"));  // back on the normal screen
}

TEST_CASE("top in a terminal: Ctrl-C and SIGTERM end it and restore the terminal") {
    TCPWHY_REQUIRE_ROOT();
    Tmux tmux(top_in_shell("--interval 0.5"));
    auto screen = tmux.wait_for([](const std::string& s) { return has(s, "RST RACE/O"); });
    REQUIRE(has(screen, "RST RACE/O"));
    tmux.key("C-c");
    screen = tmux.wait_for([](const std::string& s) { return has(s, "top exited rc=") && has(s, "icanon"); });
    INFO(screen);
    CHECK(has(screen, "top exited rc=0"));
    CHECK(tty_restored(screen));

    std::string pid_file = fmt::format("/tmp/tcpwhy-test-{}-top.pid", getpid());
    Tmux terminated(top_in_shell("--interval 0.5", pid_file));
    screen = terminated.wait_for([](const std::string& s) { return has(s, "RST RACE/O"); });
    REQUIRE(has(screen, "RST RACE/O"));
    pid_t top_pid = std::stoi(capture_output("cat " + pid_file));
    unlink(pid_file.c_str());
    REQUIRE(kill(top_pid, SIGTERM) == 0);
    screen = terminated.wait_for([](const std::string& s) { return has(s, "top exited rc=") && has(s, "icanon"); });
    INFO(screen);
    CHECK(has(screen, "top exited rc=0"));
    CHECK(tty_restored(screen));
}

TEST_CASE("top piped: one plain snapshot with the race, its fix and a timeline") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    KeepAliveRace race(net);
    // Not a terminal: plain text without --once; it traces --interval seconds first.
    std::string out = capture_output(fmt::format("{} top --interval 4 --pod {} 2>&1", TCPWHY_BINARY, net.pod.inode()));
    INFO(out);
    INFO(race.error());
    if (getenv("SHOWTMP")) fmt::print("{}\n", out);
    CHECK(out.rfind("tcpwhy top  node ", 0) == 0);
    CHECK(has(out, "LB gcp (idle timeout 600 s)"));
    CHECK(has(out, "POD"));
    CHECK(has(out, "VERDICT"));
    auto row = backend_row(out, net.pod, false);
    REQUIRE(row);
    CHECK(races_in(*row) > 0);
    CHECK((*row)[7].str() == "idle_close_race");
    CHECK_FALSE(backend_row(out, net.lb, true));  // --pod keeps only the pod
    CHECK(has(out, "1. [idle_close_race]"));
    CHECK(has(out, "fix: make the server's idle timeout longer than the LB's (600 s)"));
    CHECK(has(out, "opened (accepted)"));
    CHECK(has(out, "backend closed (FIN)"));
    CHECK(out.find('\x1b') == std::string::npos);  // no terminal control sequences

    // --json: the daemon's wire format, which parse_snapshot reads back.
    std::string json = capture_output(fmt::format("{} top --json --interval 2 2>/dev/null", TCPWHY_BINARY));
    std::string error;
    auto snapshot = parse_snapshot(json, &error);
    INFO(error);
    REQUIRE(snapshot);
    // the close hook's path first: whichever this kernel allows
    const std::string& attach = snapshot->header.attach;
    CHECK((attach.rfind("tp_btf", 0) == 0 || attach.rfind("fentry", 0) == 0 || attach.rfind("kprobe", 0) == 0));
}

TEST_CASE("top --connect: reads a daemon's snapshot from its Unix socket") {
    // A stand-in daemon: a real socket serving a real LiveView's snapshot_json().
    LiveView view(CorrelatorConfig::defaults());
    Event listening;
    listening.type = EventType::state;
    listening.ts_ns = 1'000'000'000;
    listening.cookie = 7;
    listening.netns = 4026530001;
    listening.lport = 9090;
    listening.laddr = *IpAddr::parse("10.1.2.3");
    listening.old_state = TcpState::close;
    listening.new_state = TcpState::listen;
    listening.comm = "server";
    listening.pid = 42;
    view.on_event(listening);
    view.tick(2'000'000'000, LiveStatus{"daemon-node", "6.1.0-test", "fentry", 1, 3});

    std::string path = fmt::format("/tmp/tcpwhy-test-{}-top.sock", getpid());
    unlink(path.c_str());
    Fd server(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
    REQUIRE(bind(server.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    REQUIRE(listen(server.get(), 4) == 0);
    std::string request;
    std::thread daemon([&] {
        Fd client(accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC));
        request = recv_some(client);
        send_all(client, view.snapshot_json() + "\n");
    });
    std::string out = capture_output(fmt::format("{} top --connect {} --once 2>&1", TCPWHY_BINARY, path));
    daemon.join();
    unlink(path.c_str());
    INFO(out);
    CHECK(request == "{\"cmd\":\"snapshot\"}\n");
    CHECK(has(out, "node daemon-node  kernel 6.1.0-test  attach fentry"));
    CHECK(has(out, "DROPPED 3 events"));
    CHECK(std::regex_search(out, std::regex(R"(netns 4026530001\s+-\s+9090\s+server\s+0/0\s+-\s+0/0\s+0)")));

    // No daemon there: one line naming the socket, and exit 1.
    int status = std::system(fmt::format("{} top --connect {} --once >/dev/null 2>&1", TCPWHY_BINARY, path).c_str());
    CHECK(WEXITSTATUS(status) == 1);
    std::string err = capture_output(fmt::format("{} top --connect {} --once 2>&1 >/dev/null", TCPWHY_BINARY, path));
    CHECK(has(err, path + ": cannot connect"));
}

TEST_CASE("top bad input: one clear line and exit 2") {
    auto exit_code = [](const std::string& args) {
        int status = std::system(fmt::format("{} top {} >/dev/null 2>&1 </dev/null", TCPWHY_BINARY, args).c_str());
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    };
    CHECK(exit_code("--interval 0 --once") == 2);
    CHECK(exit_code("--ring-mb 3 --once") == 2);
    CHECK(exit_code("--lb nowhere --once") == 2);
    CHECK(exit_code("--lb-ranges 130.211.0.0/33 --once") == 2);
    std::string err = capture_output(fmt::format("{} top --lb nowhere --once 2>&1", TCPWHY_BINARY));
    CHECK(err.rfind("tcpwhy: unknown --lb 'nowhere'", 0) == 0);
    // A terminal tcpwhy cannot drive: said before any program is loaded, exit 2.
    std::string tty = capture_output(fmt::format("TERM=no-such-terminal script -qec '{} top' /dev/null </dev/null 2>&1",
                                                 TCPWHY_BINARY));
    CHECK(has(tty, "cannot drive this terminal (TERM=no-such-terminal)"));
    CHECK(has(tty, "use --once for plain text"));
}

TEST_CASE("top --connect in a terminal: an unreachable daemon is said on screen, and q still quits") {
    std::string path = fmt::format("/tmp/tcpwhy-test-{}-absent.sock", getpid());
    Tmux tmux(top_in_shell(fmt::format("--connect {} --interval 0.5", path)));
    auto screen = tmux.wait_for([](const std::string& s) { return has(s, "cannot read the daemon's view"); });
    INFO(screen);
    CHECK(has(screen, fmt::format("cannot read the daemon's view: {}: cannot connect", path)));
    CHECK(has(screen, "no TCP connections seen yet"));
    tmux.type("q");
    screen = tmux.wait_for([](const std::string& s) { return has(s, "top exited rc=") && has(s, "icanon"); });
    CHECK(has(screen, "top exited rc=0"));
    CHECK(tty_restored(screen));
}
