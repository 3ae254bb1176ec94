// Several nodes as an operator meets them: real daemons, each in a UTS namespace of its own (its
// own node name) and a mount namespace where its socket sits at the same in-pod path as the
// others' (as in a DaemonSet's pods), the keep-alive race in test namespaces, and then
// `top --connect` of them all (by socket and through `tcpwhy relay`), each node's export reported
// together, two recordings of different network setups, and the kubectl plugin driven through a
// kubectl stand-in.
#include <signal.h>
#include <sys/wait.h>

#include <map>
#include <regex>

#include "daemon_process.h"
#include "harness.h"
#include "tcpwhy/jsonl.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
using nlohmann::json;

namespace {

constexpr uint16_t kPort = 8080;

std::string shell_quoted(std::string_view text) {
    std::string out = "'";
    for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

// Exit code, stdout and stderr of a command apart.
struct Ran {
    int code = -1;
    std::string out, err;
};
Ran run_apart(const std::string& command, const fs::path& scratch) {
    static int runs = 0;
    auto out = scratch / fmt::format("run-{}.out", ++runs), err = scratch / fmt::format("run-{}.err", runs);
    int status = std::system(fmt::format("{} >{} 2>{}", command, out.string(), err.string()).c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

// `tcpwhy daemon` as one node of a cluster: hostname `name` in a UTS namespace of its own, and in
// a mount namespace of its own its directory mounted at `in_pod` (every node's socket at one
// path, as every DaemonSet pod has it at /run/tcpwhy). Host-side it is all in `dir`.
class NodeDaemon {
public:
    NodeDaemon(std::string name, const fs::path& dir, const fs::path& in_pod) : name_(std::move(name)), dir_(dir) {
        fs::create_directories(dir_);
        std::string inner = fmt::format(
            "hostname {0} && mount --bind {1} {2} && exec {3} daemon --archive {2}/archive --socket {2}/tcpwhy.sock "
            "--metrics-addr 127.0.0.1:0 --archive-min-free 0",
            name_, dir_.string(), in_pod.string(), TCPWHY_BINARY);
        std::string cmd = fmt::format("exec unshare --uts --mount --propagation private sh -c {} >{} 2>&1",
                                      shell_quoted(inner), (dir_ / "daemon.err").string());
        pid_ = fork();
        if (pid_ == 0) {
            execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
            _exit(127);
        }
        for (int i = 0; i < 3000; ++i) {
            if (stderr_text().find("metrics http://") != std::string::npos) return;
            int status;
            if (waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                throw std::runtime_error(name_ + ": daemon exited at start: " + stderr_text());
            }
            sleep_ms(20);
        }
        throw std::runtime_error(name_ + ": daemon did not start within 60 s: " + stderr_text());
    }
    ~NodeDaemon() {
        if (pid_ > 0) stop();
    }
    NodeDaemon(const NodeDaemon&) = delete;
    NodeDaemon& operator=(const NodeDaemon&) = delete;

    int stop() {
        kill(pid_, SIGTERM);
        int status = 0;
        waitpid(pid_, &status, 0);
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    const std::string& name() const { return name_; }
    pid_t pid() const { return pid_; }
    std::string socket() const { return (dir_ / "tcpwhy.sock").string(); }  // the host's path to it
    std::string stderr_text() const { return slurp(dir_ / "daemon.err"); }

private:
    std::string name_;
    fs::path dir_;
    pid_t pid_ = -1;
};

// `rounds` times: two keep-alive connections from the LB, idle past 1 s, closed by the backend,
// and the LB's next request on each: 2 * rounds idle_close_race resets.
void keepalive_race(const LbAndPod& net, const Fd& listener, int rounds, const char* from = LbAndPod::kPodAddr) {
    for (int round = 0; round < rounds; ++round) {
        std::vector<std::pair<Fd, Fd>> connections;
        for (int i = 0; i < 2; ++i) {
            Fd client = net.lb.enter([from] { return tcp_connect_v4(from, kPort); });
            Fd server = accept_one(listener);
            send_all(client, "GET / HTTP/1.1\r\nHost: pod\r\n\r\n");
            recv_some(server);
            send_all(server, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            recv_some(client);
            connections.emplace_back(std::move(client), std::move(server));
        }
        sleep_ms(1200);
        for (auto& [client, server] : connections) {
            server.reset();
            send(client.get(), "GET /next HTTP/1.1\r\n\r\n", 22, MSG_NOSIGNAL);
        }
        sleep_ms(100);
    }
}

// A daemon's own view (top --json), as JSON.
json snapshot_of(const std::string& source) {
    auto [rc, out] = shell(fmt::format("{} top --connect {} --json", TCPWHY_BINARY, shell_quoted(source)));
    INFO(out);
    REQUIRE(rc == 0);
    return json::parse(out);
}

// The row of the pod's backend (by netns inode and port) of `node` in a view's rows.
const json* pod_row(const json& view, uint32_t netns, const std::string& node = "") {
    for (const auto& row : view["rows"])
        if (row["netns"] == netns && row["port"] == kPort && !row["outbound"].get<bool>() &&
            row.value("node", std::string()) == node)
            return &row;
    return nullptr;
}

// Waits until each daemon has counted `races` for the pod's backend; their views then stay put.
void wait_for_races(const std::vector<const NodeDaemon*>& daemons, uint32_t netns, uint64_t races) {
    for (const auto* d : daemons) {
        json view;
        for (int i = 0; i < 100; ++i) {
            view = snapshot_of(d->socket());
            const json* row = pod_row(view, netns);
            if (row && (*row)["resets_races"] == races) break;
            sleep_ms(100);
        }
        INFO(d->name() << ": " << view.dump());
        const json* row = pod_row(view, netns);
        REQUIRE(row);
        REQUIRE((*row)["resets_races"] == races);
    }
}

json report_json(const std::string& files, const fs::path& scratch) {
    Ran r = run_apart(fmt::format("{} report --json {}", TCPWHY_BINARY, files), scratch);
    INFO(r.err);
    REQUIRE(r.code == 0);
    return json::parse(r.out);
}

const json& node_of(const json& report, const std::string& name) {
    for (const auto& n : report["nodes"])
        if (n["name"] == name) return n;
    FAIL("no node " << name << ": " << report["nodes"].dump());
    throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE(
    "cluster: top of two daemons has a row per node and backend, by socket and through tcpwhy relay -- their "
    "exports report as two nodes whose counts add up") {
    TCPWHY_REQUIRE_ROOT();
    TempDir dir;
    LbAndPod net;
    fs::path in_pod = dir.path / "pod";
    fs::create_directories(in_pod);
    NodeDaemon a("node-a", dir.path / "a", in_pod), b("node-b", dir.path / "b", in_pod);
    INFO(a.stderr_text() << b.stderr_text());
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    keepalive_race(net, listener, 2);
    const uint32_t netns = net.pod.inode();
    // Both daemons trace this one machine: the same backend, the same netns inode and port on
    // both nodes, which is how the host's namespace looks from every real node.
    wait_for_races({&a, &b}, netns, 4);

    // By socket: one view, a row per node for the backend both saw, each as its own daemon has it.
    const std::string both = fmt::format("--connect {} --connect {}", a.socket(), b.socket());
    auto [rc, merged_text] = shell(fmt::format("{} top {} --json", TCPWHY_BINARY, both));
    REQUIRE(rc == 0);
    json merged = json::parse(merged_text);
    REQUIRE(merged["nodes"].size() == 2);
    for (const auto* d : {&a, &b}) {
        const json* row = pod_row(merged, netns, d->name());
        INFO(d->name() << ": " << merged_text);
        REQUIRE(row);
        json own_view = snapshot_of(d->socket());
        const json* own = pod_row(own_view, netns);
        REQUIRE(own);
        CHECK((*row)["resets_races"] == (*own)["resets_races"]);
        CHECK((*row)["idle_closes"] == (*own)["idle_closes"]);
        CHECK((*row)["verdict"] == "idle_close_race");
    }
    // The merged header sums the nodes' own (each counted at least its races' events).
    uint64_t nodes_total = 0;
    for (const auto& node : merged["nodes"]) {
        CHECK(node["header"]["events_total"].get<uint64_t>() >= 8);
        nodes_total += node["header"]["events_total"].get<uint64_t>();
    }
    CHECK(merged["header"]["events_total"].get<uint64_t>() == nodes_total);

    auto plain = shell(fmt::format("{} top {} --once", TCPWHY_BINARY, both));
    INFO(plain.second);
    CHECK(plain.first == 0);
    CHECK(plain.second.find("tcpwhy top  2 nodes (node-a, node-b)  LB gcp (idle timeout 600 s)") == 0);
    for (const char* node : {"node-a", "node-b"}) {
        CHECK(
            std::regex_search(plain.second, std::regex(fmt::format(R"(\n{} +{} +- +{} .* 4/0 +\d+ .*idle_close_race\n)",
                                                                   node, net.pod.name(), kPort))));
        CHECK(plain.second.find(fmt::format("\n== {} on {} ==\n", net.pod.name(), node)) != std::string::npos);
    }

    // In a terminal (tmux): the NODE column, both nodes' rows, the header naming both; q quits.
    {
        const std::string tmux = fmt::format("tmux -L tcpwhy-cluster-{} -f /dev/null", getpid());
        auto screen = [&] { return shell(tmux + " capture-pane -p -t top").second; };
        REQUIRE(shell(fmt::format("{} new-session -d -s top -x 200 -y 40 {}", tmux,
                                  shell_quoted(fmt::format("LANG=C.UTF-8 {} top {} --interval 0.5; sleep 30",
                                                           TCPWHY_BINARY, both))))
                    .first == 0);
        std::string text = screen();
        for (int i = 0; i < 100 && text.find("node-b ") == std::string::npos; ++i) {
            sleep_ms(100);
            text = screen();
        }
        fs::create_directories(TCPWHY_ARTIFACT_DIR);
        std::ofstream(fs::path(TCPWHY_ARTIFACT_DIR) / "top-two-nodes.txt") << text;  // for people to look at
        INFO(text);
        CHECK(text.find("tcpwhy top  2 nodes (node-a, node-b)  LB gcp") == 0);
        CHECK(std::regex_search(text, std::regex(R"(\nNODE +POD +NAMESPACE +PORT)")));
        for (const char* node : {"node-a", "node-b"})
            CHECK(std::regex_search(text, std::regex(fmt::format(R"(\n{} +{} +- +{} )", node, net.pod.name(), kPort))));
        shell(tmux + " send-keys -t top q");
        shell(tmux + " kill-server");
    }

    // Through `tcpwhy relay` as the transport (what kubectl exec -i carries): the same rows.
    const std::string relayed = fmt::format(
        "--connect {} --connect {}", shell_quoted(fmt::format("exec:{} relay --socket {}", TCPWHY_BINARY, a.socket())),
        shell_quoted(fmt::format("exec:{} relay --socket {}", TCPWHY_BINARY, b.socket())));
    auto [relay_rc, relay_text] = shell(fmt::format("{} top {} --json", TCPWHY_BINARY, relayed));
    INFO(relay_text);
    REQUIRE(relay_rc == 0);
    json via_relay = json::parse(relay_text);
    for (const auto* d : {&a, &b}) {
        const json* row = pod_row(via_relay, netns, d->name());
        REQUIRE(row);
        CHECK((*row)["resets_races"] == 4);
    }

    // A daemon that cannot be reached: the others still show, it is named, and the exit code says so.
    auto partial = run_apart(fmt::format("{} top --connect {} --connect {} --once", TCPWHY_BINARY, a.socket(),
                                         (dir.path / "absent.sock").string()),
                             dir.path);
    CHECK(partial.code == 1);
    CHECK(partial.out.find("2 nodes (node-a, ") != std::string::npos);
    CHECK(partial.out.find("NOT ANSWERING: " + (dir.path / "absent.sock").string() + ": cannot connect") !=
          std::string::npos);
    CHECK(partial.err.find("not in the view: " + (dir.path / "absent.sock").string() + ": cannot connect") !=
          std::string::npos);

    // Each node's export, reported together: two nodes, each as its own report has it, the cluster the sum.
    for (const auto* d : {&a, &b})
        REQUIRE(shell(fmt::format("{} export --since 10m --socket {} -o {}/{}.jsonl.gz", TCPWHY_BINARY, d->socket(),
                                  dir.path.string(), d->name()))
                    .first == 0);
    const std::string a_file = (dir.path / "node-a.jsonl.gz").string(),
                      b_file = (dir.path / "node-b.jsonl.gz").string();
    json only_a = report_json(a_file, dir.path), only_b = report_json(b_file, dir.path);
    json cluster = report_json(a_file + " " + b_file, dir.path);
    REQUIRE(cluster["nodes"].size() == 2);
    CHECK(node_of(cluster, "node-a")["counts"] == only_a["counts"]);
    CHECK(node_of(cluster, "node-b")["counts"] == only_b["counts"]);
    CHECK(node_of(cluster, "node-a")["boot_id"] == node_of(cluster, "node-b")["boot_id"]);  // one machine
    for (const char* field : {"events", "connections", "follow_up_resets"})
        CHECK(cluster["counts"][field] ==
              only_a["counts"][field].get<uint64_t>() + only_b["counts"][field].get<uint64_t>());
    CHECK(cluster["counts"]["resets"]["idle_close_race"] ==
          only_a["counts"]["resets"]["idle_close_race"].get<uint64_t>() +
              only_b["counts"]["resets"]["idle_close_race"].get<uint64_t>());
    uint64_t races_on_pod = 0;
    for (const auto& f : cluster["findings"])
        if (f["kind"] == "idle_close_race" && f["backend"]["netns"] == netns)
            races_on_pod += f["count"].get<uint64_t>();
    CHECK(races_on_pod == 8);  // 4 on each node, none merged away as follow-ups
    // One file holding both nodes' exports one after the other (gzip members) reads the same.
    shell(fmt::format("cat {} {} > {}/both.jsonl.gz", a_file, b_file, dir.path.string()));
    CHECK(report_json((dir.path / "both.jsonl.gz").string(), dir.path)["counts"] == cluster["counts"]);

    CHECK(a.stop() == 0);
    CHECK(b.stop() == 0);
}

TEST_CASE("cluster: two recordings of different network setups under two node names report as two nodes that add up") {
    TCPWHY_REQUIRE_ROOT();
    TempDir dir;
    // Records `tcpwhy trace -o` as node `name` (a UTS namespace of its own) while `traffic` runs.
    auto record = [&](const std::string& name, const std::string& netns, const std::function<void()>& traffic) {
        fs::path file = dir.path / (name + ".jsonl"), err = dir.path / (name + ".err");
        std::string inner = fmt::format("hostname {} && exec {} trace --netns {} -o {} >/dev/null", name, TCPWHY_BINARY,
                                        netns, file.string());
        pid_t child = fork();
        if (child == 0) {
            std::string cmd = fmt::format("exec unshare --uts sh -c {} 2>{}", shell_quoted(inner), err.string());
            execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
            _exit(127);
        }
        for (int i = 0; i < 1500 && slurp(err).find("tracing TCP") == std::string::npos; ++i) sleep_ms(20);
        REQUIRE(slurp(err).find("tracing TCP") != std::string::npos);
        traffic();
        sleep_ms(300);
        kill(child, SIGTERM);
        int status = 0;
        waitpid(child, &status, 0);
        INFO(slurp(err));
        REQUIRE(WEXITSTATUS(status) == 0);
        return file.string();
    };
    // Setup A: the lb and pod namespaces joined by a veth pair; the LB at 130.211.0.143; port 8080.
    std::string a_file;
    {
        LbAndPod net;
        a_file = record("node-a", net.pod.name(), [&] {
            Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
            keepalive_race(net, listener, 2);
        });
    }
    // Setup B: one namespace, over loopback; the LB at 35.191.0.20 (the other GCP range), the
    // backend at 10.60.0.7:9090, three rounds of the race.
    std::string b_file;
    {
        Netns ns("loop");
        run(fmt::format("ip -n {} addr add 35.191.0.20/16 dev lo", ns.name()));
        run(fmt::format("ip -n {} addr add 10.60.0.7/16 dev lo", ns.name()));
        b_file = record("node-b", ns.name(), [&] {
            ns.enter([] {
                Fd listener = tcp_listen_v4("10.60.0.7", 9090);
                for (int round = 0; round < 3; ++round) {
                    std::vector<std::pair<Fd, Fd>> connections;
                    for (int i = 0; i < 2; ++i) {
                        Fd client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
                        sockaddr_in from = v4("35.191.0.20", 0), to = v4("10.60.0.7", 9090);
                        REQUIRE(bind(client.get(), reinterpret_cast<sockaddr*>(&from), sizeof(from)) == 0);
                        REQUIRE(connect(client.get(), reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 0);
                        Fd server = accept_one(listener);
                        send_all(client, "GET / HTTP/1.1\r\n\r\n");
                        recv_some(server);
                        send_all(server, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                        recv_some(client);
                        connections.emplace_back(std::move(client), std::move(server));
                    }
                    sleep_ms(1200);
                    for (auto& [client, server] : connections) {
                        server.reset();
                        send(client.get(), "GET /next HTTP/1.1\r\n\r\n", 22, MSG_NOSIGNAL);
                    }
                    sleep_ms(100);
                }
                return 0;
            });
        });
    }
    if (const char* keep = std::getenv("TCPWHY_KEEP_RECORDINGS")) {  // how tests/fixtures/ got its recording
        fs::copy_file(a_file, fs::path(keep) / "node-a.jsonl", fs::copy_options::overwrite_existing);
        fs::copy_file(b_file, fs::path(keep) / "node-b.jsonl", fs::copy_options::overwrite_existing);
    }
    json only_a = report_json(a_file, dir.path), only_b = report_json(b_file, dir.path);
    INFO(only_a.dump() << only_b.dump());
    REQUIRE(only_a["findings"].size() >= 1);
    REQUIRE(only_b["findings"].size() >= 1);
    CHECK(only_a["counts"]["resets"]["idle_close_race"] == 4);
    CHECK(only_b["counts"]["resets"]["idle_close_race"] == 6);
    json cluster = report_json(a_file + " " + b_file, dir.path);
    REQUIRE(cluster["nodes"].size() == 2);
    CHECK(node_of(cluster, "node-a")["counts"] == only_a["counts"]);
    CHECK(node_of(cluster, "node-b")["counts"] == only_b["counts"]);
    for (const char* field : {"events", "connections", "follow_up_resets", "local_reset_recv"})
        CHECK(cluster["counts"][field] ==
              only_a["counts"][field].get<uint64_t>() + only_b["counts"][field].get<uint64_t>());
    CHECK(cluster["counts"]["resets"]["idle_close_race"] == 10);
    std::map<std::string, std::string> range_of;  // each node's race came from its own LB range
    for (const auto& f : cluster["findings"])
        if (f["kind"] == "idle_close_race") range_of[f["backend"]["node"]] = f["lb"]["range"];
    CHECK(range_of == std::map<std::string, std::string>{{"node-a", "130.211.0.0/22"}, {"node-b", "35.191.0.0/16"}});

    auto text = run_apart(fmt::format("{} report {} {}", TCPWHY_BINARY, a_file, b_file), dir.path);
    INFO(text.out);
    CHECK(text.out.find("] on node-a: ") != std::string::npos);
    CHECK(text.out.find("] on node-b: ") != std::string::npos);
    // The cluster's line: events, connections, then the races of both nodes.
    CHECK(std::regex_search(text.out, std::regex(R"(\n  cluster +2 nodes +\S.* \d+ +\d+ +10 +\d+  )")));
}

// The plugin's own logic, with a kubectl stand-in on the PATH (tests/support/kubectl-standin/kubectl):
// it lists the pods the plugin asks for and runs `exec`'s command in the pod's stand-in namespaces.
// What it does not test is kubectl or a cluster: kubectl is only the transport.
TEST_CASE("kubectl tcpwhy: pods, top, export and report over every DaemonSet pod, with a kubectl stand-in") {
    TCPWHY_REQUIRE_ROOT();
    TempDir dir;
    LbAndPod net;
    fs::path in_pod = dir.path / "run-tcpwhy";  // the socket's directory inside every "pod"
    fs::create_directories(in_pod);
    NodeDaemon a("node-a", dir.path / "a", in_pod), b("node-b", dir.path / "b", in_pod);
    Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });
    keepalive_race(net, listener, 1);
    const uint32_t netns = net.pod.inode();
    wait_for_races({&a, &b}, netns, 2);

    fs::path pods = dir.path / "pods", log = dir.path / "kubectl.log";
    std::ofstream(pods) << fmt::format(
        "node-a tcpwhy-aaaaa Running {}\nnode-b tcpwhy-bbbbb Running {}\n"
        "node-c tcpwhy-ccccc Pending -\n",
        a.pid(), b.pid());
    const std::string env = fmt::format(
        "PATH={}:{}:{}:$PATH KUBECTL_STANDIN_PODS={} KUBECTL_STANDIN_LOG={} KUBECTL_STANDIN_NAMESPACE=tcpwhy "
        "KUBECTL_STANDIN_SELECTOR=app.kubernetes.io/name=tcpwhy KUBECTL_STANDIN_CONTAINER=tcpwhy",
        std::string(TCPWHY_SOURCE_DIR) + "/tests/support/kubectl-standin", std::string(TCPWHY_SOURCE_DIR) + "/scripts",
        fs::path(TCPWHY_BINARY).parent_path().string(), pods.string(), log.string());
    auto kubectl_tcpwhy = [&](const std::string& args) {
        return run_apart(fmt::format("cd {} && env {} kubectl tcpwhy --socket {}/tcpwhy.sock {}", dir.path.string(),
                                     env, in_pod.string(), args),
                         dir.path);
    };

    auto listed = kubectl_tcpwhy("pods");
    CHECK(listed.code == 0);
    CHECK(listed.out ==
          "NODE\tPOD\tPHASE\nnode-a\ttcpwhy-aaaaa\tRunning\nnode-b\ttcpwhy-bbbbb\tRunning\n"
          "node-c\ttcpwhy-ccccc\tPending\n");

    // top: one --connect per running pod, through kubectl exec -i ... tcpwhy relay; the pending pod said.
    auto top = kubectl_tcpwhy("top --once");
    INFO(top.out << top.err << slurp(log));
    CHECK(top.code == 0);
    CHECK(top.out.find("tcpwhy top  2 nodes (node-a, node-b)") == 0);
    for (const char* node : {"node-a", "node-b"})
        CHECK(std::regex_search(top.out,
                                std::regex(fmt::format(R"(\n{} +{} +- +{} .* 2/0 )", node, net.pod.name(), kPort))));
    CHECK(top.err.find("WARNING node node-c: pod tcpwhy-ccccc is Pending; that node is left out") != std::string::npos);
    std::string calls = slurp(log);
    CHECK(calls.find("-n tcpwhy get pods -l app.kubernetes.io/name=tcpwhy -o jsonpath=") != std::string::npos);
    CHECK(calls.find(fmt::format("-n tcpwhy exec -i -c tcpwhy tcpwhy-aaaaa -- tcpwhy relay --socket {}/tcpwhy.sock",
                                 in_pod.string())) != std::string::npos);
    CHECK(calls.find("exec -i -c tcpwhy tcpwhy-bbbbb -- tcpwhy relay") != std::string::npos);

    // One node: its own view, as `tcpwhy top --connect` of one daemon shows it.
    auto one = kubectl_tcpwhy("--node node-b top --once");
    CHECK(one.code == 0);
    CHECK(one.out.find("tcpwhy top  node node-b  kernel ") == 0);

    // Live in a terminal, the pods are listed again (`kubectl tcpwhy connects`, every
    // --connect-every s): a node that joins the cluster comes into the view, one that leaves goes.
    {
        const std::string all_pods = slurp(pods);
        std::ofstream(log, std::ios::trunc).close();
        std::ofstream(pods, std::ios::trunc) << fmt::format("node-a tcpwhy-aaaaa Running {}\n", a.pid());
        const std::string tmux = fmt::format("tmux -L tcpwhy-kubectl-{} -f /dev/null", getpid());
        auto wait_screen = [&](const std::string& needle) {
            std::string text;
            for (int i = 0; i < 200; ++i) {
                text = shell(tmux + " capture-pane -p -t top").second;
                if (text.find(needle) != std::string::npos) break;
                sleep_ms(100);
            }
            return text;
        };
        REQUIRE(shell(fmt::format("{} new-session -d -s top -x 200 -y 40 {}", tmux,
                                  shell_quoted(fmt::format("cd {} && env {} LANG=C.UTF-8 kubectl tcpwhy --socket "
                                                           "{}/tcpwhy.sock top --interval 0.5 --connect-every 1; "
                                                           "sleep 30",
                                                           dir.path.string(), env, in_pod.string()))))
                    .first == 0);
        std::string text = wait_screen("tcpwhy top  node node-a");
        INFO(text);
        CHECK(text.find("tcpwhy top  node node-a") == 0);
        std::ofstream(pods, std::ios::app) << fmt::format("node-b tcpwhy-bbbbb Running {}\n", b.pid());
        text = wait_screen("tcpwhy top  2 nodes (node-a, node-b)");
        INFO(text);
        CHECK(text.find("tcpwhy top  2 nodes (node-a, node-b)") == 0);
        CHECK(text.find("nodes: 1 added, 0 gone (--connect-from)") != std::string::npos);
        for (const char* node : {"node-a", "node-b"})
            CHECK(std::regex_search(text, std::regex(fmt::format(R"(\n{} +{} +- +{} )", node, net.pod.name(), kPort))));
        std::ofstream(pods, std::ios::trunc) << fmt::format("node-b tcpwhy-bbbbb Running {}\n", b.pid());
        text = wait_screen("tcpwhy top  node node-b");
        INFO(text);
        CHECK(text.find("tcpwhy top  node node-b") == 0);
        shell(tmux + " send-keys -t top q");
        shell(tmux + " kill-server");
        // listed at the start, and again through the plugin's own `connects` while the view ran
        std::string listed_calls = slurp(log);
        size_t listings = 0;
        for (size_t at = listed_calls.find(" get pods "); at != std::string::npos; at = listed_calls.find(" get pods ", at + 1))
            ++listings;
        CHECK(listings >= 3);
        std::ofstream(pods, std::ios::trunc) << all_pods;
    }

    // export: a file per node, named after the node, streamed without -i (export reads no stdin).
    std::ofstream(log, std::ios::trunc).close();
    auto exported = kubectl_tcpwhy("export --since 10m -o incident");
    INFO(exported.err);
    CHECK(exported.code == 0);
    for (const char* node : {"node-a", "node-b"}) {
        fs::path file = dir.path / "incident" / fmt::format("{}.jsonl.gz", node);
        REQUIRE(fs::exists(file));
        auto [zrc, first] = shell(fmt::format("zcat {} | head -n 1", file.string()));
        CHECK(parse_json_line(first.substr(0, first.find('\n'))).header.hostname == node);
    }
    CHECK_FALSE(fs::exists(dir.path / "incident" / "node-c.jsonl.gz"));
    CHECK(exported.err.find("read them with: tcpwhy report incident/*.jsonl.gz") != std::string::npos);
    CHECK(slurp(log).find("exec -c tcpwhy tcpwhy-aaaaa -- tcpwhy export --since 10m --gzip --socket") !=
          std::string::npos);

    // ... or one file: both nodes' streams in it, told apart by their headers.
    auto one_file = kubectl_tcpwhy("export --since 10m -o cluster.jsonl.gz");
    CHECK(one_file.code == 0);
    json from_one_file = report_json((dir.path / "cluster.jsonl.gz").string(), dir.path);
    CHECK(from_one_file["nodes"].size() == 2);

    // report: export, then tcpwhy report of every node; options pass through to it.
    auto reported = kubectl_tcpwhy("report --since 10m --json");
    INFO(reported.err);
    CHECK(reported.code == 0);
    json cluster = json::parse(reported.out);
    REQUIRE(cluster["nodes"].size() == 2);
    for (const char* node : {"node-a", "node-b"})
        CHECK(node_of(cluster, node)["counts"]["resets"]["idle_close_race"] == 2);
    CHECK(cluster["counts"]["resets"]["idle_close_race"] == 4);

    // Two running pods on one node (a rollout with maxSurge) reach the same daemon: one is read.
    std::ofstream(pods, std::ios::app) << fmt::format("node-a tcpwhy-aaaab Running {}\n", a.pid());
    auto surge = kubectl_tcpwhy("top --once");
    INFO(surge.err);
    CHECK(surge.code == 0);
    CHECK(surge.out.find("tcpwhy top  2 nodes (node-a, node-b)") == 0);
    CHECK(surge.err.find("WARNING node node-a: pod tcpwhy-aaaab runs there too; only pod tcpwhy-aaaaa is read") !=
          std::string::npos);

    // A pod whose exec fails: the others' traces are kept, the failure named, exit 1.
    std::ofstream(pods, std::ios::app) << "node-d tcpwhy-ddddd Running 999999999\n";
    auto failing = kubectl_tcpwhy("export --since 10m -o with-failure");
    CHECK(failing.code == 1);
    CHECK(fs::exists(dir.path / "with-failure" / "node-a.jsonl.gz"));
    CHECK(failing.err.find("node-d (pod tcpwhy-ddddd): export failed: ") != std::string::npos);
    CHECK(failing.err.find("no complete trace from: node-d") != std::string::npos);

    // Nothing running where it looks: one line and the fix, exit 1; a bad option: exit 2.
    auto nowhere = kubectl_tcpwhy("-n elsewhere top --once");
    CHECK(nowhere.code == 1);
    CHECK(nowhere.err.find("kubectl-tcpwhy: no running tcpwhy pod in namespace elsewhere") != std::string::npos);
    CHECK(nowhere.err.find("  fix: ") != std::string::npos);
    CHECK(kubectl_tcpwhy("export --since soon").code == 2);
    CHECK(kubectl_tcpwhy("--bogus top").code == 2);

    CHECK(a.stop() == 0);
    CHECK(b.stop() == 0);
}
