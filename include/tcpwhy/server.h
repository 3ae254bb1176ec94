// Which server runs behind a socket, and what tcpwhy knows about it: its knobs (idle timeout,
// listen backlog, graceful shutdown, the client pool's idle timeout), their defaults per
// version, and how each is spelled in that server's own configuration.
//
// This header is pure (no I/O): the facts (ServerInfo) are detected live from the host's /proc
// by ServerDetector (include/tcpwhy/server_detector.h) or read back from the `server` lines of
// a trace; the knowledge is data (src/core/server.cpp), one row per server, so every advice
// (explain.cpp) and every new finding kind words its fix from the same rows.
// The table of servers with their defaults and sources: docs/servers.md.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tcpwhy {

enum class ServerKind : uint8_t {
    unknown = 0,
    // JavaScript runtimes
    node, deno, bun,
    // Python
    gunicorn, uvicorn, hypercorn, waitress, daphne, aiohttp,
    // Ruby
    puma, unicorn,
    // JVM
    tomcat, jetty, undertow, netty,
    // .NET
    kestrel,
    // native servers and proxies
    nginx, apache, haproxy, envoy, caddy, traefik,
    // Go
    go_net_http, fasthttp,
};
inline constexpr size_t kServerKindCount = static_cast<size_t>(ServerKind::fasthttp) + 1;
// "node", "gunicorn", "go-net-http", ...: the names traces, JSON and metric labels use.
std::string_view to_string(ServerKind kind);
std::optional<ServerKind> server_kind_from_string(std::string_view name);

// What detection found about one process.
struct ServerInfo {
    ServerKind kind = ServerKind::unknown;
    std::string version;    // the server's own version ("20.20.2" for Node, "20.1.0" for gunicorn), "" unknown
    std::string runtime;    // the language runtime when it matters: "go1.19.8", "python3.11"
    std::string framework;  // what runs on top of the server: "gin", "echo", "Spring Boot", "ASP.NET Core"
    std::string module;     // Go main module path, the jar, or the application ("app:app")
    std::string worker;     // gunicorn's worker class: "sync", "gthread", "uvicorn.workers.UvicornWorker"
    // The idle timeout the process's command line sets ("--keep-alive 5"), when it does.
    std::optional<uint32_t> configured_idle_ms;
    std::string configured_by;  // the option as written: "--keep-alive 5"
    std::string via;            // how it was recognised: "cmdline: python3 -m gunicorn", "go build info: net/http"
    std::string exe;            // the executable's path as the process sees it
    bool operator==(const ServerInfo&) const = default;
};

// ---- knowledge: one row per server -------------------------------------------

enum class Knob : uint8_t {
    idle_timeout,         // how long the server keeps an idle keep-alive connection open
    listen_backlog,       // the listen(2) backlog it asks for
    graceful_shutdown,    // how long it drains in-flight requests on SIGTERM
    client_idle_timeout,  // outbound: how long its client pool keeps an idle upstream connection
};
inline constexpr size_t kKnobCount = 4;

enum class DefaultKind : uint8_t {
    unknown,       // tcpwhy does not know the default
    value,         // a fixed value: ms
    none,          // off by default: idle connections are kept until the peer closes them
    fallback,      // falls back to another setting (note says which); off when that is off too
    no_keepalive,  // this server (or worker) does not keep connections alive at all
};

std::string_view to_string(DefaultKind kind);  // "value", "none", "fallback", "no_keepalive", "unknown"

struct KnobSpec {
    std::string_view name;     // the knob alone: "--keep-alive", "server.keepAliveTimeout"; "" not applicable
    std::string_view setting;  // how to set it, a format with {s} (seconds) and {ms} (milliseconds): "`--keep-alive {s}`"
    DefaultKind default_kind = DefaultKind::unknown;
    uint32_t default_ms = 0;   // with DefaultKind::value
    std::string_view note;     // e.g. "falls back to ReadTimeout; zero means none"
    std::string_view source;   // where the default is documented
};

struct ServerKnowledge {
    ServerKind kind = ServerKind::unknown;
    std::string_view display;        // "gunicorn", "Node.js", "Go net/http"
    std::string_view recognised_by;  // how detection finds it (docs/servers.md)
    KnobSpec idle, backlog, shutdown, client_idle;
    const KnobSpec& knob(Knob k) const;
};
const ServerKnowledge& knowledge(ServerKind kind);
std::span<const ServerKnowledge> all_server_knowledge();

// The knob's setting for `seconds` in the server's words: "`--keep-alive 620`". "" when the
// server has no such knob.
std::string knob_setting(ServerKind kind, Knob knob, uint32_t seconds);

// The idle timeout this server has by default at this version (and with this worker): the
// facts the advice states. Node 20 closes ~1 s after keepAliveTimeout; Node 26 and Puma 7
// raised their defaults to 65 s; gunicorn's sync worker keeps nothing alive.
struct IdleDefault {
    DefaultKind kind = DefaultKind::unknown;
    uint32_t setting_ms = 0;   // the knob's default value
    uint32_t closes_at_ms = 0; // when the server then really closes an idle connection (setting + buffer)
    std::string_view why;      // "plus the 1 s socket buffer Node adds", "" when nothing to add
};
IdleDefault idle_default(const ServerInfo& server);

// "1.2.3-rc1" -> {1, 2}; nullopt when it does not start with a number.
std::optional<std::pair<uint32_t, uint32_t>> major_minor(std::string_view version);

// The display name with the version: "gunicorn 20.1.0", "Go net/http (gin, go1.21.5)", "Node.js 20.20.2".
std::string server_display(const ServerInfo& server);

// ---- the table findings read ----------------------------------------------

// One `server` line of a trace: what a process was detected as. start_time is the process's
// start (clock ticks since boot, /proc/PID/stat field 22) so a reused pid is a new process.
struct ServerRecord {
    uint32_t pid = 0;
    uint64_t start_time = 0;
    std::string comm;
    ServerInfo server;
};

// pid -> server, filled live by the detector or on replay from `server` lines; the
// correlator looks a backend's owner up in it when results are built. Bounded: past
// max_entries the oldest are dropped.
class ServerTable {
public:
    explicit ServerTable(size_t max_entries = 8192) : max_entries_(max_entries) {}
    void set(const ServerRecord& record);
    const ServerRecord* lookup(uint32_t pid) const;
    void erase(uint32_t pid);
    size_t size() const { return by_pid_.size(); }
    const std::unordered_map<uint32_t, ServerRecord>& entries() const { return by_pid_; }

private:
    size_t max_entries_;
    uint64_t next_order_ = 0;
    std::unordered_map<uint32_t, ServerRecord> by_pid_;
    std::unordered_map<uint32_t, uint64_t> order_;  // insertion order, for eviction
};

}  // namespace tcpwhy
