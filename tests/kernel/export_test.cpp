// `tcpwhy export` the way an operator runs it from outside the pod: the trace streams to
// stdout (kubectl exec ... > incident.jsonl.gz), plain or gzip, and never has to be written
// inside the container first.
#include "daemon_process.h"
#include "harness.h"
#include "tcpwhy/jsonl.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {
// Exit code of a shell command whose redirections are its own (shell() joins stderr to stdout).
int sh(const std::string& command) {
    int status = std::system(command.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
// 20 connections to a port of this test's own in ns, each closed by the server at once; the
// port, once the daemon has had time to see them.
uint16_t serve_connections(const Netns& ns) {
    const uint16_t port = unique_port();
    ns.enter([port] {
        Fd listener = tcp_listen_v4("127.0.0.1", port);
        for (int i = 0; i < 20; ++i) {
            Fd client = tcp_connect_v4("127.0.0.1", port);
            accept_one(listener).reset();
        }
        return 0;
    });
    sleep_ms(300);
    return port;
}
}  // namespace

TEST_CASE("export: streams the trace to stdout, gzip on request, and refuses a terminal") {
    TCPWHY_REQUIRE_ROOT();
    Netns ns("export");
    TempDir dir;
    DaemonProcess daemon(dir.path);
    INFO(daemon.stderr_text());
    const uint16_t port = serve_connections(ns);
    const std::string socket = daemon.socket.string();

    // No -o: stdout. The first line is the trace header; the summary goes to stderr only.
    auto plain = dir.path / "plain.jsonl";
    CHECK(sh(fmt::format("{} export --since 5m --socket {} >{} 2>{}", TCPWHY_BINARY, socket, plain.string(),
                         (dir.path / "plain.err").string())) == 0);
    std::string text = slurp(plain);
    REQUIRE_FALSE(text.empty());
    CHECK(parse_json_line(text.substr(0, text.find('\n'))).kind == LineKind::header);
    CHECK(text.find(fmt::format("\"lport\":{}", port)) != std::string::npos);
    CHECK(slurp(dir.path / "plain.err").find("to stdout") != std::string::npos);

    // --gzip on stdout, and a .gz name: both complete gzip streams that report reads as they are.
    auto gz = dir.path / "incident.jsonl.gz";
    CHECK(sh(fmt::format("{} export --since 5m --gzip --socket {} >{} 2>/dev/null", TCPWHY_BINARY, socket,
                         gz.string())) == 0);
    CHECK(shell(fmt::format("gzip -t {}", gz.string())).first == 0);
    CHECK(shell(fmt::format("zcat {} | grep -c '\"lport\":{}'", gz.string(), port)).second ==
          shell(fmt::format("grep -c '\"lport\":{}' {}", port, plain.string())).second);
    CHECK(shell(fmt::format("{} report {}", TCPWHY_BINARY, gz.string())).first == 0);
    auto named = dir.path / "named.jsonl.gz";
    CHECK(shell(fmt::format("{} export --since 5m -o {} --socket {}", TCPWHY_BINARY, named.string(), socket)).first == 0);
    CHECK(shell(fmt::format("gzip -t {}", named.string())).first == 0);

    // A terminal on stdout gets one line and exit 2, not a screenful of JSON.
    auto tty = shell(fmt::format("script -qec '{} export --since 5m --socket {}' /dev/null", TCPWHY_BINARY, socket));
    CHECK(tty.first == 2);
    CHECK(tty.second.find("is a terminal") != std::string::npos);
    CHECK(daemon.stop(SIGTERM) == 0);
}

TEST_CASE("export: progress on a terminal's stderr, stripped from the trace, and nothing when stderr is piped") {
    TCPWHY_REQUIRE_ROOT();
    Netns ns("exportp");
    TempDir dir;
    DaemonProcess daemon(dir.path);
    INFO(daemon.stderr_text());
    const uint16_t port = serve_connections(ns);
    const std::string socket = daemon.socket.string();

    // stderr on the terminal `script` makes, stdout into a file: the daemon is asked for progress
    // lines, the client draws them (no first-frame delay here) and writes none into the trace.
    auto on_tty = dir.path / "tty.jsonl";
    auto tty = shell(fmt::format("script -qec 'TCPWHY_PROGRESS_DELAY_MS=0 {} export --since 5m --socket {} >{}' /dev/null",
                                 TCPWHY_BINARY, socket, on_tty.string()));
    INFO(tty.second);
    CHECK(tty.first == 0);
    CHECK(tty.second.find("export: ") != std::string::npos);
    CHECK(tty.second.find(" events/s") != std::string::npos);
    CHECK(tty.second.find("%)") != std::string::npos);  // archive bytes read of the total
    std::string traced = slurp(on_tty);
    CHECK(traced.find("export_progress") == std::string::npos);
    CHECK(traced.find(fmt::format("\"lport\":{}", port)) != std::string::npos);
    CHECK(shell(fmt::format("{} report {}", TCPWHY_BINARY, on_tty.string())).first == 0);

    // Piped: not a byte of it on stderr, and the same trace (the daemon was not asked).
    auto piped = dir.path / "piped.jsonl";
    auto piped_err = dir.path / "piped.err";
    CHECK(sh(fmt::format("TCPWHY_PROGRESS_DELAY_MS=0 {} export --since 5m --socket {} >{} 2>{}", TCPWHY_BINARY, socket,
                         piped.string(), piped_err.string())) == 0);
    std::string err = slurp(piped_err);
    INFO(err);
    CHECK(err.find('\r') == std::string::npos);
    CHECK(err.find("export: ") == std::string::npos);
    CHECK(slurp(piped).find("export_progress") == std::string::npos);
    CHECK(daemon.stop(SIGTERM) == 0);
}
