// The other LB 502s end to end (issue 15): Debian's nginx as the load balancer in namespace lb,
// Python backends in namespace pod (tests/e2e/causes.sh, tests/e2e/backend.py), `tcpwhy trace`
// on the pod's namespace. Each test makes nginx log the error a real LB logs for its cause, then
// asserts the finding `tcpwhy report` gives, its facts within tolerance and its advice: a rollout
// without a preStop delay (and one with a delay long enough, which must give nothing), a backend
// killed by the OOM killer and restarted, a full accept queue, requests nginx gives up on, a
// response cut short by a reset, and a client in the pod reusing connections nginx closed as idle.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <sstream>

#include <nlohmann/json.hpp>

#include "harness.h"
#include "memory_cgroup.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
namespace fs = std::filesystem;

namespace {

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

// tests/e2e/causes.sh in namespaces named like the harness's; torn down on destruction.
class Causes {
public:
    explicit Causes(const std::string& env = "")
        : work_(fs::temp_directory_path() / fmt::format("tcpwhy-causes-{}", getpid())),
          lb_(fmt::format("tw{}-clb", getpid() % 100000)),
          pod_(fmt::format("tw{}-cpod", getpid() % 100000)),
          env_(env) {
        fs::remove_all(work_);
        fs::create_directories(work_);
        script("down");
        auto up = script("up");
        if (up.exit_code != 0) {
            script("down");
            fs::remove_all(work_);
            throw std::runtime_error("causes.sh up: " + up.text);
        }
    }
    ~Causes() {
        script("down");
        fs::remove_all(work_);
    }
    Causes(const Causes&) = delete;
    Causes& operator=(const Causes&) = delete;

    ShellOutput script(const std::string& args, const std::string& extra_env = "") const {
        return run_shell(fmt::format("{} {} WORK={} LB_NS={} POD_NS={} DELAY_LINE={} bash {}/tests/e2e/causes.sh {}",
                                   env_, extra_env, work_.string(), lb_, pod_, TCPWHY_DELAY_LINE, TCPWHY_SOURCE_DIR,
                                   args));
    }
    void must(const std::string& args, const std::string& extra_env = "") const {
        auto r = script(args, extra_env);
        if (r.exit_code != 0) throw std::runtime_error(fmt::format("causes.sh {}: {}", args, r.text));
    }
    // The load in the background: "STATUS COUNT" lines when it ends.
    std::future<std::string> load(double seconds, int rate, int lanes, const std::string& path,
                                  const std::string& method = "GET") const {
        return std::async(std::launch::async, [=, this] {
            return script(fmt::format("load {} {} {} '{}' {}", seconds, rate, lanes, path, method)).text;
        });
    }
    std::string error_log() const { return slurp(work_ / "nginx/error.log"); }
    // nginx's statuses over the whole test: status -> count.
    std::map<std::string, int> statuses() const {
        std::map<std::string, int> out;
        std::istringstream lines(slurp(work_ / "nginx/access.log"));
        std::string msec, status;
        for (std::string line; std::getline(lines, line);) {
            std::istringstream fields(line);
            if (fields >> msec >> status) ++out[status];
        }
        return out;
    }
    const fs::path& work() const { return work_; }
    const std::string& pod() const { return pod_; }
    uint32_t pod_inode() const {
        struct stat st{};
        return stat(("/run/netns/" + pod_).c_str(), &st) == 0 ? static_cast<uint32_t>(st.st_ino) : 0;
    }

private:
    fs::path work_;
    std::string lb_, pod_, env_;
};

// `tcpwhy trace --json -o FILE --netns POD`, stopped with SIGTERM.
class TraceCommand {
public:
    TraceCommand(const fs::path& trace, const std::string& netns)
        : trace_(trace), log_(fs::path(trace).replace_extension(".log")) {
        pid_ = fork();
        if (pid_ == 0) {
            auto cmd = fmt::format("exec {} trace --json --netns {} -o {} >/dev/null 2>{}", TCPWHY_BINARY, netns,
                                   trace_.string(), log_.string());
            execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
            _exit(127);
        }
        for (int i = 0; i < 500 && !contains(slurp(log_), "tracing TCP"); ++i) sleep_ms(20);
        if (!contains(slurp(log_), "tracing TCP")) throw std::runtime_error("tracer: " + slurp(log_));
    }
    ~TraceCommand() { stop(); }
    TraceCommand(const TraceCommand&) = delete;
    TraceCommand& operator=(const TraceCommand&) = delete;
    int stop() {
        if (pid_ <= 0) return exit_code_;
        sleep_ms(300);  // the last events reach the ring buffer
        kill(pid_, SIGTERM);
        int status = 0;
        waitpid(pid_, &status, 0);
        pid_ = -1;
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return exit_code_;
    }

private:
    fs::path trace_, log_;
    pid_t pid_ = -1;
    int exit_code_ = -1;
};

struct Report {
    nlohmann::json findings = nlohmann::json::array();  // the pod's
    std::string text;
};

Report report(const fs::path& trace, uint32_t netns, const std::string& options = "") {
    Report r;
    auto json = run_shell(fmt::format("{} report --json {} {}", TCPWHY_BINARY, options, trace.string()));
    if (json.exit_code != 0) throw std::runtime_error("report: " + json.text);
    const nlohmann::json parsed = nlohmann::json::parse(json.text);  // outlives the loop (C++20 range-for)
    for (const auto& f : parsed["findings"])
        if (f["backend"]["netns"] == netns) r.findings.push_back(f);
    r.text = run_shell(fmt::format("{} report {} {}", TCPWHY_BINARY, options, trace.string())).text;
    return r;
}

const nlohmann::json* finding(const Report& r, const std::string& kind, int port = -1) {
    for (const auto& f : r.findings)
        if (f["kind"] == kind && (port < 0 || f["backend"]["port"] == port)) return &f;
    return nullptr;
}

std::vector<std::string> kinds(const Report& r) {
    std::vector<std::string> out;
    for (const auto& f : r.findings) out.push_back(f["kind"].get<std::string>());
    return out;
}

bool have_tools() { return std::system("command -v nginx >/dev/null && command -v python3 >/dev/null") == 0; }

#define TCPWHY_REQUIRE_NGINX()                                                                  \
    do {                                                                                        \
        TCPWHY_REQUIRE_ROOT();                                                                  \
        if (!have_tools()) {                                                                    \
            WARN("SKIPPED: needs nginx and python3 (scripts/setup.sh installs nginx-light)");   \
            return;                                                                             \
        }                                                                                       \
    } while (0)

using Clock = std::chrono::steady_clock;
void sleep_until(Clock::time_point t) { std::this_thread::sleep_until(t); }

}  // namespace

TEST_CASE("e2e: a rollout without a preStop delay: nginx's refused connections are a rollout_drain with its drain lag") {
    TCPWHY_REQUIRE_NGINX();
    Causes env;
    env.must("backend a --port 8080 --drain-s 5");
    env.must("backend b --port 8081");
    fs::path trace = env.work() / "rollout.jsonl";
    TraceCommand tracer(trace, env.pod());
    auto load = env.load(10, 20, 4, "/app/");
    auto t0 = Clock::now();
    sleep_until(t0 + std::chrono::seconds(3));
    env.must("signal a TERM");  // the pod is deleted: SIGTERM at once, no preStop
    sleep_until(t0 + std::chrono::seconds(6));
    env.must("upstream 8081");  // 3 s later the LB hears the endpoint is gone
    std::string statuses = load.get();
    REQUIRE(tracer.stop() == 0);
    INFO("load: " << statuses << "nginx: " << env.error_log());

    // What the LB saw: 502s from refused connections.
    CHECK(env.statuses()["502"] > 0);
    CHECK(contains(env.error_log(), "connect() failed (111: Connection refused) while connecting to upstream"));

    auto r = report(trace, env.pod_inode());
    INFO(r.findings.dump(2) << r.text);
    const auto* f = finding(r, "rollout_drain", 8080);
    REQUIRE(f);
    const auto& facts = (*f)["facts"];
    CHECK(facts["signal"] == "SIGTERM");
    CHECK(facts["signal_to_close_ms"].get<int>() < 500);
    // listener close -> the last refused LB SYN: the 3 s until nginx reloaded
    CHECK(facts["drain_lag_ms"].get<int>() >= 2600);
    CHECK(facts["drain_lag_ms"].get<int>() <= 3800);
    CHECK(facts["refused_lb"].get<int>() >= 5);
    CHECK(facts["comm"].get<std::string>().starts_with("python"));
    std::string advice = (*f)["advice"];
    CHECK(contains(advice, "preStop"));
    CHECK(contains(advice, "terminationGracePeriodSeconds"));
    CHECK(contains(advice, "Connection: close"));
    CHECK(contains((*f)["lb_symptom"].get<std::string>(), "failed_to_connect_to_backend"));
    CHECK(contains(r.text, "[rollout_drain]"));
    CHECK(contains(r.text, "   lb: the load balancer (gcp) shows this as 502"));
    // The rollout, not a keep-alive race or a generic missing listener.
    CHECK_FALSE(finding(r, "idle_close_race"));
    CHECK_FALSE(finding(r, "no_listener"));
    CHECK_FALSE(finding(r, "rollout_drain", 8081));
}

TEST_CASE("e2e: a rollout whose preStop delay outlasts the LB's drain gives no finding") {
    TCPWHY_REQUIRE_NGINX();
    Causes env;
    env.must("backend a --port 8080 --drain-s 2");
    env.must("backend b --port 8081");
    fs::path trace = env.work() / "prestop.jsonl";
    TraceCommand tracer(trace, env.pod());
    auto load = env.load(9, 20, 4, "/app/");
    auto t0 = Clock::now();
    sleep_until(t0 + std::chrono::seconds(2));  // the pod is deleted now
    env.must("upstream 8081");                 // the LB hears in 1 s ...
    sleep_until(t0 + std::chrono::seconds(5));  // ... the preStop sleep of 3 s ends, then SIGTERM
    env.must("signal a TERM");
    std::string statuses = load.get();
    REQUIRE(tracer.stop() == 0);
    INFO("load: " << statuses << "nginx: " << env.error_log());
    CHECK(env.statuses()["502"] == 0);
    CHECK_FALSE(contains(env.error_log(), "Connection refused"));
    auto r = report(trace, env.pod_inode());
    INFO(r.findings.dump(2));
    CHECK(kinds(r).empty());
}

TEST_CASE("e2e: the OOM killer takes a backend: nginx's premature closes and refusals are a process_crash") {
    TCPWHY_REQUIRE_NGINX();
    MemoryCgroup cgroup(fmt::format("tcpwhy-e2e-{}", getpid()), 128 << 20);
    if (cgroup.path().empty()) {
        WARN("SKIPPED: no memory cgroup controller (v1, or v2 with memory) to limit the backend with");
        return;
    }
    const std::string& memcg = cgroup.path();
    Causes env;
    env.must("backend a --port 8080 --handle-ms 400", "MEMCG=" + memcg);
    env.must("backend b --port 8081");
    fs::path trace = env.work() / "oom.jsonl";
    TraceCommand tracer(trace, env.pod());
    auto load = env.load(9, 20, 8, "/app/");
    sleep_ms(3000);
    // A request that grows the process until its cgroup's limit: the OOM killer's SIGKILL.
    run_shell(fmt::format("ip netns exec {} curl -s --max-time 10 http://10.56.5.6:8080/hog", env.pod()));
    CHECK(env.script("wait a 10").exit_code == 0);
    sleep_ms(2000);
    env.must("backend a --port 8080 --handle-ms 400");  // restarted
    std::string statuses = load.get();
    REQUIRE(tracer.stop() == 0);
    INFO("load: " << statuses << "nginx: " << env.error_log());
    CHECK(env.statuses()["502"] > 0);
    CHECK(contains(env.error_log(), "upstream prematurely closed connection while reading response header"));
    CHECK(contains(env.error_log(), "Connection refused"));

    auto r = report(trace, env.pod_inode());
    INFO(r.findings.dump(2) << r.text);
    const auto* f = finding(r, "process_crash", 8080);
    REQUIRE(f);
    const auto& facts = (*f)["facts"];
    CHECK(facts["oom_victim"] == true);
    CHECK(facts["signal"] == "SIGKILL");
    CHECK(facts["in_flight"].get<int>() >= 1);
    CHECK(facts["connections_lb"].get<int>() >= 1);
    CHECK(facts["listener_closed"] == true);
    CHECK(facts["refused"].get<int>() >= 1);
    REQUIRE(facts["restarted_after_ms"].is_number());
    CHECK(facts["restarted_after_ms"].get<int>() >= 1500);
    CHECK(facts["restarted_after_ms"].get<int>() <= 5000);
    CHECK(contains((*f)["summary"].get<std::string>(), "OOM killer"));
    CHECK(contains((*f)["advice"].get<std::string>(), "resources.limits.memory"));
    CHECK_FALSE(finding(r, "rollout_drain"));
    CHECK_FALSE(finding(r, "no_listener"));
}

TEST_CASE("e2e: a backend that accepts slowly: nginx's connect timeouts are an accept_queue_overflow") {
    TCPWHY_REQUIRE_NGINX();
    Causes env("UPSTREAM=8080 CONNECT_TIMEOUT=1s READ_TIMEOUT=3s");
    // One request per connection and one at a time, 200 ms each, listen(4): connections arrive
    // faster than it accepts. Each accept frees one place, and the handshakes that arrive within
    // the RTT (100 ms over the delay line) find it taken when their final ACK comes: dropped.
    env.must("backend a --port 8080 --single --http10 --backlog 4 --handle-ms 200");
    fs::path trace = env.work() / "overflow.jsonl";
    TraceCommand tracer(trace, env.pod());
    std::string statuses = env.load(5, 60, 30, "/app/").get();
    REQUIRE(tracer.stop() == 0);
    INFO("load: " << statuses << "nginx: " << env.error_log());
    CHECK(env.statuses()["504"] > 0);
    CHECK(contains(env.error_log(), "upstream timed out (110: Connection timed out) while"));

    auto r = report(trace, env.pod_inode());
    INFO(r.findings.dump(2) << r.text);
    const auto* f = finding(r, "accept_queue_overflow", 8080);
    REQUIRE(f);
    const auto& facts = (*f)["facts"];
    CHECK(facts["backlog"] == 4);  // min(listen(4), net.core.somaxconn)
    CHECK(facts["max_queue"].get<int>() >= 4);
    CHECK((*f)["count"].get<int>() >= 1);
    CHECK(facts["per_second"].size() >= 1);
    CHECK(contains((*f)["advice"].get<std::string>(), "net.core.somaxconn"));
    CHECK(contains((*f)["advice"].get<std::string>(), "listen("));
}

TEST_CASE("e2e: nginx gives up on slow responses: its read timeouts are an lb_response_timeout") {
    TCPWHY_REQUIRE_NGINX();
    Causes env("UPSTREAM=8080 READ_TIMEOUT=2s");
    env.must("backend a --port 8080");
    fs::path trace = env.work() / "timeout.jsonl";
    TraceCommand tracer(trace, env.pod());
    std::string statuses = env.load(6, 2, 2, "/app/slow?ms=5000").get();
    sleep_ms(3500);  // the late responses, and the resets nginx's kernel answers them with
    REQUIRE(tracer.stop() == 0);
    INFO("load: " << statuses << "nginx: " << env.error_log());
    CHECK(env.statuses()["504"] > 0);
    CHECK(contains(env.error_log(),
                   "upstream timed out (110: Connection timed out) while reading response header from upstream"));

    // Judged against nginx's real timeout (proxy_read_timeout 2s).
    auto r = report(trace, env.pod_inode(), "--lb-response-timeout 2");
    INFO(r.findings.dump(2) << r.text);
    const auto* f = finding(r, "lb_response_timeout", 8080);
    REQUIRE(f);
    const auto& facts = (*f)["facts"];
    CHECK(facts["connections"].get<int>() >= 2);
    CHECK(facts["waited"]["p50_ms"].get<int>() >= 1950);
    CHECK(facts["waited"]["p50_ms"].get<int>() <= 2300);
    CHECK(facts["lb_response_timeout_s"] == 2);
    CHECK(contains((*f)["summary"].get<std::string>(), "the LB's response timeout (2 s)"));
    CHECK(contains((*f)["advice"].get<std::string>(), "timeoutSec"));
    CHECK(contains((*f)["lb_symptom"].get<std::string>(), "backend_timeout"));
    // The late responses met nginx's closed sockets: part of the timeout, not a peer_reset finding.
    CHECK_FALSE(finding(r, "peer_reset"));
}

TEST_CASE("e2e: a backend answering before it reads the body: nginx's truncated responses are response_cut_short") {
    TCPWHY_REQUIRE_NGINX();
    Causes env("UPSTREAM=8080");
    env.must("backend a --port 8080");
    fs::path trace = env.work() / "cut.jsonl";
    TraceCommand tracer(trace, env.pod());
    std::string statuses = env.load(3, 2, 1, "/app/upload", "POST").get();
    REQUIRE(tracer.stop() == 0);
    INFO("load: " << statuses << "nginx: " << env.error_log());
    CHECK(contains(env.error_log(), "(104: Connection reset by peer) while reading upstream"));

    auto r = report(trace, env.pod_inode());
    INFO(r.findings.dump(2) << r.text);
    const auto* f = finding(r, "response_cut_short", 8080);
    REQUIRE(f);
    CHECK((*f)["evidence"]["send_queue_bytes"].get<int>() > 0);
    CHECK((*f)["evidence"]["mechanism"] == "unread_at_close");
    CHECK(contains((*f)["advice"].get<std::string>(), "read or discard the whole request"));
    CHECK(contains((*f)["lb_symptom"].get<std::string>(), "after_partial_response_sent"));
    CHECK_FALSE(finding(r, "close_with_unread_data"));
}

TEST_CASE("e2e: a client in the pod reuses connections nginx closed as idle: outbound_pool_race with nginx's 2 s") {
    TCPWHY_REQUIRE_NGINX();
    Causes env;
    fs::path trace = env.work() / "outbound.jsonl";
    TraceCommand tracer(trace, env.pod());
    auto client = env.script("client 4 2500");  // reuse after 2.5 s; nginx's keepalive_timeout is 2 s
    REQUIRE(tracer.stop() == 0);
    INFO("client: " << client.text);
    CHECK_FALSE(contains(client.text, "ok"));  // every reuse failed
    CHECK((contains(client.text, "RemoteDisconnected") || contains(client.text, "ConnectionResetError")));

    auto r = report(trace, env.pod_inode());
    INFO(r.findings.dump(2) << r.text);
    const auto* f = finding(r, "outbound_pool_race", 8082);
    REQUIRE(f);
    CHECK((*f)["backend"]["direction"] == "outbound");
    CHECK((*f)["count"] == 4);
    const auto& idle = (*f)["facts"]["upstream_idle_close"];
    CHECK(idle["p50_ms"].get<int>() >= 1950);
    CHECK(idle["p50_ms"].get<int>() <= 2200);
    CHECK((*f)["facts"]["client_idle_below_ms"].get<int>() < 2000);
    CHECK(contains((*f)["advice"].get<std::string>(), "Python"));
    CHECK_FALSE(finding(r, "peer_reset"));
}
