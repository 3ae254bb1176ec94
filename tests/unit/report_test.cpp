// `tcpwhy report` end to end on trace files written by the real encoder.
#include <zlib.h>

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <map>
#include <set>
#include <sstream>

#include "event_builders.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/report.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
namespace fs = std::filesystem;

namespace {

// A scratch directory removed at the end of the test.
struct ScratchDir {
    fs::path path;
    ScratchDir() {
        path = fs::temp_directory_path() / ("tcpwhy-report-test-" + std::to_string(::getpid()) + "-" +
                                            std::to_string(reinterpret_cast<uintptr_t>(this)));
        fs::create_directories(path);
    }
    ~ScratchDir() { fs::remove_all(path); }
    std::string write(const std::string& name, const std::string& text) const {
        auto file = path / name;
        std::ofstream(file) << text;
        return file.string();
    }
    std::string write_gz(const std::string& name, const std::string& text) const {
        auto file = (path / name).string();
        gzFile gz = gzopen(file.c_str(), "wb");
        gzwrite(gz, text.data(), static_cast<unsigned>(text.size()));
        gzclose(gz);
        return file;
    }
};

std::string header_line() {
    TraceHeader h;
    h.hostname = "node-1";
    h.kernel = "6.18.0";
    return to_json_line(h);
}

// The keep-alive race (data after FIN) as a trace: header and the backend's events.
std::string race_trace() {
    Sock s;
    std::string text = header_line() + "\n";
    for (const Event& e :
         {accepted(s, sec(100)), idle_fin(s, sec(106), 6000), reset_recv(s, sec(106) + ms(2), TcpState::fin_wait1),
          state(s, sec(106) + ms(2), TcpState::fin_wait1, TcpState::close),
          reset_sent(s, sec(106) + ms(2), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true)})
        text += to_json_line(e) + "\n";
    return text;
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

// The field names docs/report-json.md lists per section: `| \`name\` | type | meaning |` rows.
struct DocumentedFields {
    std::set<std::string> all, required;  // required: rows not marked "optional:"
};
std::map<std::string, DocumentedFields> documented_fields() {
    std::ifstream doc(std::string(TCPWHY_SOURCE_DIR) + "/docs/report-json.md");
    REQUIRE(doc);
    std::map<std::string, DocumentedFields> sections;
    std::string line, section;
    while (std::getline(doc, line)) {
        if (line.starts_with("## ")) section = line.substr(3);
        if (!line.starts_with("| `") || section.empty()) continue;
        auto end = line.find('`', 3);
        std::string name = line.substr(3, end - 3);
        sections[section].all.insert(name);
        if (line.find("| optional:") == std::string::npos) sections[section].required.insert(name);
    }
    return sections;
}

void check_documented(const nlohmann::json& object, const DocumentedFields& doc, const std::string& where) {
    INFO(where);
    REQUIRE(object.is_object());
    std::set<std::string> keys;
    for (const auto& [key, value] : object.items()) keys.insert(key);
    for (const auto& key : keys) CHECK(doc.all.count(key) == 1);       // nothing undocumented
    for (const auto& key : doc.required) CHECK(keys.count(key) == 1);  // nothing documented missing
}

}  // namespace

TEST_CASE("report gives the advice of the server the trace's `server` line names, in text and JSON") {
    ScratchDir dir;
    ServerRecord gunicorn{4242, 987, "gunicorn",
                          ServerInfo{.kind = ServerKind::gunicorn, .version = "20.1.0", .worker = "gthread",
                                     .via = "cmdline: python3.11 /usr/bin/gunicorn"}};
    // Written ahead of the events, as trace and the daemon do.
    std::string trace = race_trace();
    trace.insert(trace.find('\n') + 1, to_json_line(gunicorn) + "\n");
    auto run = report({.inputs = {dir.write("race.jsonl", trace)}, .json = true});
    REQUIRE(run.code == kReportOk);
    auto j = nlohmann::json::parse(run.out);
    const auto& f = j["findings"][0];
    auto doc = documented_fields();
    check_documented(f["backend"]["server"], doc["`server`"], "backend.server");
    CHECK(f["backend"]["server"]["kind"] == "gunicorn");
    CHECK(f["backend"]["server"]["name"] == "gunicorn 20.1.0 (gthread worker)");
    CHECK(f["backend"]["server"]["idle_timeout"]["knob"] == "--keep-alive");
    CHECK(f["backend"]["server"]["idle_timeout"]["default_ms"] == 2000);
    CHECK(f["advice"].get<std::string>().starts_with(
        "gunicorn 20.1.0 (gthread worker) closes idle connections after 6.0 s (not its default `--keep-alive 2`: its "
        "configuration sets about 6.0 s); behind this LB (600 s) set `--keep-alive 620`"));
    CHECK(j["backends"][0]["server"]["via"] == "cmdline: python3.11 /usr/bin/gunicorn");

    auto text = report({.inputs = {dir.write("race2.jsonl", trace)}});
    CHECK(text.out.find("   server: gunicorn 20.1.0 (gthread worker); idle timeout `--keep-alive`, default 2.0 s; "
                        "recognised by cmdline: python3.11 /usr/bin/gunicorn\n") != std::string::npos);
    CHECK(text.out.find("   fix: gunicorn 20.1.0 (gthread worker) closes idle connections after 6.0 s") != std::string::npos);
    // Order does not matter: a server line after the events still applies.
    auto late = report({.inputs = {dir.write("late.jsonl", race_trace() + to_json_line(gunicorn) + "\n")}, .json = true});
    CHECK(nlohmann::json::parse(late.out)["findings"][0]["backend"]["server"]["kind"] == "gunicorn");
}

TEST_CASE("report --json has exactly the fields docs/report-json.md documents, at every level") {
    ScratchDir dir;
    Sock s;
    std::string trace = race_trace() + to_json_line(setsockopt(s, sec(101), "SOL_SOCKET", "SO_KEEPALIVE", 1)) + "\n";
    auto run = report({.inputs = {dir.write("race.jsonl", trace)}, .json = true});
    REQUIRE(run.code == kReportOk);
    CHECK(run.err.empty());
    auto j = nlohmann::json::parse(run.out);
    auto doc = documented_fields();
    check_documented(j, doc["Top level"], "top level");
    CHECK(j["schema"] == "tcpwhy-report");
    CHECK(j["version"] == kReportJsonVersion);
    REQUIRE(j["findings"].size() == 1);
    const auto& f = j["findings"][0];
    check_documented(f, doc["`findings[]`"], "findings[]");
    check_documented(f["backend"], doc["`backend`"], "findings[].backend");
    check_documented(f["evidence"], doc["`evidence`"], "findings[].evidence");
    REQUIRE(f["connections"].size() == 1);
    check_documented(f["connections"][0], doc["`connections[]`"], "findings[].connections[]");
    check_documented(f["connections"][0]["evidence"], doc["`evidence`"], "connections[].evidence");
    REQUIRE(j["backends"].size() == 1);
    DocumentedFields backend_fields = doc["`backend`"];
    for (const auto& name : doc["`backends[]`"].all) backend_fields.all.insert(name), backend_fields.required.insert(name);
    check_documented(j["backends"][0], backend_fields, "backends[]");
    REQUIRE(j["backends"][0]["option_changes"].size() == 1);
    check_documented(j["backends"][0]["option_changes"][0], doc["`option_changes[]`"], "option_changes[]");
    check_documented(j["counts"], doc["`counts`"], "counts");

    // The facts, and the words next to them.
    CHECK(f["kind"] == "idle_close_race");
    CHECK(f["severity"] == "critical");
    CHECK(f["count"] == 1);
    CHECK(f["count_lb"] == 1);
    CHECK(f["backend"]["netns"] == 4026532891u);
    CHECK(f["backend"]["port"] == 8080);
    CHECK(f["backend"]["direction"] == "inbound");
    CHECK(f["backend"]["comm"] == "node");
    CHECK(f["idle_close"]["p50_ms"] == 6000);
    CHECK(f["lb"] == nlohmann::json{{"name", "gcp"}, {"range", "130.211.0.0/22"}, {"idle_timeout_s", 600}});
    CHECK(f["evidence"]["mechanism"] == "data_after_fin");
    CHECK(f["evidence"]["reason"] == "TCP_ABORT_ON_DATA");
    CHECK(f["evidence"]["idle_gap_ms"] == 6000);
    const auto& c = f["connections"][0];
    CHECK(c["peer"] == "130.211.0.143:51234");
    CHECK(c["local"] == "10.56.5.6:8080");
    CHECK(c["kind"] == "idle_close_race");
    CHECK(c["reset_reason"] == "TCP_ABORT_ON_DATA");
    CHECK(c["idle_before_close_ms"] == 6000);
    CHECK(f["advice"].get<std::string>().find("server.keepAliveTimeout = 620000") != std::string::npos);
    CHECK(f["summary"].get<std::string>().starts_with("netns 4026532891 (process node, port 8080) closes idle"));
    CHECK(j["counts"]["resets"]["idle_close_race"] == 1);
    CHECK(j["backends"][0]["option_changes"][0]["option"] == "SO_KEEPALIVE");
}

// Found by fuzz_trace_replay: the JSON renderer threw (and `tcpwhy report --json` aborted) on a
// process name that is not UTF-8, which a trace written by another tool or edited by hand can hold.
TEST_CASE("report --json survives strings that are not UTF-8 in the trace") {
    ScratchDir dir;
    std::string trace = race_trace();
    const std::string comm = "\"comm\":\"node\"";
    REQUIRE(trace.find(comm) != std::string::npos);
    for (size_t at; (at = trace.find(comm)) != std::string::npos;) trace.replace(at, comm.size(), "\"comm\":\"no\xff\xfe\"");
    auto run = report({.inputs = {dir.write("race.jsonl", trace)}, .json = true});
    REQUIRE(run.code == kReportOk);
    auto j = nlohmann::json::parse(run.out);
    REQUIRE(j["findings"].size() == 1);
    CHECK(j["findings"][0]["backend"]["comm"] == "no\xef\xbf\xbd\xef\xbf\xbd");  // each stray byte: U+FFFD
}

TEST_CASE("report text: findings first, then backends, then counts") {
    ScratchDir dir;
    auto run = report({.inputs = {dir.write("race.jsonl", race_trace())}});
    REQUIRE(run.code == kReportOk);
    auto findings =
        run.out.find("Findings\n1. [idle_close_race] netns 4026532891 (process node, port 8080) closes idle");
    auto backends = run.out.find("Backends\n");
    auto counts = run.out.find("Counts\n");
    CHECK(findings == 0);
    CHECK(backends > findings);
    CHECK(counts > backends);
    CHECK(backends != std::string::npos);
    CHECK(counts != std::string::npos);
    CHECK(run.out.find("   fix: make the server's idle timeout longer") != std::string::npos);
    CHECK(run.out.find("  events       5 (state 2, close 1, reset_sent 1, reset_recv 1, setsockopt 0)\n") !=
          std::string::npos);
    CHECK(run.out.find("  resets       idle_close_race 1\n") != std::string::npos);
}

TEST_CASE("gzip traces read like plain ones, and several files replay in order") {
    ScratchDir dir;
    auto plain = report({.inputs = {dir.write("race.jsonl", race_trace())}, .json = true});
    auto gz = report({.inputs = {dir.write_gz("race.jsonl.gz", race_trace())}, .json = true});
    REQUIRE(gz.code == kReportOk);
    CHECK(gz.out == plain.out);

    Sock other{.cookie = 9, .rport = 40000};
    std::string second =
        header_line() + "\n" + to_json_line(accepted(other, sec(200))) + "\n" +
        to_json_line(idle_fin(other, sec(206), 6000)) + "\n" +
        to_json_line(reset_sent(other, sec(206), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true)) + "\n";
    auto both =
        report({.inputs = {dir.write("a.jsonl", race_trace()), dir.write_gz("b.jsonl.gz", second)}, .json = true});
    REQUIRE(both.code == kReportOk);
    auto j = nlohmann::json::parse(both.out);
    CHECK(j["findings"][0]["count"] == 2);
    std::vector<std::string> peers;
    for (const auto& c : j["findings"][0]["connections"]) peers.push_back(c["peer"]);
    CHECK(peers == std::vector<std::string>{"130.211.0.143:40000", "130.211.0.143:51234"});
}

TEST_CASE("corrupt and truncated lines are skipped and counted, with the first line number") {
    ScratchDir dir;
    std::string text = race_trace();
    size_t third_newline = 0;
    for (int i = 0; i < 3; ++i) third_newline = text.find('\n', third_newline) + 1;
    text.insert(third_newline, "\nthis is not json\n{\"v\":1,\"type\":\"state\",\"ts_n");
    text += "{\"v\":1,\"type\":\"state\"}\n";  // no ts_ns
    auto path = dir.write("corrupt.jsonl", text);
    auto run = report({.inputs = {path}, .json = true});
    REQUIRE(run.code == kReportOk);
    // Line 4 is blank; the garbage is line 5. The truncated line swallows the next
    // event (our own reset_recv), which the race verdict does not need.
    CHECK(run.err.starts_with(fmt::format("tcpwhy: WARNING skipped 3 corrupt or truncated lines (first: {}:5: ", path)));
    auto j = nlohmann::json::parse(run.out);
    CHECK(j["findings"][0]["kind"] == "idle_close_race");
}

TEST_CASE("a file that is not a trace is an input error") {
    ScratchDir dir;
    auto run = report({.inputs = {dir.write("notes.txt", "hello\n" + race_trace())}});
    CHECK(run.code == kReportInputError);
    CHECK(run.err.find("notes.txt: not a tcpwhy trace (first line: not a JSON object)") != std::string::npos);
    CHECK(run.out.empty());

    auto other_json = report({.inputs = {dir.write("other.json", "{\"name\":\"x\"}\n")}});
    CHECK(other_json.code == kReportInputError);
    CHECK(other_json.err.find("not a tcpwhy trace") != std::string::npos);
}

TEST_CASE("an unknown schema version is an input error") {
    ScratchDir dir;
    std::string text = race_trace() + "{\"v\":2,\"type\":\"state\",\"ts_ns\":1}\n";
    auto path = dir.write("future.jsonl", text);
    auto run = report({.inputs = {path}});
    CHECK(run.code == kReportInputError);
    CHECK(run.err == fmt::format("tcpwhy: {}:7: trace schema version 2 (this tcpwhy reads version 1)\n", path));
}

TEST_CASE("missing files and bad options") {
    ScratchDir dir;
    // Bad input, exit 2, one line naming the problem and the fix.
    auto missing = report({.inputs = {(dir.path / "nope.jsonl").string()}});
    CHECK(missing.code == kReportInputError);
    CHECK(missing.err == fmt::format("tcpwhy: {}: no such file\n  fix: give the path of a trace from `tcpwhy trace -o` "
                                     "or `tcpwhy export`\n",
                                     (dir.path / "nope.jsonl").string()));
    auto directory = report({.inputs = {dir.path.string()}});
    CHECK(directory.code == kReportInputError);
    CHECK(directory.err.starts_with(fmt::format("tcpwhy: {} is a directory\n  fix: ", dir.path.string())));
    CHECK(directory.out.empty());

    auto trace = dir.write("race.jsonl", race_trace());
    CHECK(report({.inputs = {trace}, .lb_preset = "f5"}).code == kReportInputError);
    CHECK(report({.inputs = {trace}, .lb_ranges = "10.0.0.0/33"}).code == kReportInputError);
    auto bad_conn = report({.inputs = {trace}, .conn = "130.211.0.143"});
    CHECK(bad_conn.code == kReportInputError);
    CHECK(bad_conn.err.find("expected RADDR:RPORT") != std::string::npos);
    CHECK(report({.inputs = {}}).code == kReportInputError);
}

TEST_CASE("report honours the LB preset, not the trace's lb flags") {
    ScratchDir dir;
    auto trace = dir.write("race.jsonl", race_trace());
    auto none = report({.inputs = {trace}, .json = true, .lb_preset = "none"});
    REQUIRE(none.code == kReportOk);
    auto j = nlohmann::json::parse(none.out);
    CHECK(j["findings"][0]["lb"] == nlohmann::json{{"name", "none"}, {"range", ""}, {"idle_timeout_s", 0}});

    // Ranges that do not hold the peer: the race is no LB finding.
    auto elsewhere = report({.inputs = {trace}, .json = true, .lb_ranges = "10.129.0.0/23"});
    CHECK(nlohmann::json::parse(elsewhere.out)["findings"].empty());
}

TEST_CASE("report --conn prints one connection's timeline with the verdict") {
    ScratchDir dir;
    auto run = report({.inputs = {dir.write("race.jsonl", race_trace())}, .conn = "130.211.0.143:51234"});
    REQUIRE(run.code == kReportOk);
    CHECK(run.out.starts_with("Connection 130.211.0.143:51234\n\n  socket 1001 130.211.0.143:51234->10.56.5.6:8080"));
    CHECK(run.out.find("+    0.000 s  state       SYN_RECV -> ESTABLISHED") != std::string::npos);
    CHECK(run.out.find("+    6.000 s  close       ESTABLISHED -> FIN_WAIT1, idle rx 6000 ms / tx 6000 ms") !=
          std::string::npos);
    CHECK(run.out.find("reset_sent  TCP_ABORT_ON_DATA, socket full in CLOSE, triggered by a received segment") !=
          std::string::npos);
    CHECK(run.out.find("    verdict: idle_close_race: backend sent FIN after 6000 ms idle") != std::string::npos);

    auto nothing = report({.inputs = {dir.write("race2.jsonl", race_trace())}, .conn = "[2600::1]:80"});
    CHECK(nothing.out == "Connection [2600::1]:80\n  no events in the trace for this peer\n");
}

TEST_CASE("peer addresses for --conn") {
    auto v4 = parse_peer("130.211.0.143:51234");
    REQUIRE(v4);
    CHECK(v4->first == ip("130.211.0.143"));
    CHECK(v4->second == 51234);
    auto v6 = parse_peer("[2600:2d00:1:b029::5]:443");
    REQUIRE(v6);
    CHECK(v6->first == ip("2600:2d00:1:b029::5"));
    CHECK(v6->second == 443);
    CHECK_FALSE(parse_peer("2600:2d00:1:b029::5:443"));
    CHECK_FALSE(parse_peer("130.211.0.143:"));
    CHECK_FALSE(parse_peer("130.211.0.143:70000"));
    CHECK_FALSE(parse_peer("[::1]443"));
    CHECK_FALSE(parse_peer("host:80"));
}

TEST_CASE("TraceReader counts blank lines and handles a final line without newline") {
    ScratchDir dir;
    std::string error;
    auto reader = TraceReader::open(dir.write("lines.txt", "a\n\n  \nb\r\nc"), &error);
    REQUIRE(reader);
    CHECK(reader->next_line() == std::optional<std::string_view>("a"));
    CHECK(reader->line_number() == 1);
    CHECK(reader->next_line() == std::optional<std::string_view>("b"));
    CHECK(reader->line_number() == 4);
    CHECK(reader->next_line() == std::optional<std::string_view>("c"));
    CHECK_FALSE(reader->next_line());
    CHECK(reader->error().empty());
    CHECK_FALSE(TraceReader::open((dir.path / "missing").string(), &error));
}
