#include "advice.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

namespace tcpwhy::advice {
namespace {

// How one server spells "keep idle connections open for S seconds".
struct ServerAdvice {
    std::array<std::string_view, 3> comm_prefixes;  // matched against the start of comm
    std::string (*setting)(uint32_t seconds);
};

std::string node_setting(uint32_t s) {
    return fmt::format("for Node.js `server.keepAliveTimeout = {}` with `server.headersTimeout` above it (e.g. {})",
                       s * 1000, s * 1000 + 1000);
}
std::string gunicorn_setting(uint32_t s) { return fmt::format("for gunicorn `--keep-alive {}`", s); }
std::string uvicorn_setting(uint32_t s) { return fmt::format("for uvicorn `--timeout-keep-alive {}`", s); }
std::string python_setting(uint32_t s) {
    return fmt::format("for gunicorn `--keep-alive {0}`, for uvicorn `--timeout-keep-alive {0}`", s);
}
std::string nginx_setting(uint32_t s) { return fmt::format("for nginx `keepalive_timeout {}s;`", s); }
std::string apache_setting(uint32_t s) { return fmt::format("for Apache `KeepAliveTimeout {}`", s); }
std::string envoy_setting(uint32_t s) {
    return fmt::format("for Envoy `common_http_protocol_options: {{idle_timeout: {}s}}` on the HTTP connection manager",
                       s);
}
std::string java_setting(uint32_t s) {
    return fmt::format(
        "for Tomcat `keepAliveTimeout=\"{}\"` on the Connector (Spring Boot: "
        "`server.tomcat.keep-alive-timeout={}s`)",
        s * 1000, s);
}
// Go binaries have their own names, so Go is covered by the generic text.
std::string generic_setting(uint32_t s) {
    return fmt::format(
        "e.g. Go net/http `http.Server{{IdleTimeout: {0} * time.Second}}`, Node.js "
        "`server.keepAliveTimeout = {1}`, nginx `keepalive_timeout {0}s;`, gunicorn `--keep-alive {0}`, "
        "uvicorn `--timeout-keep-alive {0}`",
        s, s * 1000);
}

constexpr std::array kServers = {
    ServerAdvice{{"node", "nodejs", ""}, node_setting}, ServerAdvice{{"gunicorn", "", ""}, gunicorn_setting},
    ServerAdvice{{"uvicorn", "", ""}, uvicorn_setting}, ServerAdvice{{"python", "", ""}, python_setting},
    ServerAdvice{{"nginx", "", ""}, nginx_setting},     ServerAdvice{{"apache2", "httpd", ""}, apache_setting},
    ServerAdvice{{"envoy", "", ""}, envoy_setting},     ServerAdvice{{"java", "tomcat", ""}, java_setting},
};

std::string server_setting(std::string_view comm, uint32_t seconds) {
    for (const auto& server : kServers)
        for (auto prefix : server.comm_prefixes)
            if (!prefix.empty() && comm.starts_with(prefix)) return server.setting(seconds);
    return generic_setting(seconds);
}

std::string idle_timeout_advice(const Context& c) {
    if (c.lb_idle_timeout_s == 0)
        return "make the server's keep-alive idle timeout longer than its clients' idle timeout, or have clients "
               "retry idempotent requests that fail on a reused connection";
    uint32_t seconds = recommended_idle_timeout_s(c.lb_idle_timeout_s);
    std::string fix = fmt::format(
        "make the server's idle timeout longer than the LB's ({} s) so the LB always closes "
        "idle connections first: {}",
        c.lb_idle_timeout_s, server_setting(c.comm, seconds));
    if (c.observed_p50_ms >= c.lb_idle_timeout_s * 1000ull)
        return fmt::format(
            "the backend already waits {:.1f} s, longer than the configured LB idle timeout ({} s), "
            "yet the peer reused the connection later still: check the LB's real idle timeout "
            "(--lb-idle-timeout), then {}",
            c.observed_p50_ms / 1000.0, c.lb_idle_timeout_s, fix);
    return fix;
}

}  // namespace

uint32_t recommended_idle_timeout_s(uint32_t lb_idle_timeout_s) {
    return lb_idle_timeout_s + std::max<uint32_t>(5, lb_idle_timeout_s / 30);
}

std::string advice_for(const Context& c) {
    switch (c.kind) {
    case FindingKind::idle_close_race:
    case FindingKind::idle_timeout_below_lb: return idle_timeout_advice(c);
    case FindingKind::close_with_unread_data:
        return "the process closed sockets with request data still unread: read the whole request (or "
               "shutdown(SHUT_WR) "
               "and drain) before close(), and do not close a connection while a pipelined request may be in "
               "flight";
    case FindingKind::linger_abort:
        return "SO_LINGER {1,0} makes close() send a reset instead of a FIN and drops unsent data: remove it "
               "unless "
               "avoiding TIME_WAIT is worth losing responses";
    case FindingKind::no_listener:
        return "segments arrived for a port with no listener: check that the service's target port matches the "
               "listening port and that readiness probes keep traffic away while the process restarts";
    case FindingKind::timewait_data:
        return "the peer sent data on a connection the backend had already closed: make the peer stop reusing "
               "connections the backend closed (shorter client idle timeout than the server's)";
    case FindingKind::keepalive_timeout:
        return "keep-alive probes went unanswered: the peer vanished or a middlebox (NAT, conntrack, firewall) "
               "dropped "
               "the idle flow; keep TCP_KEEPIDLE below the middlebox's idle timeout";
    case FindingKind::user_timeout: {
        std::string value =
            c.opts && c.opts->has(SockOpt::tcp_user_timeout) ? fmt::format(" ({} ms)", c.opts->user_timeout_ms) : "";
        return fmt::format(
            "TCP_USER_TIMEOUT{} expired: raise it if the peer is only slow, or keep it and retry; a "
            "value below a few RTTs plus retransmission backoff aborts healthy connections",
            value);
    }
    case FindingKind::peer_reset:
        return "the peer reset the connection: look at the peer's logs (for an LB, its backend error logs) for why";
    case FindingKind::other: break;
    }
    return "see the kernel reason in the evidence";
}

}  // namespace tcpwhy::advice
