// What the replay path (issue 19) is built from, each against a plain reference: the
// correlator's cookie table and IPv6 pool against std::unordered_map, the buffered TraceReader
// against the file's own lines, the reusing parse_json_line against a fresh parse, and the
// progress texts and the export's progress lines.
#include <catch2/catch.hpp>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "address_pool.h"
#include "conn_table.h"
#include "tcpwhy/daemon/export.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/progress.h"
#include "tcpwhy/report.h"

using namespace tcpwhy;
namespace fs = std::filesystem;

namespace {

struct Element {
    uint64_t cookie = 0;
    uint64_t payload = 0;
};

fs::path scratch_file(const std::string& name) {
    return fs::temp_directory_path() / ("tcpwhy-replay-path-" + std::to_string(::getpid()) + "-" + name);
}

std::vector<std::string> all_lines(TraceReader& reader) {
    std::vector<std::string> lines;
    while (auto line = reader.next_line()) lines.emplace_back(*line);
    return lines;
}

}  // namespace

TEST_CASE("cookie table: find, insert and erase agree with a map -- elements never move") {
    correlator::CookieTable<Element> table;
    std::unordered_map<uint64_t, uint64_t> reference;
    std::unordered_map<uint64_t, const Element*> where;  // each element's address when it was added
    std::mt19937_64 random(19);
    // Sequential cookies (as the kernel hands them out) and random ones; enough to grow the
    // index several times and to erase through long probe runs that wrap its end.
    std::uniform_int_distribution<uint64_t> small(1, 40000);
    for (int step = 0; step < 300000; ++step) {
        uint64_t cookie = step % 2 ? small(random) : (random() | 1);
        if (step % 5 < 3) {
            auto [element, added] = table.try_emplace(cookie);
            REQUIRE(element->cookie == cookie);
            CHECK(added == !reference.count(cookie));
            if (added) {
                element->payload = cookie * 3;
                reference[cookie] = cookie * 3;
                where[cookie] = element;
            }
        } else {
            // Erase one known to be there half the time, an absent one otherwise.
            uint64_t victim = reference.empty() || step % 2 ? cookie : reference.begin()->first;
            table.erase(victim);
            reference.erase(victim);
            where.erase(victim);
        }
        if (step % 5000 == 0) {
            REQUIRE(table.size() == reference.size());
            size_t wrong = 0;  // missing, moved or changed
            for (const auto& [c, payload] : reference) {
                const Element* found = table.find(c);
                wrong += !found || found != where[c] || found->payload != payload;
            }
            CHECK(wrong == 0);
        }
    }
    size_t walked = 0;
    table.for_each([&](const Element& e) {
        ++walked;
        CHECK(reference.count(e.cookie));
    });
    CHECK(walked == reference.size());
    // for_each may erase the element it is given: the walk still sees every element once.
    size_t erased = 0;
    table.for_each([&](Element& e) {
        if (e.cookie % 2) {
            table.erase(e.cookie);
            ++erased;
        }
    });
    CHECK(table.size() == reference.size() - erased);
    for (const auto& [c, payload] : reference) CHECK((table.find(c) != nullptr) == (c % 2 == 0));
}

TEST_CASE("address pool: one entry per address while it has holders, reused after its last") {
    correlator::AddressPool pool;
    correlator::AddressPool::Bytes a{}, b{};
    a[0] = 0x26, a[15] = 1;
    b[0] = 0x26, b[15] = 2;
    uint32_t first = pool.hold(a);
    CHECK(pool.hold(a) == first);
    uint32_t other = pool.hold(b);
    CHECK(other != first);
    CHECK(pool.size() == 2);
    CHECK(pool.at(first) == a);
    CHECK(pool.at(other) == b);
    pool.release(first);
    CHECK(pool.size() == 2);  // a has a holder still
    CHECK(pool.at(first) == a);
    pool.release(first);
    CHECK(pool.size() == 1);
    correlator::AddressPool::Bytes c{};
    c[0] = 0x20, c[1] = 0x01;
    CHECK(pool.hold(c) == first);  // the freed entry, not a new one
    CHECK(pool.at(first) == c);
    CHECK(pool.at(other) == b);
}

TEST_CASE("TraceReader: lines across its buffer's edges, CRLF, NUL padding and an overlong line, plain and gzip") {
    // Lines of every length around the 256 KiB buffer's edges, one longer than the 1 MiB a line
    // may keep, and the line after it whole.
    std::vector<std::string> expected;
    std::string text;
    std::mt19937 random(7);
    for (int i = 0; i < 3000; ++i) {
        std::string line = "line " + std::to_string(i) + " " + std::string(random() % 700, 'x');
        expected.push_back(line);
        text += line + (i % 7 == 0 ? "\r\n" : "\n");
        if (i % 500 == 0) text += "\n  \t\n";                      // blank lines: skipped, counted
        if (i == 1000) text += std::string(300, '\0') + "\n";      // a crash's zero-filled tail: skipped
    }
    const std::string overlong(1536 * 1024, 'y');
    text += overlong + "\n" + "after the long one\n" + "last, without a newline";
    expected.push_back(overlong.substr(0, 1024 * 1024));
    expected.push_back("after the long one");
    expected.push_back("last, without a newline");

    auto plain = scratch_file("plain.txt");
    std::ofstream(plain, std::ios::binary) << text;
    auto gz = scratch_file("lines.gz");
    gzFile out = gzopen(gz.c_str(), "wb");
    gzwrite(out, text.data(), static_cast<unsigned>(text.size()));
    gzclose(out);

    for (const auto& path : {plain, gz}) {
        INFO(path);
        std::string error;
        auto reader = TraceReader::open(path.string(), &error);
        REQUIRE(reader);
        CHECK(reader->file_size() == fs::file_size(path));
        auto lines = all_lines(*reader);
        CHECK(reader->error().empty());
        REQUIRE(lines.size() == expected.size());
        for (size_t i = 0; i < lines.size(); ++i) {
            INFO(i);
            CHECK(lines[i] == expected[i]);
        }
        CHECK(reader->line_number() == 3000 + 6 * 2 + 1 + 3);  // every line counted, blank ones too
        CHECK(reader->bytes_read() == fs::file_size(path));
    }
    fs::remove(plain);
    fs::remove(gz);
}

TEST_CASE("parse_json_line into a reused line reads each line as a fresh parse does") {
    const std::vector<std::string> lines = {
        R"({"v":1,"type":"header","tool":"tcpwhy","hostname":"a","clock":"CLOCK_MONOTONIC","mono_start_ns":5,"wall_start_ns":9})",
        R"({"v":1,"ts_ns":10,"type":"setsockopt","cookie":7,"netns":1,"laddr":"10.0.0.1","lport":80,"raddr":"2600::1","rport":5,"lb":true,"pid":3,"comm":"nginx","cgroup_id":4,"level":"SOL_SOCKET","optname":"SO_KEEPALIVE","value":1,"value2":0})",
        R"({"v":1,"ts_ns":11,"type":"state","cookie":8,"old_state":"ESTABLISHED","new_state":"FIN_WAIT1","idle_rx_ms":6000,"idle_tx_ms":6000,"unread_bytes":0,"bytes_rx":10,"bytes_tx":20,"abort":false,"opts":{"SO_KEEPALIVE":1}})",
        R"({"v":1,"ts_ns":12,"type":"reset_sent","cookie":8,"reason":"TCP_ABORT_ON_DATA","reason_inferred":false,"has_skb":true,"sk":"full","sk_state":"CLOSE"})",
        R"({"type":"header","v":1})",  // a header with no fields: none of the first header's
        R"({ "ts_ns" : 13 , "v" : 1 , "type" : "close" , "cookie" : 9 , "unknown" : [1, {"a": null}] })",
        R"({"v":1,"ts_ns":14,"type":"state","cookie":18446744073709551616})",  // out of range
        R"({"v":1,"ts_ns":1.5,"type":"state"})",                              // not an integer
        R"({"v":2,"ts_ns":1,"type":"state"})",
        R"({"v":1,"type":"state"})",
        R"({"v":1,"ts_ns":1,"type":"setsockopt","optname":"SO_NOPE"})",
        R"({"v":1,"ts_ns":1,"type":"state","comm":"a\u00e9\"b"} trailing)",
        R"({"v":1,"ts_ns":1,"type":"state","laddr":"010.0.0.1","raddr":"1.2.3.256"})",
        R"({"v":1,"ts_ns":1,"type":"workload","kind":"netns"})",
        R"({"v":1,"type":"server","pid":5,"comm":"nginx","kind":"nginx","version":"1.22.1"})",
    };
    ParsedLine reused;
    for (int round = 0; round < 2; ++round) {
        for (const auto& line : lines) {
            INFO(line);
            ParsedLine fresh = parse_json_line(line);
            parse_json_line(line, reused);
            CHECK(reused.kind == fresh.kind);
            CHECK(reused.error == fresh.error);
            if (fresh.kind == LineKind::event) CHECK(to_json_line(reused.event) == to_json_line(fresh.event));
            if (fresh.kind == LineKind::header) CHECK(to_json_line(reused.header) == to_json_line(fresh.header));
            if (fresh.kind == LineKind::server) CHECK(to_json_line(reused.server) == to_json_line(fresh.server));
        }
    }
    // The parse itself, on the lines above: the cases the fast paths could get wrong.
    CHECK(parse_json_line(lines[5]).kind == LineKind::event);  // spaces everywhere, keys out of order
    CHECK(parse_json_line(lines[6]).error == "field cookie is out of range");
    CHECK(parse_json_line(lines[7]).error == "field ts_ns is not an integer");
    CHECK(parse_json_line(lines[10]).error == "unknown optname 'SO_NOPE'");
    CHECK(parse_json_line(lines[11]).kind == LineKind::bad);
    auto addresses = parse_json_line(lines[12]);
    REQUIRE(addresses.kind == LineKind::event);
    CHECK(addresses.event.laddr.family == 0);  // a leading zero is not an address, as IpAddr::parse says
    CHECK(addresses.event.raddr.family == 0);
    auto v6 = parse_json_line(lines[1]);
    CHECK(v6.event.raddr.family == 6);
    CHECK(v6.event.laddr.family == 4);
    CHECK(parse_json_line(lines.back()).kind == LineKind::server);
}

TEST_CASE("progress texts: bytes of the total, events/s, time left once there is a pace, the file of several") {
    ReplayProgress p{.bytes_read = 512 * 1024 * 1024ull, .bytes_total = 2048 * 1024 * 1024ull, .events = 3'000'000,
                     .file_index = 1, .files = 4};
    CHECK(replay_progress_line(p, 2.0) == "report: 512.0 MiB of 2.0 GiB (25%), 1.5 M events/s, 0:06 left, file 2 of 4");
    CHECK(replay_progress_line(p, 0.5) == "report: 512.0 MiB of 2.0 GiB (25%), 6.0 M events/s, file 2 of 4");
    ReplayProgress piped{.bytes_read = 900, .bytes_total = 0, .events = 20, .file_index = 0, .files = 1};
    CHECK(replay_progress_line(piped, 2.0) == "report: 900 B read, 10 events/s");
    CHECK(clock_text(3725) == "1:02:05");
    CHECK(count_text(850'000) == "850 k");

    daemon::ExportProgress e{.bytes_read = 10, .bytes_total = 40, .events = 7, .segment = 2, .segments = 5};
    std::string line = daemon::export_progress_line(e);
    CHECK(parse_json_line(line).kind == LineKind::bad);  // never mistaken for a trace line
    auto back = daemon::parse_export_progress_line(line);
    REQUIRE(back);
    CHECK(back->bytes_read == 10);
    CHECK(back->bytes_total == 40);
    CHECK(back->events == 7);
    CHECK(back->segment == 2);
    CHECK(back->segments == 5);
    CHECK_FALSE(daemon::parse_export_progress_line(R"({"v":1,"ts_ns":1,"type":"state"})"));
    CHECK_FALSE(daemon::parse_export_progress_line(R"({"export_progress":)"));
}

TEST_CASE("the progress meter draws nothing when its stream is not a terminal") {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    {
        ProgressMeter meter(fds[1], std::chrono::milliseconds(0));
        CHECK_FALSE(meter.active());
        meter.update([] { return std::string("drawn"); });
        meter.finish();
    }
    close(fds[1]);
    char buf[16];
    CHECK(read(fds[0], buf, sizeof(buf)) == 0);
    close(fds[0]);
}
