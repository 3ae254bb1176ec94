// `tcpwhy report` of traces from several nodes: every connection, backend and finding is kept
// to the node (and boot) that recorded it, each node's times on its own clock, and the text, JSON
// and HTML say which node each backend is on, with a per-node and a cluster-wide summary.
#include <unistd.h>

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "event_builders.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/report.h"
#include "tcpwhy/server.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct ScratchDir {
    fs::path path;
    ScratchDir() {
        path = fs::temp_directory_path() /
               fmt::format("tcpwhy-cluster-test-{}-{}", getpid(), reinterpret_cast<uintptr_t>(this));
        fs::create_directories(path);
    }
    ~ScratchDir() { fs::remove_all(path); }
    std::string write(const std::string& name, const std::string& text) const {
        auto file = path / name;
        std::ofstream(file) << text;
        return file.string();
    }
};

std::string fixture_text(const char* name) {
    std::ifstream in(std::string(TCPWHY_SOURCE_DIR) + "/tests/fixtures/" + name);
    REQUIRE(in);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// A recorded trace as another node would have recorded it: what the issue's user did by hand.
std::string as_node(std::string trace, const std::string& hostname, const std::string& boot_id = "") {
    auto end = trace.find('\n');
    auto parsed = parse_json_line(std::string_view(trace).substr(0, end));
    REQUIRE(parsed.kind == LineKind::header);
    parsed.header.hostname = hostname;
    parsed.header.boot_id = boot_id;
    return to_json_line(parsed.header) + trace.substr(end);
}

struct Run {
    int code = -1;
    std::string out, err;
};

Run report(ReportOptions options) {
    std::ostringstream out, err;
    Run run;
    run.code = run_report(options, out, err);
    run.out = out.str();
    run.err = err.str();
    return run;
}

json json_of(const std::vector<std::string>& inputs) {
    auto run = report({.inputs = inputs, .json = true});
    INFO(run.err);
    REQUIRE(run.code == kReportOk);
    return json::parse(run.out);
}

const json& node_named(const json& report, const std::string& name) {
    for (const auto& n : report["nodes"])
        if (n["name"] == name) return n;
    FAIL("no node " << name << " in " << report["nodes"].dump());
    throw std::logic_error("unreachable");
}

std::string header(const std::string& hostname, const std::string& boot_id, uint64_t mono_start_ns,
                   uint64_t wall_start_ns) {
    TraceHeader h;
    h.hostname = hostname;
    h.boot_id = boot_id;
    h.kernel = "6.18.0";
    h.mono_start_ns = mono_start_ns;
    h.wall_start_ns = wall_start_ns;
    return to_json_line(h) + "\n";
}

// The keep-alive race on one socket: accepted at t, idle close at t+6 s, the LB's request reset.
std::string race_lines(const Sock& s, uint64_t t) {
    std::string text;
    for (const Event& e :
         {accepted(s, t), idle_fin(s, t + sec(6), 6000), reset_recv(s, t + sec(6) + ms(2), TcpState::fin_wait1),
          state(s, t + sec(6) + ms(2), TcpState::fin_wait1, TcpState::close),
          reset_sent(s, t + sec(6) + ms(2), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true)})
        text += to_json_line(e) + "\n";
    return text;
}

constexpr uint64_t kWall = 1'795'465'615'000'000'000;  // 2026-11-23

}  // namespace

TEST_CASE("several nodes: the same recording under two node names is two nodes, each with its own counts") {
    // The issue's reproduction: one recorded trace, its hostname changed. Socket cookies and
    // netns inodes are the same in both, as they are on real nodes (the host's netns inode is).
    ScratchDir dir;
    const std::string race = fixture_text("node_keepalive_race.jsonl");
    json single = json_of({dir.write("single.jsonl", race)});
    json both = json_of(
        {dir.write("node-a.jsonl", as_node(race, "node-a")), dir.write("node-b.jsonl", as_node(race, "node-b"))});

    REQUIRE(both["nodes"].size() == 2);
    CHECK(both["nodes"][0]["name"] == "node-a");
    CHECK(both["nodes"][1]["name"] == "node-b");
    REQUIRE(both["findings"].size() == 2);
    REQUIRE(both["backends"].size() == 2 * single["backends"].size());
    std::set<std::string> finding_nodes;
    for (const auto& f : both["findings"]) {
        finding_nodes.insert(f["backend"]["node"].get<std::string>());
        // Each node's finding is the single trace's: nothing merged, nothing counted twice.
        CHECK(f["count"] == single["findings"][0]["count"]);
        CHECK(f["connections"].size() == single["findings"][0]["connections"].size());
        CHECK(f["backend"]["netns"] == single["findings"][0]["backend"]["netns"]);
    }
    CHECK(finding_nodes == std::set<std::string>{"node-a", "node-b"});
    for (const char* name : {"node-a", "node-b"}) {
        const json& n = node_named(both, name);
        CHECK(n["counts"] == single["counts"]);
        CHECK(n["findings"] == 1);
        CHECK(n["span"] == single["span"]);
    }
    // The cluster's counts are the sums; no race becomes a "segment of a connection already reset".
    for (const char* field : {"events", "connections", "follow_up_resets", "local_reset_recv"})
        CHECK(both["counts"][field] == 2 * single["counts"][field].get<uint64_t>());
    CHECK(both["counts"]["resets"]["idle_close_race"] ==
          2 * single["counts"]["resets"]["idle_close_race"].get<uint64_t>());
    CHECK(both["span"]["first_time"] == single["span"]["first_time"]);
    CHECK(both["span"]["first_ts_ns"] == 0);  // clocks of different nodes do not compare
}

TEST_CASE("several nodes: two recordings of different network setups add up, node by node") {
    // Two real recordings: the race between the lb and pod namespaces (veth, 130.211.0.0/22, port
    // 8080), and the race over loopback in one namespace from 35.191.0.0/16 to port 9090, recorded
    // on a node named node-b (tests/fixtures/README.md says how).
    ScratchDir dir;
    auto a = dir.write("a.jsonl", as_node(fixture_text("node_keepalive_race.jsonl"), "node-a"));
    auto b = std::string(TCPWHY_SOURCE_DIR) + "/tests/fixtures/loopback_race_node_b.jsonl";
    json only_a = json_of({a}), only_b = json_of({b});
    json both = json_of({a, b});
    REQUIRE(both["nodes"].size() == 2);
    CHECK(node_named(both, "node-a")["counts"] == only_a["counts"]);
    CHECK(node_named(both, "node-b")["counts"] == only_b["counts"]);
    for (const char* field : {"events", "connections", "follow_up_resets", "expired_stale"})
        CHECK(both["counts"][field] ==
              only_a["counts"][field].get<uint64_t>() + only_b["counts"][field].get<uint64_t>());
    for (const auto& [kind, n] : both["counts"]["resets"].items())
        CHECK(n == only_a["counts"]["resets"][kind].get<uint64_t>() + only_b["counts"]["resets"][kind].get<uint64_t>());
    CHECK(both["findings"].size() == only_a["findings"].size() + only_b["findings"].size());
    CHECK(both["backends"].size() == only_a["backends"].size() + only_b["backends"].size());
    uint64_t races = 0;
    for (const auto& f : both["findings"])
        if (f["kind"] == "idle_close_race") races += f["count"].get<uint64_t>();
    CHECK(races > only_a["findings"][0]["count"].get<uint64_t>());  // both nodes' races are there

    // The text says which node each finding and backend is on, then a line per node and the cluster's.
    auto text = report({.inputs = {a, b}});
    REQUIRE(text.code == kReportOk);
    INFO(text.out);
    CHECK(text.out.find("1. [idle_close_race] on node-") != std::string::npos);
    CHECK(text.out.find("Backends\n  NODE   WHO") != std::string::npos);
    auto nodes = text.out.find("\nNodes\n");
    auto counts = text.out.find("\nCounts\n");
    REQUIRE(nodes != std::string::npos);
    CHECK(counts > nodes);
    CHECK(std::regex_search(text.out,
                            std::regex(R"(\n  node-a +- +6\.18\.44-fc-v657 +2026-11-23 \S+ UTC +2026-11-23 \S+ UTC +)" +
                                       std::to_string(only_a["counts"]["events"].get<uint64_t>()))));
    CHECK(std::regex_search(text.out, std::regex(R"(\n  cluster +2 nodes +2026-)")));
    CHECK(text.out.find("  nodes        2 (each node's times on its own clock)\n") != std::string::npos);
}

TEST_CASE("several nodes: the boot id keeps two boots of one host apart -- traces without one go by hostname") {
    ScratchDir dir;
    Sock s;
    std::string boot1 =
        header("node-1", "aaaaaaaa-1111-4111-8111-111111111111", sec(1000), kWall) + race_lines(s, sec(1100));
    std::string boot2 = header("node-1", "bbbbbbbb-2222-4222-8222-222222222222", sec(50), kWall + sec(7200)) +
                        race_lines(s, sec(60));  // the same cookie and netns after the reboot
    json j = json_of({dir.write("boot1.jsonl", boot1), dir.write("boot2.jsonl", boot2)});
    REQUIRE(j["nodes"].size() == 2);
    CHECK(j["nodes"][0]["name"] == "node-1 (boot aaaaaaaa)");
    CHECK(j["nodes"][1]["name"] == "node-1 (boot bbbbbbbb)");
    CHECK(j["nodes"][1]["boot_id"] == "bbbbbbbb-2222-4222-8222-222222222222");
    REQUIRE(j["findings"].size() == 2);
    CHECK(j["findings"][0]["count"] == 1);
    CHECK(j["findings"][1]["count"] == 1);
    CHECK(j["counts"]["follow_up_resets"] == 0);
    // Each boot's times through its own clock: 100 s after the first boot's start, 10 s after the second's.
    std::set<std::string> times;
    for (const auto& f : j["findings"]) times.insert(f["first_time"].get<std::string>());
    CHECK(times == std::set<std::string>{"2026-11-23T20:28:41.002Z", "2026-11-23T22:27:11.002Z"});

    // Older traces carry no boot id: keyed by hostname alone, so two of one host are one node.
    json old = json_of({dir.write("old1.jsonl", header("node-1", "", sec(1000), kWall) + race_lines(s, sec(1100))),
                        dir.write("old2.jsonl", header("node-1", "", sec(1000), kWall) +
                                                    race_lines(Sock{.cookie = 2002, .rport = 40000}, sec(1200)))});
    REQUIRE(old["nodes"].size() == 1);
    CHECK(old["nodes"][0]["name"] == "node-1");
    CHECK(old["nodes"][0]["boot_id"].is_null());
    CHECK(old["findings"][0]["count"] == 2);
}

TEST_CASE("several nodes: an export stream's headers switch nodes -- expiry and wall time follow each node's clock") {
    // One file as `tcpwhy export` or a concatenation writes it: node-a's header, an open connection,
    // node-b's header with a clock a day ahead and an hour of its own events, node-a again (a daemon
    // restart without reboot: same boot, new clock pair), and node-a's connection then races.
    // Judged on node-b's clock, node-a's connection would have been dropped as silent for an hour.
    ScratchDir dir;
    Sock s;
    std::string text = header("node-a", "boot-a", sec(1000), kWall);
    text += to_json_line(accepted(s, sec(1100))) + "\n";
    text += header("node-b", "boot-b", sec(86400), kWall);
    for (uint64_t t = 0; t <= 3700; t += 100) {
        Sock b{.cookie = 7 + t, .netns = 4026531840, .lport = 443, .rport = static_cast<uint16_t>(50000 + t)};
        text += to_json_line(accepted(b, sec(86400 + t))) + "\n";
    }
    // The daemon on node-a restarted 400 s later; NTP had moved its wall clock by 2 ms meanwhile.
    text += header("node-a", "boot-a", sec(1400), kWall + sec(400) + ms(2));
    text += to_json_line(idle_fin(s, sec(1106), 6000)) + "\n";
    text += to_json_line(reset_sent(s, sec(1106) + ms(2), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true)) +
            "\n";
    text += to_json_line(idle_fin(Sock{.cookie = 99, .rport = 40001}, sec(1500), 6000)) + "\n";
    json j = json_of({dir.write("stream.jsonl", text)});
    REQUIRE(j["nodes"].size() == 2);
    const json& a = node_named(j, "node-a");
    CHECK(a["traces"] == 2);
    CHECK(a["counts"]["expired_stale"] == 0);
    CHECK(a["counts"]["resets"]["idle_close_race"] == 1);
    CHECK(node_named(j, "node-b")["counts"]["connections"] == 38);
    REQUIRE(j["findings"].size() == 1);
    CHECK(j["findings"][0]["backend"]["node"] == "node-a");
    // Before the restart: the first clock pair; after it: the second (2 ms later by NTP).
    CHECK(j["findings"][0]["first_time"] == "2026-11-23T20:28:41.002Z");
    CHECK(a["span"]["last_time"] == "2026-11-23T20:35:15.002Z");
}

TEST_CASE("several nodes: a file without a header goes on with the node before it") {
    // A trace cut in pieces (split -l): only the first piece has the header.
    ScratchDir dir;
    Sock s, t{.cookie = 2002, .rport = 40000};
    std::string first = header("node-b", "boot-b", sec(1000), kWall) + race_lines(s, sec(1100));
    json j = json_of({dir.write("a.jsonl", header("node-a", "boot-a", sec(1000), kWall) + race_lines(s, sec(1100))),
                      dir.write("b1.jsonl", first), dir.write("b2.jsonl", race_lines(t, sec(1200)))});
    REQUIRE(j["nodes"].size() == 2);
    CHECK(node_named(j, "node-b")["counts"]["resets"]["idle_close_race"] == 2);
    // Nothing before it: lines before any header have a node of their own, named so.
    json headless = json_of({dir.write("c.jsonl", race_lines(s, sec(1100)))});
    REQUIRE(headless["nodes"].size() == 1);
    CHECK(headless["nodes"][0]["name"] == "(no header)");
    CHECK(headless["findings"][0]["count"] == 1);
}

TEST_CASE("several nodes: a pid's server is its own node's -- the same pid elsewhere runs another") {
    // Detection's `server` lines are keyed by pid, and pids repeat across nodes as netns inodes do.
    ScratchDir dir;
    Sock s;  // pid 4242 on both nodes
    ServerRecord gunicorn{s.pid, 987, "gunicorn",
                          ServerInfo{.kind = ServerKind::gunicorn, .version = "20.1.0", .worker = "gthread",
                                     .via = "cmdline: python3.11 /usr/bin/gunicorn"}};
    ServerRecord uvicorn{s.pid, 654, "uvicorn",
                         ServerInfo{.kind = ServerKind::uvicorn, .version = "0.17.6", .via = "cmdline: uvicorn"}};
    auto a = dir.write("a.jsonl", header("node-a", "boot-a", sec(1000), kWall) + to_json_line(gunicorn) + "\n" +
                                      race_lines(s, sec(1100)));
    auto b = dir.write("b.jsonl", header("node-b", "boot-b", sec(1000), kWall) + to_json_line(uvicorn) + "\n" +
                                      race_lines(s, sec(1100)));
    json j = json_of({a, b});
    REQUIRE(j["findings"].size() == 2);
    std::map<std::string, std::string> server_of;
    for (const auto& f : j["findings"]) server_of[f["backend"]["node"]] = f["backend"]["server"]["kind"];
    CHECK(server_of == std::map<std::string, std::string>{{"node-a", "gunicorn"}, {"node-b", "uvicorn"}});
    auto text = report({.inputs = {a, b}});
    INFO(text.out);
    CHECK(text.out.find("\n  servers\n  node-a netns:4026532891     8080    gunicorn 20.1.0") != std::string::npos);
    CHECK(text.out.find("\n  node-b netns:4026532891     8080    uvicorn 0.17.6") != std::string::npos);
}

TEST_CASE("several nodes: --json documents nodes[] and every node field, field by field") {
    ScratchDir dir;
    const std::string race = fixture_text("node_keepalive_race.jsonl");
    json j = json_of({dir.write("a.jsonl", as_node(race, "node-a", "c0ffee00-0000-4000-8000-000000000000")),
                      dir.write("b.jsonl", as_node(race, "node-b"))});
    // docs/report-json.md's tables: `| \`name\` | type | meaning |` rows per section.
    std::ifstream doc(std::string(TCPWHY_SOURCE_DIR) + "/docs/report-json.md");
    std::map<std::string, std::set<std::string>> sections;
    std::string line, section;
    while (std::getline(doc, line)) {
        if (line.starts_with("## ")) section = line.substr(3);
        if (line.starts_with("| `") && !section.empty())
            sections[section].insert(line.substr(3, line.find('`', 3) - 3));
    }
    auto keys = [](const json& object) {
        std::set<std::string> out;
        for (const auto& [key, value] : object.items()) out.insert(key);
        return out;
    };
    REQUIRE(sections.count("`nodes[]`"));
    REQUIRE(sections.count("`traces[]`"));
    REQUIRE(sections.count("`span`"));
    for (const auto& n : j["nodes"]) {
        CHECK(keys(n) == sections["`nodes[]`"]);
        CHECK(keys(n["counts"]) == sections["`counts`"]);
        CHECK(keys(n["span"]) == sections["`span`"]);
        CHECK(n["span"]["first_ts_ns"] != 0);  // a node's span is on its own clock
    }
    REQUIRE(j["traces"].size() == 2);
    for (const auto& t : j["traces"]) CHECK(keys(t) == sections["`traces[]`"]);
    CHECK(keys(j["span"]) == sections["`span`"]);
    CHECK(j["span"]["first_ts_ns"] == 0);  // several nodes: no clock to put it on
    CHECK(j["span"]["first_time"].is_string());
    CHECK(sections["`backend`"].count("node"));
    CHECK(j["backends"][0]["node"] == "node-a");
    CHECK(j["nodes"][0]["boot_id"] == "c0ffee00-0000-4000-8000-000000000000");
    CHECK(j["nodes"][1]["boot_id"].is_null());
    CHECK(j["traces"][1]["node"] == "node-b");

    // One node: the output is what it always was, with the node named in `node` fields only.
    json one = json_of({std::string(TCPWHY_SOURCE_DIR) + "/tests/fixtures/node_keepalive_race.jsonl"});
    CHECK(one["nodes"].size() == 1);
    CHECK(one["nodes"][0]["name"] == "vm");
    CHECK(one["findings"][0]["backend"]["node"] == "vm");
    CHECK(one["span"]["first_ts_ns"] != 0);
    CHECK(keys(one["span"]) == sections["`span`"]);
    REQUIRE(one["traces"].size() == 1);
    CHECK(keys(one["traces"][0]) == sections["`traces[]`"]);
    CHECK(one["traces"][0]["node"] == "vm");
}

TEST_CASE("several nodes: one node's report text is unchanged -- --conn shows the peer on each node it was seen") {
    ScratchDir dir;
    const std::string race = fixture_text("node_keepalive_race.jsonl");
    auto one = report({.inputs = {dir.write("one.jsonl", race)}});
    REQUIRE(one.code == kReportOk);
    CHECK(one.out.find("on vm") == std::string::npos);
    CHECK(one.out.find("\nNodes\n") == std::string::npos);
    CHECK(one.out.find("Backends\n  WHO ") != std::string::npos);
    CHECK(one.out.find("  trace        ") != std::string::npos);

    auto conn = report(
        {.inputs = {dir.write("a.jsonl", as_node(race, "node-a")), dir.write("b.jsonl", as_node(race, "node-b"))},
         .conn = "130.211.0.143:59956"});
    REQUIRE(conn.code == kReportOk);
    INFO(conn.out);
    auto a = conn.out.find("On node node-a:\nConnection 130.211.0.143:59956\n");
    auto b = conn.out.find("\nOn node node-b:\nConnection 130.211.0.143:59956\n");
    CHECK(a == 0);
    CHECK(b != std::string::npos);
    size_t verdicts = 0;
    for (auto at = conn.out.find("verdict: idle_close_race"); at != std::string::npos;
         at = conn.out.find("verdict: idle_close_race", at + 1))
        ++verdicts;
    CHECK(verdicts == 2);
}

TEST_CASE("several nodes: the HTML page names each finding's and backend's node and has a Nodes table") {
    ScratchDir dir;
    const std::string race = fixture_text("node_keepalive_race.jsonl");
    auto page_path = dir.path / "cluster.html";
    auto run = report(
        {.inputs = {dir.write("a.jsonl", as_node(race, "node-a")), dir.write("b.jsonl", as_node(race, "node-b"))},
         .html = page_path.string()});
    REQUIRE(run.code == kReportOk);
    std::ifstream in(page_path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string html = ss.str();
    CHECK(html.find("<title>tcpwhy report — 2 nodes</title>") != std::string::npos);
    CHECK(html.find("<p>2 nodes: node-a, node-b; from 2026-11-23") != std::string::npos);
    CHECK(html.find("data-node=\"node-a\"><p><b>1.</b> <span class=\"kind\">idle_close_race</span> on <b "
                    "class=\"node\">node-a</b>: ") != std::string::npos);
    CHECK(html.find("<h3>node-b · netns 4026532246") != std::string::npos);
    CHECK(html.find("<section id=\"nodes\">") != std::string::npos);
    CHECK(html.find("<b>cluster</b> (2 nodes)") != std::string::npos);
    CHECK(html.find(">node-a · idle_close_race</text>") != std::string::npos);  // a timeline row per node and kind
    CHECK(html.find("<td>node-b · netns 4026532246") != std::string::npos);     // the connections' backends

    // One node's page has none of it.
    auto single_path = dir.path / "single.html";
    REQUIRE(report({.inputs = {dir.write("one.jsonl", race)}, .html = single_path.string()}).code == kReportOk);
    std::ifstream single_in(single_path);
    std::stringstream single;
    single << single_in.rdbuf();
    CHECK(single.str().find("data-node") == std::string::npos);
    CHECK(single.str().find("id=\"nodes\"") == std::string::npos);
}
