// Naming on a node laid out the way the kubelet lays it out: real cgroup v2 groups with
// the kubelet's systemd and cgroupfs names, real network namespaces, real processes
// moved into both; `tcpwhy trace` and `tcpwhy report` must name the pods.
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "harness.h"
#include "tcpwhy/jsonl.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
namespace fs = std::filesystem;

namespace {

std::optional<fs::path> cgroup2_root() {
    for (const char* candidate : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"})
        if (fs::exists(fs::path(candidate) / "cgroup.controllers")) return fs::path(candidate);
    return std::nullopt;
}

// A cgroup path created on entry and removed (deepest first) on exit.
class Cgroup {
public:
    Cgroup(fs::path root, std::string path) : root_(std::move(root)), path_(std::move(path)) {
        fs::create_directories(root_ / path_);
    }
    ~Cgroup() {
        // Move anything still inside back to the root, then remove our directories bottom-up.
        for (fs::path p = path_; !p.empty() && p != "/"; p = p.parent_path()) {
            std::ifstream procs(root_ / p / "cgroup.procs");
            std::string pid;
            while (procs >> pid) std::ofstream(root_ / "cgroup.procs") << pid;
            rmdir((root_ / p).c_str());
        }
    }
    void add(pid_t pid) const {
        std::ofstream procs(root_ / path_ / "cgroup.procs");
        procs << pid;
        procs.flush();
        if (!procs) throw std::runtime_error("cannot move pid into " + (root_ / path_).string());
    }

private:
    fs::path root_;
    fs::path path_;
};

// A child process that lives in a network namespace and a cgroup until killed, like a
// pod's pause container.
class Resident {
public:
    Resident(const std::string& netns_name, const Cgroup& cgroup) {
        int ready[2];
        if (pipe(ready) != 0) throw std::runtime_error("pipe");
        pid_ = fork();
        if (pid_ == 0) {
            close(ready[0]);
            Fd ns(open(("/run/netns/" + netns_name).c_str(), O_RDONLY | O_CLOEXEC));
            if (!ns || setns(ns.get(), CLONE_NEWNET) != 0) _exit(1);
            if (write(ready[1], "x", 1) != 1) _exit(1);
            close(ready[1]);
            for (;;) pause();
        }
        close(ready[1]);
        char c;
        bool ok = read(ready[0], &c, 1) == 1;
        close(ready[0]);
        if (!ok) throw std::runtime_error("resident process failed to enter " + netns_name);
        cgroup.add(pid_);
    }
    ~Resident() {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }

private:
    pid_t pid_ = -1;
};

const std::string kPodUid = "8d3c6a2e-1f4b-4c7d-9e2a-5b6c7d8e9f01";
const std::string kHostNetUid = "11111111-2222-3333-4444-555555555555";
const std::string kContainerId = "3f2a9c1b0d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

std::string systemd_uid(std::string uid) {
    std::replace(uid.begin(), uid.end(), '-', '_');
    return uid;
}

}  // namespace

TEST_CASE("trace and report name the pod behind a race (kubelet cgroups, pod netns, hostNetwork pod)") {
    TCPWHY_REQUIRE_ROOT();
    auto root = cgroup2_root();
    if (!root) {
        WARN("SKIPPED: no cgroup v2 hierarchy mounted (/sys/fs/cgroup or /sys/fs/cgroup/unified)");
        return;
    }
    const std::string tag = std::to_string(getpid());
    // systemd driver, containerd, burstable: the pod with its own network namespace
    Cgroup pod_cgroup(*root, fmt::format("kubepods.slice/kubepods-burstable.slice/tcpwhy{}-kubepods-burstable-pod{}.slice/"
                                         "cri-containerd-{}.scope",
                                         tag, systemd_uid(kPodUid), kContainerId));
    // cgroupfs driver, CRI-O, besteffort: a hostNetwork pod
    Cgroup hostnet_cgroup(*root, fmt::format("kubepods-tcpwhy{}/besteffort/pod{}/crio-{}", tag, kHostNetUid,
                                             std::string(64, 'b')));

    fs::path pod_logs = fs::temp_directory_path() / ("tcpwhy-pods-" + tag);
    fs::create_directories(pod_logs / ("shop_web-5d9c7f-abcde_" + kPodUid) / "server");
    fs::create_directories(pod_logs / ("monitoring_node-exporter-xyz_" + kHostNetUid) / "exporter");
    fs::create_directories(pod_logs / "garbage-entry");

    LbAndPod net;
    Resident pause(net.pod.name(), pod_cgroup);

    // The hostNetwork pod's server: listens in the host's namespace from inside its cgroup.
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    pid_t exporter = fork();
    if (exporter == 0) {
        close(ready[0]);
        std::ofstream(*root / fmt::format("kubepods-tcpwhy{}/besteffort/pod{}/crio-{}", tag, kHostNetUid,
                                          std::string(64, 'b')) /
                      "cgroup.procs")
            << getpid();
        Fd listener = tcp_listen_v4("127.0.0.1", 19100);
        if (write(ready[1], "x", 1) != 1) _exit(1);
        Fd conn = accept_one(listener);
        recv_some(conn);
        send_all(conn, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        sleep_ms(1200);  // idle, then this backend closes
        conn.reset();
        sleep_ms(500);
        _exit(0);
    }
    close(ready[1]);

    std::string trace_file = fmt::format("/tmp/tcpwhy-test-{}-names.jsonl", tag);
    std::string out = trace_file + ".out", err = trace_file + ".err";
    pid_t tracer = fork();
    if (tracer == 0) {
        auto cmd = fmt::format("exec {} trace --pod-logs {} -o {} >{} 2>{}", TCPWHY_BINARY, pod_logs.string(),
                               trace_file, out, err);
        execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
        _exit(127);
    }
    for (int i = 0; i < 300 && slurp(err).find("tracing TCP") == std::string::npos; ++i) sleep_ms(20);
    REQUIRE(slurp(err).find("tracing TCP") != std::string::npos);
    char c;
    REQUIRE(read(ready[0], &c, 1) == 1);
    close(ready[0]);

    // The keep-alive race against the pod (sockets made in its namespace).
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, 8080); });
    Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, 8080); });
    Fd server = accept_one(listener);
    send_all(client, "GET / HTTP/1.1\r\n\r\n");
    recv_some(server);
    send_all(server, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    recv_some(client);
    // Meanwhile a client of the hostNetwork exporter.
    Fd scrape = tcp_connect_v4("127.0.0.1", 19100);
    send_all(scrape, "GET /metrics HTTP/1.1\r\n\r\n");
    recv_some(scrape);
    sleep_ms(1300);
    server.reset();
    send_all(client, "GET /again HTTP/1.1\r\n\r\n");
    waitpid(exporter, nullptr, 0);
    sleep_ms(600);

    kill(tracer, SIGTERM);
    int status = 0;
    waitpid(tracer, &status, 0);
    std::string text = slurp(out);
    INFO(text << slurp(err));
    CHECK(WEXITSTATUS(status) == 0);

    // Live: the event lines carry the pod's name, and so does the verdict.
    CHECK(text.find("web-5d9c7f-abcde") != std::string::npos);
    CHECK(text.find("pod shop/web-5d9c7f-abcde") != std::string::npos);

    // Postmortem: the trace carries the names; report names both pods.
    std::string report_out = trace_file + ".report";
    int rc = std::system(fmt::format("{} report --lb-idle-timeout 600 {} >{} 2>&1", TCPWHY_BINARY, trace_file,
                                     report_out)
                             .c_str());
    std::string report = slurp(report_out);
    INFO(report);
    CHECK(WEXITSTATUS(rc) == 0);
    auto race = report.find("idle_close_race");
    REQUIRE(race != std::string::npos);
    CHECK(report.find("pod shop/web-5d9c7f-abcde", race) != std::string::npos);
    CHECK(report.find("node-exporter-xyz") != std::string::npos);

    fs::remove_all(pod_logs);
    for (const auto& f : {trace_file, out, err, report_out}) unlink(f.c_str());
}
