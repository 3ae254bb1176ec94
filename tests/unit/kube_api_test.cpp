// The --kube-api client against a real HTTPS server (tests/support/kube_apiserver.py)
// serving a recorded node-scoped pod list and watch stream.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sstream>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tcpwhy/fd.h"
#include "tcpwhy/kube_api.h"

using namespace tcpwhy;
namespace fs = std::filesystem;

namespace {

const std::string kSource = TCPWHY_SOURCE_DIR;
const std::string kWebUid = "8d3c6a2e-1f4b-4c7d-9e2a-5b6c7d8e9f01";

bool have(const char* tool) { return std::system(fmt::format("command -v {} >/dev/null 2>&1", tool).c_str()) == 0; }

// A self-signed certificate for 127.0.0.1, made with Debian's openssl.
void make_certificate(const fs::path& dir, const std::string& name) {
    int rc = std::system(fmt::format("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
                                     "-addext subjectAltName=IP:127.0.0.1 -keyout {0}/{1}.key -out {0}/{1}.crt "
                                     ">/dev/null 2>&1",
                                     dir.string(), name)
                             .c_str());
    REQUIRE(rc == 0);
}

class ApiServer {
public:
    explicit ApiServer(const fs::path& dir, const std::string& mode = "normal") : dir_(dir) {
        make_certificate(dir, "server");
        std::ofstream(dir / "token") << "secret-token\n";
        fs::path port_file = dir / "port";
        pid_ = fork();
        if (pid_ == 0) {
            std::string log = (dir / "server.log").string();
            int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
            dup2(fd, 2);
            execlp("python3", "python3", (kSource + "/tests/support/kube_apiserver.py").c_str(),
                   (dir / "server.crt").c_str(), (dir / "server.key").c_str(), "secret-token", "node-a",
                   (kSource + "/tests/fixtures/kube/pods-list.json").c_str(),
                   (kSource + "/tests/fixtures/kube/pods-watch.jsonl").c_str(), port_file.c_str(), mode.c_str(),
                   nullptr);
            _exit(127);
        }
        for (int i = 0; i < 200 && !fs::exists(port_file); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(25));
        std::ifstream(port_file) >> port_;
        REQUIRE(port_ != 0);
    }
    ~ApiServer() {
        kill(pid_, SIGTERM);
        waitpid(pid_, nullptr, 0);
    }
    // Requests the server logged whose line contains `what` (e.g. "watch=1").
    int requests(const std::string& what) const {
        std::ifstream log(dir_ / "server.log");
        std::string line;
        int n = 0;
        while (std::getline(log, line))
            if (line.find("\"GET ") != std::string::npos && line.find(what) != std::string::npos) ++n;
        return n;
    }
    KubeApiOptions options() const {
        KubeApiOptions o;
        o.url = fmt::format("https://127.0.0.1:{}", port_);
        o.token_file = (dir_ / "token").string();
        o.ca_file = (dir_ / "server.crt").string();
        o.node_name = "node-a";
        o.max_backoff_ms = 500;
        return o;
    }

private:
    fs::path dir_;
    pid_t pid_ = -1;
    int port_ = 0;
};

struct TempDir {
    fs::path path = fs::temp_directory_path() / fmt::format("tcpwhy-kube-{}", getpid());
    TempDir() { fs::create_directories(path); }
    ~TempDir() { fs::remove_all(path); }
};

template <typename Pred>
bool wait_for(Pred pred, int ms = 8000) {
    for (int waited = 0; waited < ms; waited += 20) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pred();
}

Workload pod_with_uid(const std::string& uid) {
    Workload w;
    w.kind = WorkloadKind::pod;
    w.pod_uid = uid;
    return w;
}

}  // namespace

TEST_CASE("pod objects: owner through the ReplicaSet's pod-template-hash, labels, IP", "[kube]") {
    std::ifstream in(kSource + "/tests/fixtures/kube/pods-list.json");
    std::stringstream ss;
    ss << in.rdbuf();
    auto list = nlohmann::json::parse(ss.str());
    std::string error;
    auto web = parse_kube_pod(list["items"][0].dump(), &error);
    REQUIRE(web);
    CHECK(web->owner == "Deployment/web");
    CHECK(web->pod_ip == "10.56.5.6");
    CHECK(web->labels.at("app") == "web");
    CHECK(parse_kube_pod(list["items"][1].dump(), &error)->owner == "StatefulSet/db");
    CHECK(parse_kube_pod(list["items"][2].dump(), &error)->owner == "DaemonSet/node-exporter");
    CHECK_FALSE(parse_kube_pod(R"({"metadata":{"name":"x"}})", &error));
    CHECK_FALSE(parse_kube_pod("not json", &error));
}

TEST_CASE("the API client lists the node's pods and follows the watch", "[kube]") {
    if (!have("python3") || !have("openssl")) {
        WARN("SKIPPED: python3 and openssl are needed for the HTTPS API server (scripts/setup.sh installs them)");
        return;
    }
    TempDir dir;
    ApiServer server(dir.path);
    KubeApiClient client(server.options());
    client.start();
    REQUIRE(wait_for([&] { return client.status().synced; }));

    // The watch: web relabelled, db deleted, a Job's pod added.
    REQUIRE(wait_for([&] { return client.status().watch_events >= 3; }));
    Workload web = pod_with_uid(kWebUid);
    REQUIRE(client.enrich(web));
    CHECK(web.owner == "Deployment/web");
    CHECK(web.pod_ip == "10.56.5.6");
    CHECK(web.labels.at("version") == "v2");
    CHECK(web.pod == "web-5d9c7f-abcde");  // names from the API when the node's files had none
    CHECK(web.namespace_name == "shop");
    Workload db = pod_with_uid("22222222-3333-4444-5555-666666666666");
    CHECK_FALSE(client.enrich(db));
    Workload job = pod_with_uid("33333333-4444-5555-6666-777777777777");
    REQUIRE(client.enrich(job));
    CHECK(job.owner == "Job/batch");
    CHECK(client.status().errors == 0);
    CHECK(client.status().pods == 3);
}

TEST_CASE("API failures are counted, never fatal: wrong token, untrusted CA, nothing listening", "[kube]") {
    if (!have("python3") || !have("openssl")) {
        WARN("SKIPPED: python3 and openssl are needed for the HTTPS API server (scripts/setup.sh installs them)");
        return;
    }
    TempDir dir;
    ApiServer server(dir.path);

    KubeApiOptions wrong_token = server.options();
    std::ofstream(dir.path / "bad-token") << "not-the-token\n";
    wrong_token.token_file = (dir.path / "bad-token").string();
    KubeApiClient unauthorized(wrong_token);
    unauthorized.start();
    REQUIRE(wait_for([&] { return unauthorized.status().errors >= 1; }));
    CHECK_FALSE(unauthorized.status().synced);
    CHECK(unauthorized.status().last_error.find("HTTP 401") != std::string::npos);

    make_certificate(dir.path, "other");
    KubeApiOptions wrong_ca = server.options();
    wrong_ca.ca_file = (dir.path / "other.crt").string();
    KubeApiClient untrusted(wrong_ca);
    untrusted.start();
    REQUIRE(wait_for([&] { return untrusted.status().errors >= 1; }));
    CHECK_FALSE(untrusted.status().synced);
    INFO(untrusted.status().last_error);
    CHECK((untrusted.status().last_error.find("certificate") != std::string::npos ||
           untrusted.status().last_error.find("SSL") != std::string::npos));

    KubeApiOptions nowhere = server.options();
    nowhere.url = "https://127.0.0.1:1";
    KubeApiClient unreachable(nowhere);
    unreachable.start();
    REQUIRE(wait_for([&] { return unreachable.status().errors >= 1; }));
    Workload web = pod_with_uid(kWebUid);
    CHECK_FALSE(unreachable.enrich(web));
}

TEST_CASE("the API client never sends the token over http://", "[kube]") {
    // A plain TCP listener standing in for an API server on http://: nothing may reach it.
    Fd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0);
    REQUIRE(listen(listener.get(), 8) == 0);
    socklen_t len = sizeof(sa);
    getsockname(listener.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    TempDir dir;
    std::ofstream(dir.path / "token") << "secret-token\n";
    KubeApiOptions o;
    o.url = fmt::format("http://127.0.0.1:{}", ntohs(sa.sin_port));
    o.token_file = (dir.path / "token").string();
    o.node_name = "node-a";
    o.max_backoff_ms = 200;
    KubeApiClient client(o);
    client.start();
    REQUIRE(wait_for([&] { return client.status().errors >= 2; }));
    CHECK(client.status().last_error.find("refusing to send the service-account token") != std::string::npos);
    CHECK(accept(listener.get(), nullptr, nullptr) < 0);  // no connection was ever made
    CHECK(errno == EAGAIN);
}

TEST_CASE("the API client lists from the watch cache (resourceVersion=0)", "[kube]") {
    if (!have("python3") || !have("openssl")) {
        WARN("SKIPPED: python3 and openssl are needed for the HTTPS API server (scripts/setup.sh installs them)");
        return;
    }
    TempDir dir;
    ApiServer server(dir.path);
    KubeApiClient client(server.options());
    client.start();
    REQUIRE(wait_for([&] { return client.status().synced; }));
    CHECK(server.requests("resourceVersion=0") >= 1);
    CHECK(server.requests("resourceVersion=0") == server.requests("GET /api/v1/pods") - server.requests("watch=1"));
}

TEST_CASE("a watch that fails at once backs off like a failed list", "[kube]") {
    if (!have("python3") || !have("openssl")) {
        WARN("SKIPPED: python3 and openssl are needed for the HTTPS API server (scripts/setup.sh installs them)");
        return;
    }
    TempDir dir;
    ApiServer server(dir.path, "watch-500");
    KubeApiOptions o = server.options();
    o.initial_backoff_ms = 500;
    o.max_backoff_ms = 30000;
    KubeApiClient client(o);
    client.start();
    REQUIRE(wait_for([&] { return client.status().synced; }));
    std::this_thread::sleep_for(std::chrono::seconds(4));
    // Waits of 0.5, 1 and 2 s: at most four lists in four seconds (without backoff: about twenty).
    int lists = server.requests("GET /api/v1/pods") - server.requests("watch=1");
    CHECK(lists >= 2);
    CHECK(lists <= 4);
    CHECK(client.status().last_error.find("HTTP 500") != std::string::npos);
}

TEST_CASE("a watch that goes silent is noticed and reopened", "[kube]") {
    if (!have("python3") || !have("openssl")) {
        WARN("SKIPPED: python3 and openssl are needed for the HTTPS API server (scripts/setup.sh installs them)");
        return;
    }
    TempDir dir;
    ApiServer server(dir.path, "watch-silent");
    KubeApiOptions o = server.options();
    o.low_speed_time_s = 2;
    KubeApiClient client(o);
    client.start();
    REQUIRE(wait_for([&] { return server.requests("watch=1") >= 2; }, 10000));
    CHECK(client.status().last_error.find("nothing received for 2 s") != std::string::npos);
    CHECK(client.status().watch_events >= 1);  // what it sent before going quiet was applied
}

TEST_CASE("a watch line without end is cut off at the line limit", "[kube]") {
    if (!have("python3") || !have("openssl")) {
        WARN("SKIPPED: python3 and openssl are needed for the HTTPS API server (scripts/setup.sh installs them)");
        return;
    }
    TempDir dir;
    ApiServer server(dir.path, "watch-huge");
    KubeApiOptions o = server.options();
    o.max_line_bytes = 1 << 20;
    KubeApiClient client(o);
    client.start();
    REQUIRE(wait_for([&] { return client.status().last_error.find("longer than") != std::string::npos; }));
    CHECK(client.status().last_error.find("an event line longer than 1048576 bytes") != std::string::npos);
    CHECK(client.status().synced);  // the list still named the pods
}
