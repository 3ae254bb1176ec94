// `tcpwhy daemon` as a process: the keep-alive race in namespaces, then /metrics and
// /healthz scraped with curl, the control socket, `tcpwhy export`, a clean SIGTERM
// (every program, link and map it held is gone), and kill -9 followed by a restart.
#include <signal.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "daemon_process.h"
#include "harness.h"
#include "tcpwhy/format.h"
#include "tcpwhy/jsonl.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
namespace fs = std::filesystem;

namespace {

struct Connection {
    Fd client, server;
    uint16_t client_port = 0;
};

uint16_t local_port(const Fd& fd) {
    sockaddr_in sa{};
    socklen_t len = sizeof(sa);
    getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    return ntohs(sa.sin_port);
}

// lb -> pod:port, one request and response exchanged.
Connection open_connection(const LbAndPod& net, const Fd& listener, uint16_t port) {
    Connection c;
    c.client = net.lb.enter([port] { return tcp_connect_v4(LbAndPod::kPodAddr, port); });
    c.server = accept_one(listener);
    c.client_port = local_port(c.client);
    send_all(c.client, "GET / HTTP/1.1\r\nHost: pod\r\n\r\n");
    recv_some(c.server);
    send_all(c.server, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    recv_some(c.client);
    return c;
}

std::vector<ParsedLine> parse_trace(const std::string& text) {
    std::vector<ParsedLine> out;
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) out.push_back(parse_json_line(line));
    return out;
}

}  // namespace

TEST_CASE("daemon: race in namespaces, metrics match the events, snapshot, export, clean SIGTERM") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    const uint16_t port = unique_port();
    const uint32_t pod_ns = net.pod.inode();
    Fd listener = net.pod.enter([port] { return tcp_listen_v4(LbAndPod::kPodAddr, port); });
    // Open before the daemon starts: only the socket iterator can tell the daemon about it.
    Connection before = open_connection(net, listener, port);

    TempDir dir;
    DaemonProcess daemon(dir.path);
    INFO(daemon.stderr_text());
    BpfIds held = bpf_ids_of(daemon.pid);
    CHECK(held.progs.size() >= 4);  // state, reset_sent, reset_recv, setsockopt (+ close)
    CHECK_FALSE(held.links.empty());

    // Privileges: only CAP_BPF (and CAP_SYS_PTRACE for naming) is left, in every set, and the socket is root's alone.
    std::string status = slurp(fmt::format("/proc/{}/status", daemon.pid));
    CHECK(status.find("CapEff:\t0000008000080000") != std::string::npos);
    CHECK(status.find("CapPrm:\t0000008000080000") != std::string::npos);
    CHECK(status.find("CapBnd:\t0000008000080000") != std::string::npos);
    struct stat st{};
    REQUIRE(stat(daemon.socket.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);

    // The keep-alive race, three times: the backend closes idle connections, the LB's next request is reset.
    constexpr int kRaces = 3;
    std::vector<Connection> conns;
    for (int i = 0; i < kRaces; ++i) conns.push_back(open_connection(net, listener, port));
    sleep_ms(1500);
    for (auto& c : conns) c.server.reset();
    for (auto& c : conns) send_all(c.client, "GET /again HTTP/1.1\r\nHost: pod\r\n\r\n");
    before.server.reset();  // and the connection older than the daemon closes too

    // The correlator settles resets on its once-a-second tick; a loaded node can take a while.
    std::string our_port = fmt::format("port=\"{}\"", port);
    std::string gcp_range = "lb_range=\"130.211.0.0/22\"";
    std::string metrics;
    for (int i = 0; i < 60; ++i) {
        sleep_ms(500);
        metrics = daemon.get("/metrics");
        if (metric(metrics, "tcpwhy_keepalive_races_total", {our_port}) >= kRaces &&
            metric(metrics, "tcpwhy_idle_close_seconds_count", {our_port}) >= kRaces + 1)
            break;
    }
    CHECK(daemon.get("/healthz") == "ok\n");
    INFO(metrics);
    REQUIRE_FALSE(metrics.empty());
    CHECK(metric(metrics, "tcpwhy_resets_sent_total", {our_port, gcp_range}) == kRaces);
    CHECK(metric(metrics, "tcpwhy_keepalive_races_total", {our_port, gcp_range}) == kRaces);
    // named: the pod label is the namespace's `ip netns` name
    CHECK(metric(metrics, "tcpwhy_keepalive_races_total", {our_port, fmt::format("pod=\"{}\"", net.pod.name())}) ==
          kRaces);
    CHECK(metric(metrics, "tcpwhy_resets_total", {our_port, "class=\"idle_close_race\"", "peer=\"lb\""}) == kRaces);
    CHECK(metric(metrics, "tcpwhy_idle_close_seconds_count", {our_port}) >= kRaces);
    // at most the connection older than the daemon closed within a second
    CHECK(metric(metrics, "tcpwhy_idle_close_seconds_bucket", {our_port, "le=\"1\""}) <= 1);
    CHECK(metric(metrics, "tcpwhy_idle_close_seconds_bucket", {our_port, "le=\"2\""}) >= kRaces);
    CHECK(metric(metrics, "tcpwhy_findings", {our_port, "kind=\"idle_close_race\""}) == kRaces);
    CHECK(metric(metrics, "tcpwhy_events_total", {"type=\"existing\""}) >= 2);  // the listener and `before`
    CHECK(metric(metrics, "tcpwhy_connections_existing") >= 2);
    CHECK(metric(metrics, "tcpwhy_events_dropped_total", {"where=\"archive_write\""}) == 0);

    // The control socket: a snapshot is one line of JSON; nonsense gets an error line.
    auto snapshot = nlohmann::json::parse(control_request(daemon.socket, R"({"cmd":"snapshot"})"), nullptr, false);
    CHECK(snapshot.is_object());
    CHECK(snapshot.dump().find(net.pod.name()) != std::string::npos);
    auto bad = nlohmann::json::parse(control_request(daemon.socket, R"({"cmd":"reboot"})"), nullptr, false);
    REQUIRE(bad.is_object());
    CHECK(bad["error"].get<std::string>().find("unknown cmd") != std::string::npos);

    // A second daemon on the same socket is refused before it loads anything.
    auto second = shell(fmt::format("{} daemon --archive none --metrics-addr off --socket {}", TCPWHY_BINARY,
                                    daemon.socket.string()));
    CHECK(second.first == 2);
    CHECK(second.second.find("another tcpwhy daemon is listening") != std::string::npos);

    // export: the race, and the old connection from its `existing` record to its close.
    std::string trace_file = (dir.path / "export.jsonl").string();
    auto exported = shell(fmt::format("{} export --since 5m -o {} --socket {}", TCPWHY_BINARY, trace_file,
                                      daemon.socket.string()));
    INFO(exported.second);
    REQUIRE(exported.first == 0);
    auto lines = parse_trace(slurp(trace_file));
    REQUIRE(lines.size() > 1);
    CHECK(lines[0].kind == LineKind::header);
    int resets = 0;
    std::optional<uint64_t> existing_cookie, close_cookie;
    for (const auto& l : lines) {
        if (l.kind != LineKind::event || l.event.netns != pod_ns || l.event.lport != port) continue;
        const Event& e = l.event;
        if (e.type == EventType::reset_sent) ++resets;
        if (e.type == EventType::existing && e.rport == before.client_port) {
            existing_cookie = e.cookie;
            CHECK(e.new_state == TcpState::established);
            CHECK(e.comm == "kernel_tests");  // the owner, found through /proc
        }
        if (e.type == EventType::close && e.rport == before.client_port) close_cookie = e.cookie;
    }
    CHECK(resets == kRaces);
    CHECK(resets == metric(metrics, "tcpwhy_resets_sent_total", {our_port}));
    REQUIRE(existing_cookie);
    REQUIRE(close_cookie);
    CHECK(*existing_cookie == *close_cookie);
    auto report = shell(fmt::format("{} report {}", TCPWHY_BINARY, trace_file));
    CHECK(report.first == 0);
    CHECK(report.second.find("idle_close_race") != std::string::npos);

    // SIGTERM: exit 0, the archive finished, the socket file and every BPF object gone.
    CHECK(loaded(held).size() == held.progs.size() + held.links.size() + held.maps.size());  // bpftool sees them now
    CHECK(daemon.stop(SIGTERM) == 0);
    CHECK(daemon.stderr_text().find("daemon stopped") != std::string::npos);
    CHECK_FALSE(fs::exists(daemon.socket));
    CHECK(still_loaded(held).empty());
    for (const auto& entry : fs::directory_iterator(daemon.archive)) {
        auto check = shell(fmt::format("gzip -t {}", entry.path().string()));
        INFO(entry.path() << check.second);
        CHECK(check.first == 0);  // every segment is a complete gzip stream
    }
}

TEST_CASE("daemon: kill -9 leaves nothing loaded and a restart resumes the archive") {
    TCPWHY_REQUIRE_ROOT();
    TempDir dir;
    BpfIds held;
    {
        DaemonProcess first(dir.path);
        held = bpf_ids_of(first.pid);
        REQUIRE_FALSE(held.progs.empty());
        sleep_ms(1500);  // a flush of the open segment
        CHECK(first.stop(SIGKILL) == 128 + SIGKILL);
    }
    // Nothing was pinned: the kernel freed it all with the process's file descriptors.
    CHECK(still_loaded(held).empty());
    CHECK(fs::exists(dir.path / "tcpwhy.sock"));  // stale, left by kill -9

    DaemonProcess second(dir.path);
    INFO(second.stderr_text());
    CHECK(second.get("/healthz") == "ok\n");
    std::string trace_file = (dir.path / "export.jsonl").string();
    auto exported = shell(fmt::format("{} export --since 10m -o {} --socket {}", TCPWHY_BINARY, trace_file,
                                      second.socket.string()));
    INFO(exported.second);
    REQUIRE(exported.first == 0);
    // The first run's segment (cut short by the kill) is still exported, under its own header.
    std::set<uint64_t> clock_bases;
    int events = 0;
    for (const auto& l : parse_trace(slurp(trace_file))) {
        if (l.kind == LineKind::header) clock_bases.insert(l.header.mono_start_ns);
        if (l.kind == LineKind::event) ++events;
    }
    CHECK(clock_bases.size() == 2);
    CHECK(events > 0);
    CHECK(second.stop(SIGINT) == 0);  // Ctrl-C stops it as cleanly as SIGTERM
    CHECK(second.stderr_text().find("daemon stopped") != std::string::npos);
}

TEST_CASE("daemon and export: bad input is refused with one line and exit 2 -- no daemon is exit 1") {
    auto size = shell(fmt::format("{} daemon --segment-size 12X", TCPWHY_BINARY));
    CHECK(size.first == 2);
    CHECK(size.second.find("--segment-size 12X: not a size") != std::string::npos);
    auto cap = shell(fmt::format("{} daemon --segment-size 1M --archive-max 1M", TCPWHY_BINARY));
    CHECK(cap.first == 2);
    CHECK(cap.second.find("at least two segments") != std::string::npos);
    auto addr = shell(fmt::format("{} daemon --archive none --metrics-addr localhost", TCPWHY_BINARY));
    CHECK(addr.first == 2);
    CHECK(addr.second.find("expected HOST:PORT") != std::string::npos);
    auto archive = shell(fmt::format("{} daemon --archive /proc/1/no-such-dir/archive", TCPWHY_BINARY));
    CHECK(archive.first == 2);
    CHECK(archive.second.find("cannot create archive directory") != std::string::npos);
    auto since = shell(fmt::format("{} export --since soon -o /dev/null", TCPWHY_BINARY));
    CHECK(since.first == 2);
    auto absent = shell(fmt::format("{} export -o /dev/null --socket /nonexistent/tcpwhy.sock", TCPWHY_BINARY));
    CHECK(absent.first == 1);
    CHECK(absent.second.find("is `tcpwhy daemon` running?") != std::string::npos);
}

TEST_CASE("daemon: under a small archive limit segments rotate, the oldest go, the newest events stay") {
    TCPWHY_REQUIRE_ROOT();
    Netns ns("arch");
    TempDir dir;
    DaemonProcess daemon(dir.path, "--segment-size 32K --archive-max 96K");
    INFO(daemon.stderr_text());

    // Enough connections for several MB of trace: ~5 events each. Other traffic on the
    // node adds to it, so what is kept is checked by time, not by whose events they are.
    constexpr int kConnections = 4000;
    const uint16_t port = unique_port();
    const uint64_t started_ns = WallClock::now().mono_ns;
    ns.enter([port] {
        Fd listener = tcp_listen_v4("127.0.0.1", port);
        churn_quiet(listener, "127.0.0.1", port, kConnections);
        return 0;
    });
    const uint64_t last_close_ns = WallClock::now().mono_ns;
    sleep_ms(300);  // the event loop polls every 25 ms

    std::string trace_file = (dir.path / "export.jsonl").string();
    auto exported = shell(fmt::format("{} export --since 10m -o {} --socket {}", TCPWHY_BINARY, trace_file,
                                      daemon.socket.string()));
    INFO(exported.second);
    REQUIRE(exported.first == 0);
    uint64_t oldest_ns = UINT64_MAX, newest_ns = 0;
    int closes = 0;
    for (const auto& l : parse_trace(slurp(trace_file))) {
        if (l.kind != LineKind::event) continue;
        oldest_ns = std::min(oldest_ns, l.event.ts_ns);
        newest_ns = std::max(newest_ns, l.event.ts_ns);
        // the server side's closes: one per connection
        if (l.event.netns == ns.inode() && l.event.type == EventType::close && l.event.lport == port) ++closes;
    }
    CHECK(newest_ns >= last_close_ns - 50'000'000);  // the newest events are kept...
    CHECK(oldest_ns > started_ns);                   // ...the oldest (and the start's) were deleted
    CHECK(closes < kConnections);

    std::string metrics = daemon.get("/metrics");
    INFO(metrics);
    CHECK(metric(metrics, "tcpwhy_archive_segments_deleted_total") > 0);
    CHECK(metric(metrics, "tcpwhy_archive_write_errors_total") == 0);
    // The open segment's size is read every 64 KiB of input: the cap holds within that much.
    CHECK(metric(metrics, "tcpwhy_archive_bytes") <= 96 * 1024 + 64 * 1024);
    CHECK(daemon.stop(SIGTERM) == 0);

    uint64_t on_disk = 0;
    int segments = 0;
    for (const auto& entry : fs::directory_iterator(daemon.archive)) {
        ++segments;
        on_disk += fs::file_size(entry.path());
        auto first_line = shell(fmt::format("zcat {} | head -1", entry.path().string())).second;
        CHECK(parse_json_line(first_line.substr(0, first_line.find('\n'))).kind == LineKind::header);
    }
    CHECK(segments >= 2);  // rotated (and the oldest deleted, above); how many depends on the machine's speed
    CHECK(on_disk <= 96 * 1024 + 64 * 1024);
}

// A filesystem the test mounts (tmpfs of a fixed size) and unmounts.
struct SmallFilesystem {
    fs::path path;
    explicit SmallFilesystem(const fs::path& where, const char* size) : path(where) {
        fs::create_directories(path);
        run(fmt::format("mount -t tmpfs -o size={} tcpwhy-test {}", size, path.string()));
    }
    ~SmallFilesystem() { std::system(fmt::format("umount {} >/dev/null 2>&1", path.string()).c_str()); }
};

TEST_CASE("daemon: a full archive filesystem is counted and reported while tracing goes on") {
    TCPWHY_REQUIRE_ROOT();
    TempDir dir;
    SmallFilesystem small(dir.path / "small", "96k");
    Netns ns("full");
    // No free-space reserve (the DaemonProcess default): the writes themselves fail.
    DaemonProcess daemon(dir.path, "--segment-size 1M --archive-max 4M", small.path / "archive");
    INFO(daemon.stderr_text());
    const uint16_t port = unique_port();
    auto churn = [&](int connections) {
        ns.enter([port, connections] {
            Fd listener = tcp_listen_v4("127.0.0.1", port);
            churn_quiet(listener, "127.0.0.1", port, connections);
            return 0;
        });
    };
    churn(3000);  // a few MB of trace into 96 KiB (quiet connections: about three events each)
    sleep_ms(1500);
    std::string metrics = daemon.get("/metrics");
    INFO(metrics);
    CHECK(metric(metrics, "tcpwhy_archive_write_errors_total") > 0);
    double not_archived = metric(metrics, "tcpwhy_events_dropped_total", {"where=\"archive_write\""});
    CHECK(not_archived > 0);
    std::string health = daemon.get("/healthz");
    INFO(health);
    CHECK(health.rfind("ok\n", 0) == 0);  // still healthy: tracing goes on
    CHECK(health.find("archive:") != std::string::npos);
    CHECK(health.find("No space left on device") != std::string::npos);

    // Events still arrive and are counted after the failure.
    double closes_before = metric(metrics, "tcpwhy_events_total", {"type=\"close\""});
    churn(10);
    sleep_ms(1200);
    CHECK(metric(daemon.get("/metrics"), "tcpwhy_events_total", {"type=\"close\""}) >= closes_before + 20);
    CHECK(daemon.stop(SIGTERM) == 0);
    CHECK(daemon.stderr_text().find("WARNING archive:") != std::string::npos);
}
