// Real servers from Debian's packages behind Debian's nginx as the load balancer, each in the pod
// namespace: gunicorn, uvicorn, a Go net/http server built here, nginx, Apache httpd and Node.js.
// The LB keeps idle upstream connections 600 s; each server closes them after its own idle
// timeout. `tcpwhy trace` records it all (detecting each server live from /proc) and `tcpwhy
// report` must say, per server, its knob, the value it closes at now (measured) and the value to
// set, in that server's words. Then the daemon, with exactly the DaemonSet's capabilities,
// detects a server that runs as another user (the ptrace check on /proc/PID/exe).
#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "daemon_process.h"
#include "harness.h"
#include "tcpwhy/explain.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
namespace fs = std::filesystem;

namespace {

// A command run in a network namespace in a process group of its own: the group (a server's
// master and workers) is killed on destruction.
class Spawned {
public:
    Spawned(const std::string& netns, std::vector<std::string> argv, const fs::path& log, const std::string& as_user = "") {
        std::vector<std::string> full = {"/usr/bin/ip", "netns", "exec", netns};
        if (!as_user.empty()) {
            for (const char* a : {"/usr/bin/setpriv", "--reuid", as_user.c_str(), "--regid", "nogroup", "--clear-groups"})
                full.emplace_back(a);
        }
        full.insert(full.end(), argv.begin(), argv.end());
        pid_ = fork();
        if (pid_ == 0) {
            setsid();
            int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            dup2(out, 1);
            dup2(out, 2);
            std::vector<char*> args;
            for (auto& a : full) args.push_back(a.data());
            args.push_back(nullptr);
            execv(args[0], args.data());
            _exit(127);
        }
    }
    ~Spawned() {
        if (pid_ <= 0) return;
        kill(-pid_, SIGTERM);
        for (int i = 0; i < 50; ++i) {
            if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
            sleep_ms(40);
        }
        kill(-pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
    }
    Spawned(const Spawned&) = delete;
    Spawned& operator=(const Spawned&) = delete;

private:
    pid_t pid_ = -1;
};

std::pair<int, std::string> in_netns(const std::string& netns, const std::string& command) {
    return shell(fmt::format("ip netns exec {} {}", netns, command));
}

bool wait_listening(const std::string& netns, const std::string& addr, uint16_t port) {
    for (int i = 0; i < 300; ++i) {
        if (in_netns(netns, fmt::format("bash -c 'exec 3<>/dev/tcp/{}/{}'", addr, port)).first == 0) return true;
        sleep_ms(50);
    }
    return false;
}

bool have(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

// A Go net/http server from the standard library only (builds offline), IdleTimeout 2 s.
std::string build_go_server(const fs::path& dir) {
    std::string go = TCPWHY_GO;
    if (go.empty() || !have(go)) return "";
    fs::create_directories(dir / "src");
    std::ofstream(dir / "src" / "go.mod") << "module example.com/checkout\n\ngo 1.19\n";
    std::ofstream(dir / "src" / "main.go")
        << "package main\n\nimport (\n\t\"net/http\"\n\t\"os\"\n\t\"time\"\n)\n\n"
           "func main() {\n\tsrv := &http.Server{Addr: os.Args[1], IdleTimeout: 2 * time.Second,\n"
           "\t\tHandler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(\"ok\\n\")) })}\n"
           "\tsrv.ListenAndServe()\n}\n";
    std::string out = (dir / "checkout").string();
    auto [rc, log] = shell(fmt::format("cd {0}/src && HOME={0} GOCACHE={0}/cache GOPATH={0}/gopath GOPROXY=off "
                                       "GOFLAGS=-mod=mod CGO_ENABLED=0 {1} build -o {2} . 2>&1",
                                       dir.string(), go, out));
    if (rc != 0) {
        WARN("go build failed: " << log);
        return "";
    }
    return out;
}

// One backend under test: how to start it and what its fix must say.
struct Backend {
    std::string name;
    uint16_t port = 0;
    std::vector<std::string> argv;
    std::string kind;                   // the server kind the report must name
    int expected_close_ms = 0;          // when it closes an idle connection
    std::vector<std::string> advice;    // what the advice must contain (besides the measured value)
};

}  // namespace

TEST_CASE("servers: gunicorn, uvicorn, Go net/http, nginx, Apache and Node behind nginx: each fix names that server's "
          "knob and the idle close measured") {
    TCPWHY_REQUIRE_ROOT();
    for (const char* tool : {"/usr/sbin/nginx", "/usr/bin/gunicorn", "/usr/sbin/apache2", "/usr/bin/node", "/usr/bin/python3"})
        if (!have(tool)) {
            WARN("SKIPPED: " << tool << " is missing (scripts/setup.sh installs Debian's nginx-light, gunicorn, "
                                        "python3-uvicorn, golang-go, apache2, nodejs)");
            return;
        }
    TempDir dir;
    fs::permissions(dir.path, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
    std::string go_server = build_go_server(dir.path / "go");
    if (go_server.empty()) {
        WARN("SKIPPED: Debian's golang-go is needed to build the Go backend (scripts/setup.sh installs it)");
        return;
    }
    LbAndPod net;
    const std::string pod = net.pod.name(), lb = net.lb.name();
    const std::string addr = LbAndPod::kPodAddr;
    const fs::path app = dir.path / "app";
    fs::create_directories(app / "www");
    std::ofstream(app / "wsgi.py") << "def app(environ, start_response):\n"
                                      "    start_response('200 OK', [('Content-Length', '3')])\n    return [b'ok\\n']\n";
    std::ofstream(app / "asgi.py")
        << "async def app(scope, receive, send):\n"
           "    if scope['type'] != 'http':\n        return\n"
           "    await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-length', b'3')]})\n"
           "    await send({'type': 'http.response.body', 'body': b'ok\\n'})\n";
    std::ofstream(app / "www" / "index.html") << "ok\n";
    // The backend nginx: its keep-alive shortened to 3 s (its default is 75 s).
    fs::create_directories(app / "nginx");
    std::ofstream(app / "nginx" / "nginx.conf") << fmt::format(
        "worker_processes 1;\ndaemon off;\npid {0}/nginx/nginx.pid;\nerror_log {0}/nginx/error.log warn;\n"
        "events {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {0}/nginx/body;\n"
        "  proxy_temp_path {0}/nginx/proxy;\n  fastcgi_temp_path {0}/nginx/fastcgi;\n  uwsgi_temp_path {0}/nginx/uwsgi;\n"
        "  scgi_temp_path {0}/nginx/scgi;\n  keepalive_timeout 3s;\n"
        "  server {{ listen {1}:8104; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
        app.string(), addr);
    // Apache httpd with its default KeepAliveTimeout (5 s); event MPM, children as nobody.
    std::ofstream(app / "httpd.conf") << fmt::format(
        "ServerRoot {0}\nLoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n"
        "LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\nServerName pod\n"
        "Listen {1}:8105\nPidFile {0}/httpd.pid\nErrorLog {0}/httpd.err\nDocumentRoot {0}/www\n"
        "User nobody\nGroup nogroup\n<Directory {0}/www>\n  Require all granted\n</Directory>\n",
        app.string(), addr);
    fs::permissions(app, fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);

    const std::vector<Backend> backends = {
        {"gunicorn", 8101,
         {"/usr/bin/python3", "/usr/bin/gunicorn", "--chdir", app.string(), "-k", "gthread", "-b", addr + ":8101", "wsgi:app"},
         "gunicorn", 2000, {"(its default `--keep-alive 2`)", "behind this LB (600 s) set `--keep-alive 620`"}},
        {"uvicorn", 8102,
         {"/usr/bin/python3", "-m", "uvicorn", "--app-dir", app.string(), "--host", addr, "--port", "8102", "asgi:app"},
         "uvicorn", 5000, {"(its default `--timeout-keep-alive 5`)", "set `--timeout-keep-alive 620`"}},
        {"go", 8103, {go_server, addr + ":8103"}, "go-net-http", 2000,
         {"Go net/http (go1.", "(`IdleTimeout` falls back to ReadTimeout", "set `http.Server{IdleTimeout: 620 * time.Second}`"}},
        {"nginx", 8104, {"/usr/sbin/nginx", "-p", (app / "nginx").string(), "-c", (app / "nginx" / "nginx.conf").string()},
         "nginx", 3000, {"(not its default `keepalive_timeout 75s;`: its configuration sets about", "set `keepalive_timeout 620s;`"}},
        {"apache", 8105, {"/usr/sbin/apache2", "-f", (app / "httpd.conf").string(), "-DFOREGROUND"}, "apache", 5000,
         {"Apache httpd 2.", "(its default `KeepAliveTimeout 5`)", "set `KeepAliveTimeout 620`"}},
        {"node", 8106,
         {"/usr/bin/node", "-e",
          fmt::format("require('http').createServer((q, s) => s.end('ok\\n')).listen(8106, '{}')", addr)},
         "node", 6000,
         {"(its default `server.keepAliveTimeout = 5000` plus the 1 s socket buffer",
          "set `server.keepAliveTimeout = 620000` with `server.headersTimeout` above it"}},
    };

    // The LB: one keep-alive pool per backend, 600 s idle, from the LB's address.
    fs::create_directories(dir.path / "lb");
    std::string upstreams, locations;
    for (const auto& b : backends) {
        upstreams += fmt::format("  upstream {0} {{ server {1}:{2}; keepalive 4; keepalive_timeout 600s; }}\n", b.name, addr, b.port);
        locations += fmt::format("    location /{0}/ {{ proxy_pass http://{0}/; proxy_http_version 1.1; "
                                 "proxy_set_header Connection \"\"; proxy_bind {1}; }}\n",
                                 b.name, LbAndPod::kLbAddr);
    }
    std::ofstream(dir.path / "lb" / "nginx.conf") << fmt::format(
        "worker_processes 1;\ndaemon off;\npid {0}/nginx.pid;\nerror_log {0}/error.log warn;\n"
        "events {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {0}/body;\n"
        "  proxy_temp_path {0}/proxy;\n  fastcgi_temp_path {0}/fastcgi;\n  uwsgi_temp_path {0}/uwsgi;\n"
        "  scgi_temp_path {0}/scgi;\n{1}  server {{\n    listen 127.0.0.1:8080;\n{2}  }}\n}}\n",
        (dir.path / "lb").string(), upstreams, locations);

    // tcpwhy first, so every server's listen() and close() are traced with their owner.
    fs::path trace = dir.path / "servers.jsonl", trace_log = dir.path / "trace.log";
    pid_t tracer = fork();
    if (tracer == 0) {
        auto cmd = fmt::format("exec {} trace --json --netns {} -o {} >/dev/null 2>{}", TCPWHY_BINARY, pod,
                               trace.string(), trace_log.string());
        execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
        _exit(127);
    }
    struct StopTracer {
        pid_t pid;
        ~StopTracer() {
            if (pid > 0) kill(pid, SIGTERM), waitpid(pid, nullptr, 0);
        }
    } stop_tracer{tracer};
    for (int i = 0; i < 500 && slurp(trace_log).find("tracing TCP") == std::string::npos; ++i) sleep_ms(20);
    REQUIRE(slurp(trace_log).find("tracing TCP") != std::string::npos);

    std::vector<std::unique_ptr<Spawned>> running;
    for (const auto& b : backends) {
        running.push_back(std::make_unique<Spawned>(pod, b.argv, dir.path / (b.name + ".log")));
        INFO(b.name << ": " << slurp(dir.path / (b.name + ".log")));
        REQUIRE(wait_listening(pod, addr, b.port));
    }
    running.push_back(std::make_unique<Spawned>(
        lb, std::vector<std::string>{"/usr/sbin/nginx", "-p", (dir.path / "lb").string(), "-c", (dir.path / "lb" / "nginx.conf").string()},
        dir.path / "lb.log"));
    REQUIRE(wait_listening(lb, "127.0.0.1", 8080));

    // Two requests per backend through the LB, then silence past every server's idle timeout:
    // each server closes the LB's idle pooled connection itself.
    for (int round = 0; round < 2; ++round)
        for (const auto& b : backends) {
            auto [rc, body] = in_netns(lb, fmt::format("curl -s --max-time 5 http://127.0.0.1:8080/{}/index.html", b.name));
            INFO(b.name << " answered: " << body);
            CHECK(body == "ok\n");
        }
    sleep_ms(8500);
    stop_tracer.pid = -1;
    kill(tracer, SIGTERM);
    waitpid(tracer, nullptr, 0);
    INFO("tracer: " << slurp(trace_log));

    // Live detection went into the trace ahead of the events.
    std::string lines = slurp(trace);
    CHECK(lines.find("\"type\":\"server\"") != std::string::npos);

    auto [rc, json_text] = shell(fmt::format("{} report --json {}", TCPWHY_BINARY, trace.string()));
    REQUIRE(rc == 0);
    auto report = nlohmann::json::parse(json_text);
    std::map<int, nlohmann::json> by_port;
    for (const auto& f : report["findings"])
        if (f["backend"]["direction"] == "inbound" && f["backend"]["netns"] == net.pod.inode())
            by_port.emplace(f["backend"]["port"].get<int>(), f);
    for (const auto& b : backends) {
        INFO(b.name << " (port " << b.port << "), log: " << slurp(dir.path / (b.name + ".log")));
        REQUIRE(by_port.count(b.port));
        const auto& f = by_port[b.port];
        INFO(f.dump(2));
        CHECK(f["kind"] == "idle_timeout_below_lb");
        CHECK(f["backend"]["server"]["kind"] == b.kind);
        REQUIRE(f["idle_close"].is_object());
        const uint32_t p50 = f["idle_close"]["p50_ms"].get<uint32_t>();
        CHECK(p50 + 400 >= static_cast<uint32_t>(b.expected_close_ms));
        CHECK(p50 <= static_cast<uint32_t>(b.expected_close_ms) + 400);
        const std::string advice = f["advice"].get<std::string>();
        // The value it has now, as measured by the kernel programs...
        CHECK(advice.find(fmt::format("closes idle connections after {}", explain::duration(p50))) != std::string::npos);
        // ... and the knob, in that server's words.
        for (const auto& words : b.advice) CHECK(advice.find(words) != std::string::npos);
    }
}

TEST_CASE("servers: the daemon with exactly the DaemonSet's capabilities detects a server run by another user") {
    TCPWHY_REQUIRE_ROOT();
    if (!have("/usr/bin/setpriv")) {
        WARN("SKIPPED: setpriv (util-linux) starts the daemon with the DaemonSet's capabilities");
        return;
    }
    TempDir dir;
    fs::permissions(dir.path, fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);
    std::string go_server = build_go_server(dir.path / "go");
    if (go_server.empty()) {
        WARN("SKIPPED: Debian's golang-go is needed to build the Go backend (scripts/setup.sh installs it)");
        return;
    }
    fs::permissions(dir.path / "go", fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);
    LbAndPod net;
    DaemonProcess daemon(dir.path, manifest_daemon_args(), {}, with_manifest_capabilities());
    INFO(daemon.stderr_text());
    REQUIRE(daemon.stderr_text().find("capabilities: effective and permitted cap_sys_ptrace,cap_bpf") != std::string::npos);

    // The server runs as nobody: reading its /proc/PID/exe takes the ptrace check, which only
    // the CAP_SYS_PTRACE the daemon kept passes.
    Spawned server(net.pod.name(), {go_server, std::string(LbAndPod::kPodAddr) + ":8103"}, dir.path / "go.log", "nobody");
    REQUIRE(wait_listening(net.pod.name(), LbAndPod::kPodAddr, 8103));
    CHECK(in_netns(net.lb.name(), fmt::format("curl -s --max-time 5 http://{}:8103/", LbAndPod::kPodAddr)).second == "ok\n");
    sleep_ms(3000);  // its 2 s idle close: a close() in the server's own context
    nlohmann::json row;
    for (int i = 0; i < 50 && row.is_null(); ++i) {
        auto snapshot = nlohmann::json::parse(control_request(daemon.socket, R"({"cmd":"snapshot"})"));
        for (const auto& r : snapshot["rows"])
            if (r["netns"] == net.pod.inode() && r["port"] == 8103 && !r.value("server", "").empty()) row = r;
        if (row.is_null()) sleep_ms(200);
    }
    INFO(row.dump(2));
    REQUIRE_FALSE(row.is_null());
    CHECK(row["server"].get<std::string>().starts_with("Go net/http (go1."));
    CHECK(row["server_detail"].get<std::string>().find("recognised by go build info: net/http") != std::string::npos);
    std::string metrics = daemon.get("/metrics");
    CHECK(metrics.find("port=\"8103\",server=\"go-net-http\"") != std::string::npos);
    CHECK(daemon.stop(SIGTERM) == 0);
}
