#include "tcpwhy/server.h"

#include <algorithm>
#include <array>
#include <charconv>

#include <fmt/format.h>

namespace tcpwhy {
namespace {

constexpr std::array<std::string_view, kServerKindCount> kNames = {
    "unknown", "node",   "deno",   "bun",      "gunicorn", "uvicorn", "hypercorn", "waitress", "daphne",
    "aiohttp", "puma",   "unicorn", "tomcat",  "jetty",    "undertow", "netty",    "kestrel",  "nginx",
    "apache",  "haproxy", "envoy",  "caddy",   "traefik",  "go-net-http", "fasthttp",
};

constexpr uint32_t s(uint32_t seconds) { return seconds * 1000; }

// The rows. Each default says where it is documented; docs/servers.md is this table in prose.
// A template names {s} for seconds, {ms} for milliseconds and {ms_above} for a value just above
// {ms} (Node's headersTimeout must exceed its keepAliveTimeout).
const std::array<ServerKnowledge, kServerKindCount> kKnowledge = {{
    {ServerKind::unknown, "the server", "nothing matched", {}, {}, {}, {}},
    {ServerKind::node, "Node.js", "exe `node`/`nodejs`; version from NODE_VERSION or the binary's release URL",
     {"server.keepAliveTimeout", "`server.keepAliveTimeout = {ms}` with `server.headersTimeout` above it (e.g. {ms_above})",
      DefaultKind::value, 5000, "5 s from Node 8 to 25, 65 s from Node 26; the socket closes keepAliveTimeoutBuffer (1 s) later",
      "https://nodejs.org/api/http.html#serverkeepalivetimeout"},
     {"backlog", "`server.listen({{ port, backlog: N }})`", DefaultKind::value, 511, "", "https://nodejs.org/api/net.html#serverlisten"},
     {"server.close()", "`server.close()` then `server.closeIdleConnections()` on SIGTERM", DefaultKind::none, 0,
      "no drain unless the application handles SIGTERM", "https://nodejs.org/api/http.html#serverclosecallback"},
     {"http.Agent keepAlive", "`new http.Agent({{ keepAlive: true, timeout: {ms} }})`", DefaultKind::value, 5000,
      "the global agent keeps sockets alive 5 s since Node 19", "https://nodejs.org/api/http.html#new-agentoptions"}},
    {ServerKind::deno, "Deno", "exe `deno`",
     {"", "", DefaultKind::unknown, 0, "Deno.serve has no documented idle keep-alive timeout", "https://docs.deno.com/api/deno/~/Deno.serve"},
     {}, {}, {}},
    {ServerKind::bun, "Bun", "exe `bun`",
     {"idleTimeout", "`Bun.serve({{ idleTimeout: {s} }})` (seconds, at most 255)", DefaultKind::value, s(10), "",
      "https://bun.sh/docs/api/http"},
     {}, {}, {}},
    {ServerKind::gunicorn, "gunicorn", "cmdline `gunicorn` / `python -m gunicorn` / proc title `gunicorn: worker`",
     {"--keep-alive", "`--keep-alive {s}` (or `keepalive = {s}` in gunicorn.conf.py)", DefaultKind::value, s(2),
      "the sync worker keeps no connection alive", "https://docs.gunicorn.org/en/stable/settings.html#keepalive"},
     {"--backlog", "`--backlog N`", DefaultKind::value, 2048, "", "https://docs.gunicorn.org/en/stable/settings.html#backlog"},
     {"--graceful-timeout", "`--graceful-timeout {s}`", DefaultKind::value, s(30), "",
      "https://docs.gunicorn.org/en/stable/settings.html#graceful-timeout"},
     {}},
    {ServerKind::uvicorn, "uvicorn", "cmdline `uvicorn` / `python -m uvicorn` / gunicorn's UvicornWorker",
     {"--timeout-keep-alive", "`--timeout-keep-alive {s}`", DefaultKind::value, s(5), "",
      "https://www.uvicorn.org/settings/#timeouts"},
     {"--backlog", "`--backlog N`", DefaultKind::value, 2048, "", "https://www.uvicorn.org/settings/#implementation"},
     {"--timeout-graceful-shutdown", "`--timeout-graceful-shutdown {s}`", DefaultKind::none, 0, "",
      "https://www.uvicorn.org/settings/#timeouts"},
     {}},
    {ServerKind::hypercorn, "Hypercorn", "cmdline `hypercorn` / `python -m hypercorn`",
     {"--keep-alive", "`--keep-alive {s}` (or `keep_alive_timeout = {s}`)", DefaultKind::value, s(5), "",
      "https://hypercorn.readthedocs.io/en/latest/how_to_guides/configuring.html"},
     {"--backlog", "`--backlog N`", DefaultKind::value, 100, "", "https://hypercorn.readthedocs.io/en/latest/how_to_guides/configuring.html"},
     {"--graceful-timeout", "`--graceful-timeout {s}`", DefaultKind::value, s(3), "",
      "https://hypercorn.readthedocs.io/en/latest/how_to_guides/configuring.html"},
     {}},
    {ServerKind::waitress, "waitress", "cmdline `waitress-serve` / `python -m waitress`",
     {"--channel-timeout", "`--channel-timeout={s}` (or `channel_timeout={s}`)", DefaultKind::value, s(120), "",
      "https://docs.pylonsproject.org/projects/waitress/en/stable/arguments.html"},
     {"--backlog", "`--backlog=N`", DefaultKind::value, 1024, "", "https://docs.pylonsproject.org/projects/waitress/en/stable/arguments.html"},
     {}, {}},
    {ServerKind::daphne, "Daphne", "cmdline `daphne` / `python -m daphne`",
     {"", "", DefaultKind::unknown, 0, "Daphne documents no idle keep-alive timeout of its own (Twisted's applies)",
      "https://github.com/django/daphne#readme"},
     {}, {}, {}},
    {ServerKind::aiohttp, "aiohttp", "cmdline `python -m aiohttp.web`, or aiohttp's modules mapped by the process",
     {"keepalive_timeout", "`web.run_app(app, keepalive_timeout={s})` (or `AppRunner(app, keepalive_timeout={s})`)",
      DefaultKind::value, s(75), "", "https://docs.aiohttp.org/en/stable/web_reference.html#aiohttp.web.run_app"},
     {"backlog", "`web.run_app(app, backlog=N)`", DefaultKind::value, 128, "",
      "https://docs.aiohttp.org/en/stable/web_reference.html#aiohttp.web.run_app"},
     {"shutdown_timeout", "`web.run_app(app, shutdown_timeout={s})`", DefaultKind::value, s(60), "",
      "https://docs.aiohttp.org/en/stable/web_reference.html#aiohttp.web.run_app"},
     {}},
    {ServerKind::puma, "Puma", "cmdline `puma` (proc title `puma 5.6.5 (tcp://...)`)",
     {"persistent_timeout", "`persistent_timeout {s}` in config/puma.rb", DefaultKind::value, s(20),
      "20 s until Puma 6, 65 s from Puma 7", "https://github.com/puma/puma/blob/master/lib/puma/dsl.rb"},
     {"backlog", "`bind \"tcp://0.0.0.0:PORT?backlog=N\"`", DefaultKind::value, 1024, "",
      "https://github.com/puma/puma/blob/master/lib/puma/dsl.rb"},
     {"worker_shutdown_timeout", "`worker_shutdown_timeout {s}`", DefaultKind::value, s(30), "",
      "https://github.com/puma/puma/blob/master/lib/puma/dsl.rb"},
     {}},
    {ServerKind::unicorn, "Unicorn", "cmdline `unicorn` (proc title `unicorn master`/`unicorn worker`)",
     {"", "", DefaultKind::no_keepalive, 0, "Unicorn closes every connection after its response",
      "https://yhbt.net/unicorn/PHILOSOPHY.html"},
     {"backlog", "`listen PORT, backlog: N`", DefaultKind::value, 1024, "", "https://yhbt.net/unicorn/Unicorn/Configurator.html"},
     {}, {}},
    {ServerKind::tomcat, "Tomcat", "java with org.apache.catalina on the command line, or tomcat-embed in the jar",
     {"keepAliveTimeout", "`keepAliveTimeout=\"{ms}\"` on the Connector (Spring Boot: `server.tomcat.keep-alive-timeout={s}s`)",
      DefaultKind::fallback, s(60), "falls back to connectionTimeout: 60000 ms, the stock server.xml sets 20000",
      "https://tomcat.apache.org/tomcat-10.1-doc/config/http.html"},
     {"acceptCount", "`acceptCount=\"N\"` on the Connector (Spring Boot: `server.tomcat.accept-count=N`)", DefaultKind::value, 100,
      "", "https://tomcat.apache.org/tomcat-10.1-doc/config/http.html"},
     {"server.shutdown", "Spring Boot `server.shutdown=graceful` with `spring.lifecycle.timeout-per-shutdown-phase={s}s`",
      DefaultKind::none, 0, "", "https://docs.spring.io/spring-boot/reference/web/graceful-shutdown.html"},
     {}},
    {ServerKind::jetty, "Jetty", "java with org.eclipse.jetty / start.jar on the command line, or jetty-server in the jar",
     {"idleTimeout", "`jetty.http.idleTimeout={ms}` (ServerConnector `setIdleTimeout({ms})`; Spring Boot: `server.jetty.connection-idle-timeout={s}s`)",
      DefaultKind::value, s(30), "", "https://jetty.org/docs/jetty/12/operations-guide/modules/standard.html#http"},
     {"acceptQueueSize", "`jetty.http.acceptQueueSize=N`", DefaultKind::unknown, 0, "", ""},
     {}, {}},
    {ServerKind::undertow, "Undertow", "java with io.undertow / WildFly on the command line, or undertow-core in the jar",
     {"NO_REQUEST_TIMEOUT", "`UndertowOptions.NO_REQUEST_TIMEOUT` = {ms} (Spring Boot: `server.undertow.no-request-timeout={s}s`)",
      DefaultKind::unknown, 0, "unset in Undertow itself; WildFly sets 60000 ms",
      "https://undertow.io/undertow-docs/undertow-docs-2.1.0/index.html#common-listener-options"},
     {}, {}, {}},
    {ServerKind::netty, "Netty", "java with reactor-netty / netty-codec-http in the jar",
     {"idleTimeout", "Reactor Netty `HttpServer.idleTimeout(Duration.ofSeconds({s}))` (Spring Boot: `server.netty.idle-timeout={s}s`)",
      DefaultKind::none, 0, "no idle timeout unless the application sets one",
      "https://projectreactor.io/docs/netty/release/reference/http-server.html"},
     {}, {}, {}},
    {ServerKind::kestrel, "Kestrel", "`dotnet` with ASP.NET Core's assemblies mapped, or an apphost that maps them",
     {"Limits.KeepAliveTimeout", "`KestrelServerOptions.Limits.KeepAliveTimeout = TimeSpan.FromSeconds({s})` (env `Kestrel__Limits__KeepAliveTimeout=00:{mm_ss}`)",
      DefaultKind::value, s(130), "", "https://learn.microsoft.com/aspnet/core/fundamentals/servers/kestrel/options"},
     {}, {}, {}},
    {ServerKind::nginx, "nginx", "exe `nginx` (proc title `nginx: worker process`)",
     {"keepalive_timeout", "`keepalive_timeout {s}s;`", DefaultKind::value, s(75), "",
      "https://nginx.org/en/docs/http/ngx_http_core_module.html#keepalive_timeout"},
     {"backlog", "`listen PORT backlog=N;`", DefaultKind::value, 511, "", "https://nginx.org/en/docs/http/ngx_http_core_module.html#listen"},
     {"worker_shutdown_timeout", "`worker_shutdown_timeout {s}s;`", DefaultKind::none, 0, "",
      "https://nginx.org/en/docs/ngx_core_module.html#worker_shutdown_timeout"},
     {"keepalive_timeout (upstream)", "`keepalive_timeout {s}s;` in the `upstream` block", DefaultKind::value, s(60), "",
      "https://nginx.org/en/docs/http/ngx_http_upstream_module.html#keepalive_timeout"}},
    {ServerKind::apache, "Apache httpd", "exe `apache2`/`httpd`",
     {"KeepAliveTimeout", "`KeepAliveTimeout {s}`", DefaultKind::value, s(5), "",
      "https://httpd.apache.org/docs/2.4/mod/core.html#keepalivetimeout"},
     {"ListenBackLog", "`ListenBackLog N`", DefaultKind::value, 511, "", "https://httpd.apache.org/docs/2.4/mod/mpm_common.html#listenbacklog"},
     {"GracefulShutdownTimeout", "`GracefulShutdownTimeout {s}`", DefaultKind::none, 0, "",
      "https://httpd.apache.org/docs/2.4/mod/mpm_common.html#gracefulshutdowntimeout"},
     {}},
    {ServerKind::haproxy, "HAProxy", "exe `haproxy`",
     {"timeout http-keep-alive", "`timeout http-keep-alive {s}s`", DefaultKind::fallback, 0,
      "falls back to `timeout http-request`, then to `timeout client`",
      "https://docs.haproxy.org/2.6/configuration.html#4.2-timeout%20http-keep-alive"},
     {"backlog", "`backlog N` on the frontend", DefaultKind::unknown, 0, "", "https://docs.haproxy.org/2.6/configuration.html#4.2-backlog"},
     {"hard-stop-after", "`hard-stop-after {s}s`", DefaultKind::none, 0, "", "https://docs.haproxy.org/2.6/configuration.html#3.1-hard-stop-after"},
     {}},
    {ServerKind::envoy, "Envoy", "exe `envoy`",
     {"idle_timeout", "`common_http_protocol_options: {{idle_timeout: {s}s}}` on the HTTP connection manager", DefaultKind::value,
      s(3600), "", "https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/protocol.proto"},
     {}, {"drain_time_s", "`--drain-time-s {s}`", DefaultKind::value, s(600), "",
      "https://www.envoyproxy.io/docs/envoy/latest/operations/cli"},
     {"cluster idle_timeout", "the cluster's `common_http_protocol_options: {{idle_timeout: {s}s}}`", DefaultKind::value, s(3600), "",
      "https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/protocol.proto"}},
    {ServerKind::caddy, "Caddy", "Go build info: module github.com/caddyserver/caddy",
     {"timeouts idle", "`servers {{ timeouts {{ idle {s}s }} }}` in the global options", DefaultKind::value, s(300), "",
      "https://caddyserver.com/docs/caddyfile/options#timeouts"},
     {}, {"grace_period", "`grace_period {s}s` in the global options", DefaultKind::none, 0, "",
      "https://caddyserver.com/docs/caddyfile/options#grace-period"},
     {"reverse_proxy keepalive", "`reverse_proxy {{ transport http {{ keepalive {s}s }} }}`", DefaultKind::value, s(120), "",
      "https://caddyserver.com/docs/caddyfile/directives/reverse_proxy#the-http-transport"}},
    {ServerKind::traefik, "Traefik", "Go build info: module github.com/traefik/traefik",
     {"respondingTimeouts.idleTimeout", "`--entryPoints.NAME.transport.respondingTimeouts.idleTimeout={s}s`", DefaultKind::value,
      s(180), "", "https://doc.traefik.io/traefik/routing/entrypoints/#respondingtimeouts"},
     {}, {"lifeCycle.graceTimeOut", "`--entryPoints.NAME.transport.lifeCycle.graceTimeOut={s}s`", DefaultKind::value, s(10), "",
      "https://doc.traefik.io/traefik/routing/entrypoints/#lifecycle"},
     {"forwardingTimeouts.idleConnTimeout", "`serversTransport: forwardingTimeouts: idleConnTimeout: {s}s`", DefaultKind::value,
      s(90), "", "https://doc.traefik.io/traefik/routing/services/#serverstransport_1"}},
    {ServerKind::go_net_http, "Go net/http", "Go build info (the .go.buildinfo section): net/http, gin, echo, chi ...",
     {"IdleTimeout", "`http.Server{{IdleTimeout: {s} * time.Second}}`", DefaultKind::fallback, 0,
      "falls back to ReadTimeout; when both are zero idle connections are kept until the client closes them",
      "https://pkg.go.dev/net/http#Server"},
     {}, {"Shutdown", "`srv.Shutdown(ctx)` with a {s} s context on SIGTERM", DefaultKind::none, 0, "",
      "https://pkg.go.dev/net/http#Server.Shutdown"},
     {"Transport.IdleConnTimeout", "`http.Transport{{IdleConnTimeout: {s} * time.Second}}`", DefaultKind::value, s(90),
      "http.DefaultTransport's", "https://pkg.go.dev/net/http#Transport"}},
    {ServerKind::fasthttp, "fasthttp", "Go build info: dependency github.com/valyala/fasthttp",
     {"IdleTimeout", "`fasthttp.Server{{IdleTimeout: {s} * time.Second}}`", DefaultKind::fallback, 0,
      "falls back to ReadTimeout; when both are zero idle connections are kept until the client closes them",
      "https://pkg.go.dev/github.com/valyala/fasthttp#Server"},
     {}, {}, {"MaxIdleConnDuration", "`fasthttp.Client{{MaxIdleConnDuration: {s} * time.Second}}`", DefaultKind::value, s(10), "",
              "https://pkg.go.dev/github.com/valyala/fasthttp#Client"}},
}};

}  // namespace

std::string_view to_string(ServerKind kind) {
    auto i = static_cast<size_t>(kind);
    return i < kNames.size() ? kNames[i] : "unknown";
}

std::optional<ServerKind> server_kind_from_string(std::string_view name) {
    for (size_t i = 0; i < kNames.size(); ++i)
        if (kNames[i] == name) return static_cast<ServerKind>(i);
    return std::nullopt;
}

std::string_view to_string(DefaultKind kind) {
    switch (kind) {
    case DefaultKind::value: return "value";
    case DefaultKind::none: return "none";
    case DefaultKind::fallback: return "fallback";
    case DefaultKind::no_keepalive: return "no_keepalive";
    case DefaultKind::unknown: break;
    }
    return "unknown";
}

const KnobSpec& ServerKnowledge::knob(Knob k) const {
    switch (k) {
    case Knob::idle_timeout: return idle;
    case Knob::listen_backlog: return backlog;
    case Knob::graceful_shutdown: return shutdown;
    case Knob::client_idle_timeout: return client_idle;
    }
    return idle;
}

const ServerKnowledge& knowledge(ServerKind kind) {
    auto i = static_cast<size_t>(kind);
    return i < kKnowledge.size() ? kKnowledge[i] : kKnowledge[0];
}

std::span<const ServerKnowledge> all_server_knowledge() { return {kKnowledge.data() + 1, kKnowledge.size() - 1}; }

std::string knob_setting(ServerKind kind, Knob knob, uint32_t seconds) {
    std::string_view setting = knowledge(kind).knob(knob).setting;
    if (setting.empty()) return {};
    uint64_t ms = uint64_t{seconds} * 1000;
    return fmt::format(fmt::runtime(setting), fmt::arg("s", seconds), fmt::arg("ms", ms),
                       fmt::arg("ms_above", ms + 1000),
                       fmt::arg("mm_ss", fmt::format("{:02}:{:02}", seconds / 60 % 60, seconds % 60)));
}

std::optional<std::pair<uint32_t, uint32_t>> major_minor(std::string_view v) {
    if (!v.empty() && (v.front() == 'v' || v.front() == 'V')) v.remove_prefix(1);
    uint32_t major = 0, minor = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), major);
    if (ec != std::errc{} || p == v.data()) return std::nullopt;
    if (p < v.data() + v.size() && *p == '.') std::from_chars(p + 1, v.data() + v.size(), minor);
    return std::pair{major, minor};
}

IdleDefault idle_default(const ServerInfo& server) {
    const KnobSpec& idle = knowledge(server.kind).idle;
    IdleDefault d{idle.default_kind, idle.default_ms, idle.default_ms, ""};
    auto version = major_minor(server.version);
    switch (server.kind) {
    case ServerKind::node:
        // The 1 s buffer (keepAliveTimeoutBuffer, a constant before it became an option) is in
        // every release tcpwhy has seen close connections (20 and later); 26 raised the default.
        if (version && version->first >= 26) d.setting_ms = d.closes_at_ms = 65'000;
        if (!version || version->first >= 20) {
            d.closes_at_ms = d.setting_ms + 1000;
            d.why = "plus the 1 s socket buffer Node adds (server.keepAliveTimeoutBuffer)";
        }
        break;
    case ServerKind::puma:
        if (version && version->first >= 7) d.setting_ms = d.closes_at_ms = 65'000;
        break;
    case ServerKind::gunicorn:
        // Only the async and threaded workers keep connections alive.
        if (server.worker.empty() || server.worker == "sync") {
            d.kind = DefaultKind::no_keepalive;
            d.why = "the sync worker closes every connection after its response";
        } else if (server.worker.find("Uvicorn") != std::string::npos) {
            const KnobSpec& uv = knowledge(ServerKind::uvicorn).idle;
            d = {uv.default_kind, uv.default_ms, uv.default_ms, "uvicorn's worker applies uvicorn's keep-alive"};
        }
        break;
    default: break;
    }
    return d;
}

std::string server_display(const ServerInfo& server) {
    std::string text(knowledge(server.kind).display);
    if (server.kind == ServerKind::unknown) text = "unknown server";
    if (!server.version.empty()) text += " " + server.version;
    std::string extra;
    auto add = [&](const std::string& part) {
        if (part.empty()) return;
        extra += extra.empty() ? part : ", " + part;
    };
    add(server.framework);
    if (server.kind == ServerKind::gunicorn && !server.worker.empty()) add(server.worker + " worker");
    add(server.runtime);
    if (!extra.empty()) text += " (" + extra + ")";
    return text;
}

void ServerTable::set(const ServerRecord& record) {
    if (!by_pid_.count(record.pid) && by_pid_.size() >= max_entries_) {
        auto oldest = std::min_element(order_.begin(), order_.end(),
                                       [](const auto& a, const auto& b) { return a.second < b.second; });
        if (oldest != order_.end()) {
            by_pid_.erase(oldest->first);
            order_.erase(oldest);
        }
    }
    by_pid_[record.pid] = record;
    order_[record.pid] = next_order_++;
}

const ServerRecord* ServerTable::lookup(uint32_t pid) const {
    auto it = by_pid_.find(pid);
    return it == by_pid_.end() ? nullptr : &it->second;
}

void ServerTable::erase(uint32_t pid) {
    by_pid_.erase(pid);
    order_.erase(pid);
}

}  // namespace tcpwhy
