// `tcpwhy report --html`: the page written from real trace files (the recorded Node.js
// incident, and a trace whose names are hostile HTML).
#include <unistd.h>

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "event_builders.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/report.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
namespace fs = std::filesystem;

namespace {

struct Page {
    int code = -1;
    std::string html, out, err;
};

// Runs the report with --html into a scratch file and returns the page.
Page html_report(const std::string& trace) {
    fs::path file = fs::temp_directory_path() / fmt::format("tcpwhy-html-test-{}.html", getpid());
    ReportOptions options;
    options.inputs = {trace};
    options.html = file.string();
    std::ostringstream out, err;
    Page page;
    page.code = run_report(options, out, err);
    page.out = out.str();
    page.err = err.str();
    std::ifstream in(file);
    std::stringstream ss;
    ss << in.rdbuf();
    page.html = ss.str();
    fs::remove(file);
    return page;
}

size_t occurrences(const std::string& text, const std::string& what) {
    size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
    return n;
}

const std::string kRaceFixture = std::string(TCPWHY_SOURCE_DIR) + "/tests/fixtures/node_keepalive_race.jsonl";

}  // namespace

TEST_CASE("report --html on the recorded Node.js incident: finding, fix, charts, connections", "[report][html]") {
    Page page = html_report(kRaceFixture);
    INFO(page.err);
    REQUIRE(page.code == kReportOk);
    CHECK(page.err.find("wrote the HTML report") != std::string::npos);
    CHECK(page.out.find("[idle_close_race]") != std::string::npos);  // the text report still goes to stdout

    const std::string& html = page.html;
    CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
    CHECK(html.find("</html>") != std::string::npos);
    // The finding and its fix, as the text report words them.
    CHECK(html.find("<span class=\"kind\">idle_close_race</span>") != std::string::npos);
    CHECK(html.find("closes idle keep-alive connections after 6.0 s") != std::string::npos);
    CHECK(html.find("<b>Fix:</b>") != std::string::npos);
    CHECK(html.find("`server.keepAliveTimeout = 620000`") != std::string::npos);
    // Per backend, the idle-before-close histogram with the LB timeout marked.
    CHECK(occurrences(html, "<svg class=\"histogram\"") == 1);
    CHECK(html.find("<rect class=\"bar\"") != std::string::npos);
    CHECK(html.find("5.9 s–6.1 s: 6 closes") != std::string::npos);
    CHECK(html.find("class=\"lb-timeout\"") != std::string::npos);
    CHECK(html.find("LB idle timeout 600 s") != std::string::npos);
    // The timeline: one mark per reset connection, bars for every reset event.
    CHECK(occurrences(html, "<svg class=\"timeline\"") == 1);
    CHECK(occurrences(html, "<circle class=\"reset\"") == 6);
    CHECK(html.find("6 sent, 0 received") != std::string::npos);
    // The affected connections with their lifecycles.
    CHECK(occurrences(html, "<tr data-kind=\"idle_close_race\">") == 6);
    CHECK(html.find("130.211.0.143:59956") != std::string::npos);
    CHECK(html.find("TCP_TIMEWAIT_SOCKET") != std::string::npos);
    // Self-contained: nothing to fetch.
    CHECK_FALSE(std::regex_search(html, std::regex(R"((src|href)\s*=)")));
    CHECK(html.find("<link") == std::string::npos);
    CHECK(html.find("@import") == std::string::npos);
}

TEST_CASE("report --html escapes everything that comes from the trace", "[report][html]") {
    fs::path trace = fs::temp_directory_path() / fmt::format("tcpwhy-html-hostile-{}.jsonl", getpid());
    {
        TraceHeader header;
        header.hostname = "<b onmouseover=\"alert(1)\">node</b>";
        header.kernel = "6.18.0";
        std::ofstream out(trace);
        out << to_json_line(header) << '\n';
        Sock s;
        s.comm = "<script>alert('x')</script>";
        for (const Event& e : {accepted(s, sec(100)), idle_fin(s, sec(106), 6000),
                               reset_sent(s, sec(106) + ms(2), "<img src=x onerror=alert(2)>", SockKind::full,
                                          TcpState::fin_wait1, true)})
            out << to_json_line(e) << '\n';
    }
    Page page = html_report(trace.string());
    fs::remove(trace);
    INFO(page.err);
    REQUIRE(page.code == kReportOk);
    const std::string& html = page.html;
    CHECK(html.find("process &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") != std::string::npos);
    CHECK(html.find("&lt;b onmouseover=&quot;alert(1)&quot;&gt;node&lt;/b&gt;") != std::string::npos);
    CHECK(html.find("<script>alert") == std::string::npos);
    CHECK(html.find("<b onmouseover") == std::string::npos);
    CHECK(html.find("<img") == std::string::npos);
    // The page's own script is the only one.
    CHECK(occurrences(html, "<script>") == 1);
}

TEST_CASE("report --html: a path that cannot be written, and --conn with --html, are bad input", "[report][html]") {
    ReportOptions options;
    options.inputs = {kRaceFixture};
    options.html = "/nonexistent-dir/page.html";
    std::ostringstream out, err;
    CHECK(run_report(options, out, err) == kReportInputError);
    CHECK(err.str().find("cannot write the HTML report /nonexistent-dir/page.html") != std::string::npos);

    options.html = (fs::temp_directory_path() / "unused.html").string();
    options.conn = "130.211.0.143:59956";
    std::ostringstream out2, err2;
    CHECK(run_report(options, out2, err2) == kReportInputError);
    CHECK(err2.str().find("--html and --conn") != std::string::npos);
}
