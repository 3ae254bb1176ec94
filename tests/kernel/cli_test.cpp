// The tcpwhy binary as a user runs it: exit codes, errors, doctor, and trace --json / -o.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>

#include "harness.h"
#include "tcpwhy/jsonl.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {

struct Result {
    int exit_code = -1;
    std::string out, err;
};

std::string temp_path(const char* name) { return fmt::format("/tmp/tcpwhy-test-{}-{}", getpid(), name); }

Result run_tcpwhy(const std::string& args) {
    std::string out = temp_path("out"), err = temp_path("err");
    int status = std::system(fmt::format("{} {} >{} 2>{}", TCPWHY_BINARY, args, out, err).c_str());
    Result r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
    unlink(out.c_str());
    unlink(err.c_str());
    return r;
}

size_t line_count(const std::string& text) { return std::count(text.begin(), text.end(), '\n'); }

}  // namespace

TEST_CASE("bad input: one clear line and exit 2") {
    auto unknown = run_tcpwhy("trace --no-such-flag");
    CHECK(unknown.exit_code == 2);
    CHECK(unknown.err.rfind("tcpwhy: ", 0) == 0);
    CHECK(unknown.err.find("--no-such-flag") != std::string::npos);

    auto cidr = run_tcpwhy("trace --lb-ranges 130.211.0.0/33");
    CHECK(cidr.exit_code == 2);
    CHECK(cidr.err.find("prefix length") != std::string::npos);
    CHECK(line_count(cidr.err) <= 2);  // the problem, and the fix

    auto host_bits = run_tcpwhy("trace --lb-ranges 130.211.1.0/22");
    CHECK(host_bits.exit_code == 2);
    CHECK(host_bits.err.find("did you mean 130.211.0.0/22") != std::string::npos);

    auto netns = run_tcpwhy("trace --netns no-such-namespace-here");
    CHECK(netns.exit_code == 2);
    CHECK(netns.err.find("does not exist") != std::string::npos);

    auto port = run_tcpwhy("trace --port 70000");
    CHECK(port.exit_code == 2);

    // The service-account token never travels in clear text.
    auto plain_api = run_tcpwhy("daemon --archive none --socket off --metrics-addr off --kube-api "
                                "--kube-api-url http://127.0.0.1:1");
    CHECK(plain_api.exit_code == 2);
    CHECK(plain_api.err.find("clear text") != std::string::npos);
    CHECK(line_count(plain_api.err) <= 2);

    auto nothing = run_tcpwhy("");
    CHECK(nothing.exit_code == 2);

    auto help = run_tcpwhy("trace --help");
    CHECK(help.exit_code == 0);
    CHECK(help.out.find("--lb-ranges") != std::string::npos);
}

TEST_CASE("doctor reports the attach path of every hook") {
    TCPWHY_REQUIRE_ROOT();
    auto r = run_tcpwhy("doctor");
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("state        tp_btf/inet_sock_set_state") != std::string::npos);
    CHECK(r.out.find("reset_recv   tp_btf/tcp_receive_reset") != std::string::npos);
    // the best path this kernel allows: fentry where permitted, else kprobe, else the tracepoints
    KernelFeatures f = probe_kernel_features();
    std::string best = f.fentry ? "fentry/" : f.kprobe ? "kprobe/" : "tp_btf/";
    CHECK(r.out.find("close        " + best) != std::string::npos);
    if (f.reset_tracepoint_complete()) {
        CHECK(r.out.find("reset_active tp_btf/tcp_send_reset") != std::string::npos);
        CHECK(r.out.find("reset_reply  tp_btf/tcp_send_reset") != std::string::npos);
    } else {
        CHECK(r.out.find("reset_active " + best + (best == "tp_btf/" ? "tcp_send_reset" : "tcp_send_active_reset")) !=
              std::string::npos);
        CHECK(r.out.find("reset_reply  " + best + (best == "tp_btf/" ? "tcp_send_reset" : "tcp_v4_send_reset")) !=
              std::string::npos);
    }
    CHECK(r.out.find("setsockopt   cgroup/setsockopt") != std::string::npos);
    CHECK(r.out.find("tally        ordinary connections counted per backend in the kernel") != std::string::npos);
    // The hooks for rollouts, crashes and full accept queues: each one's path, or what is missing.
    CHECK(r.out.find("exit         flag and exit code on closes made in do_exit()") != std::string::npos);
    if (f.tracepoint_args("signal_generate") == 5)
        CHECK(r.out.find("signal       tp_btf/signal_generate") != std::string::npos);
    else
        CHECK(r.out.find("passed over: tp_btf/signal_generate") != std::string::npos);
    if (f.listen_overflow_drop_reason && f.tracepoint_args("kfree_skb") >= 4) {
        CHECK(r.out.find("overflow     tp_btf/kfree_skb (TCP_LISTEN_OVERFLOW) + tp_btf/tcp_retransmit_synack") !=
              std::string::npos);
    } else {
        CHECK(r.out.find("overflow     tp_btf/tcp_retransmit_synack (queue full)") != std::string::npos);
        CHECK(r.out.find("passed over: tp_btf/kfree_skb: ") != std::string::npos);
        CHECK(r.out.find("limited: SYNs dropped at a full accept queue") != std::string::npos);
    }
    CHECK(r.out.find("result: OK") != std::string::npos);
}

TEST_CASE("trace --json and -o: lb is true only for peers in the LB ranges") {
    TCPWHY_REQUIRE_ROOT();
    Netns ns("cli");
    std::string trace_file = temp_path("trace.jsonl"), out = temp_path("json"), err = temp_path("stderr");
    pid_t child = fork();
    if (child == 0) {
        auto cmd = fmt::format("exec {} trace --json --netns {} --lb-ranges 127.0.0.2/32 -o {} >{} 2>{}",
                               TCPWHY_BINARY, ns.name(), trace_file, out, err);
        execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
        _exit(127);
    }
    for (int i = 0; i < 300 && slurp(err).find("tracing TCP") == std::string::npos; ++i) sleep_ms(20);
    REQUIRE(slurp(err).find("tracing TCP") != std::string::npos);
    {
        // The event loop yields the CPU to the workload (--nice, default 10): field 19 of stat.
        std::string stat = slurp(fmt::format("/proc/{}/stat", child));
        std::istringstream fields(stat.substr(stat.rfind(')') + 2));
        std::string field;
        for (int i = 3; i <= 19; ++i) fields >> field;
        CHECK(field == std::to_string(std::min(getpriority(PRIO_PROCESS, 0) + 10, 19)));
    }

    ns.enter([] {
        Fd listener = tcp_listen_v4("127.0.0.1", 7070);
        for (const char* from : {"127.0.0.2", "127.0.0.3"}) {
            Fd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            auto src = v4(from, 0);
            REQUIRE(bind(c.get(), reinterpret_cast<sockaddr*>(&src), sizeof(src)) == 0);
            auto dst = v4("127.0.0.1", 7070);
            REQUIRE(connect(c.get(), reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) == 0);
            Fd s = accept_one(listener);
            s.reset();  // server closes first: a close event on the server side
        }
        return 0;
    });
    sleep_ms(300);
    kill(child, SIGTERM);
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    std::string stderr_text = slurp(err);
    INFO(stderr_text);
    CHECK(stderr_text.find("dropped 0 events") != std::string::npos);

    auto check_lines = [&](const std::string& text, bool expect_header) {
        std::istringstream lines(text);
        std::string line;
        int closes_lb = 0, closes_other = 0, headers = 0, names = 0, servers = 0;
        while (std::getline(lines, line)) {
            auto parsed = parse_json_line(line);
            if (parsed.kind == LineKind::header) {
                headers++;
                CHECK(parsed.header.lb_ranges == "127.0.0.2/32");
                continue;
            }
            if (parsed.kind == LineKind::workload) {
                // the namespace is named as `ip netns` names it, ahead of its events
                if (parsed.workload.netns == ns.inode()) {
                    names++;
                    CHECK(parsed.workload.workload.kind == WorkloadKind::netns);
                    CHECK(parsed.workload.workload.netns_name == ns.name());
                    CHECK(closes_lb + closes_other == 0);
                }
                continue;
            }
            if (parsed.kind == LineKind::server) {
                // the sockets' owner is this test: examined once, recognised as no server, ahead of its events
                servers++;
                CHECK(parsed.server.pid == static_cast<uint32_t>(getpid()));
                CHECK(parsed.server.server.kind == ServerKind::unknown);
                CHECK(parsed.server.server.via.starts_with("not recognised: exe /"));
                continue;
            }
            REQUIRE(parsed.kind == LineKind::event);
            const Event& e = parsed.event;
            CHECK(e.netns == ns.inode());
            if (e.type == EventType::tally) {
                // ordinary closes come counted, by backend and by whether their peers are the LB
                if (e.lport == 7070) (e.lb ? closes_lb : closes_other) += static_cast<int>(e.tally.closed_local_first);
                continue;
            }
            CHECK(e.lb == (e.raddr.to_string() == "127.0.0.2"));
            if (e.type == EventType::close && e.lport == 7070) (e.lb ? closes_lb : closes_other)++;
        }
        CHECK(headers == (expect_header ? 1 : 0));
        CHECK(names == 1);
        CHECK(servers == 1);
        CHECK(closes_lb == 1);
        CHECK(closes_other == 1);
    };
    check_lines(slurp(out), false);
    check_lines(slurp(trace_file), true);
    unlink(trace_file.c_str());
    unlink(out.c_str());
    unlink(err.c_str());
}

TEST_CASE("trace reaches the idle_close_race verdict live, with the observed idle time") {
    TCPWHY_REQUIRE_ROOT();
    LbAndPod net;
    std::string out = temp_path("race-out"), err = temp_path("race-err");
    pid_t child = fork();
    if (child == 0) {
        auto cmd = fmt::format("exec {} trace --netns {} --only-lb >{} 2>{}", TCPWHY_BINARY, net.pod.name(), out, err);
        execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
        _exit(127);
    }
    for (int i = 0; i < 300 && slurp(err).find("tracing TCP") == std::string::npos; ++i) sleep_ms(20);
    REQUIRE(slurp(err).find("tracing TCP") != std::string::npos);

    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, 8080); });
    std::vector<Fd> clients;
    std::vector<Fd> servers;
    for (int i = 0; i < 3; ++i) {
        clients.push_back(net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, 8080); }));
        servers.push_back(accept_one(listener));
        send_all(clients.back(), "GET / HTTP/1.1\r\n\r\n");
        recv_some(servers.back());
        send_all(servers.back(), "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        recv_some(clients.back());
    }
    sleep_ms(1500);  // the backend's idle timeout
    for (auto& s : servers) s.reset();
    for (auto& c : clients) send_all(c, "GET /again HTTP/1.1\r\n\r\n");  // the LB reuses them

    std::string text;
    for (int i = 0; i < 150 && text.find("finding [") == std::string::npos; ++i) {
        sleep_ms(20);
        text = slurp(out);
    }
    kill(child, SIGTERM);
    int status = 0;
    waitpid(child, &status, 0);
    text = slurp(out);
    INFO(text << slurp(err));
    CHECK(WEXITSTATUS(status) == 0);
    auto finding = text.find("finding [");
    REQUIRE(finding != std::string::npos);
    std::string line = text.substr(finding, text.find('\n', finding) - finding);
    CHECK(line.find("idle_close_race") != std::string::npos);
    CHECK(line.find("port 8080") != std::string::npos);
    CHECK(line.find("after 1.5 s") != std::string::npos);
    CHECK(line.find("600 s") != std::string::npos);
    unlink(out.c_str());
    unlink(err.c_str());
}
