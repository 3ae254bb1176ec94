// What a command line says about the server: interpreters and the module or script they run,
// JVMs and their main class or jar, native servers and the process titles servers give
// themselves. Pure: the /proc reader (detector.cpp) hands in what it read.
#include <algorithm>
#include <limits>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "tcpwhy/server_detector.h"

namespace tcpwhy {
namespace {

// argv without argv[0] (empty for an empty command line: a zombie's or a kernel thread's).
std::span<const std::string> rest_of(const std::vector<std::string>& argv) {
    return argv.empty() ? std::span<const std::string>() : std::span<const std::string>(argv).subspan(1);
}

std::string_view basename_of(std::string_view path) {
    auto slash = path.rfind('/');
    return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

bool starts_with_word(std::string_view text, std::string_view word) {
    return text.starts_with(word) &&
           (text.size() == word.size() || text[word.size()] == ' ' || text[word.size()] == ':' ||
            text[word.size()] == '[');
}

// "python3.11" -> true; "pythonista" -> false.
bool is_python(std::string_view name) {
    if (!name.starts_with("python")) return false;
    name.remove_prefix(6);
    return name.find_first_not_of("0123456789.") == std::string_view::npos;
}

bool is_ruby(std::string_view name) {
    if (!name.starts_with("ruby")) return false;
    name.remove_prefix(4);
    return name.find_first_not_of("0123456789.") == std::string_view::npos;
}

// A timeout option's seconds as milliseconds; none above a year (or not a number). One longer than
// milliseconds hold in 32 bits (49.7 days: a timeout that never fires) holds at that most.
std::optional<uint32_t> seconds_value(std::string_view text) {
    constexpr double kMaxMs = std::numeric_limits<uint32_t>::max();
    double value = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || p != text.data() + text.size() || !(value >= 0) || value > 86400 * 365)
        return std::nullopt;
    return static_cast<uint32_t>(std::min(value * 1000 + 0.5, kMaxMs));
}

// The value of `--name V`, `--name=V` or (short) `-k V`, `-kV`; the last one wins, as in argparse.
std::optional<std::string> option_value(std::span<const std::string> args, std::string_view long_name,
                                        std::string_view short_name = "") {
    std::optional<std::string> found;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string_view a = args[i];
        if (a == "--") break;
        for (std::string_view name : {long_name, short_name}) {
            if (name.empty() || !a.starts_with(name)) continue;
            std::string_view rest = a.substr(name.size());
            if (rest.empty()) {
                if (i + 1 < args.size()) found = args[i + 1];
            } else if (rest.front() == '=') {
                found = std::string(rest.substr(1));
            } else if (name.size() == 2 && name != long_name) {  // -kgthread
                found = std::string(rest);
            }
        }
    }
    return found;
}

// Positional arguments after the options (options that take a value are listed).
std::vector<std::string> positionals(std::span<const std::string> args, std::initializer_list<std::string_view> with_value) {
    std::vector<std::string> out;
    for (size_t i = 0; i < args.size(); ++i) {
        std::string_view a = args[i];
        if (a.starts_with("-")) {
            bool takes = std::any_of(with_value.begin(), with_value.end(), [&](std::string_view w) { return a == w; });
            if (takes) ++i;
            continue;
        }
        out.emplace_back(a);
    }
    return out;
}

void set_configured(ServerInfo& info, std::span<const std::string> args, std::string_view long_name,
                    std::string_view short_name = "") {
    auto value = option_value(args, long_name, short_name);
    if (!value) return;
    if (auto ms = seconds_value(*value)) {
        info.configured_idle_ms = *ms;
        info.configured_by = fmt::format("{} {}", long_name, *value);
    }
}

// The Python servers tcpwhy knows, by module or script name.
std::optional<ServerInfo> python_server(std::string_view name, std::span<const std::string> args) {
    ServerInfo info;
    if (name == "gunicorn") {
        info.kind = ServerKind::gunicorn;
        info.worker = option_value(args, "--worker-class", "-k").value_or("sync");
        // Worker classes may be spelled as module paths or short names ("gthread", "gevent").
        if (auto dot = info.worker.rfind("egg:gunicorn#"); dot == 0) info.worker = info.worker.substr(13);
        set_configured(info, args, "--keep-alive");
        auto apps = positionals(args, {"-k", "--worker-class", "-w", "--workers", "-b", "--bind", "-c", "--config",
                                       "--keep-alive", "-t", "--timeout", "--threads", "--backlog", "--graceful-timeout",
                                       "--log-level", "--access-logfile", "--error-logfile", "-n", "--name", "--chdir",
                                       "-e", "--env", "--pid", "-u", "--user", "-g", "--group"});
        if (!apps.empty()) info.module = apps.back();
    } else if (name == "uvicorn") {
        info.kind = ServerKind::uvicorn;
        set_configured(info, args, "--timeout-keep-alive");
        auto apps = positionals(args, {"--host", "--port", "--uds", "--fd", "--workers", "--loop", "--http", "--ws",
                                       "--timeout-keep-alive", "--backlog", "--log-level", "--root-path",
                                       "--limit-concurrency", "--app-dir", "--env-file", "--log-config"});
        if (!apps.empty()) info.module = apps.front();
    } else if (name == "hypercorn") {
        info.kind = ServerKind::hypercorn;
        set_configured(info, args, "--keep-alive");
        auto apps = positionals(args, {"-b", "--bind", "-w", "--workers", "-k", "--worker-class", "--keep-alive",
                                       "--backlog", "-c", "--config", "--graceful-timeout", "--log-level"});
        if (!apps.empty()) info.module = apps.back();
    } else if (name == "waitress-serve" || name == "waitress") {
        info.kind = ServerKind::waitress;
        set_configured(info, args, "--channel-timeout");
        auto apps = positionals(args, {});
        if (!apps.empty()) info.module = apps.back();
    } else if (name == "daphne") {
        info.kind = ServerKind::daphne;
        auto apps = positionals(args, {"-b", "--bind", "-p", "--port", "-u", "--unix-socket", "--http-timeout",
                                       "--access-log", "-v", "--verbosity"});
        if (!apps.empty()) info.module = apps.back();
    } else if (name == "aiohttp.web" || name == "aiohttp") {
        info.kind = ServerKind::aiohttp;
        auto apps = positionals(args, {"-H", "--hostname", "-P", "--port", "-U", "--path"});
        if (!apps.empty()) info.module = apps.front();
    } else {
        return std::nullopt;
    }
    return info;
}

// python [options] (-m module | script) args...
std::optional<ServerInfo> classify_python(const std::vector<std::string>& argv, std::string_view interpreter) {
    for (size_t i = 1; i < argv.size(); ++i) {
        std::string_view a = argv[i];
        std::span<const std::string> rest(argv.data() + i + 1, argv.size() - i - 1);
        if (a == "-m" && i + 1 < argv.size()) {
            std::string module = argv[i + 1];
            auto info = python_server(module, std::span<const std::string>(argv.data() + i + 2, argv.size() - i - 2));
            if (info) info->via = fmt::format("cmdline: {} -m {}", interpreter, module);
            return info;
        }
        if (a.starts_with("-m") && a.size() > 2) {  // -mgunicorn
            auto info = python_server(a.substr(2), rest);
            if (info) info->via = fmt::format("cmdline: {} -m {}", interpreter, a.substr(2));
            return info;
        }
        if (a == "-c") return std::nullopt;
        if (a.starts_with("-")) {
            if (a == "-W" || a == "-X" || a == "-Q") ++i;  // options with a value
            continue;
        }
        // A script: the server's entry point (/usr/bin/gunicorn, venv/bin/uvicorn).
        std::string_view script = basename_of(a);
        auto info = python_server(script, rest);
        if (info) info->via = fmt::format("cmdline: {} {}", interpreter, a);
        return info;
    }
    return std::nullopt;
}

// Process titles: servers that rewrite their argv say who they are in it.
std::optional<ServerInfo> classify_title(std::string_view title) {
    ServerInfo info;
    if (starts_with_word(title, "gunicorn")) {  // "gunicorn: worker [app:app]" (setproctitle)
        info.kind = ServerKind::gunicorn;
        if (auto open = title.find('['); open != std::string_view::npos) {
            auto close = title.find(']', open);
            if (close != std::string_view::npos) info.module = std::string(title.substr(open + 1, close - open - 1));
        }
    } else if (starts_with_word(title, "nginx")) {  // "nginx: worker process"
        info.kind = ServerKind::nginx;
    } else if (starts_with_word(title, "puma")) {  // "puma 5.6.5 (tcp://0.0.0.0:9292) [app]", "puma: cluster worker 0: ..."
        info.kind = ServerKind::puma;
        std::string_view rest = title.substr(4);
        if (rest.starts_with(' ') && rest.size() > 1 && std::isdigit(static_cast<unsigned char>(rest[1]))) {
            rest.remove_prefix(1);
            info.version = std::string(rest.substr(0, rest.find(' ')));
        }
    } else if (starts_with_word(title, "unicorn")) {  // "unicorn master -c ...", "unicorn worker[0] -c ..."
        info.kind = ServerKind::unicorn;
    } else {
        return std::nullopt;
    }
    info.via = fmt::format("process title: {}", title.substr(0, std::min<size_t>(title.size(), 40)));
    return info;
}

// The JVM: main class, -jar, or what the class path names.
std::optional<ServerInfo> classify_java(const std::vector<std::string>& argv) {
    ServerInfo info;
    for (size_t i = 1; i < argv.size(); ++i) {
        std::string_view a = argv[i];
        auto mark = [&](ServerKind kind, std::string_view why) {
            if (info.kind != ServerKind::unknown) return;
            info.kind = kind;
            info.via = fmt::format("cmdline: java {}", why);
        };
        if (a.find("org.apache.catalina") != std::string_view::npos || a.find("tomcat") != std::string_view::npos) {
            // -Dcatalina.home=/usr/share/tomcat10, or the Bootstrap class itself.
            if (a.find("org.apache.catalina.startup.Bootstrap") != std::string_view::npos || a.starts_with("-Dcatalina."))
                mark(ServerKind::tomcat, a.find("Bootstrap") != std::string_view::npos ? "org.apache.catalina.startup.Bootstrap"
                                                                                        : "-Dcatalina.home");
        }
        if (a.find("org.eclipse.jetty") != std::string_view::npos || a.starts_with("-Djetty.home") ||
            (a.ends_with("start.jar") && i > 0 && argv[i - 1] == "-jar"))
            mark(ServerKind::jetty, a.ends_with("start.jar") ? "-jar start.jar" : "org.eclipse.jetty");
        if (a.find("jboss-modules.jar") != std::string_view::npos || a.find("io.undertow") != std::string_view::npos)
            mark(ServerKind::undertow, "jboss-modules (WildFly: Undertow)");
        if (a == "-jar" && i + 1 < argv.size() && info.module.empty()) info.module = argv[i + 1];
        if ((a == "-cp" || a == "-classpath" || a == "--class-path") && i + 1 < argv.size()) {
            std::string_view cp = argv[i + 1];
            if (cp.find("tomcat-embed-core") != std::string_view::npos) mark(ServerKind::tomcat, "-cp tomcat-embed-core");
            else if (cp.find("jetty-server") != std::string_view::npos) mark(ServerKind::jetty, "-cp jetty-server");
            else if (cp.find("undertow-core") != std::string_view::npos) mark(ServerKind::undertow, "-cp undertow-core");
            else if (cp.find("netty-codec-http") != std::string_view::npos) mark(ServerKind::netty, "-cp netty-codec-http");
        }
    }
    if (info.kind == ServerKind::tomcat) {
        // Debian's layout names the major version: /usr/share/tomcat10.
        for (const auto& a : argv)
            if (auto at = a.find("tomcat"); at != std::string::npos && at + 6 < a.size() && std::isdigit(static_cast<unsigned char>(a[at + 6]))) {
                size_t end = at + 6;
                while (end < a.size() && std::isdigit(static_cast<unsigned char>(a[end]))) ++end;
                info.version = a.substr(at + 6, end - at - 6);
                break;
            }
    }
    return info;
}

}  // namespace

std::vector<std::string> split_cmdline(std::string_view raw) {
    std::vector<std::string> argv;
    while (!raw.empty() && raw.back() == '\0') raw.remove_suffix(1);
    size_t start = 0;
    while (start <= raw.size() && !raw.empty()) {
        size_t end = raw.find('\0', start);
        if (end == std::string_view::npos) end = raw.size();
        argv.emplace_back(raw.substr(start, end - start));
        if (end == raw.size()) break;
        start = end + 1;
    }
    // A rewritten title is padded with spaces into the old argv's room.
    if (argv.size() == 1) {
        auto& t = argv.front();
        t.erase(t.find_last_not_of(' ') + 1);
    }
    return argv;
}

std::optional<ServerInfo> classify_cmdline(const std::vector<std::string>& argv, std::string_view exe, std::string_view comm) {
    std::string_view exe_name = basename_of(exe);
    std::string_view arg0 = argv.empty() ? std::string_view() : basename_of(argv.front());
    // The kernel says "(deleted)" for a binary replaced since it started (an upgrade).
    if (exe_name.ends_with(" (deleted)")) exe_name.remove_suffix(10);
    auto named = [&](std::initializer_list<std::string_view> names) {
        return std::any_of(names.begin(), names.end(),
                           [&](std::string_view n) { return exe_name == n || arg0 == n; });
    };
    auto with = [&](ServerKind kind, std::string via) {
        ServerInfo info;
        info.kind = kind;
        info.via = std::move(via);
        info.exe = std::string(exe);
        return info;
    };

    if (argv.size() == 1 && argv.front().find(' ') != std::string::npos)
        if (auto titled = classify_title(argv.front())) {
            titled->exe = std::string(exe);
            return titled;
        }
    // A server entry point as argv[0] (an exec of the script, or a venv launcher).
    if (named({"gunicorn", "uvicorn", "hypercorn", "waitress-serve", "daphne"})) {
        std::span<const std::string> args = rest_of(argv);
        auto info = python_server(arg0 == "" ? exe_name : arg0, args);
        if (info) {
            info->via = fmt::format("cmdline: {}", arg0);
            info->exe = std::string(exe);
        }
        return info;
    }
    if (is_python(exe_name) || is_python(arg0)) {
        auto info = classify_python(argv, is_python(exe_name) ? exe_name : arg0);
        if (info) {
            info->exe = std::string(exe);
            std::string_view py = is_python(exe_name) ? exe_name : arg0;
            if (py.size() > 6) info->runtime = std::string(py);
        }
        return info;
    }
    if (is_ruby(exe_name) || is_ruby(arg0) || named({"puma", "unicorn"})) {
        for (const auto& a : argv) {
            std::string_view name = basename_of(a);
            if (name == "puma" || name == "pumactl") return with(ServerKind::puma, fmt::format("cmdline: {}", a));
            if (name == "unicorn" || name == "unicorn_rails") return with(ServerKind::unicorn, fmt::format("cmdline: {}", a));
        }
        return std::nullopt;
    }
    if (named({"node", "nodejs"})) {
        ServerInfo info = with(ServerKind::node, fmt::format("exe: {}", exe_name.empty() ? arg0 : exe_name));
        auto scripts = positionals(rest_of(argv), {"-r", "--require", "--import"});
        if (!scripts.empty()) info.module = scripts.front();
        return info;
    }
    if (named({"deno"})) return with(ServerKind::deno, "exe: deno");
    if (named({"bun"})) return with(ServerKind::bun, "exe: bun");
    if (named({"java"})) {
        auto info = classify_java(argv);
        if (info) info->exe = std::string(exe);
        return info;  // kind unknown with module set: the detector looks inside the jar
    }
    if (named({"dotnet"})) {
        ServerInfo info = with(ServerKind::unknown, "exe: dotnet");
        if (argv.size() > 1 && argv[1].ends_with(".dll")) info.module = argv[1];
        return info;  // Kestrel is confirmed from the assemblies it maps
    }
    if (named({"nginx"}) || comm == "nginx") return with(ServerKind::nginx, fmt::format("exe: {}", exe_name));
    if (named({"apache2", "httpd"})) return with(ServerKind::apache, fmt::format("exe: {}", exe_name));
    if (named({"haproxy"})) return with(ServerKind::haproxy, "exe: haproxy");
    if (named({"envoy"})) return with(ServerKind::envoy, "exe: envoy");
    return std::nullopt;
}

std::optional<ServerInfo> classify_jar_entries(std::span<const std::string> names) {
    ServerInfo info;
    std::string spring;
    // "BOOT-INF/lib/tomcat-embed-core-10.1.16.jar" -> "10.1.16"
    auto version_of = [](std::string_view name, std::string_view stem) -> std::string {
        auto at = name.find(stem);
        if (at == std::string_view::npos) return {};
        std::string_view v = name.substr(at + stem.size());
        if (v.ends_with(".jar")) v.remove_suffix(4);
        return std::string(v);
    };
    struct Lib {
        std::string_view stem;
        ServerKind kind;
    };
    constexpr Lib libs[] = {
        {"/tomcat-embed-core-", ServerKind::tomcat}, {"/jetty-server-", ServerKind::jetty},
        {"/undertow-core-", ServerKind::undertow},   {"/reactor-netty-http-", ServerKind::netty},
        {"/netty-codec-http-", ServerKind::netty},
    };
    for (const auto& name : names) {
        std::string_view n = name;
        if (n.ends_with(".jar")) {
            for (const auto& lib : libs)
                if (n.find(lib.stem) != std::string_view::npos && info.kind == ServerKind::unknown) {
                    info.kind = lib.kind;
                    info.version = version_of(n, lib.stem.substr(1));
                    info.via = fmt::format("jar: {}", n);
                }
            if (n.find("/spring-boot-") != std::string_view::npos && spring.empty()) {
                std::string v = version_of(n, "spring-boot-");
                if (!v.empty() && std::isdigit(static_cast<unsigned char>(v.front()))) spring = v;
            }
        } else if (info.kind == ServerKind::unknown) {
            // A shaded jar: the server's classes themselves.
            if (n.starts_with("org/apache/catalina/")) info.kind = ServerKind::tomcat, info.via = "jar: org/apache/catalina";
            else if (n.starts_with("org/eclipse/jetty/server/")) info.kind = ServerKind::jetty, info.via = "jar: org/eclipse/jetty/server";
            else if (n.starts_with("io/undertow/")) info.kind = ServerKind::undertow, info.via = "jar: io/undertow";
        }
    }
    if (info.kind == ServerKind::unknown) return std::nullopt;
    if (!spring.empty()) info.framework = "Spring Boot " + spring;
    return info;
}

std::optional<uint64_t> parse_stat_start_time(std::string_view stat) {
    // The comm field may hold spaces and parentheses: count fields after the last ')'.
    auto close = stat.rfind(')');
    if (close == std::string_view::npos) return std::nullopt;
    std::string_view rest = stat.substr(close + 1);
    // Field 3 (state) is the first after ')'; start time is field 22.
    int field = 2;
    size_t i = 0;
    while (i < rest.size()) {
        while (i < rest.size() && rest[i] == ' ') ++i;
        size_t end = rest.find(' ', i);
        if (end == std::string_view::npos) end = rest.size();
        if (++field == 22) {
            uint64_t v = 0;
            auto [p, ec] = std::from_chars(rest.data() + i, rest.data() + end, v);
            if (ec != std::errc{} || p != rest.data() + end) return std::nullopt;
            return v;
        }
        i = end;
    }
    return std::nullopt;
}

}  // namespace tcpwhy
