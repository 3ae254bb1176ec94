// Server detection on real files: Go binaries built here by Debian's Go, Debian's own binaries
// (node, nginx, apache2, caddy), real jars, real processes' /proc entries; and the advice each
// detection leads to. Fixtures are constructed only where no real file can be had here: Go
// build info of the pre-1.18 layout and of gin/echo programs (building those needs modules
// from the network).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <thread>

#include <fmt/format.h>

#include "event_builders.h"
#include "tcpwhy/correlator.h"
#include "tcpwhy/daemon/metrics.h"
#include "tcpwhy/live_view.h"
#include "tcpwhy/top/view_model.h"
#include "tcpwhy/explain.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/server.h"
#include "tcpwhy/server_detector.h"

using namespace tcpwhy;
using namespace tcpwhy::test;
namespace fs = std::filesystem;

namespace {

std::string run(const std::string& command) {
    std::string out;
    FILE* p = popen(command.c_str(), "r");
    if (!p) return out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    pclose(p);
    return out;
}

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/tcpwhy-servers-XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

// A Go net/http server, built once per run from the standard library only (offline).
const std::string& go_server_binary() {
    static TempDir dir;
    static std::string binary = [] {
        std::string go = TCPWHY_GO;
        if (go.empty() || access(go.c_str(), X_OK) != 0) return std::string();
        fs::path src = dir.path / "src";
        fs::create_directories(src);
        write(src / "go.mod", "module example.com/checkout\n\ngo 1.19\n");
        write(src / "main.go",
              "package main\n\nimport (\n\t\"net/http\"\n\t\"os\"\n\t\"time\"\n)\n\n"
              "func main() {\n\tsrv := &http.Server{Addr: os.Args[1], IdleTimeout: 2 * time.Second,\n"
              "\t\tHandler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(\"ok\\n\")) })}\n"
              "\tsrv.ListenAndServe()\n}\n");
        std::string out = (dir.path / "checkout").string();
        std::string cmd = fmt::format(
            "cd {} && HOME={} GOCACHE={}/cache GOPATH={}/gopath GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local "
            "CGO_ENABLED=0 {} build -o {} . 2>&1",
            src.string(), dir.path.string(), dir.path.string(), dir.path.string(), go, out);
        std::string log = run(cmd);
        if (access(out.c_str(), X_OK) != 0) {
            WARN("go build failed: " << log);
            return std::string();
        }
        return out;
    }();
    return binary;
}

// The same binary with its section headers gone (as some packers leave binaries): the build
// info must then be found in the writable segment.
std::string without_section_headers(const std::string& binary, const fs::path& out) {
    fs::copy_file(binary, out, fs::copy_options::overwrite_existing);
    std::fstream f(out, std::ios::in | std::ios::out | std::ios::binary);
    // ELF64 header: e_shoff at 0x28 (8 bytes), e_shnum at 0x3c, e_shstrndx at 0x3e (2 bytes each).
    char zero[8] = {};
    f.seekp(0x28);
    f.write(zero, 8);
    f.seekp(0x3c);
    f.write(zero, 4);
    return out.string();
}

// The inline (Go 1.18+) .go.buildinfo layout around a modinfo text, as the linker writes it.
std::string inline_buildinfo(const std::string& version, const std::string& modinfo) {
    std::string data = "\xff Go buildinf:";
    data += static_cast<char>(8);     // pointer size
    data += static_cast<char>(0x02);  // little endian, inline strings
    data.resize(32, '\0');
    auto put = [&](const std::string& s) {
        uint64_t n = s.size();
        do {
            unsigned char b = n & 0x7f;
            n >>= 7;
            data += static_cast<char>(n ? b | 0x80 : b);
        } while (n);
        data += s;
    };
    put(version);
    // The runtime's 16-byte sentinels around the text.
    put(std::string(16, '0') + modinfo + std::string(16, '1'));
    return data;
}

struct Child {
    pid_t pid = -1;
    explicit Child(std::vector<std::string> argv) {
        pid = fork();
        if (pid == 0) {
            std::vector<char*> args;
            for (auto& a : argv) args.push_back(a.data());
            args.push_back(nullptr);
            int null = open("/dev/null", O_RDWR);
            dup2(null, 1);
            dup2(null, 2);
            execv(args[0], args.data());
            _exit(127);
        }
    }
    ~Child() {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
        }
    }
};

// Waits until the child has exec'd (its exe is no longer ours).
bool wait_for_exec(pid_t pid, const std::string& exe_suffix) {
    for (int i = 0; i < 200; ++i) {
        std::error_code ec;
        auto exe = fs::read_symlink(fmt::format("/proc/{}/exe", pid), ec);
        if (!ec && exe.string().ends_with(exe_suffix)) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

std::string python3() { return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : ""; }

}  // namespace

TEST_CASE("servers: every server's knob settings format, and every kind has a row and a name") {
    for (size_t i = 0; i < kServerKindCount; ++i) {
        auto kind = static_cast<ServerKind>(i);
        CHECK(server_kind_from_string(to_string(kind)) == kind);
        CHECK(knowledge(kind).kind == kind);
        for (size_t k = 0; k < kKnobCount; ++k) CHECK_NOTHROW(knob_setting(kind, static_cast<Knob>(k), 620));
    }
    CHECK(all_server_knowledge().size() == kServerKindCount - 1);
    CHECK(knob_setting(ServerKind::gunicorn, Knob::idle_timeout, 620).starts_with("`--keep-alive 620`"));
    CHECK(knob_setting(ServerKind::node, Knob::idle_timeout, 620) ==
          "`server.keepAliveTimeout = 620000` with `server.headersTimeout` above it (e.g. 621000)");
    CHECK(knob_setting(ServerKind::go_net_http, Knob::idle_timeout, 620) == "`http.Server{IdleTimeout: 620 * time.Second}`");
    CHECK(knob_setting(ServerKind::kestrel, Knob::idle_timeout, 620).find("00:10:20") != std::string::npos);
    CHECK(knob_setting(ServerKind::deno, Knob::idle_timeout, 620).empty());
}

TEST_CASE("servers: defaults that change with the version or the worker") {
    ServerInfo node{.kind = ServerKind::node, .version = "20.20.2"};
    auto d = idle_default(node);
    CHECK(d.setting_ms == 5000);
    CHECK(d.closes_at_ms == 6000);
    node.version = "26.0.0";
    CHECK(idle_default(node).setting_ms == 65000);
    node.version = "16.20.0";
    CHECK(idle_default(node).closes_at_ms == 5000);
    ServerInfo puma{.kind = ServerKind::puma, .version = "5.6.5"};
    CHECK(idle_default(puma).setting_ms == 20000);
    puma.version = "7.0.0";
    CHECK(idle_default(puma).setting_ms == 65000);
    ServerInfo gunicorn{.kind = ServerKind::gunicorn, .worker = "sync"};
    CHECK(idle_default(gunicorn).kind == DefaultKind::no_keepalive);
    gunicorn.worker = "gthread";
    CHECK(idle_default(gunicorn).kind == DefaultKind::value);
    CHECK(idle_default(gunicorn).setting_ms == 2000);
    CHECK(idle_default(ServerInfo{.kind = ServerKind::go_net_http}).kind == DefaultKind::fallback);
    CHECK(major_minor("v1.22.1") == std::pair<uint32_t, uint32_t>{1, 22});
    CHECK_FALSE(major_minor("devel"));
}

TEST_CASE("servers: command lines of interpreters, JVMs and native servers") {
    auto classify = [](std::vector<std::string> argv, std::string exe, std::string comm = "") {
        return classify_cmdline(argv, exe, comm);
    };
    auto g = classify({"/usr/bin/python3", "/usr/bin/gunicorn", "--keep-alive", "5", "-k", "gthread", "-b",
                       "10.56.5.6:8080", "app:app"},
                      "/usr/bin/python3.11");
    REQUIRE(g);
    CHECK(g->kind == ServerKind::gunicorn);
    CHECK(g->worker == "gthread");
    CHECK(g->configured_idle_ms == 5000u);
    CHECK(g->configured_by == "--keep-alive 5");
    CHECK(g->module == "app:app");
    CHECK(g->runtime == "python3.11");
    CHECK(g->via == "cmdline: python3.11 /usr/bin/gunicorn");
    // a timeout that never fires (longer than 32-bit milliseconds: the fuzzer's) holds at the most
    auto forever = classify({"/usr/bin/python3", "/usr/bin/gunicorn", "--keep-alive", "25555555", "app:app"},
                            "/usr/bin/python3.11");
    REQUIRE(forever);
    CHECK(forever->configured_idle_ms == std::numeric_limits<uint32_t>::max());
    CHECK(forever->configured_by == "--keep-alive 25555555");

    auto sync = classify({"/usr/bin/python3", "-m", "gunicorn", "--bind=0.0.0.0:80", "wsgi:application"}, "/usr/bin/python3.11");
    REQUIRE(sync);
    CHECK(sync->worker == "sync");
    CHECK(sync->via == "cmdline: python3.11 -m gunicorn");

    auto uv = classify({"python3", "-m", "uvicorn", "main:app", "--timeout-keep-alive=30"}, "/usr/local/bin/python3.12");
    REQUIRE(uv);
    CHECK(uv->kind == ServerKind::uvicorn);
    CHECK(uv->module == "main:app");
    CHECK(uv->configured_idle_ms == 30000u);

    CHECK(classify({"/usr/bin/python3", "/usr/bin/hypercorn", "app:app"}, "/usr/bin/python3.11")->kind == ServerKind::hypercorn);
    CHECK(classify({"/venv/bin/python", "/venv/bin/waitress-serve", "--channel-timeout=60", "app:app"}, "/venv/bin/python")
              ->configured_idle_ms == 60000u);
    CHECK(classify({"python", "-m", "aiohttp.web", "app:init"}, "/usr/bin/python3.11")->kind == ServerKind::aiohttp);
    CHECK(classify({"daphne", "-b", "0.0.0.0", "proj.asgi:application"}, "/usr/bin/python3.11")->kind == ServerKind::daphne);
    CHECK_FALSE(classify({"/usr/bin/python3", "-c", "import time"}, "/usr/bin/python3.11"));
    CHECK_FALSE(classify({"/usr/bin/python3", "manage.py", "migrate"}, "/usr/bin/python3.11"));

    // Process titles (setproctitle, nginx, puma).
    auto titled = classify(split_cmdline(std::string("gunicorn: worker [app:app]          \0", 37)), "/usr/bin/python3.11");
    REQUIRE(titled);
    CHECK(titled->kind == ServerKind::gunicorn);
    CHECK(titled->module == "app:app");
    CHECK(titled->worker.empty());  // the title hides the options
    CHECK(classify({"nginx: worker process"}, "/usr/sbin/nginx")->kind == ServerKind::nginx);
    auto puma = classify({"puma 5.6.5 (tcp://0.0.0.0:9292) [app]"}, "/usr/bin/ruby3.1");
    REQUIRE(puma);
    CHECK(puma->kind == ServerKind::puma);
    CHECK(puma->version == "5.6.5");
    CHECK(classify({"unicorn master -c config/unicorn.rb"}, "/usr/bin/ruby3.1")->kind == ServerKind::unicorn);
    CHECK(classify({"/usr/bin/ruby3.1", "/usr/bin/puma", "-p", "9292"}, "/usr/bin/ruby3.1")->kind == ServerKind::puma);

    auto node = classify({"node", "--max-old-space-size=512", "server.js"}, "/usr/bin/node");
    REQUIRE(node);
    CHECK(node->kind == ServerKind::node);
    CHECK(node->module == "server.js");
    CHECK(classify({"deno", "run", "-A", "main.ts"}, "/usr/bin/deno")->kind == ServerKind::deno);
    CHECK(classify({"bun", "run", "index.ts"}, "/usr/local/bin/bun")->kind == ServerKind::bun);

    // JVMs: Debian's tomcat10 and jetty9 command lines, WildFly, an embedded class path, a bare jar.
    auto tomcat = classify({"/usr/lib/jvm/default-java/bin/java", "-Dcatalina.base=/var/lib/tomcat10",
                            "-Dcatalina.home=/usr/share/tomcat10", "-classpath", "/usr/share/tomcat10/bin/bootstrap.jar",
                            "org.apache.catalina.startup.Bootstrap", "start"},
                           "/usr/lib/jvm/java-17-openjdk-amd64/bin/java");
    REQUIRE(tomcat);
    CHECK(tomcat->kind == ServerKind::tomcat);
    CHECK(tomcat->version == "10");
    CHECK(classify({"/usr/bin/java", "-Djetty.home=/usr/share/jetty9", "-jar", "/usr/share/jetty9/start.jar"},
                   "/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
              ->kind == ServerKind::jetty);
    CHECK(classify({"java", "-jar", "/opt/jboss/wildfly/jboss-modules.jar", "-mp", "/opt/jboss/wildfly/modules"}, "/usr/bin/java")
              ->kind == ServerKind::undertow);
    auto jar = classify({"java", "-Xmx512m", "-jar", "app.jar"}, "/opt/java/openjdk/bin/java");
    REQUIRE(jar);
    CHECK(jar->kind == ServerKind::unknown);  // the jar decides (classify_jar_entries)
    CHECK(jar->module == "app.jar");
    auto dotnet = classify({"dotnet", "Shop.Api.dll"}, "/usr/share/dotnet/dotnet");
    REQUIRE(dotnet);
    CHECK(dotnet->module == "Shop.Api.dll");

    CHECK(classify({"/usr/sbin/apache2", "-k", "start"}, "/usr/sbin/apache2")->kind == ServerKind::apache);
    CHECK(classify({"haproxy", "-f", "/etc/haproxy/haproxy.cfg"}, "/usr/sbin/haproxy")->kind == ServerKind::haproxy);
    CHECK(classify({"envoy", "-c", "/etc/envoy.yaml"}, "/usr/local/bin/envoy")->kind == ServerKind::envoy);
    CHECK(classify({"/usr/sbin/nginx", "-g", "daemon off;"}, "/usr/sbin/nginx (deleted)")->kind == ServerKind::nginx);
    CHECK_FALSE(classify({"/app/checkout-api"}, "/app/checkout-api"));
    // An empty command line (a zombie, a kernel thread): the executable alone decides (found by the fuzzer).
    CHECK(classify({}, "/usr/bin/node")->kind == ServerKind::node);
    CHECK(classify({}, "/usr/sbin/nginx")->kind == ServerKind::nginx);
    CHECK_FALSE(classify({}, ""));
}

TEST_CASE("servers: /proc/PID/stat start time, comm with spaces and parentheses") {
    CHECK(parse_stat_start_time("4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1 0 0 0 1 2 0 0 20 0 1 0 "
                                "987654 12345 67 18446744073709551615") == 987654u);
    CHECK_FALSE(parse_stat_start_time("4242 (x) S 1 2"));
    std::ifstream self("/proc/self/stat");
    std::string text((std::istreambuf_iterator<char>(self)), {});
    CHECK(parse_stat_start_time(text).has_value());
}

TEST_CASE("servers: Go build info from a net/http server built here, with and without section headers") {
    const std::string& binary = go_server_binary();
    if (binary.empty()) {
        WARN("SKIPPED: Debian's golang-go is not installed (scripts/setup.sh installs it)");
        return;
    }
    std::string error;
    auto info = read_go_buildinfo(binary, &error);
    INFO(error);
    REQUIRE(info);
    std::string version = run(std::string(TCPWHY_GO) + " version 2>/dev/null");  // "go version go1.19.8 linux/amd64"
    CHECK(version.find(info->go_version + " ") != std::string::npos);
    CHECK(info->main.path == "example.com/checkout");
    CHECK(info->path == "example.com/checkout");
    auto server = classify_go(*info);
    REQUIRE(server);
    CHECK(server->kind == ServerKind::go_net_http);
    CHECK(server->runtime == info->go_version);
    CHECK(server->module == "example.com/checkout");

    TempDir dir;
    auto stripped = read_go_buildinfo(without_section_headers(binary, dir.path / "stripped"), &error);
    INFO(error);
    REQUIRE(stripped);
    CHECK(stripped->go_version == info->go_version);
    CHECK(stripped->main.path == "example.com/checkout");

    // Not Go: a C binary, and not ELF at all.
    CHECK_FALSE(read_go_buildinfo("/bin/true", &error));
    CHECK(error.find("no Go build info") != std::string::npos);
    CHECK_FALSE(read_go_buildinfo(TCPWHY_SOURCE_DIR "/README.md", &error));
    CHECK(error.find("not an ELF file") != std::string::npos);
}

TEST_CASE("servers: Go build info of Debian's caddy names Caddy and its version") {
    if (access("/usr/bin/caddy", R_OK) != 0) {
        WARN("SKIPPED: Debian's caddy is not installed (scripts/setup.sh installs it)");
        return;
    }
    auto info = read_go_buildinfo("/usr/bin/caddy");
    REQUIRE(info);
    auto server = classify_go(*info);
    REQUIRE(server);
    CHECK(server->kind == ServerKind::caddy);
    CHECK(server->runtime.starts_with("go1."));
}

TEST_CASE("servers: gin, echo, fasthttp and Traefik from their module lists -- the pre-1.18 pointer layout") {
    auto go = [](const std::string& deps) {
        auto info = parse_go_buildinfo(inline_buildinfo(
            "go1.21.5", "path\texample.com/api\nmod\texample.com/api\t(devel)\t\n" + deps + "build\t-compiler=gc\n"));
        REQUIRE(info);
        return *classify_go(*info);
    };
    auto gin = go("dep\tgithub.com/gin-gonic/gin\tv1.9.1\th1:x=\ndep\tgithub.com/go-playground/validator/v10\tv10.14.0\th1:y=\n");
    CHECK(gin.kind == ServerKind::go_net_http);
    CHECK(gin.framework == "gin v1.9.1");
    CHECK(gin.runtime == "go1.21.5");
    CHECK(go("dep\tgithub.com/labstack/echo/v4\tv4.11.4\th1:x=\n").framework == "echo v4.11.4");
    auto fast = go("dep\tgithub.com/gofiber/fiber/v2\tv2.52.0\th1:x=\ndep\tgithub.com/valyala/fasthttp\tv1.51.0\th1:y=\n");
    CHECK(fast.kind == ServerKind::fasthttp);
    CHECK(fast.framework == "fiber");
    CHECK(fast.version == "v1.51.0");
    auto traefik = parse_go_buildinfo(inline_buildinfo("go1.22.1", "path\tgithub.com/traefik/traefik/v3/cmd/traefik\n"
                                                                    "mod\tgithub.com/traefik/traefik/v3\tv3.0.0\t\n"));
    REQUIRE(traefik);
    CHECK(classify_go(*traefik)->kind == ServerKind::traefik);
    CHECK(go("").framework.empty());  // net/http itself: the standard library, no module line

    // Go 1.13-1.17: the header points at two string headers {data, len} elsewhere in the binary.
    std::string header = "\xff Go buildinf:";
    header += static_cast<char>(8);
    header += static_cast<char>(0);
    header.resize(16, '\0');
    auto u64 = [](uint64_t v) {
        std::string b(8, '\0');
        for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
        return b;
    };
    header += u64(0x1000) + u64(0x1010);
    std::string version = "go1.16.15", mod = std::string(16, '0') + "path\tcmd/x\nmod\texample.com/old\tv1.2.3\t\n" + std::string(16, '1');
    std::map<uint64_t, std::string> memory = {{0x1000, u64(0x2000) + u64(version.size())},
                                              {0x1010, u64(0x3000) + u64(mod.size())},
                                              {0x2000, version},
                                              {0x3000, mod}};
    auto old = parse_go_buildinfo(header, [&](uint64_t addr, size_t len) -> std::optional<std::string> {
        auto it = memory.find(addr);
        if (it == memory.end() || it->second.size() < len) return std::nullopt;
        return it->second.substr(0, len);
    });
    REQUIRE(old);
    CHECK(old->go_version == "go1.16.15");
    CHECK(old->main.path == "example.com/old");
    CHECK(old->main.version == "v1.2.3");
    CHECK_FALSE(parse_go_buildinfo("not build info at all, but long enough to read a header"));
}

TEST_CASE("servers: versions from Debian's node, nginx and apache2 binaries") {
    if (access("/usr/bin/node", R_OK) == 0) {
        std::string version = run("/usr/bin/node --version");  // "v20.20.2\n"
        version = version.substr(1, version.find('\n') - 1);
        CHECK(read_node_version("/usr/bin/node") == version);
    }
    if (access("/usr/sbin/nginx", R_OK) == 0) {
        std::string v = run("/usr/sbin/nginx -v 2>&1");  // "nginx version: nginx/1.22.1\n"
        auto at = v.find("nginx/");
        REQUIRE(at != std::string::npos);
        CHECK(read_binary_version("/usr/sbin/nginx", "nginx/") == v.substr(at + 6, v.find_first_of(" \n", at) - at - 6));
    }
    if (access("/usr/sbin/apache2", R_OK) == 0) {
        std::string v = run("/usr/sbin/apache2 -v 2>&1");  // "Server version: Apache/2.4.71 (Debian)"
        auto at = v.find("Apache/");
        REQUIRE(at != std::string::npos);
        CHECK(read_binary_version("/usr/sbin/apache2", "Apache/") == v.substr(at + 7, v.find(' ', at) - at - 7));
    }
    CHECK(read_node_version("/bin/true").empty());
}

TEST_CASE("servers: a Spring Boot jar's libraries name Tomcat, Jetty or Undertow") {
    std::string py = python3();
    if (py.empty()) {
        WARN("SKIPPED: /usr/bin/python3 makes the jars");
        return;
    }
    TempDir dir;
    auto make_jar = [&](const std::string& name, const std::vector<std::string>& entries) {
        std::string list;
        for (const auto& e : entries) list += "'" + e + "',";
        std::string jar = (dir.path / name).string();
        run(fmt::format("{} -c \"import zipfile; z=zipfile.ZipFile('{}','w'); [z.writestr(n, b'x') for n in [{}]]; "
                        "z.close()\"",
                        py, jar, list));
        return jar;
    };
    std::string boot = make_jar("app.jar", {"META-INF/MANIFEST.MF", "BOOT-INF/classes/com/shop/App.class",
                                            "BOOT-INF/lib/spring-boot-3.2.0.jar", "BOOT-INF/lib/spring-web-6.1.1.jar",
                                            "BOOT-INF/lib/tomcat-embed-core-10.1.16.jar"});
    std::string error;
    auto names = read_zip_names(boot, 65536, &error);
    INFO(error);
    REQUIRE(names);
    CHECK(names->size() == 5);
    auto server = classify_jar_entries(*names);
    REQUIRE(server);
    CHECK(server->kind == ServerKind::tomcat);
    CHECK(server->version == "10.1.16");
    CHECK(server->framework == "Spring Boot 3.2.0");
    auto jetty = classify_jar_entries(*read_zip_names(make_jar("j.jar", {"BOOT-INF/lib/jetty-server-11.0.18.jar"})));
    CHECK(jetty->kind == ServerKind::jetty);
    auto webflux = classify_jar_entries(*read_zip_names(make_jar("w.jar", {"BOOT-INF/lib/reactor-netty-http-1.1.13.jar"})));
    CHECK(webflux->kind == ServerKind::netty);
    auto shaded = classify_jar_entries(*read_zip_names(make_jar("s.jar", {"io/undertow/Undertow.class"})));
    CHECK(shaded->kind == ServerKind::undertow);
    CHECK_FALSE(classify_jar_entries(*read_zip_names(make_jar("plain.jar", {"com/shop/Batch.class"}))));
    CHECK_FALSE(read_zip_names(TCPWHY_SOURCE_DIR "/README.md", 10, &error));
    CHECK(error.find("not a zip file") != std::string::npos);
}

TEST_CASE("servers: the detector on real processes: a Go server, gunicorn, node, and an unknown binary") {
    ServerDetector detector;

    if (const std::string& go = go_server_binary(); !go.empty()) {
        Child child({go, "127.0.0.1:0"});
        REQUIRE(wait_for_exec(child.pid, "/checkout"));
        auto r = detector.detect(static_cast<uint32_t>(child.pid));
        REQUIRE(r);
        CHECK(r->server.kind == ServerKind::go_net_http);
        CHECK(r->server.module == "example.com/checkout");
        CHECK(r->server.via == "go build info: net/http (standard library)");
        CHECK(r->start_time > 0);
    }
    if (access("/usr/bin/gunicorn", X_OK) == 0 && !python3().empty()) {
        TempDir dir;
        write(dir.path / "app.py", "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n");
        Child child({"/usr/bin/python3", "/usr/bin/gunicorn", "--chdir", dir.path.string(), "-k", "gthread",
                     "--keep-alive", "3", "-b", "127.0.0.1:0", "app:app"});
        REQUIRE(wait_for_exec(child.pid, "python3.11"));
        auto r = detector.detect(static_cast<uint32_t>(child.pid));
        REQUIRE(r);
        CHECK(r->server.kind == ServerKind::gunicorn);
        CHECK(r->server.worker == "gthread");
        CHECK(r->server.configured_idle_ms == 3000u);
        CHECK(r->server.version == run("/usr/bin/python3 -c 'import gunicorn; print(gunicorn.__version__, end=\"\")'"));
    }
    if (access("/usr/bin/node", X_OK) == 0) {
        Child child({"/usr/bin/node", "-e", "setTimeout(() => {}, 30000)"});
        REQUIRE(wait_for_exec(child.pid, "/node"));
        auto r = detector.detect(static_cast<uint32_t>(child.pid));
        REQUIRE(r);
        CHECK(r->server.kind == ServerKind::node);
        std::string version = run("/usr/bin/node --version");
        CHECK(r->server.version == version.substr(1, version.find('\n') - 1));
    }
    if (!python3().empty() && run("/usr/bin/python3 -c 'import aiohttp.web' 2>&1").empty()) {
        // `python3 app.py` serving with aiohttp: only the modules it maps say so.
        Child child({"/usr/bin/python3", "-c", "import aiohttp.web, sys, time; sys.stdout.write('up'); sys.stdout.flush(); time.sleep(30)"});
        REQUIRE(wait_for_exec(child.pid, "python3.11"));
        ServerRecord r;
        for (int i = 0; i < 100 && r.server.kind != ServerKind::aiohttp; ++i) {  // until the import has mapped them
            std::this_thread::sleep_for(std::chrono::milliseconds(30));
            r = detector.detect(static_cast<uint32_t>(child.pid)).value_or(ServerRecord{});
        }
        CHECK(r.server.kind == ServerKind::aiohttp);
        CHECK(r.server.via == "maps: aiohttp's C extensions");
        CHECK(r.server.version == run("/usr/bin/python3 -c 'import aiohttp; print(aiohttp.__version__, end=\"\")'"));
    }
    {
        Child child({"/bin/sleep", "30"});
        REQUIRE(wait_for_exec(child.pid, "/sleep"));
        auto r = detector.detect(static_cast<uint32_t>(child.pid));
        REQUIRE(r);
        CHECK(r->server.kind == ServerKind::unknown);
        CHECK(r->server.via.starts_with("not recognised: exe /"));
    }
    CHECK_FALSE(detector.detect(0x7ffffff0));  // no such process
    CHECK(detector.counters().vanished == 1);
}

TEST_CASE("servers: the detector runs once per process, within its budget, and again after an exec") {
    ServerDetector detector(ServerDetectorOptions{.max_detections_per_tick = 1});
    Child sleeper({"/bin/sleep", "30"});
    REQUIRE(wait_for_exec(sleeper.pid, "/sleep"));
    auto pid = static_cast<uint32_t>(getpid());
    auto other = static_cast<uint32_t>(sleeper.pid);
    CHECK(detector.note(pid, "unit_tests"));
    CHECK(detector.counters().detections == 1);
    for (int i = 0; i < 1000; ++i) detector.note(pid, "unit_tests");  // hash lookups only
    CHECK(detector.counters().detections == 1);
    CHECK_FALSE(detector.note(other, "sleep"));  // over this tick's budget: deferred
    CHECK(detector.counters().deferred == 1);
    detector.tick();
    CHECK(detector.counters().detections == 2);
    CHECK(detector.table()->lookup(other));
    detector.tick();
    detector.note(other, "sleep2");  // comm changed: an exec, detected again
    CHECK(detector.counters().detections == 3);
    CHECK(detector.take_changes().size() == 2);  // the exec changed nothing detectable
    CHECK(detector.counters().binaries_read <= 2);
}

TEST_CASE("servers: the table is bounded") {
    ServerTable table(3);
    for (uint32_t pid = 1; pid <= 10; ++pid) table.set(ServerRecord{pid, 1, "x", {}});
    CHECK(table.size() == 3);
    CHECK(table.lookup(10));
    CHECK_FALSE(table.lookup(1));
}

TEST_CASE("servers: server lines round-trip through the trace") {
    ServerRecord r{4242, 987654, "gunicorn",
                   ServerInfo{.kind = ServerKind::gunicorn, .version = "20.1.0", .runtime = "python3.11",
                              .module = "app:app", .worker = "gthread", .configured_idle_ms = 5000,
                              .configured_by = "--keep-alive 5", .via = "cmdline: python3.11 /usr/bin/gunicorn",
                              .exe = "/usr/bin/python3.11"}};
    std::string line = to_json_line(r);
    CHECK(line.starts_with(R"({"v":1,"type":"server","pid":4242,"start_time":987654,"comm":"gunicorn","kind":"gunicorn")"));
    auto parsed = parse_json_line(line);
    REQUIRE(parsed.kind == LineKind::server);
    CHECK(parsed.server.pid == r.pid);
    CHECK(parsed.server.start_time == r.start_time);
    CHECK(parsed.server.server == r.server);
    // A kind from a newer tcpwhy reads as unknown, with the rest kept.
    auto newer = parse_json_line(R"({"v":1,"type":"server","pid":7,"kind":"zig-http","via":"x"})");
    REQUIRE(newer.kind == LineKind::server);
    CHECK(newer.server.server.kind == ServerKind::unknown);
    CHECK(parse_json_line(R"({"v":1,"type":"server","kind":"node"})").kind == LineKind::bad);
}

namespace {

// The keep-alive race against a backend whose owner (pid 4242) runs `server`.
Finding race_with(const ServerInfo& server, uint32_t idle_ms, uint32_t lb_timeout_s = 600) {
    auto config = CorrelatorConfig::defaults();
    config.lb_idle_timeout_s = lb_timeout_s;
    Correlator c(config);
    auto table = std::make_shared<ServerTable>();
    table->set(ServerRecord{4242, 1, "x", server});
    c.set_servers(table);
    Sock s{.comm = "whatever"};
    for (int i = 0; i < 3; ++i) {
        Sock k = s;
        k.cookie += i;
        k.rport += i;
        uint64_t t0 = sec(10 * (i + 1));
        for (const Event& e : {accepted(k, t0), idle_fin(k, t0 + ms(idle_ms) + ms(50), idle_ms),
                               reset_sent(k, t0 + ms(idle_ms) + ms(52), "TCP_ABORT_ON_DATA", SockKind::full,
                                          TcpState::close, true)})
            c.on_event(e);
    }
    c.finish();
    for (auto& f : c.findings())
        if (f.kind == FindingKind::idle_close_race) return f;
    FAIL("no race");
    return {};
}

}  // namespace

TEST_CASE("servers: advice names the detected server, its knob, the value it has now and the value to set") {
    ServerInfo gunicorn{.kind = ServerKind::gunicorn, .version = "20.1.0", .worker = "gthread"};
    CHECK(explain::advice(race_with(gunicorn, 2000)) ==
          "gunicorn 20.1.0 (gthread worker) closes idle connections after 2.0 s (its default `--keep-alive 2`); "
          "behind this LB (600 s) set `--keep-alive 620` (or `keepalive = 620` in gunicorn.conf.py)");
    gunicorn.configured_idle_ms = 5000;
    gunicorn.configured_by = "--keep-alive 5";
    CHECK(explain::advice(race_with(gunicorn, 5000)).starts_with(
        "gunicorn 20.1.0 (gthread worker) closes idle connections after 5.0 s (its command line sets `--keep-alive 5`)"));

    ServerInfo node{.kind = ServerKind::node, .version = "20.20.2"};
    CHECK(explain::advice(race_with(node, 6000)) ==
          "Node.js 20.20.2 closes idle connections after 6.0 s (its default `server.keepAliveTimeout = 5000` plus the "
          "1 s socket buffer Node adds (server.keepAliveTimeoutBuffer)); behind this LB (600 s) set "
          "`server.keepAliveTimeout = 620000` with `server.headersTimeout` above it (e.g. 621000)");
    CHECK(explain::advice(race_with(node, 31000)).find("(not its default `server.keepAliveTimeout = 5000`: its "
                                                       "configuration sets about 30.0 s, and it closes 1.0 s later)") !=
          std::string::npos);

    ServerInfo go{.kind = ServerKind::go_net_http, .runtime = "go1.19.8", .framework = "gin v1.9.1"};
    CHECK(explain::advice(race_with(go, 30000)) ==
          "Go net/http (gin v1.9.1, go1.19.8) closes idle connections after 30.0 s (`IdleTimeout` falls back to "
          "ReadTimeout; when both are zero idle connections are kept until the client closes them); behind this LB "
          "(600 s) set `http.Server{IdleTimeout: 620 * time.Second}`");

    ServerInfo uvicorn{.kind = ServerKind::uvicorn, .version = "0.17.6"};
    CHECK(explain::advice(race_with(uvicorn, 5000)) ==
          "uvicorn 0.17.6 closes idle connections after 5.0 s (its default `--timeout-keep-alive 5`); behind this LB "
          "(600 s) set `--timeout-keep-alive 620`");
    CHECK(explain::advice(race_with(ServerInfo{.kind = ServerKind::apache, .version = "2.4.71"}, 5000)) ==
          "Apache httpd 2.4.71 closes idle connections after 5.0 s (its default `KeepAliveTimeout 5`); behind this LB "
          "(600 s) set `KeepAliveTimeout 620`");
    CHECK(explain::advice(race_with(ServerInfo{.kind = ServerKind::nginx, .version = "1.22.1"}, 75000)) ==
          "nginx 1.22.1 closes idle connections after 75.0 s (its default `keepalive_timeout 75s;`); behind this LB "
          "(600 s) set `keepalive_timeout 620s;`");
    CHECK(explain::advice(race_with(ServerInfo{.kind = ServerKind::tomcat}, 20000))
              .find("(`keepAliveTimeout` falls back to connectionTimeout") != std::string::npos);
    CHECK(explain::advice(race_with(ServerInfo{.kind = ServerKind::deno}, 5000))
              .find("Deno has no setting tcpwhy knows") != std::string::npos);
    // The sync worker keeps nothing alive: the advice says to change the worker.
    CHECK(explain::advice(race_with(ServerInfo{.kind = ServerKind::gunicorn, .worker = "sync"}, 2000))
              .find("use a threaded or async worker (`-k gthread`) with `--keep-alive 620`") != std::string::npos);
    // Detected but not recognised: the words for an unknown process stay.
    std::string unknown =
        explain::advice(race_with(ServerInfo{.kind = ServerKind::unknown, .via = "not recognised: exe /app/batch"}, 6000));
    CHECK(unknown.starts_with("make the server's idle timeout longer than the LB's (600 s)"));
    CHECK(unknown.ends_with("(tcpwhy did not recognise the server: not recognised: exe /app/batch; docs/servers.md "
                            "lists those it knows)"));
    CHECK(explain::server_name(race_with(gunicorn, 2000).backend) == "gunicorn 20.1.0 (gthread worker)");
    CHECK(explain::server_setting(race_with(gunicorn, 2000).backend, Knob::listen_backlog, 0) == "`--backlog N`");
}

TEST_CASE("servers: the detected server reaches the metrics (bounded info series), top's snapshot and drill-down") {
    ServerInfo gunicorn{.kind = ServerKind::gunicorn, .version = "20.1.0", .worker = "gthread",
                        .via = "cmdline: python3.11 /usr/bin/gunicorn"};
    Finding f = race_with(gunicorn, 2000);

    daemon::MetricsSnapshot snap;
    snap.backends = {f.backend};
    snap.findings = {f};
    std::string text = daemon::render_prometheus(snap, 200);
    CHECK(text.find("tcpwhy_backend_server{namespace=\"\",pod=\"\",port=\"8080\",server=\"gunicorn\",version=\"20.1.0\"} 1\n") !=
          std::string::npos);
    // Past the backend bound the server series is dropped, not folded into a new label set.
    BackendProfile second = f.backend;
    second.id.port = 9090;
    snap.backends.push_back(second);
    std::string folded = daemon::render_prometheus(snap, 1);
    CHECK(folded.find("server=\"gunicorn\"") != std::string::npos);
    CHECK(folded.find("pod=\"_other\",port=\"_other\",server=") == std::string::npos);

    // The live view: a correlator fed with the server table, its snapshot, the wire and top's drill-down.
    LiveView view(CorrelatorConfig::defaults());
    auto table = std::make_shared<ServerTable>();
    table->set(ServerRecord{4242, 1, "gunicorn", gunicorn});
    view.correlator().set_servers(table);
    Sock s;
    for (const Event& e : {accepted(s, sec(1)), idle_fin(s, sec(3), 2000)}) view.on_event(e);
    view.tick(sec(4), LiveStatus{});
    Snapshot snapshot = view.snapshot();
    REQUIRE(snapshot.rows.size() == 1);
    CHECK(snapshot.rows[0].server == "gunicorn 20.1.0 (gthread worker)");
    auto wire = parse_snapshot(to_json(snapshot));
    REQUIRE(wire);
    CHECK(wire->rows[0].server_detail == snapshot.rows[0].server_detail);
    auto lines = top::detail_lines(wire->rows[0], wire->header, top::Glyphs::ascii(), 200);
    REQUIRE(lines.size() > 1);
    CHECK(lines[1].text ==
          "server: gunicorn 20.1.0 (gthread worker); idle timeout `--keep-alive`, default 2.0 s; recognised by cmdline: "
          "python3.11 /usr/bin/gunicorn");
}

TEST_CASE("servers: docs/servers.md lists every server with its kind, knob and the source of its default") {
    std::ifstream doc(std::string(TCPWHY_SOURCE_DIR) + "/docs/servers.md");
    REQUIRE(doc);
    std::map<std::string, std::string> rows;  // kind -> table row
    std::string line;
    while (std::getline(doc, line)) {
        auto start = line.find("| `");
        if (!line.starts_with("| ") || start == std::string::npos) continue;
        auto end = line.find('`', start + 3);
        rows.emplace(line.substr(start + 3, end - start - 3), line);
    }
    for (const auto& k : all_server_knowledge()) {
        INFO(to_string(k.kind));
        REQUIRE(rows.count(std::string(to_string(k.kind))));
        const std::string& row = rows[std::string(to_string(k.kind))];
        CHECK(row.starts_with(fmt::format("| {} |", k.display)));
        if (!k.idle.name.empty()) CHECK(row.find(fmt::format("`{}`", k.idle.name)) != std::string::npos);
        CHECK(!k.idle.source.empty());
        CHECK(row.find(fmt::format("]({})", k.idle.source)) != std::string::npos);
    }
}
