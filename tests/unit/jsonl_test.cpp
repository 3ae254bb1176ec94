#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tcpwhy/jsonl.h"

using namespace tcpwhy;

namespace {

Event sample_close() {
    Event e;
    e.type = EventType::close;
    e.ts_ns = 1'000'000'123;
    e.cookie = 8193;
    e.netns = 4026532281u;
    e.laddr = *IpAddr::parse("10.56.5.6");
    e.raddr = *IpAddr::parse("130.211.0.143");
    e.lport = 8080;
    e.rport = 40001;
    e.lb = true;
    e.pid = 4242;
    e.comm = "node";
    e.cgroup_id = 99;
    e.old_state = TcpState::established;
    e.new_state = TcpState::fin_wait1;
    e.idle_rx_ms = 6004;
    e.idle_tx_ms = 6001;
    e.bytes_rx = 512;
    e.bytes_tx = 2048;
    e.opts.set(SockOpt::so_keepalive, 1);
    e.opts.set(SockOpt::tcp_keepidle, 60);
    return e;
}

}  // namespace

TEST_CASE("JSON encoding carries the documented fields") {
    auto j = nlohmann::json::parse(to_json_line(sample_close()));
    CHECK(j["v"] == 1);
    CHECK(j["type"] == "close");
    CHECK(j["ts_ns"] == 1'000'000'123);
    CHECK(j["cookie"] == 8193);
    CHECK(j["laddr"] == "10.56.5.6");
    CHECK(j["lport"] == 8080);
    CHECK(j["raddr"] == "130.211.0.143");
    CHECK(j["rport"] == 40001);
    CHECK(j["lb"] == true);
    CHECK(j["pid"] == 4242);
    CHECK(j["comm"] == "node");
    CHECK(j["idle_rx_ms"] == 6004);
    CHECK(j["idle_tx_ms"] == 6001);
    CHECK(j["unread_bytes"] == 0);
    CHECK(j["abort"] == false);
    CHECK(j["old_state"] == "ESTABLISHED");
    CHECK(j["new_state"] == "FIN_WAIT1");
    CHECK(j["opts"]["SO_KEEPALIVE"] == 1);
    CHECK(j["opts"]["TCP_KEEPIDLE"] == 60);
    CHECK_FALSE(j.contains("reason"));
}

TEST_CASE("JSON round trip: every event type") {
    Event close = sample_close();
    auto parsed = parse_json_line(to_json_line(close));
    REQUIRE(parsed.kind == LineKind::event);
    const Event& e = parsed.event;
    CHECK(e.type == EventType::close);
    CHECK(e.ts_ns == close.ts_ns);
    CHECK(e.cookie == close.cookie);
    CHECK(e.netns == close.netns);
    CHECK(e.laddr == close.laddr);
    CHECK(e.raddr == close.raddr);
    CHECK(e.idle_rx_ms == 6004);
    CHECK(e.opts == close.opts);
    CHECK(e.comm == "node");

    Event reset;
    reset.type = EventType::reset_sent;
    reset.reason = ResetReason::tcp_abort_on_data;
    reset.sk_kind = SockKind::timewait;
    reset.sk_state = TcpState::time_wait;
    reset.laddr = *IpAddr::parse("2600:2d00:1:b029::1");
    reset.raddr = *IpAddr::parse("::1");
    auto r = parse_json_line(to_json_line(reset));
    REQUIRE(r.kind == LineKind::event);
    CHECK(r.event.reason == ResetReason::tcp_abort_on_data);
    CHECK(r.event.sk_kind == SockKind::timewait);
    CHECK(r.event.sk_state == TcpState::time_wait);
    CHECK(r.event.laddr.to_string() == "2600:2d00:1:b029::1");

    Event opt;
    opt.type = EventType::setsockopt;
    opt.opt = SockOpt::so_linger;
    opt.value = 1;
    opt.value2 = 0;
    auto o = parse_json_line(to_json_line(opt));
    REQUIRE(o.kind == LineKind::event);
    CHECK(o.event.opt == SockOpt::so_linger);
    CHECK(o.event.value == 1);
    CHECK(o.event.value2 == 0);
}

TEST_CASE("header line round trip") {
    TraceHeader h;
    h.hostname = "node-1";
    h.kernel = "6.18.44";
    h.mono_start_ns = 5;
    h.wall_start_ns = 1700000000000000000ull;
    h.lb_ranges = "130.211.0.0/22";
    auto p = parse_json_line(to_json_line(h));
    REQUIRE(p.kind == LineKind::header);
    CHECK(p.header.hostname == "node-1");
    CHECK(p.header.wall_start_ns == 1700000000000000000ull);
    CHECK(p.header.lb_ranges == "130.211.0.0/22");
}

TEST_CASE("bad lines: not JSON, no version, future version, wrong types -- unknown fields ignored") {
    CHECK(parse_json_line("garbage").kind == LineKind::bad);
    CHECK(parse_json_line("[1,2]").kind == LineKind::bad);
    CHECK(parse_json_line(R"({"type":"close","ts_ns":1})").kind == LineKind::bad);
    auto future = parse_json_line(R"({"v":2,"type":"close","ts_ns":1})");
    CHECK(future.kind == LineKind::unsupported_version);
    CHECK(future.error.find("version 2") != std::string::npos);
    CHECK(parse_json_line(R"({"v":1,"type":"close","ts_ns":"soon"})").kind == LineKind::bad);
    CHECK(parse_json_line(R"({"v":1,"type":"teleport","ts_ns":1})").kind == LineKind::bad);
    CHECK(parse_json_line(R"({"v":1,"type":"close","ts_ns":1,"idle_rx_ms":-5})").kind == LineKind::bad);
    CHECK(parse_json_line(R"({"v":1,"type":"close")").kind == LineKind::bad);  // truncated
    auto extra = parse_json_line(R"({"v":1,"type":"state","ts_ns":7,"future_field":{"x":1}})");
    REQUIRE(extra.kind == LineKind::event);
    CHECK(extra.event.ts_ns == 7);
}

TEST_CASE("strings: escapes written and read back, invalid UTF-8 replaced") {
    Event e;
    e.type = EventType::state;
    e.pid = 1;
    e.comm = std::string("we\"ird\\\n\x01", 9);
    auto line = to_json_line(e);
    CHECK(line.find(R"("comm":"we\"ird\\\n\u0001")") != std::string::npos);
    auto back = parse_json_line(line);
    REQUIRE(back.kind == LineKind::event);
    CHECK(back.event.comm == e.comm);

    e.comm = "caf\xc3\xa9\xff";  // valid two-byte sequence, then a stray byte
    back = parse_json_line(to_json_line(e));
    REQUIRE(back.kind == LineKind::event);
    CHECK(back.event.comm == "caf\xc3\xa9\xef\xbf\xbd");

    auto unicode = parse_json_line(R"({"v":1,"type":"state","ts_ns":1,"pid":2,"comm":"\u00e9\ud83d\ude00\/"})");
    REQUIRE(unicode.kind == LineKind::event);
    CHECK(unicode.event.comm == "\xc3\xa9\xf0\x9f\x98\x80/");
}

// Found by fuzz_jsonl_line: the writer let ill-formed sequences of the right shape through
// (a 0xf8 lead byte, overlong forms, surrogates, past U+10FFFF), so a trace could hold bytes
// that strict JSON readers reject.
TEST_CASE("strings: ill-formed UTF-8 of every kind is written as U+FFFD, and rewriting is a fixed point") {
    Event e;
    e.type = EventType::state;
    e.pid = 1;
    const std::string replacement = "\xef\xbf\xbd";
    // no prefix of these is well-formed, so every byte becomes one U+FFFD
    for (std::string ill_formed : {"\xf8\x88\x80\x80", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"}) {
        e.comm = ill_formed;
        auto line = to_json_line(e);
        auto back = parse_json_line(line);
        REQUIRE(back.kind == LineKind::event);
        std::string expected;
        for (size_t i = 0; i < ill_formed.size(); ++i) expected += replacement;
        CHECK(back.event.comm == expected);
        CHECK(to_json_line(back.event) == line);
    }
    e.comm = "\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbd";  // well-formed: written as it is
    auto line = to_json_line(e);
    CHECK(line.find("\"comm\":\"" + e.comm + "\"") != std::string::npos);
    CHECK(parse_json_line(line).event.comm == e.comm);
}

TEST_CASE("reader: unknown values of every JSON type are skipped -- null is absent") {
    auto p = parse_json_line(
        R"({"x":[1,{"a":[true,null]},"s"],"y":{"z":{}},"f":-1.5e3,"v":1,"type":"close","ts_ns":9,)"
        R"("idle_rx_ms":null,"opts":{"TCP_KEEPIDLE":5,"FUTURE_OPT":[1]},"lb":true} )");
    REQUIRE(p.kind == LineKind::event);
    CHECK(p.event.ts_ns == 9);
    CHECK(p.event.idle_rx_ms == 0);
    CHECK(p.event.lb);
    CHECK(p.event.opts.keepidle_s == 5);
}

TEST_CASE("reader: malformed lines are bad, with a reason") {
    for (const char* line : {
             R"({"v":1,"type":"close","ts_ns":1.5})",         // not an integer
             R"({"v":1,"type":"close","ts_ns":1} trailing)",  // text after the object
             R"({"v":1,"type":"close","ts_ns":1,"lport":70000})",
             R"({"v":1,"type":"close","ts_ns":1,"lb":"yes"})",
             R"({"v":1,"type":"close","ts_ns":1,"comm":"unterminated})",
             R"({"v":1,"type":"close","ts_ns":1,"comm":"bad \q escape"})",
             R"({"v":1,"type":"close","ts_ns":1 "lport":1})",
             R"({"v":1,"type":"close"})",
             R"({"v":1,"ts_ns":1})",
             R"({})",
             "",
         }) {
        auto p = parse_json_line(line);
        INFO(line);
        CHECK(p.kind == LineKind::bad);
        CHECK_FALSE(p.error.empty());
    }
    std::string deep = R"({"v":1,"type":"state","ts_ns":1,"x":)" + std::string(100, '[') + std::string(100, ']') + "}";
    CHECK(parse_json_line(deep).kind == LineKind::bad);
}
