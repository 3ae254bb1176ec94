#include "causes.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <string_view>

#include <fmt/format.h>

#include "tcpwhy/explain.h"
#include "tcpwhy/server.h"

namespace tcpwhy::explain::causes {
namespace {

const char* plural(uint64_t n, const char* one, const char* many) { return n == 1 ? one : many; }

bool starts_with_any(std::string_view comm, std::initializer_list<std::string_view> prefixes) {
    return std::any_of(prefixes.begin(), prefixes.end(), [&](auto p) { return comm.starts_with(p); });
}

bool is_node(std::string_view comm) { return starts_with_any(comm, {"node", "nodejs"}); }
bool is_python(std::string_view comm) { return starts_with_any(comm, {"python", "gunicorn", "uvicorn"}); }

std::uint64_t seconds_up(uint64_t ms) { return (ms + 999) / 1000; }

std::string who_process(uint32_t pid, const std::string& comm) {
    if (comm.empty()) return pid ? fmt::format("pid {}", pid) : "the process";
    return pid ? fmt::format("{}[{}]", comm, pid) : comm;
}

// ---- rollout_drain -------------------------------------------------------------

// The preStop delay to recommend: the measured lag rounded up, plus a margin for the LB's
// propagation varying between rollouts (5 s, or half the lag when that is more).
uint64_t prestop_seconds(uint32_t lag_ms) {
    return seconds_up(lag_ms) + std::max<uint64_t>(5, seconds_up(lag_ms) / 2);
}

std::string drain_summary(const Finding& f, const std::string& who) {
    const DrainFacts& d = *f.drain;
    std::string after = d.signal ? fmt::format(" after {}", signal_name(d.signal)) : "";
    std::vector<std::string> parts;
    if (d.refused) parts.push_back(fmt::format("{} {} refused", d.refused, plural(d.refused, "connection", "connections")));
    if (d.pooled_resets)
        parts.push_back(fmt::format("{} pooled {} reset", d.pooled_resets, plural(d.pooled_resets, "connection", "connections")));
    if (d.in_flight)
        parts.push_back(fmt::format("{} {} cut off by the exit", d.in_flight, plural(d.in_flight, "request", "requests")));
    std::string what;
    for (const auto& p : parts) what += (what.empty() ? "" : ", ") + p;
    return fmt::format("{} stopped listening{} while the load balancer still sent it connections for {}: {}", who,
                       after, duration(d.drain_lag_ms), what);
}

std::vector<std::string> drain_evidence(const Finding& f) {
    const DrainFacts& d = *f.drain;
    std::vector<std::string> lines;
    std::string worst = d.stops > 1 ? fmt::format(" (worst of {} stops: {})", d.stops, duration(d.max_drain_lag_ms)) : "";
    lines.push_back(fmt::format("drain lag {}: the last refused or reset LB connection came {} after the last listener "
                                "on port {} closed{}",
                                duration(d.drain_lag_ms), duration(d.drain_lag_ms), f.backend.id.port, worst));
    if (d.signal && d.signal_to_close_ms)
        lines.push_back(fmt::format("{} to {} from {}; the listener closed {} later", signal_name(d.signal),
                                    who_process(d.pid, d.comm), d.signal_sender, duration(*d.signal_to_close_ms)));
    else if (d.signal)
        lines.push_back(fmt::format("{} to {} from {}", signal_name(d.signal), who_process(d.pid, d.comm), d.signal_sender));
    else
        lines.push_back(fmt::format("no stopping signal seen: {} closed its listener itself", who_process(d.pid, d.comm)));
    if (d.refused)
        lines.push_back(fmt::format("{} SYNs ({} from the LB) answered with a reset (no socket) after the close",
                                    d.refused, d.refused_lb));
    if (d.killed_after_ms)
        lines.push_back(fmt::format("SIGKILL {} after {}: the grace period ran out before the process finished",
                                    duration(*d.killed_after_ms), signal_name(d.signal ? d.signal : 15)));
    if (d.exit_code) lines.push_back(fmt::format("the process ended with {}", exit_code_text(*d.exit_code)));
    if (d.relisten_after_ms)
        lines.push_back(fmt::format("listening again {} after the close (a restart)", duration(*d.relisten_after_ms)));
    return lines;
}

std::string drain_server_words(std::string_view comm) {
    if (is_node(comm))
        return "; for Node.js: in the SIGTERM handler set `res.setHeader('Connection', 'close')` on responses, wait, "
               "then `server.close()`";
    if (starts_with_any(comm, {"gunicorn"}))
        return "; for gunicorn: `--graceful-timeout` above the preStop delay (gunicorn stops accepting on SIGTERM, "
               "so the preStop sleep is what keeps it serving)";
    if (starts_with_any(comm, {"uvicorn"}))
        return "; for uvicorn: `--timeout-graceful-shutdown` (uvicorn closes its listener on SIGTERM, so the preStop "
               "sleep is what keeps it serving)";
    if (starts_with_any(comm, {"nginx"})) return "; for nginx: stop with `nginx -s quit` after the delay";
    return "";
}

// A detected server's own option (docs/servers.md) at `seconds`, "Name version `setting`"; ""
// when nothing was detected or the server has no such option.
std::string detected_knob_words(const BackendProfile& backend, Knob knob, uint32_t seconds) {
    std::string setting = server_setting(backend, knob, seconds);
    return setting.empty() ? "" : fmt::format("{} {}", server_display(*backend.server), setting);
}

// The server's own drain after SIGTERM must end before the grace period does (SIGKILL then):
// what is left of it after the preStop sleep (at least 15 s, drain_advice), less 5 s for the exit.
std::string detected_drain_words(const BackendProfile& backend, uint64_t prestop, uint64_t grace) {
    auto drain_s = static_cast<uint32_t>(grace - prestop - 5);
    std::string words = detected_knob_words(backend, Knob::graceful_shutdown, drain_s);
    return words.empty() ? "" : fmt::format("; the server's own drain: {}, ending inside the grace period", words);
}

std::string drain_advice(const Finding& f) {
    const DrainFacts& d = *f.drain;
    uint32_t lag = std::max(d.drain_lag_ms, d.max_drain_lag_ms);
    uint64_t prestop = prestop_seconds(lag);
    uint64_t grace = std::max<uint64_t>(30, prestop + 15);
    std::string server = detected_drain_words(f.backend, prestop, grace);
    if (server.empty()) server = drain_server_words(f.backend.comm);
    std::string killed = d.killed_after_ms ? fmt::format(" (it was killed {} after the signal: the current grace "
                                                         "period is too short)",
                                                         duration(*d.killed_after_ms))
                                           : "";
    return fmt::format(
        "keep serving until the load balancer has drained the endpoint ({} here): a `preStop` hook that sleeps at "
        "least {} s (`lifecycle: {{preStop: {{exec: {{command: [\"sleep\", \"{}\"]}}}}}}`, or `preStop: {{sleep: "
        "{{seconds: {}}}}}` on Kubernetes 1.30+), `terminationGracePeriodSeconds: {}` above it plus the shutdown "
        "time{}; keep the listener open and answer with `Connection: close` until the process exits{}",
        duration(lag), prestop, prestop, prestop, grace, killed, server);
}

// ---- process_crash ---------------------------------------------------------------

std::string how_it_died(const CrashFacts& c) {
    if (c.oom_victim) return fmt::format("was killed by the OOM killer ({})", exit_code_text(c.exit_code));
    if (exit_signal(c.exit_code)) return fmt::format("died from {}", exit_code_text(c.exit_code));
    return fmt::format("exited with status {}", exit_status(c.exit_code));
}

std::string crash_summary(const Finding& f, const std::string& who) {
    const CrashFacts& c = *f.crash;
    std::string held = fmt::format("{} {} open ({} from the LB, {} with a request in flight{})", c.connections,
                                   plural(c.connections, "connection", "connections"), c.connections_lb, c.in_flight,
                                   c.mid_response ? fmt::format(", {} mid-response", c.mid_response) : "");
    std::string refused;
    if (c.refused)
        refused = fmt::format("; the port then refused {} {} for {}{}", c.refused,
                              plural(c.refused, "connection", "connections"), duration(c.refused_for_ms.value_or(0)),
                              c.restarted_after_ms ? " until the process listened again" : "");
    std::string again = c.crashes > 1 ? fmt::format(" ({} crashes)", c.crashes) : "";
    return fmt::format("{}: {} {} with {}{}{}", who, who_process(c.pid, c.comm), how_it_died(c), held, refused, again);
}

std::vector<std::string> crash_evidence(const Finding& f) {
    const CrashFacts& c = *f.crash;
    std::vector<std::string> lines;
    lines.push_back(fmt::format("{} {} closed by the exit of {} ({}): sockets closed from do_exit(), all at once",
                                c.connections, plural(c.connections, "connection was", "connections were"),
                                who_process(c.pid, c.comm), exit_code_text(c.exit_code)));
    if (c.oom_victim)
        lines.push_back("the OOM killer chose the process (its cgroup or the node ran out of memory)");
    if (c.in_flight)
        lines.push_back(fmt::format("{} of them had a request the process had not answered{}", c.in_flight,
                                    c.mid_response ? fmt::format(" ({} with response bytes unacknowledged)",
                                                                 c.mid_response)
                                                   : ""));
    if (c.aborted) lines.push_back(fmt::format("{} closed with a reset (request data unread)", c.aborted));
    if (c.listener_closed) {
        std::string until = c.restarted_after_ms ? fmt::format("; listening again {} after the exit",
                                                               duration(*c.restarted_after_ms))
                                                 : "; not listening again within the trace";
        lines.push_back(fmt::format("the exit closed the listener: {} SYNs ({} from the LB) refused{}", c.refused,
                                    c.refused_lb, until));
    }
    return lines;
}

// How the detected runtime bounds its own memory below the container's limit, so it collects
// garbage harder (or recycles a worker) before the OOM killer chooses it.
std::string detected_memory_words(const std::optional<ServerInfo>& server) {
    if (!server) return "";
    std::string who = server_display(*server);
    switch (server->kind) {
    case ServerKind::node: return fmt::format(" ({}: `--max-old-space-size` in MiB below the limit)", who);
    case ServerKind::tomcat:
    case ServerKind::jetty:
    case ServerKind::undertow:
    case ServerKind::netty: return fmt::format(" ({}: `-XX:MaxRAMPercentage=75` so the heap stays below the limit)", who);
    case ServerKind::go_net_http:
    case ServerKind::fasthttp:
    case ServerKind::caddy:
    case ServerKind::traefik: return fmt::format(" ({}: `GOMEMLIMIT` at about 90% of the limit)", who);
    case ServerKind::gunicorn: return fmt::format(" ({}: `--max-requests` recycles workers that grow)", who);
    case ServerKind::uvicorn: return fmt::format(" ({}: `--limit-max-requests` recycles a process that grows)", who);
    case ServerKind::puma: return fmt::format(" ({}: fewer `workers`, or recycle workers that grow)", who);
    default: return "";
    }
}

std::string memory_words(std::string_view comm) {
    if (is_node(comm)) return " (Node.js: `--max-old-space-size` below the limit)";
    if (starts_with_any(comm, {"java"})) return " (Java: `-XX:MaxRAMPercentage=75`)";
    if (is_python(comm)) return " (gunicorn: `--max-requests` recycles workers that grow)";
    return "";
}

std::string crash_advice(const Finding& f) {
    const CrashFacts& c = *f.crash;
    std::string fix;
    if (c.oom_victim) {
        std::string bound = detected_memory_words(f.backend.server);
        fix = fmt::format("raise the container's memory limit (`resources.limits.memory`) above the process's peak, or "
                          "bound its memory{}",
                          bound.empty() ? memory_words(f.backend.comm) : bound);
    }
    else if (exit_signal(c.exit_code))
        fix = fmt::format("find why {} died from {} (its log, a core dump, `kubectl logs --previous`)",
                          who_process(c.pid, c.comm), signal_name(exit_signal(c.exit_code)));
    else
        fix = fmt::format("find the error that made {} exit with status {} (`kubectl logs --previous`){}",
                          who_process(c.pid, c.comm), exit_status(c.exit_code),
                          is_node(f.backend.comm) ? "; Node.js exits on an uncaught exception or rejection" : "");
    return fix + "; meanwhile a readiness probe takes a replica out of the LB sooner than the refusals do, and more "
                 "replicas spread the requests a crash loses";
}

// ---- accept_queue_overflow -----------------------------------------------------------

std::string overflow_summary(const Finding& f, const std::string& who) {
    const OverflowFacts& o = *f.overflow;
    uint64_t n = o.drops + o.synack_retransmits;
    return fmt::format("{}: the accept queue was full (backlog {}): {} {} ({} from the LB) over {} {}, up to {} in one "
                       "second; the process accepts connections more slowly than they arrive",
                       who, o.backlog, n, plural(n, "handshake dropped", "handshakes dropped"), o.lb, o.seconds,
                       plural(o.seconds, "second", "seconds"), o.peak_per_second);
}

std::vector<std::string> overflow_evidence(const Finding& f) {
    const OverflowFacts& o = *f.overflow;
    std::vector<std::string> lines;
    lines.push_back(fmt::format("backlog in force {} (min of the listen() backlog and net.core.somaxconn); the longest "
                                "queue seen {}",
                                o.backlog, o.max_queue));
    if (o.drops) lines.push_back(fmt::format("{} SYNs or final ACKs dropped at the full queue (TCP_LISTEN_OVERFLOW)", o.drops));
    if (o.synack_retransmits)
        lines.push_back(fmt::format("{} SYN-ACKs sent again while the queue was full: their final ACK had been dropped",
                                    o.synack_retransmits));
    if (!o.per_second.empty()) {
        uint64_t t0 = o.per_second.front().first;
        std::string series;
        size_t from = o.per_second.size() > 12 ? o.per_second.size() - 12 : 0;
        for (size_t i = from; i < o.per_second.size(); ++i)
            series += fmt::format("{}+{}s {}", series.empty() ? "" : ", ", (o.per_second[i].first - t0) / 1'000'000'000,
                                  o.per_second[i].second);
        lines.push_back(fmt::format("per second: {}", series));
    }
    return lines;
}

std::string backlog_words(std::string_view comm, uint32_t n) {
    if (is_node(comm)) return fmt::format("Node.js `server.listen({{port, backlog: {}}})` (default 511)", n);
    if (starts_with_any(comm, {"gunicorn"})) return fmt::format("gunicorn `--backlog {}`", n);
    if (starts_with_any(comm, {"uvicorn"})) return fmt::format("uvicorn `--backlog {}`", n);
    if (starts_with_any(comm, {"python"}))
        return fmt::format("Python `sock.listen({0})` (socketserver: `request_queue_size = {0}`; gunicorn `--backlog "
                           "{0}`, uvicorn `--backlog {0}`)",
                           n);
    if (starts_with_any(comm, {"nginx"})) return fmt::format("nginx `listen ... backlog={};`", n);
    if (starts_with_any(comm, {"java"})) return fmt::format("Tomcat `acceptCount=\"{}\"` (Spring Boot: `server.tomcat.accept-count={}`)", n, n);
    return fmt::format("the server's listen() backlog ({})", n);
}

// The detected server's own backlog option (docs/servers.md), its `N` replaced by the number;
// "" when nothing was detected or the server has no such option.
std::string detected_backlog_words(const std::optional<ServerInfo>& server, uint32_t n) {
    if (!server || server->kind == ServerKind::unknown) return "";
    std::string setting(knowledge(server->kind).knob(Knob::listen_backlog).setting);
    if (setting.empty()) return "";
    auto is_word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
    for (size_t at = setting.find('N'); at != std::string::npos; at = setting.find('N', at + 1)) {
        if ((at > 0 && is_word(setting[at - 1])) || (at + 1 < setting.size() && is_word(setting[at + 1]))) continue;
        setting.replace(at, 1, std::to_string(n));
    }
    return fmt::format("{} {}", server_display(*server), setting);
}

std::string overflow_advice(const Finding& f) {
    const OverflowFacts& o = *f.overflow;
    uint32_t target = std::max<uint32_t>(1024, std::min<uint32_t>(65535, std::max<uint32_t>(o.backlog, 1) * 8));
    std::string backlog = detected_backlog_words(f.backend.server, target);
    if (backlog.empty()) backlog = backlog_words(f.backend.comm, target);
    return fmt::format(
        "accept faster and queue more: add workers (processes or threads accepting, or move slow work off the "
        "accepting thread) so the queue drains, and raise the backlog: {} and `net.core.somaxconn` in the pod "
        "(`securityContext: {{sysctls: [{{name: net.core.somaxconn, value: \"{}\"}}]}}`; the kubelet must allow it "
        "with `--allowed-unsafe-sysctls`); the backlog in force is the smaller of the two",
        backlog, target);
}

// ---- lb_response_timeout ---------------------------------------------------------------

bool waits_match_timeout(const LbTimeoutFacts& t) {
    if (!t.lb_response_timeout_s || !t.waited.samples) return false;
    double timeout_ms = t.lb_response_timeout_s * 1000.0;
    return std::abs(t.waited.p50_ms - timeout_ms) <= std::max(1000.0, timeout_ms * 0.1);
}

std::string lb_timeout_summary(const Finding& f, const std::string& who) {
    const LbTimeoutFacts& t = *f.lb_timeout;
    std::string against =
        !t.lb_response_timeout_s ? ""
        : waits_match_timeout(t)
            ? fmt::format(", the LB's response timeout ({} s)", t.lb_response_timeout_s)
            : fmt::format("; the configured LB ({}) waits {} s: its real timeout here is shorter", f.lb.name,
                          t.lb_response_timeout_s);
    return fmt::format("{}: the load balancer gave up on {} {} the backend had not answered after {} (p50, max {}){}",
                       who, t.connections, plural(t.connections, "request", "requests"), duration(t.waited.p50_ms),
                       duration(t.waited.max_ms), against);
}

std::vector<std::string> lb_timeout_evidence(const Finding& f) {
    const LbTimeoutFacts& t = *f.lb_timeout;
    std::vector<std::string> lines;
    lines.push_back(fmt::format("the peer closed {} {} ({} with a FIN, {} with a reset) while a request had waited "
                                "{} (p50; max {}) with no response sent",
                                t.connections, plural(t.connections, "connection", "connections"),
                                t.connections - t.by_reset, t.by_reset, duration(t.waited.p50_ms),
                                duration(t.waited.max_ms)));
    return lines;
}

std::string lb_timeout_advice(const Finding& f) {
    const LbTimeoutFacts& t = *f.lb_timeout;
    std::string check = t.lb_response_timeout_s && !waits_match_timeout(t)
                            ? fmt::format("the waits ({}) are not the configured {} s: check the LB's real timeout "
                                          "(--lb-response-timeout), then ",
                                          duration(t.waited.p50_ms), t.lb_response_timeout_s)
                            : "";
    return fmt::format(
        "{}the backend takes longer than the load balancer waits: make these requests faster (a slow dependency, a "
        "worker pool that is full), or raise the LB's response timeout above the slowest response (GCP: the backend "
        "service's `timeoutSec`, e.g. `gcloud compute backend-services update NAME --global --timeout={}s`, or "
        "`timeoutSec` in a BackendConfig; nginx `proxy_read_timeout {}s;`; AWS ALB `idle_timeout.timeout_seconds`)",
        check, seconds_up(t.waited.max_ms) * 2, seconds_up(t.waited.max_ms) * 2);
}

// ---- response_cut_short -----------------------------------------------------------------

std::string cut_summary(const Finding& f, const std::string& who) {
    uint32_t bytes = f.evidence ? f.evidence->send_queue_bytes : 0;
    return fmt::format("{}: {} {} cut short: the backend reset {} with response bytes still unacknowledged (the "
                       "latest: {} bytes discarded)",
                       who, f.count, plural(f.count, "response was", "responses were"),
                       plural(f.count, "the connection", "connections"), bytes);
}

std::string cut_advice(const Finding& f) {
    Mechanism m = f.evidence ? f.evidence->mechanism : Mechanism::unread_at_close;
    switch (m) {
    case Mechanism::linger_zero:
        return "SO_LINGER {1,0} makes close() reset the connection and throw away the response still being sent: "
               "remove it, or linger with a timeout ({1,N}) so the response is delivered first";
    case Mechanism::data_after_fin:
        return "the peer sent more (a pipelined request, the rest of a body) after the backend closed its side, and "
               "the reset threw the response tail away: read the request to its end before closing";
    default: break;
    }
    std::string node = is_node(f.backend.comm)
                           ? " (Node.js: consume the body, e.g. `req.resume()`, before `res.end()`; do not "
                             "`socket.destroy()` after writing)"
                           : "";
    return fmt::format("the process closed with request data unread, so the kernel reset the connection and threw "
                       "away the response still in flight: read or discard the whole request before closing, or "
                       "`shutdown(SHUT_WR)` and drain before close(){}",
                       node);
}

// ---- outbound_pool_race ---------------------------------------------------------------------

std::string upstream_summary(const Finding& f, const std::string& who) {
    std::string idle = f.upstream ? fmt::format("; the upstream closes idle connections after {} (p50 of {})",
                                                duration(f.upstream->upstream_idle_close.p50_ms),
                                                f.upstream->upstream_idle_close.samples)
                                  : "";
    return fmt::format("{} reused pooled connections its upstream had closed as idle: {} {} reset{}", who, f.count,
                       plural(f.count, "request", "requests"), idle);
}

std::string client_idle_words(std::string_view comm, uint32_t ms) {
    uint64_t s = std::max<uint64_t>(1, ms / 1000);
    if (starts_with_any(comm, {"envoy", "pilot-agent"}))
        return fmt::format("Envoy: `common_http_protocol_options: {{idle_timeout: {}s}}` on the upstream cluster (Istio: "
                           "a DestinationRule's `connectionPool.http.idleTimeout: {}s`)",
                           s, s);
    if (is_node(comm)) return fmt::format("Node.js: `new http.Agent({{keepAlive: true, timeout: {}}})`", s * 1000);
    if (starts_with_any(comm, {"nginx"})) return fmt::format("nginx: `keepalive_timeout {}s;` in the upstream block", s);
    if (is_python(comm))
        return fmt::format("Python: aiohttp `TCPConnector(keepalive_timeout={})`, httpx `Limits(keepalive_expiry={})` "
                           "(requests/urllib3 have no idle timeout: retry idempotent requests)",
                           s, s);
    if (starts_with_any(comm, {"java"}))
        return fmt::format("Java: OkHttp `ConnectionPool(5, {}, TimeUnit.SECONDS)`, Apache HttpClient "
                           "`evictIdleConnections({}, TimeUnit.SECONDS)`",
                           s, s);
    return fmt::format("e.g. Go `http.Transport{{IdleConnTimeout: {0} * time.Second}}`, Envoy `idle_timeout: {0}s`, "
                       "Node.js `http.Agent({{keepAlive: true, timeout: {1}}})`, nginx `keepalive_timeout {0}s;`",
                       s, s * 1000);
}

std::string upstream_advice(const Finding& f) {
    uint32_t below = f.upstream ? f.upstream->client_idle_below_ms : 0;
    if (!below)
        return "make the client's connection pool close idle connections before the upstream does, or retry "
               "idempotent requests that fail on a reused connection";
    std::string pool = detected_knob_words(f.backend, Knob::client_idle_timeout,
                                           std::max<uint32_t>(1, below / 1000));
    return fmt::format("make the client's pool drop idle connections before the upstream does, below {} ({}), or "
                       "have the upstream keep them longer; retry idempotent requests that fail on a reused connection",
                       duration(below), pool.empty() ? client_idle_words(f.backend.comm, below) : pool);
}

}  // namespace

std::optional<std::string> summary(const Finding& f, const std::string& who) {
    switch (f.kind) {
    case FindingKind::rollout_drain:
        if (f.drain) return drain_summary(f, who);
        break;
    case FindingKind::process_crash:
        if (f.crash) return crash_summary(f, who);
        break;
    case FindingKind::accept_queue_overflow:
        if (f.overflow) return overflow_summary(f, who);
        break;
    case FindingKind::lb_response_timeout:
        if (f.lb_timeout) return lb_timeout_summary(f, who);
        break;
    case FindingKind::response_cut_short: return cut_summary(f, who);
    case FindingKind::outbound_pool_race: return upstream_summary(f, who);
    default: break;
    }
    return std::nullopt;
}

std::optional<std::vector<std::string>> evidence(const Finding& f) {
    switch (f.kind) {
    case FindingKind::rollout_drain:
        if (f.drain) return drain_evidence(f);
        break;
    case FindingKind::process_crash:
        if (f.crash) return crash_evidence(f);
        break;
    case FindingKind::accept_queue_overflow:
        if (f.overflow) return overflow_evidence(f);
        break;
    case FindingKind::lb_response_timeout:
        if (f.lb_timeout) return lb_timeout_evidence(f);
        break;
    default: break;
    }
    return std::nullopt;
}

std::optional<std::string> advice(const Finding& f) {
    switch (f.kind) {
    case FindingKind::rollout_drain:
        if (f.drain) return drain_advice(f);
        break;
    case FindingKind::process_crash:
        if (f.crash) return crash_advice(f);
        break;
    case FindingKind::accept_queue_overflow:
        if (f.overflow) return overflow_advice(f);
        break;
    case FindingKind::lb_response_timeout:
        if (f.lb_timeout) return lb_timeout_advice(f);
        break;
    case FindingKind::response_cut_short: return cut_advice(f);
    case FindingKind::outbound_pool_race: return upstream_advice(f);
    default: break;
    }
    return std::nullopt;
}

std::string connection_context(const ResetEvidence& ev) {
    std::string text;
    if (ev.closed_by_exit) text = "closed as the process exited; ";
    else if (ev.closed_while_draining) text = "closed while the backend was stopping; ";
    if (ev.peer_idle_ms)
        text += fmt::format("the upstream had closed it (FIN) after {} idle and the client sent on it afterwards; ",
                            duration(*ev.peer_idle_ms));
    if (ev.send_queue_bytes)
        text += fmt::format("{} response bytes unacknowledged were discarded by the reset; ", ev.send_queue_bytes);
    return text;
}

}  // namespace tcpwhy::explain::causes
