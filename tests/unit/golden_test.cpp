// Golden replays: traces recorded from the kernel keep-alive race (tests/fixtures/)
// must keep giving the same findings.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tcpwhy/report.h"

using namespace tcpwhy;

namespace {

std::string fixture(const char* name) { return std::string(TCPWHY_SOURCE_DIR) + "/tests/fixtures/" + name; }

nlohmann::json json_report(const char* name) {
    std::ostringstream out, err;
    ReportOptions options{.inputs = {fixture(name)}, .json = true};
    REQUIRE(run_report(options, out, err) == kReportOk);
    CHECK(err.str().empty());
    return nlohmann::json::parse(out.str());
}

}  // namespace

TEST_CASE("golden: Node.js default keep-alive behind the GCP LB races") {
    auto j = json_report("node_keepalive_race.jsonl");
    REQUIRE(j["findings"].size() == 1);
    const auto& f = j["findings"][0];
    CHECK(f["kind"] == "idle_close_race");
    CHECK(f["count"] == 6);
    CHECK(f["backend"]["netns"] == 4026532246u);
    CHECK(f["backend"]["laddr"] == "10.56.5.6");
    CHECK(f["backend"]["port"] == 8080);
    CHECK(f["backend"]["direction"] == "inbound");
    CHECK(f["backend"]["comm"] == "node");
    CHECK(f["idle_close"]["p50_ms"] == 6000);
    CHECK(f["idle_close"]["max_ms"] == 6004);
    CHECK(f["lb"] == nlohmann::json{{"name", "gcp"}, {"range", "130.211.0.0/22"}, {"idle_timeout_s", 600}});
    CHECK(f["connections"].size() == 6);
    CHECK(f["connections_not_kept"] == 0);
    CHECK(f["connections"][0]["peer"] == "130.211.0.143:59956");
    CHECK(f["connections"][0]["local"] == "10.56.5.6:8080");
    for (const auto& c : f["connections"]) CHECK(c["kind"] == "idle_close_race");
    CHECK(f["advice"].get<std::string>().find("server.keepAliveTimeout = 620000") != std::string::npos);
}

TEST_CASE("golden: the fixed Node.js backend has no findings") {
    CHECK(json_report("node_keepalive_fixed.jsonl")["findings"].empty());
}
