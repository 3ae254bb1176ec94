// Workload naming: the kubelet's and runtimes' cgroup and log names, the table, and the
// resolver run against a fake host root built from real files, symlinks and directories.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "tcpwhy/jsonl.h"
#include "tcpwhy/report.h"
#include "tcpwhy/workload.h"
#include "tcpwhy/workload_resolver.h"
#include "fake_host.h"

using namespace tcpwhy;
using tcpwhy::test::FakeHost;
namespace fs = std::filesystem;

namespace {

const std::string kUid = "8d3c6a2e-1f4b-4c7d-9e2a-5b6c7d8e9f01";
const std::string kUidSystemd = "8d3c6a2e_1f4b_4c7d_9e2a_5b6c7d8e9f01";
const std::string kId = "3f2a9c1b0d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

struct CgroupCase {
    std::string path;
    std::string qos, driver, runtime;
    bool has_container;
};

}  // namespace

TEST_CASE("kubelet cgroup names: every driver, runtime and QoS class", "[workload]") {
    const std::vector<CgroupCase> cases = {
        // cgroupfs driver (cgroup v1 and v2 alike)
        {"/kubepods/pod" + kUid + "/" + kId, "guaranteed", "cgroupfs", "", true},
        {"/kubepods/burstable/pod" + kUid + "/" + kId, "burstable", "cgroupfs", "", true},
        {"/kubepods/besteffort/pod" + kUid + "/crio-" + kId, "besteffort", "cgroupfs", "cri-o", true},
        {"/kubepods/burstable/pod" + kUid, "burstable", "cgroupfs", "", false},
        // systemd driver: containerd, CRI-O, Docker scopes
        {"/kubepods.slice/kubepods-pod" + kUidSystemd + ".slice/cri-containerd-" + kId + ".scope", "guaranteed",
         "systemd", "containerd", true},
        {"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kUidSystemd + ".slice/crio-" + kId +
             ".scope",
         "burstable", "systemd", "cri-o", true},
        {"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + kUidSystemd + ".slice/docker-" + kId +
             ".scope",
         "besteffort", "systemd", "docker", true},
        // kind / nested kubelet, and a path seen from inside a cgroup namespace
        {"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
         "kubelet-kubepods-besteffort-pod" +
             kUidSystemd + ".slice/cri-containerd-" + kId + ".scope",
         "besteffort", "systemd", "containerd", true},
        {"/../../kubepods/burstable/pod" + kUid + "/" + kId, "burstable", "cgroupfs", "", true},
        // CRI-O's monitor is not the container
        {"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kUidSystemd + ".slice/crio-conmon-" +
             kId + ".scope",
         "burstable", "systemd", "", false},
    };
    for (const auto& c : cases) {
        INFO(c.path);
        auto id = parse_cgroup_path(c.path);
        REQUIRE(id);
        CHECK(id->kubernetes);
        CHECK(id->pod_uid == kUid);
        CHECK(id->qos == c.qos);
        CHECK(id->driver == c.driver);
        CHECK(id->runtime == c.runtime);
        CHECK(id->container_id == (c.has_container ? kId : ""));
    }
}

TEST_CASE("cgroup names off Kubernetes, and paths that name nothing", "[workload]") {
    auto docker = parse_cgroup_path("/system.slice/docker-" + kId + ".scope");
    REQUIRE(docker);
    CHECK_FALSE(docker->kubernetes);
    CHECK(docker->runtime == "docker");
    CHECK(docker->container_id == kId);
    auto docker_v1 = parse_cgroup_path("/docker/" + kId);
    REQUIRE(docker_v1);
    CHECK(docker_v1->runtime == "docker");
    auto podman = parse_cgroup_path("/machine.slice/libpod-" + kId + ".scope");
    REQUIRE(podman);
    CHECK(podman->runtime == "podman");

    CHECK_FALSE(parse_cgroup_path("/"));
    CHECK_FALSE(parse_cgroup_path("/user.slice/user-0.slice/session-3.scope"));
    CHECK_FALSE(parse_cgroup_path("/system.slice/nginx.service"));
    CHECK_FALSE(parse_cgroup_path("/some/" + kId));  // a bare id outside /docker is not a container
    // Malformed pod UIDs and QoS-level slices: not a pod
    CHECK_FALSE(parse_cgroup_path("/kubepods/burstable/podnot-a-uid/" + kId));
    CHECK_FALSE(parse_cgroup_path("/kubepods.slice/kubepods-burstable.slice"));
    CHECK(looks_like_kubepods("/kubepods/burstable/podnot-a-uid/" + kId));
}

TEST_CASE("/proc/<pid>/cgroup: v2 path first, else a v1 controller's", "[workload]") {
    CHECK(cgroup_path_of("0::/kubepods/pod" + kUid + "/" + kId + "\n") == "/kubepods/pod" + kUid + "/" + kId);
    std::string v1 = "12:pids:/kubepods/burstable/pod" + kUid + "/" + kId + "\n" +
                     "11:cpu,cpuacct:/kubepods/burstable/pod" + kUid + "/" + kId + "\n" + "1:name=systemd:/\n";
    CHECK(cgroup_path_of(v1) == "/kubepods/burstable/pod" + kUid + "/" + kId);
    std::string hybrid = "4:memory:/user.slice\n0::/system.slice/docker-" + kId + ".scope\n";
    CHECK(cgroup_path_of(hybrid) == "/system.slice/docker-" + kId + ".scope");
    CHECK_FALSE(cgroup_path_of("garbage without colons\n"));
}

TEST_CASE("/var/log/pods and /var/log/containers names", "[workload]") {
    auto dir = parse_pod_log_dir("payments_api-7c9d8f6b5-x2x4k_" + kUid);
    REQUIRE(dir);
    CHECK(dir->namespace_name == "payments");
    CHECK(dir->pod == "api-7c9d8f6b5-x2x4k");
    CHECK(dir->uid == kUid);
    CHECK_FALSE(parse_pod_log_dir("payments_api"));
    CHECK_FALSE(parse_pod_log_dir("payments_api_not-a-uid"));
    CHECK_FALSE(parse_pod_log_dir("a_b_c_" + kUid));

    auto link = parse_container_log_name("api-7c9d8f6b5-x2x4k_payments_server-" + kId + ".log");
    REQUIRE(link);
    CHECK(link->pod == "api-7c9d8f6b5-x2x4k");
    CHECK(link->namespace_name == "payments");
    CHECK(link->container == "server");
    CHECK(link->container_id == kId);
    CHECK_FALSE(parse_container_log_name("api_payments_server.log"));
}

TEST_CASE("the table: a pod's namespace names it -- in the host's, the owner's cgroup does", "[workload]") {
    WorkloadTable table;
    Workload pod;
    pod.kind = WorkloadKind::pod;
    pod.namespace_name = "default";
    pod.pod = "web-1";
    Workload host;
    host.kind = WorkloadKind::host;
    Workload host_network_pod = pod;
    host_network_pod.pod = "node-exporter-abcde";
    table.set_netns(100, pod);
    table.set_netns(1, host);
    table.set_cgroup(777, host_network_pod);

    REQUIRE(table.lookup(100, 0));
    CHECK(table.lookup(100, 0)->pod == "web-1");
    CHECK(table.lookup(100, 777)->pod == "web-1");  // the pod's own namespace wins over any owner
    CHECK(table.lookup(1, 777)->pod == "node-exporter-abcde");
    CHECK(table.lookup(1, 0)->kind == WorkloadKind::host);
    CHECK(table.lookup(1, 555)->kind == WorkloadKind::host);
    CHECK(table.lookup(42, 0) == nullptr);
    CHECK(table.lookup(42, 777)->pod == "node-exporter-abcde");
}

namespace {

}  // namespace

TEST_CASE("the resolver names pods, ip-netns namespaces, processes and hostNetwork owners", "[workload]") {
    FakeHost host;
    const uint32_t kHostNs = 4026531840, kPodNs = 4026532100, kBareNs = 4026532200;
    const std::string pod_cgroup = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + kUidSystemd +
                                   ".slice/cri-containerd-" + kId + ".scope";
    const std::string other_uid = "11111111-2222-3333-4444-555555555555";
    const std::string hostnet_cgroup = "/kubepods/besteffort/pod" + other_uid + "/crio-" + std::string(64, 'a');

    host.process(1, kHostNs, "/init.scope", "systemd");
    host.process(2, kHostNs, "/", "kthreadd");
    host.process(300, kPodNs, pod_cgroup, "node");
    host.process(400, kBareNs, "/user.slice/session-1.scope", "sleep");
    host.process(500, kHostNs, hostnet_cgroup, "node_exporter");
    // A process that vanished between listing and reading: no ns/net link.
    fs::create_directories(host.root / "proc/600");
    const uint32_t named = host.named_netns("blue");
    host.write(host.root / "var/log/pods" / ("shop_web-5d9c7f-abcde_" + kUid) / "server/0.log", "");
    host.write(host.root / "var/log/pods" / ("monitoring_node-exporter-xyz_" + other_uid) / "exporter/0.log", "");
    host.write(host.root / "var/log/pods/not-a-pod-dir/x/0.log", "");
    const uint64_t pod_cgroup_id = host.cgroup_dir(pod_cgroup);
    const uint64_t hostnet_cgroup_id = host.cgroup_dir(hostnet_cgroup);
    host.cgroup_dir("/kubepods/burstable/podnot-a-uid");

    ResolverOptions options;
    options.host_root = host.root.string();
    WorkloadResolver resolver(options);
    resolver.scan(1);
    auto table = resolver.table();
    const auto& counters = resolver.counters();

    CHECK(resolver.host_netns() == kHostNs);
    const Workload* pod = table->lookup(kPodNs, 0);
    REQUIRE(pod);
    CHECK(pod->kind == WorkloadKind::pod);
    CHECK(pod->namespace_name == "shop");
    CHECK(pod->pod == "web-5d9c7f-abcde");
    CHECK(pod->container == "server");
    CHECK(pod->qos == "burstable");
    CHECK(pod->runtime == "containerd");
    CHECK(pod->container_id == kId);

    const Workload* blue = table->lookup(named, 0);
    REQUIRE(blue);
    CHECK(blue->kind == WorkloadKind::netns);
    CHECK(blue->name() == "blue");

    const Workload* bare = table->lookup(kBareNs, 0);
    REQUIRE(bare);
    CHECK(bare->kind == WorkloadKind::process);
    CHECK(bare->name() == "sleep[400]");

    CHECK(table->lookup(kHostNs, 0)->kind == WorkloadKind::host);
    const Workload* hostnet = table->lookup(kHostNs, hostnet_cgroup_id);
    REQUIRE(hostnet);
    CHECK(hostnet->pod == "node-exporter-xyz");
    CHECK(hostnet->namespace_name == "monitoring");
    CHECK(hostnet->runtime == "cri-o");
    CHECK(table->lookup(kPodNs, pod_cgroup_id)->pod == "web-5d9c7f-abcde");

    CHECK(counters.pods == 2);
    CHECK(counters.malformed_pod_dirs == 1);
    CHECK(counters.malformed_cgroups == 1);
    CHECK(counters.vanished_pids == 1);
    CHECK(counters.processes_seen == 6);

    // Every name became a trace record, once.
    auto records = resolver.take_changes();
    // 4 namespaces (host, pod, bare, blue) + 4 cgroups (two pods: pod level and container)
    CHECK(records.size() == 8);
    resolver.scan(2);
    CHECK(resolver.take_changes().empty());
}

TEST_CASE("the resolver rescans on a new namespace, at most once per interval", "[workload]") {
    FakeHost host;
    host.process(2, 4026531840, "/", "kthreadd");
    ResolverOptions options;
    options.host_root = host.root.string();
    options.min_rescan_interval_ns = 1'000'000'000;
    WorkloadResolver resolver(options);
    resolver.scan(0);
    CHECK(resolver.counters().scans == 1);

    Event e;
    e.netns = 4026532999;
    e.ts_ns = 10'000'000'000;
    CHECK(resolver.resolve(e, e.ts_ns) == nullptr);  // a miss: scans, still unknown
    CHECK(resolver.counters().scans == 2);
    for (int i = 0; i < 1000; ++i) resolver.resolve(e, e.ts_ns + i);  // no scan per event
    CHECK(resolver.counters().scans == 2);

    host.process(700, 4026532999, "/", "envoy");  // the namespace gets a process
    Event other;
    other.netns = 4026533000;
    resolver.resolve(other, e.ts_ns + 500'000'000);  // another miss, but within the interval
    CHECK(resolver.counters().scans == 2);
    CHECK(resolver.tick(e.ts_ns + 1'500'000'000));  // the pending miss is served
    CHECK(resolver.counters().scans == 3);
    REQUIRE(resolver.resolve(e, e.ts_ns + 1'600'000'000));
    CHECK(resolver.resolve(e, e.ts_ns + 1'600'000'000)->name() == "envoy[700]");
}

TEST_CASE("workload lines round-trip and name backends when a trace is replayed", "[workload]") {
    WorkloadRecord record;
    record.netns = 4026532100;
    record.workload.kind = WorkloadKind::pod;
    record.workload.namespace_name = "shop";
    record.workload.pod = "web-\"quoted\"";
    record.workload.labels = {{"app", "web"}};
    auto parsed = parse_json_line(to_json_line(record));
    REQUIRE(parsed.kind == LineKind::workload);
    CHECK(parsed.workload.netns == record.netns);
    CHECK(parsed.workload.workload == record.workload);
    CHECK(parse_json_line(R"({"v":1,"type":"workload","kind":"pod"})").kind == LineKind::bad);
    CHECK(parse_json_line(R"({"v":1,"type":"workload","netns":5,"kind":"martian"})").kind == LineKind::bad);

    // The recorded race, with a name for its backend's namespace added to the trace.
    std::ifstream fixture(std::string(TCPWHY_SOURCE_DIR) + "/tests/fixtures/node_keepalive_race.jsonl");
    REQUIRE(fixture);
    std::string line, trace;
    uint32_t backend_netns = 0;
    while (std::getline(fixture, line)) {
        trace += line + "\n";
        auto p = parse_json_line(line);
        if (p.kind == LineKind::event && p.event.lport == 8080 && !backend_netns) backend_netns = p.event.netns;
    }
    REQUIRE(backend_netns);
    record.netns = backend_netns;
    record.workload.pod = "web-1";
    trace += to_json_line(record) + "\n";
    fs::path path = fs::temp_directory_path() / fmt::format("tcpwhy-workload-{}.jsonl", getpid());
    std::ofstream(path) << trace;
    ReportOptions options;
    options.inputs = {path.string()};
    std::ostringstream out, err;
    CHECK(run_report(options, out, err) == kReportOk);
    fs::remove(path);
    INFO(out.str() << err.str());
    CHECK(out.str().find("pod shop/web-1") != std::string::npos);
}
