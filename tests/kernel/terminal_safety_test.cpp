// A process that names itself with escape bytes (retitle the window, clear the screen) must
// not reach the operator's terminal through `trace`, `top` or `report`: the bytes show as
// visible escapes.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <thread>

#include "daemon_process.h"
#include "harness.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {
constexpr const char* kEvilName = "\x1b]0;pwn\x07\x1b[2J\x9b" "7m";  // 15 bytes: all comm holds
constexpr const char* kShown = "\\x1b]0;pwn\\x07\\x1b[2J";
}  // namespace

TEST_CASE("terminal safety: a process named with escape bytes shows as escapes in trace, top and report") {
    TCPWHY_REQUIRE_ROOT();
    Netns ns("esc");
    TempDir dir;
    const auto trace_out = dir.path / "trace.txt", trace_file = dir.path / "trace.jsonl", top_out = dir.path / "top.txt";
    // trace (text on stdout, and the JSONL trace for report) and top --once, tracing meanwhile.
    // Loading takes seconds under emulation (the VM tests): the named thread keeps connecting
    // until top has printed its snapshot, so both see it whenever they finished attaching.
    pid_t trace = fork();
    if (trace == 0) {
        execl("/bin/sh", "sh", "-c",
              fmt::format("exec {} trace --duration 120 --tracepoints-only --netns {} -o {} >{} 2>&1", TCPWHY_BINARY,
                          ns.name(), trace_file.string(), trace_out.string())
                  .c_str(),
              nullptr);
        _exit(127);
    }
    for (int i = 0; i < 600 && slurp(trace_out).find("tracing TCP") == std::string::npos; ++i) sleep_ms(100);
    pid_t top = fork();
    if (top == 0) {
        execl("/bin/sh", "sh", "-c",
              fmt::format("exec {} top --once --interval 4 --tracepoints-only >{} 2>&1", TCPWHY_BINARY,
                          top_out.string())
                  .c_str(),
              nullptr);
        _exit(127);
    }
    const uint16_t port = unique_port();
    int status = 0;
    bool top_done = false;
    ns.enter([&] {
        prctl(PR_SET_NAME, kEvilName);  // this thread's comm: it listens, connects and closes
        Fd listener = tcp_listen_v4("127.0.0.1", port);
        for (int round = 0; round < 120 && !top_done; ++round) {  // the listener stays, so top shows its backend
            for (int i = 0; i < 3; ++i) {
                Fd client = tcp_connect_v4("127.0.0.1", port);
                Fd server = accept_one(listener);
                send_all(client, "GET / HTTP/1.1\r\n\r\n");
                recv_some(server);
                server.reset();
            }
            sleep_ms(500);
            top_done = waitpid(top, &status, WNOHANG) == top;
        }
        return 0;
    });
    if (!top_done) waitpid(top, &status, 0);
    kill(trace, SIGINT);
    waitpid(trace, &status, 0);

    auto no_raw_escapes = [](const std::string& text) {
        return text.find('\x1b') == std::string::npos && text.find('\x07') == std::string::npos &&
               text.find('\x9b') == std::string::npos;
    };
    std::string traced = slurp(trace_out);
    INFO(traced);
    CHECK(traced.find(kShown) != std::string::npos);
    CHECK(no_raw_escapes(traced));

    std::string topped = slurp(top_out);
    INFO(topped);
    CHECK(topped.find(kShown) != std::string::npos);
    CHECK(no_raw_escapes(topped));

    // The JSONL trace keeps the name exactly (escaped as JSON); report prints it safely.
    CHECK(slurp(trace_file).find("\\u001b]0;pwn\\u0007") != std::string::npos);
    auto report = shell(fmt::format("{} report {}", TCPWHY_BINARY, trace_file.string()));
    INFO(report.second);
    CHECK(report.first == 0);
    CHECK(report.second.find(kShown) != std::string::npos);  // the backend table names its process
    CHECK(no_raw_escapes(report.second));
}
