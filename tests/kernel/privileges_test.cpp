// The daemon's privileges the way the pod runs it: started with exactly the DaemonSet's
// capabilities (read from deploy/), then every thread's sets read from /proc/PID/task/*/status.
#include <filesystem>
#include <fstream>
#include <map>

#include "daemon_process.h"
#include "harness.h"
#include "tcpwhy/daemon/capabilities.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kKept = (uint64_t{1} << daemon::kCapBpf) | (uint64_t{1} << daemon::kCapSysPtrace);

uint64_t manifest_capability_mask() {
    static const std::map<std::string, int> numbers = {
        {"bpf", daemon::kCapBpf},         {"perfmon", daemon::kCapPerfmon},
        {"net_admin", daemon::kCapNetAdmin}, {"sys_admin", daemon::kCapSysAdmin},
        {"sys_ptrace", daemon::kCapSysPtrace}, {"dac_read_search", daemon::kCapDacReadSearch},
        {"sys_resource", 24}};
    uint64_t mask = 0;
    std::istringstream names(deploy_manifest("caps"));
    std::string name;
    while (std::getline(names, name, ',')) {
        auto it = numbers.find(name);
        if (it == numbers.end()) throw std::runtime_error("the manifest adds a capability this test does not know: " + name);
        mask |= uint64_t{1} << it->second;
    }
    return mask;
}

struct ThreadState {
    std::string comm;
    daemon::ThreadPrivileges privileges;
};

std::map<std::string, ThreadState> threads_of(pid_t pid) {
    std::map<std::string, ThreadState> out;
    for (const auto& task : fs::directory_iterator(fmt::format("/proc/{}/task", pid))) {
        ThreadState t;
        t.comm = slurp(task.path() / "comm");
        if (!t.comm.empty() && t.comm.back() == '\n') t.comm.pop_back();
        t.privileges = daemon::parse_status_privileges(slurp(task.path() / "status"));
        out[task.path().filename().string()] = t;
    }
    return out;
}

void check_every_thread_reduced(pid_t pid, uint64_t manifest_mask, size_t at_least_threads) {
    auto threads = threads_of(pid);
    CHECK(threads.size() >= at_least_threads);
    for (const auto& [tid, t] : threads) {
        INFO("thread " << tid << " (" << t.comm << "): effective " << daemon::capability_names(t.privileges.effective)
                       << ", permitted " << daemon::capability_names(t.privileges.permitted) << ", bounding "
                       << daemon::capability_names(t.privileges.bounding));
        CHECK(t.privileges.effective == kKept);
        CHECK(t.privileges.permitted == kKept);
        CHECK(t.privileges.inheritable == 0);
        CHECK(t.privileges.ambient == 0);
        CHECK(t.privileges.no_new_privs);
        // Without CAP_SETPCAP the bounding set cannot shrink; it must not have grown either.
        CHECK((t.privileges.bounding & ~manifest_mask) == 0);
    }
}

bool have(const char* tool) { return std::system(fmt::format("command -v {} >/dev/null 2>&1", tool).c_str()) == 0; }

}  // namespace

TEST_CASE("privileges: with exactly the DaemonSet's capabilities every thread keeps only CAP_BPF and CAP_SYS_PTRACE") {
    TCPWHY_REQUIRE_ROOT();
    if (!have("setpriv")) {
        WARN("SKIPPED: setpriv (util-linux) is needed to start the daemon with the DaemonSet's capabilities");
        return;
    }
    const uint64_t manifest_mask = manifest_capability_mask();
    REQUIRE((manifest_mask & kKept) == kKept);
    REQUIRE_FALSE((manifest_mask >> daemon::kCapSetpcap) & 1);  // the point: no CAP_SETPCAP in the pod

    Netns ns("caps");
    TempDir dir;
    DaemonProcess daemon(dir.path, manifest_daemon_args(), {}, with_manifest_capabilities());
    std::string log = daemon.stderr_text();
    INFO(log);
    CHECK(log.find("could not drop") == std::string::npos);
    CHECK(log.find("capabilities: effective and permitted cap_sys_ptrace,cap_bpf") != std::string::npos);
    CHECK(log.find("no CAP_SETPCAP") != std::string::npos);
    // the main thread and the server's
    check_every_thread_reduced(daemon.pid, manifest_mask, 2);

    // Still working with that little: a connection in a named namespace is traced and named
    // (reading /proc/PID/ns/net of other processes needs the CAP_SYS_PTRACE it kept).
    const uint16_t port = unique_port();
    ns.enter([port] {
        Fd listener = tcp_listen_v4("127.0.0.1", port);
        Fd client = tcp_connect_v4("127.0.0.1", port);
        accept_one(listener).reset();
        return 0;
    });
    std::string snapshot;
    for (int i = 0; i < 50 && snapshot.find(ns.name()) == std::string::npos; ++i) {
        sleep_ms(200);
        snapshot = control_request(daemon.socket, R"({"cmd":"snapshot"})");
    }
    INFO(snapshot);
    CHECK(snapshot.find(ns.name()) != std::string::npos);

    // And the open connections' idle times for top (a keep-alive connection kept open and quiet),
    // listed after the drop without entering the namespace: the held-socket iterator made before it.
    const uint16_t kept_port = unique_port();
    auto [listener, client, served] = ns.enter([kept_port] {
        Fd l = tcp_listen_v4("127.0.0.1", kept_port);
        Fd c = tcp_connect_v4("127.0.0.1", kept_port);
        Fd s = accept_one(l);
        send_all(c, "GET / HTTP/1.1\r\n\r\n");
        return std::make_tuple(std::move(l), std::move(c), std::move(s));
    });
    uint32_t sampled = 0, idle_max_ms = 0;
    for (int i = 0; i < 100 && !sampled; ++i) {  // the daemon lists them every 10 s
        sleep_ms(200);
        auto view = nlohmann::json::parse(control_request(daemon.socket, R"({"cmd":"snapshot"})"), nullptr, false);
        if (view.is_discarded()) continue;
        for (const auto& row : view["rows"])
            if (row["port"] == kept_port && !row["outbound"].get<bool>() && row["live_sampled"].get<uint32_t>() > 0) {
                sampled = row["live_sampled"].get<uint32_t>();
                idle_max_ms = row["live_idle_max_ms"].get<uint32_t>();
            }
    }
    CHECK(sampled == 1);       // the server's end (the client's is the outbound row)
    CHECK(idle_max_ms > 0);    // quiet since the request
    CHECK(daemon.get("/healthz") == "ok\n");
    CHECK(daemon.stop(SIGTERM) == 0);
}

TEST_CASE("privileges: with the API overlay the Kubernetes API thread starts after the drop") {
    TCPWHY_REQUIRE_ROOT();
    if (!have("setpriv") || !have("openssl") || !have("python3")) {
        WARN("SKIPPED: setpriv, openssl and python3 are needed (scripts/setup.sh installs them)");
        return;
    }
    TempDir dir;
    // A real HTTPS server answering like the API server (tests/support/kube_apiserver.py).
    REQUIRE(shell(fmt::format("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext "
                              "subjectAltName=IP:127.0.0.1 -keyout {0}/api.key -out {0}/api.crt",
                              dir.path.string()))
                .first == 0);
    std::ofstream(dir.path / "token") << "secret-token\n";
    pid_t api = fork();
    if (api == 0) {
        std::string src = TCPWHY_SOURCE_DIR;
        execlp("python3", "python3", (src + "/tests/support/kube_apiserver.py").c_str(), (dir.path / "api.crt").c_str(),
               (dir.path / "api.key").c_str(), "secret-token", "node-a",
               (src + "/tests/fixtures/kube/pods-list.json").c_str(),
               (src + "/tests/fixtures/kube/pods-watch.jsonl").c_str(), (dir.path / "port").c_str(), nullptr);
        _exit(127);
    }
    struct Reap {
        pid_t pid;
        ~Reap() {
            kill(pid, SIGTERM);
            waitpid(pid, nullptr, 0);
        }
    } reap{api};
    for (int i = 0; i < 1200 && !fs::exists(dir.path / "port"); ++i) sleep_ms(25);  // python is slow to start under emulation
    int api_port = 0;
    std::ifstream(dir.path / "port") >> api_port;
    REQUIRE(api_port != 0);

    std::string args = manifest_daemon_args("api-enrichment");
    REQUIRE(args.find("--kube-api") != std::string::npos);
    args += fmt::format(" --kube-api-url https://127.0.0.1:{} --kube-token-file {} --kube-ca-file {} --node-name node-a",
                        api_port, (dir.path / "token").string(), (dir.path / "api.crt").string());
    DaemonProcess daemon(dir.path, args, {}, with_manifest_capabilities());
    INFO(daemon.stderr_text());
    // The API thread names itself; wait until it is there, then check every thread.
    bool api_thread = false;
    for (int i = 0; i < 100 && !api_thread; ++i) {
        for (const auto& [tid, t] : threads_of(daemon.pid)) api_thread = api_thread || t.comm == "tcpwhy-kube-api";
        if (!api_thread) sleep_ms(50);
    }
    CHECK(api_thread);
    check_every_thread_reduced(daemon.pid, manifest_capability_mask(), 3);
    CHECK(daemon.stop(SIGTERM) == 0);
}
