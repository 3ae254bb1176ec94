// `tcpwhy top --connect A --connect B`: the views of several daemons as one, a row per node and
// backend (merge_snapshots, the NODE column, per-node header lines), the links that keep each
// daemon's connection open (a Unix socket, or a command carrying the protocol), and the relay.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <fmt/format.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "tcpwhy/fd.h"
#include "tcpwhy/top/daemon_client.h"
#include "tcpwhy/top/merge.h"
#include "tcpwhy/top/source_list.h"
#include "tcpwhy/top/view_model.h"

using namespace tcpwhy;
using namespace tcpwhy::top;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& text, std::string_view needle) { return text.find(needle) != std::string::npos; }

// One daemon's view: a racing backend in the host's netns (whose inode every node shares), with
// one connection's timeline, on a clock of its own (boot time differs from node to node).
Snapshot node_view(const std::string& node, uint64_t now_ns, uint64_t races, uint64_t dropped = 0) {
    Snapshot s;
    s.header = {.node = node,
                .kernel = "6.18.0",
                .attach = "tp_btf",
                .lb_name = "gcp",
                .lb_description = "Google Cloud HTTP(S) load balancer",
                .lb_idle_timeout_s = 600,
                .events_per_s = 12.0,
                .events_total = 1000,
                .dropped_total = dropped,
                .now_ns = now_ns,
                .wall_now_ns = 1'795'465'615'000'000'000};
    SnapshotRow row;
    row.netns = 4026531840;
    row.port = 8080;
    row.name = "host";
    row.pod = "host";
    row.process = "node";
    row.pid = 10;
    row.idle_closes = races;
    row.idle_p50_ms = 6000;
    row.resets_races = races;
    row.resets_per_second.assign(kSparklineSeconds, 0);
    row.verdict = FindingKind::idle_close_race;
    row.findings.push_back({FindingKind::idle_close_race,
                            races,
                            "host closes idle keep-alive connections after 6.0 s",
                            {"backend sent FIN after 6000 ms idle"},
                            "set server.keepAliveTimeout = 620000",
                            {}});
    SnapshotConnection c;
    c.peer = "130.211.0.143:59920";
    c.local = "10.56.5.6:8080";
    c.lb_peer = true;
    c.end = EndKind::reset_sent;
    c.verdict = FindingKind::idle_close_race;
    uint64_t t0 = now_ns - 10'000'000'000;
    c.timeline = {{t0, "opened (accepted)"}, {0, "idle 6.0 s"}, {t0 + 6'007'000'000, "backend closed (FIN)"}};
    row.connections.push_back(c);
    s.rows.push_back(row);
    return s;
}

// A Unix socket server on a thread: answers every request line on a connection with `answer`,
// and counts the connections it accepted.
class FakeDaemon {
public:
    FakeDaemon(std::string path, std::string answer) : path_(std::move(path)), answer_(std::move(answer)) {
        unlink(path_.c_str());
        listener_ = Fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path_.c_str());
        REQUIRE(bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
        REQUIRE(listen(listener_.get(), 4) == 0);
        thread_ = std::thread([this] {
            while (true) {
                Fd client(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
                if (!client || stop_) return;
                ++connections;
                std::string input;
                char buffer[256];
                ssize_t n;
                while ((n = recv(client.get(), buffer, sizeof(buffer), 0)) > 0) {
                    input.append(buffer, static_cast<size_t>(n));
                    for (auto nl = input.find('\n'); nl != std::string::npos; nl = input.find('\n')) {
                        requests.push_back(input.substr(0, nl));
                        input.erase(0, nl + 1);
                        std::string line = answer_ + "\n";
                        send(client.get(), line.data(), line.size(), MSG_NOSIGNAL);
                    }
                }
            }
        });
    }
    ~FakeDaemon() {
        stop_ = true;
        shutdown(listener_.get(), SHUT_RDWR);
        thread_.join();
        unlink(path_.c_str());
    }
    std::atomic<int> connections{0};
    std::vector<std::string> requests;

private:
    std::string path_, answer_;
    Fd listener_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// Two daemons on sockets in a scratch directory of their own: node-a's view and node-b's.
struct TwoDaemons {
    explicit TwoDaemons(const std::string& name)
        : dir(fs::temp_directory_path() / fmt::format("tcpwhy-{}-{}", name, getpid())),
          a_path((fs::create_directories(dir), dir / "a.sock").string()),
          b_path((dir / "b.sock").string()),
          a(a_path, to_json(node_view("node-a", 90'000'000'000'000, 6))),
          b(b_path, to_json(node_view("node-b", 3'000'000'000'000, 4))) {}
    ~TwoDaemons() { fs::remove_all(dir); }
    fs::path dir;
    std::string a_path, b_path;
    FakeDaemon a, b;
};

}  // namespace

TEST_CASE("top of several nodes: one row per node and backend, even where netns and port repeat") {
    // node-b booted a day later than node-a: their CLOCK_MONOTONIC readings say nothing of each other.
    Snapshot a = node_view("node-a", 90'000'000'000'000, 6);
    Snapshot b = node_view("node-b", 3'000'000'000'000, 4, 3);
    b.header.wall_now_ns += 500'000'000;  // taken half a second later
    Snapshot merged = merge_snapshots({{"/a.sock", a, ""}, {"/b.sock", b, ""}});
    REQUIRE(merged.rows.size() == 2);
    CHECK(merged.rows[0].node == "node-a");
    CHECK(merged.rows[1].node == "node-b");
    CHECK(merged.rows[0].key() == "node-a/4026531840:8080");
    CHECK(merged.rows[0].key() != merged.rows[1].key());
    REQUIRE(merged.nodes.size() == 2);
    CHECK(merged.nodes[1].header.node == "node-b");
    CHECK(merged.header.events_total == 2000);
    CHECK(merged.header.dropped_total == 3);
    CHECK(merged.header.events_per_s == 24.0);
    CHECK(merged.header.now_ns == b.header.wall_now_ns);
    // A connection's times are its node's, moved onto the wall clock: the same time of day as each
    // daemon's own view shows, whatever the nodes' uptimes.
    Glyphs glyphs = Glyphs::ascii();
    CHECK(timeline_text(merged.rows[0].connections[0], merged.header, glyphs) ==
          timeline_text(a.rows[0].connections[0], a.header, glyphs));
    CHECK(timeline_text(merged.rows[1].connections[0], merged.header, glyphs) ==
          timeline_text(b.rows[0].connections[0], b.header, glyphs));
    CHECK(merged.rows[0].connections[0].timeline[1].ts_ns == 0);  // a span stays a span

    std::string text = render_plain(merged, {}, {}, glyphs);
    INFO(text);
    CHECK(
        text.starts_with("tcpwhy top  2 nodes (node-a, node-b)  LB gcp (idle timeout 600 s)  24 events/s  2000 events  "
                         "DROPPED 3 events (node-b)\n"));
    CHECK(has(text, "\n  node-a  kernel 6.18.0  attach tp_btf  12 events/s  1000 events  dropped 0\n"));
    CHECK(has(text, "\n  node-b  kernel 6.18.0  attach tp_btf  12 events/s  1000 events  DROPPED 3 events\n"));
    CHECK(has(text, "\nNODE   POD                    NAMESPACE      PORT PROCESS"));
    CHECK(std::regex_search(text, std::regex(R"(\nnode-a host +- +8080 node +0/0 +6 p50 6\.0s +6/0 +0 )")));
    CHECK(std::regex_search(text, std::regex(R"(\nnode-b host +- +8080 node +0/0 +4 p50 6\.0s +4/0 +0 )")));
    CHECK(has(text, "\n== host on node-a ==\n"));
    CHECK(has(text, "\n== host on node-b ==\n"));
    CHECK(has(text, "host  node node-a  port 8080"));

    // `/` finds a node's rows by its name.
    ViewState state;
    state.filter = "node-b";
    auto rows = visible_rows(merged, {}, state);
    REQUIRE(rows.size() == 1);
    CHECK(rows[0]->node == "node-b");

    // The view of several nodes goes through JSON (top --json) and back as it was.
    auto parsed = parse_snapshot(to_json(merged));
    REQUIRE(parsed);
    CHECK(to_json(*parsed) == to_json(merged));
    CHECK(parsed->nodes[0].source == "/a.sock");
    // A daemon's own snapshot has no node fields: the wire stays as it was.
    CHECK_FALSE(has(to_json(a), "\"nodes\""));
    CHECK(parse_snapshot(to_json(a))->rows[0].node.empty());
}

TEST_CASE("top of several nodes: a node that does not answer is named, the others still show") {
    Snapshot a = node_view("node-a", 90'000'000'000'000, 6);
    Snapshot same_name = node_view("node-a", 5'000'000'000'000, 1);
    Snapshot merged =
        merge_snapshots({{"/a.sock", a, ""},
                         {"exec:kubectl exec -i tcpwhy-x -- tcpwhy relay", std::nullopt,
                          "exec:kubectl exec -i tcpwhy-x -- tcpwhy relay: no answer within 20000 ms"},
                         {"/c.sock", same_name, "/c.sock: the daemon closed the connection without answering"}});
    REQUIRE(merged.nodes.size() == 3);
    CHECK(merged.nodes[1].name == "exec:kubectl exec -i tcpwhy-x -- tcpwhy relay");
    CHECK_FALSE(merged.nodes[1].answered);
    CHECK(merged.nodes[2].name == "node-a#2");  // two daemons with one hostname stay two nodes
    REQUIRE(merged.rows.size() == 2);           // the last answer of a node that stopped answering stays
    CHECK(merged.rows[1].node == "node-a#2");
    CHECK(view_header_line(merged) ==
          "3 nodes (node-a, exec:kubectl exec -i tcpwhy-x -- tcpwhy relay, node-a#2), 2 not answering  LB gcp (idle "
          "timeout 600 s)");
    CHECK(nodes_problem(merged) ==
          "exec:kubectl exec -i tcpwhy-x -- tcpwhy relay: no answer within 20000 ms; node-a#2: /c.sock: the daemon "
          "closed the connection without answering");
    auto lines = node_lines(merged);
    REQUIRE(lines.size() == 3);
    CHECK(has(lines[1], "no view yet  NOT ANSWERING: exec:kubectl"));
    // One daemon: no NODE column, no node lines, the header as it always was.
    Snapshot one = node_view("node-a", 90'000'000'000'000, 6);
    CHECK(node_column_width(one) == 0);
    CHECK(node_lines(one).empty());
    CHECK(view_header_line(one) == header_line(one.header));
    CHECK(render_plain(one, {}, {}, Glyphs::ascii()).starts_with("tcpwhy top  node node-a  kernel 6.18.0"));
}

TEST_CASE("daemon links: a kept connection per daemon, answers waited for together, a command as transport") {
    // As tcpwhy's main() does: a transport command that has exited is a failed write, not SIGPIPE.
    signal(SIGPIPE, SIG_IGN);
    TwoDaemons daemons("links");
    const fs::path& dir = daemons.dir;
    const std::string &a_path = daemons.a_path, &b_path = daemons.b_path;
    FakeDaemon& a = daemons.a;
    // A command that speaks the protocol on stdin/stdout, as `kubectl exec -i POD -- tcpwhy relay` does.
    std::string answer_file = (dir / "c.json").string();
    std::ofstream(answer_file) << to_json(node_view("node-c", 7'000'000'000'000, 2)) << "\n";
    std::string command = fmt::format("exec:while read -r request; do cat {}; done", answer_file);
    std::string broken = "exec:echo 'error: pods \"tcpwhy-gone\" not found' >&2; exit 3";

    DaemonLinks links({a_path, b_path, command, broken});
    for (int round = 0; round < 2; ++round) {
        links.request_all();
        for (int i = 0; i < 100 && !links.all_settled(); ++i) links.wait(100);
        REQUIRE(links.all_settled());
    }
    auto answers = links.answers();
    REQUIRE(answers.size() == 4);
    for (size_t i = 0; i < 3; ++i) {
        INFO(answers[i].source << ": " << answers[i].problem);
        REQUIRE(answers[i].snapshot);
        CHECK(answers[i].problem.empty());
    }
    CHECK(answers[2].snapshot->header.node == "node-c");
    CHECK(a.connections == 1);  // two rounds, one connection
    CHECK(a.requests == std::vector<std::string>{"{\"cmd\":\"snapshot\"}", "{\"cmd\":\"snapshot\"}"});
    CHECK_FALSE(answers[3].snapshot);
    INFO(answers[3].problem);
    CHECK(answers[3].problem.starts_with(broken + ": error: pods \"tcpwhy-gone\" not found (exited with status 3): "));
    Snapshot merged = merge_snapshots(answers);
    CHECK(merged.rows.size() == 3);

    // No daemon at a path: said as a single daemon's client always said it.
    DaemonLinks none({(dir / "absent.sock").string()});
    none.request_all();
    none.wait(100);
    REQUIRE(none.all_settled());
    CHECK(none.answers()[0].problem == (dir / "absent.sock").string() + ": cannot connect: No such file or directory");
}

TEST_CASE("daemon links follow a listing command: nodes join and leave, a failed listing keeps them") {
    signal(SIGPIPE, SIG_IGN);
    TwoDaemons daemons("listing");
    const fs::path& dir = daemons.dir;
    const std::string &a_path = daemons.a_path, &b_path = daemons.b_path;
    FakeDaemon &a = daemons.a, &b = daemons.b;
    fs::path listing = dir / "nodes", said = dir / "said";
    // The stand-in for `kubectl tcpwhy connects`: the sources in a file, or a failure with what it said.
    std::string command = fmt::format("if [ -s {1} ]; then cat {1} >&2; exit 1; fi; cat {0}", listing.string(),
                                      said.string());
    auto nodes_in_view = [&](DaemonLinks& links) {
        links.request_all();
        for (int i = 0; i < 100 && !links.all_settled(); ++i) links.wait(100);
        std::vector<std::string> nodes;
        for (const auto& answer : links.answers())
            nodes.push_back(answer.snapshot ? answer.snapshot->header.node : "(none: " + answer.problem + ")");
        return nodes;
    };
    // The next list a run gives; with expect_failure, nothing once a run failed.
    auto next_list = [&](SourceList& lister, bool expect_failure = false) -> std::optional<std::vector<std::string>> {
        for (int i = 0; i < 500; ++i) {
            if (auto sources = lister.poll(monotonic_ms())) return sources;
            if (expect_failure && !lister.problem().empty()) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return std::nullopt;
    };

    std::ofstream(listing) << a_path << "\n";
    SourceList lister(command, 1);  // a run whenever the last one is over
    DaemonLinks links({});
    auto first = lister.run_now(5000);
    INFO(lister.problem());
    REQUIRE(first);
    CHECK(*first == std::vector<std::string>{a_path});
    links.set_sources(*first);
    CHECK(nodes_in_view(links) == std::vector<std::string>{"node-a"});

    // A node joins (blank lines and trailing spaces are nothing): both read, node-a on its kept connection.
    std::ofstream(listing) << a_path << "\n\n" << b_path << "  \n";
    std::optional<std::vector<std::string>> second;
    for (int i = 0; i < 20 && (!second || second->size() < 2); ++i) second = next_list(lister);
    REQUIRE(second);
    auto joined = links.set_sources(*second);
    CHECK(joined.added == 1);
    CHECK(joined.removed == 0);
    CHECK(nodes_in_view(links) == std::vector<std::string>{"node-a", "node-b"});
    CHECK(a.connections == 1);

    // The listing fails: no new list, the reason in one line naming the command, the nodes kept.
    std::ofstream(said) << "error: You must be logged in to the server (Unauthorized)\n";
    CHECK_FALSE(next_list(lister, true));
    CHECK(lister.problem() == fmt::format("--connect-from '{}': error: You must be logged in to the server "
                                          "(Unauthorized) (exited with status 1); the nodes read stay as they were",
                                          command));
    CHECK(nodes_in_view(links) == std::vector<std::string>{"node-a", "node-b"});

    // It lists again: node-a has left the cluster.
    fs::remove(said);
    std::ofstream(listing) << b_path << "\n";
    std::optional<std::vector<std::string>> third;
    for (int i = 0; i < 20 && (!third || third->size() != 1); ++i) third = next_list(lister);
    REQUIRE(third);
    CHECK(lister.problem().empty());
    auto left = links.set_sources(*third);
    CHECK(left.added == 0);
    CHECK(left.removed == 1);
    CHECK(nodes_in_view(links) == std::vector<std::string>{"node-b"});
    CHECK(b.connections == 1);
}

TEST_CASE("relay: stdin to the daemon's socket, the socket to stdout, the end of stdin passed on") {
    fs::path dir = fs::temp_directory_path() / fmt::format("tcpwhy-relay-{}", getpid());
    fs::create_directories(dir);
    std::string path = (dir / "d.sock").string();
    std::string answer = to_json(node_view("node-a", 90'000'000'000'000, 6));
    auto daemon = std::make_unique<FakeDaemon>(path, answer);
    int to_relay[2], from_relay[2];
    REQUIRE(pipe2(to_relay, O_CLOEXEC) == 0);
    REQUIRE(pipe2(from_relay, O_CLOEXEC) == 0);
    std::string error;
    int rc = -1;
    std::thread relaying([&] { rc = relay(path, to_relay[0], from_relay[1], &error); });
    std::string requests = "{\"cmd\":\"snapshot\"}\n{\"cmd\":\"snapshot\"}\n";
    REQUIRE(write(to_relay[1], requests.data(), requests.size()) == static_cast<ssize_t>(requests.size()));
    close(to_relay[1]);  // the end of the requests: the fake daemon sees EOF after answering, and closes
    std::string out;
    char buffer[65536];
    ssize_t n;
    while (out.size() < 2 * (answer.size() + 1) && (n = read(from_relay[0], buffer, sizeof(buffer))) > 0)
        out.append(buffer, static_cast<size_t>(n));
    CHECK(out == answer + "\n" + answer + "\n");
    relaying.join();
    CHECK(rc == 0);
    CHECK(error.empty());
    close(to_relay[0]);
    close(from_relay[0]);
    close(from_relay[1]);
    daemon.reset();

    int dummy[2];
    REQUIRE(pipe2(dummy, O_CLOEXEC) == 0);
    CHECK(relay(path, dummy[0], dummy[1], &error) == 1);
    CHECK(error == path + ": cannot connect: No such file or directory");
    close(dummy[0]);
    close(dummy[1]);
    fs::remove_all(dir);
}
