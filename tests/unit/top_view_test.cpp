// `tcpwhy top` without a terminal: filters, sort order, column layout, sparklines,
// wrapping, the plain-text snapshot, and the daemon client against a real socket.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <regex>
#include <thread>

#include "tcpwhy/fd.h"
#include "tcpwhy/top/daemon_client.h"
#include "tcpwhy/top/view_model.h"

using namespace tcpwhy;
using namespace tcpwhy::top;

namespace {

SnapshotRow make_row(uint32_t netns, std::string pod, std::string ns, uint64_t races,
                     std::optional<FindingKind> verdict) {
    SnapshotRow row;
    row.netns = netns;
    row.port = 8080;
    row.pod = pod;
    row.namespace_name = std::move(ns);
    row.name = pod.empty() ? fmt::format("netns {}", netns) : pod;
    row.process = "node";
    row.pid = 10;
    row.live_lb = 3;
    row.idle_closes = races ? 12 : 0;
    row.idle_p50_ms = 6004;
    row.resets_races = races;
    row.resets_per_second.assign(kSparklineSeconds, 0);
    row.verdict = verdict;
    return row;
}

Snapshot sample() {
    Snapshot s;
    s.header = {"node-a", "6.18.0", "tp_btf", "gcp", "Google Cloud HTTP(S) load balancer", 600, 12.4, 1234, 0,
                1'000'000'000'000, 1'700'000'000'000'000'000};
    s.rows.push_back(make_row(11, "web-1", "shop", 0, std::nullopt));
    s.rows.push_back(make_row(12, "api-7", "shop", 6, FindingKind::idle_close_race));
    s.rows.push_back(make_row(13, "", "", 0, FindingKind::idle_timeout_below_lb));
    SnapshotRow& api = s.rows[1];
    api.resets_per_second[59] = 4;
    api.resets_per_second[58] = 2;
    api.findings.push_back({FindingKind::idle_close_race, 6, "pod api-7 closes idle keep-alive connections after 6.0 s",
                            {"backend sent FIN after 6004 ms idle"}, "set server.keepAliveTimeout = 620000",
                            {"130.211.0.143:59920->10.56.5.6:8080"}});
    SnapshotConnection c;
    c.peer = "130.211.0.143:59920";
    c.local = "10.56.5.6:8080";
    c.lb_peer = true;
    c.end = EndKind::reset_sent;
    c.verdict = FindingKind::idle_close_race;
    uint64_t t0 = s.header.now_ns - 10'000'000'000;
    c.timeline = {{t0, "opened (accepted)"},
                  {t0 + 3'000'000, "last data"},
                  {0, "idle 6.0 s"},
                  {t0 + 6'007'000'000, "backend closed (FIN)"},
                  {t0 + 6'009'000'000, "reset sent TCP_ABORT_ON_DATA: idle_close_race"}};
    api.connections.push_back(c);
    return s;
}

std::vector<std::string> names(const std::vector<const SnapshotRow*>& rows) {
    std::vector<std::string> out;
    for (const auto* r : rows) out.push_back(r->name);
    return out;
}

bool has(const std::string& text, std::string_view needle) { return text.find(needle) != std::string::npos; }

}  // namespace

TEST_CASE("top view: rows sort by verdict first, and by any column either way") {
    Snapshot s = sample();
    ViewState state;
    CHECK(names(visible_rows(s, {}, state)) == std::vector<std::string>{"api-7", "netns 13", "web-1"});
    state.sort = Column::name;
    state.descending = false;
    CHECK(names(visible_rows(s, {}, state)) == std::vector<std::string>{"api-7", "netns 13", "web-1"});
    state.descending = true;
    CHECK(names(visible_rows(s, {}, state)) == std::vector<std::string>{"web-1", "netns 13", "api-7"});
    state.sort = Column::sparkline;
    CHECK(names(visible_rows(s, {}, state)).front() == "api-7");
}

TEST_CASE("top view: the filter matches pod, namespace or netns inode -- --pod and --namespace narrow first") {
    // `/` and --pod: substrings; --namespace: the exact namespace.
    Snapshot s = sample();
    ViewState state;
    state.filter = "web";
    CHECK(names(visible_rows(s, {}, state)) == std::vector<std::string>{"web-1"});
    state.filter = "shop";
    CHECK(names(visible_rows(s, {}, state)) == std::vector<std::string>{"api-7", "web-1"});
    state.filter = "13";
    CHECK(names(visible_rows(s, {}, state)) == std::vector<std::string>{"netns 13"});
    state.filter = "nothing-like-it";
    CHECK(visible_rows(s, {}, state).empty());
    state.filter.clear();
    CHECK(names(visible_rows(s, RowFilter{.pod = "api"}, state)) == std::vector<std::string>{"api-7"});
    CHECK(names(visible_rows(s, RowFilter{.namespace_name = "shop"}, state)).size() == 2);
    CHECK(visible_rows(s, RowFilter{.namespace_name = "sho"}, state).empty());  // exact, as trace --namespace
    CHECK(visible_rows(s, RowFilter{.pod = "api", .namespace_name = "other"}, state).empty());
}

TEST_CASE("top view: sparklines fold a minute into the width, scaled to the busiest second") {
    std::vector<uint32_t> seconds(60, 0);
    CHECK(sparkline(seconds, 20, Glyphs::ascii()) == std::string(20, '.'));
    seconds[59] = 8;
    seconds[0] = 1;
    CHECK(sparkline(seconds, 20, Glyphs::ascii()) == ":" + std::string(18, '.') + "@");
    CHECK(sparkline(seconds, 60, Glyphs::utf8()) == "▁" + std::string(58, ' ') + "█");
    CHECK(display_width(sparkline(seconds, 7, Glyphs::utf8())) == 7);  // 9 s per character
}

TEST_CASE("top view: layout fits the terminal, giving up sparkline and name space first") {
    auto total = [](const std::array<int, kColumnCount>& widths) {
        int sum = widths.back();
        for (size_t i = 0; i + 1 < widths.size(); ++i) sum += widths[i] ? widths[i] + 1 : 0;
        return sum;
    };
    auto wide = layout(200);
    CHECK(total(wide) == 200);
    CHECK(wide[static_cast<size_t>(Column::sparkline)] == 20);
    auto narrow = layout(100);
    CHECK(total(narrow) == 100);
    CHECK(narrow[static_cast<size_t>(Column::sparkline)] < 20);
    CHECK(narrow.back() >= 22);  // the verdict stays readable
    auto classic = layout(80);
    CHECK(classic[static_cast<size_t>(Column::sparkline)] == 0);
    CHECK(classic.back() >= 16);  // "idle_close_race" fits
}

TEST_CASE("top view: fit and wrap count columns, not bytes") {
    CHECK(fit("→8080", 6, true) == " →8080");
    CHECK(fit("abcdef", 3) == "abc");
    CHECK(display_width(fit("▁▂▃▄", 2)) == 2);
    CHECK(wrap("one two three four", 9, 0, 2) == std::vector<std::string>{"one two", "  three", "  four"});
    CHECK(wrap("fix: x", 40, 5, 10) == std::vector<std::string>{"     fix: x"});
}

TEST_CASE("top view: listed open connections show with the longest idle, and in the drill-down") {
    Snapshot s = sample();
    SnapshotRow& web = s.rows[0];
    web.live_lb = 32;
    web.live_sampled = 32;
    web.live_idle_p50_ms = 2900;
    web.live_idle_max_ms = 5900;
    std::string text = render_plain(s, {}, {}, Glyphs::ascii());
    INFO(text);
    CHECK(has(text, "web-1                  shop           8080 node             32/0 (5.9s)"));
    auto lines = detail_lines(web, s.header, Glyphs::ascii(), 200);
    REQUIRE(lines.size() > 1);
    CHECK(has(lines[1].text, "live connections 32 from the LB, 0 other (idle when listed: p50 2.9s, max 5.9s, 32 listed)"));
}

TEST_CASE("top view: plain snapshot has the header, the table and each finding's details") {
    Snapshot s = sample();
    s.header.dropped_total = 3;
    std::string text = render_plain(s, {}, {}, Glyphs::ascii());
    INFO(text);
    if (getenv("SHOWTMP")) fputs(text.c_str(), stdout);
    CHECK(text.rfind("tcpwhy top  node node-a  kernel 6.18.0  attach tp_btf  LB gcp (idle timeout 600 s)  12 events/s  "
                     "1234 events  DROPPED 3 events\n",
                     0) == 0);
    CHECK(has(text, "POD                    NAMESPACE      PORT PROCESS          LIVE (IDLE)  IDLE CLOSES RST RACE/O"));
    CHECK(has(text, "api-7                  shop           8080 node                     3/0  12 p50 6.0s        6/0        0 "
                    "...........@ idle_close_race\n"));
    CHECK(has(text, "netns 13               -              8080 node                     3/0            -        0/0        0 "
                    "............ idle_timeout_below_lb\n"));
    CHECK(has(text, "\n== api-7 ==\n"));
    CHECK_FALSE(has(text, "== web-1 =="));  // no finding, no details
    CHECK(has(text, "  1. [idle_close_race] pod api-7 closes idle keep-alive connections after 6.0 s\n"));
    CHECK(has(text, "     evidence: backend sent FIN after 6004 ms idle\n"));
    CHECK(has(text, "     fix: set server.keepAliveTimeout = 620000\n"));
    CHECK(has(text, "  130.211.0.143:59920 -> 10.56.5.6:8080  LB  reset_sent  idle_close_race\n"));
    std::string unwrapped = std::regex_replace(text, std::regex("\n +"), " ");
    CHECK(std::regex_search(unwrapped, std::regex(R"( opened \(accepted\) \d\d:\d\d:\d\d\.\d{3} -> last data \+0\.003s -> )"
                                             R"(idle 6\.0 s -> backend closed \(FIN\) \+6\.007s -> reset sent )"
                                             R"(TCP_ABORT_ON_DATA: idle_close_race \+6\.009s\n)")));

    std::string filtered = render_plain(s, RowFilter{.pod = "zzz"}, {}, Glyphs::ascii());
    CHECK(has(filtered, "no backend matches the filter"));
    CHECK(has(render_plain(Snapshot{}, {}, {}, Glyphs::ascii()), "no TCP connections seen yet"));
}

TEST_CASE("top --connect client: one request, one line back, clear errors") {
    std::string path = fmt::format("/tmp/tcpwhy-unit-{}-top.sock", getpid());
    unlink(path.c_str());
    std::string error;
    CHECK_FALSE(fetch_snapshot(path, 500, &error));
    CHECK(error == path + ": cannot connect: No such file or directory");

    Fd server(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
    REQUIRE(bind(server.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    REQUIRE(listen(server.get(), 4) == 0);
    auto serve = [&](std::string answer) {
        return std::thread([&server, answer] {
            Fd client(accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC));
            char request[256];
            ssize_t n = recv(client.get(), request, sizeof(request), 0);
            if (n > 0 && std::string_view(request, static_cast<size_t>(n)) == "{\"cmd\":\"snapshot\"}\n")
                send(client.get(), answer.data(), answer.size(), MSG_NOSIGNAL);
        });
    };

    Snapshot s = sample();
    auto daemon = serve(to_json(s) + "\n");
    auto got = fetch_snapshot(path, 2000, &error);
    daemon.join();
    INFO(error);
    REQUIRE(got);
    CHECK(to_json(*got) == to_json(s));

    daemon = serve("{\"error\":\"unknown cmd 'snapshot'\"}\n");
    CHECK_FALSE(fetch_snapshot(path, 2000, &error));
    daemon.join();
    CHECK(error == path + ": the daemon answered: unknown cmd 'snapshot'");

    daemon = serve("{\"rows\":[]}\n");
    CHECK_FALSE(fetch_snapshot(path, 2000, &error));
    daemon.join();
    CHECK(error == path + ": answer is not a snapshot: not a tcpwhy snapshot");

    daemon = serve("");  // closes without a word
    CHECK_FALSE(fetch_snapshot(path, 2000, &error));
    daemon.join();
    CHECK(error == path + ": the daemon closed the connection without answering");

    std::thread silent([&server] {  // reads the request, never answers, waits for the client to leave
        Fd client(accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC));
        char buffer[256];
        while (recv(client.get(), buffer, sizeof(buffer), 0) > 0) {
        }
    });
    CHECK_FALSE(fetch_snapshot(path, 200, &error));
    silent.join();
    CHECK(error == path + ": no answer within 200 ms");
    unlink(path.c_str());
}
