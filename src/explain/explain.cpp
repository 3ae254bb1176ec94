#include "tcpwhy/explain.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "causes.h"

namespace tcpwhy::explain {
namespace {

const char* plural(uint64_t n, const char* one, const char* many) { return n == 1 ? one : many; }

// ---- evidence ---------------------------------------------------------------

std::string reason_text(const ResetEvidence& ev) {
    switch (ev.reason_source) {
    case ReasonSource::kernel: return fmt::format("reason {}", to_string(ev.reason));
    case ReasonSource::inferred: return fmt::format("reason {} (inferred from socket state)", to_string(ev.reason));
    case ReasonSource::none: break;
    }
    return "no kernel reason; shape recognised from socket state";
}

// " 5 ms" (since the close), or "" when the close time is unknown or the reset came first.
std::string after_close(const ResetEvidence& ev) {
    return ev.after_close_ms ? fmt::format(" {} ms", *ev.after_close_ms) : "";
}

std::string timewait_evidence(const ResetEvidence& ev) {
    if (ev.close_seen && ev.close_idle && !ev.close_aborted)
        return fmt::format("backend sent FIN after {} ms idle; peer data reached the TIME_WAIT socket{} after it: {}",
                           ev.idle_gap_ms, after_close(ev), reason_text(ev));
    if (ev.close_seen)
        return fmt::format(
            "data to a TIME_WAIT socket; the backend's close was not an idle close ({} ms quiet, idle means >= {} ms): "
            "{}",
            ev.idle_gap_ms, ev.idle_bar_ms, reason_text(ev));
    return fmt::format("data to a TIME_WAIT socket whose close was not seen: {}", reason_text(ev));
}

std::string data_after_fin_evidence(const ResetEvidence& ev, bool idle) {
    std::string source = ev.idle_from_reset ? " (close not seen; idle time from the reset)" : "";
    if (idle)
        return fmt::format("backend sent FIN after {} ms idle{}; peer data arrived{} after the FIN: {}", ev.idle_gap_ms,
                           source, after_close(ev), reason_text(ev));
    return fmt::format(
        "peer data arrived after the backend's FIN on a busy connection ({} ms quiet{}, idle means >= {} ms): {}",
        ev.idle_gap_ms, source, ev.idle_bar_ms, reason_text(ev));
}

std::string unread_evidence(const ResetEvidence& ev) {
    if (ev.close_seen && ev.close_idle)
        return fmt::format(
            "backend closed with {} unread bytes that arrived just before the close, after {} ms without sending: {}",
            ev.unread_bytes, ev.idle_gap_ms, reason_text(ev));
    if (ev.close_seen)
        return fmt::format("backend closed with {} unread bytes on a busy connection ({} ms quiet, idle means >= {} "
                           "ms): {}",
                           ev.unread_bytes, ev.idle_gap_ms, ev.idle_bar_ms, reason_text(ev));
    return fmt::format("backend closed with {} unread bytes (close not seen, idle gap unknown): {}", ev.unread_bytes,
                       reason_text(ev));
}

std::string timer_evidence(const ResetEvidence& ev) {
    if (ev.user_timeout_ms)
        return fmt::format("TCP_USER_TIMEOUT {} ms expired with the peer unresponsive: {}", *ev.user_timeout_ms,
                           reason_text(ev));
    std::string probes = ev.keepalive_probes ? fmt::format(" (TCP_KEEPIDLE {} s, TCP_KEEPINTVL {} s, TCP_KEEPCNT {})",
                                                           (*ev.keepalive_probes)[0], (*ev.keepalive_probes)[1],
                                                           (*ev.keepalive_probes)[2])
                                             : "";
    return fmt::format("keep-alive probes went unanswered{}: {}", probes, reason_text(ev));
}

std::string reset_received_evidence(const ResetEvidence& ev) {
    std::string context;
    if (ev.first_close == FirstClose::local)
        context = " after our FIN";
    else if (ev.first_close == FirstClose::remote)
        context = " after the peer's FIN (we kept using a connection the peer had closed)";
    return fmt::format("reset received in {}{}", to_string(ev.sk_state), context);
}

// ---- summaries ---------------------------------------------------------------

std::string idle_profile_text(const IdleStats& idle) {
    return fmt::format("closes idle keep-alive connections after {} (p50 of {} {}, max {})", duration(idle.p50_ms),
                       idle.samples, plural(idle.samples, "close", "closes"), duration(idle.max_ms));
}

std::string lb_keeps_text(const LbFacts& lb) {
    return fmt::format("the load balancer ({}) keeps them up to {} s", lb.name, lb.idle_timeout_s);
}

std::string_view reset_symptom(const LbFacts& lb) {
    const LbPreset* preset = find_lb_preset(lb.name);
    return preset ? preset->reset_symptom : "clients see a reset or an empty reply";
}

std::string linked_change_text(const Finding& f) {
    const SockOptChange& change = *f.linked_change;
    uint64_t n = f.count_lb + f.count_other;
    std::string who =
        change.comm.empty() ? fmt::format("pid {}", change.pid) : fmt::format("{}[{}]", change.comm, change.pid);
    std::string when =
        change.ts_ns <= f.first_ts_ns
            ? fmt::format("{} before the first of {} {} {}", duration((f.first_ts_ns - change.ts_ns) / 1'000'000), n,
                          to_string(f.kind), plural(n, "reset", "resets"))
            : fmt::format("{} before the latest {} reset", duration((f.last_ts_ns - change.ts_ns) / 1'000'000),
                          to_string(f.kind));
    return fmt::format("{} set by {} {}", option_change(change), who, when);
}

// ---- advice ------------------------------------------------------------------

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

// ---- advice in the detected server's words ---------------------------------------

// The first `...` of a knob's setting: "`--keep-alive 2`" out of "`--keep-alive 2` (or ...)".
std::string knob_value(ServerKind kind, Knob knob, uint32_t ms) {
    std::string setting = knob_setting(kind, knob, (ms + 500) / 1000);
    auto open = setting.find('`');
    auto close = open == std::string::npos ? open : setting.find('`', open + 1);
    return close == std::string::npos ? setting : setting.substr(open, close - open + 1);
}

bool close_to(uint32_t measured_ms, uint32_t expected_ms) {
    uint32_t slack = std::max<uint32_t>(300, expected_ms / 7);
    return measured_ms + slack >= expected_ms && measured_ms <= expected_ms + slack;
}

// What the server's idle timeout is now, from the measured closes and what is known of its
// default or its command line: " (its default `--keep-alive 2`)".
std::string current_idle_value(const ServerInfo& server, std::optional<uint32_t> measured_ms) {
    const KnobSpec& knob = knowledge(server.kind).idle;
    const IdleDefault d = idle_default(server);
    if (server.configured_idle_ms) {
        if (measured_ms && !close_to(*measured_ms, *server.configured_idle_ms))
            return fmt::format(" (its command line sets `{}`, yet it closes them sooner or later than that: a "
                               "configuration file or the application overrides it)",
                               server.configured_by);
        return fmt::format(" (its command line sets `{}`)", server.configured_by);
    }
    switch (d.kind) {
    case DefaultKind::value: {
        std::string value = knob_value(server.kind, Knob::idle_timeout, d.setting_ms);
        std::string why = d.why.empty() ? "" : fmt::format(" {}", d.why);
        if (!measured_ms || close_to(*measured_ms, d.closes_at_ms)) return fmt::format(" (its default {}{})", value, why);
        // A buffer the server adds (Node's 1 s) is not part of the setting.
        uint32_t buffer = d.closes_at_ms - d.setting_ms;
        if (buffer && *measured_ms > buffer)
            return fmt::format(" (not its default {}: its configuration sets about {}, and it closes {} later)", value,
                               duration(*measured_ms - buffer), duration(buffer));
        return fmt::format(" (not its default {}: its configuration sets about {})", value, duration(*measured_ms));
    }
    case DefaultKind::fallback: return fmt::format(" (`{}` {})", knob.name, knob.note);
    case DefaultKind::none:
        return fmt::format(" (`{}` is off by default: the application sets it)", knob.name);
    case DefaultKind::no_keepalive:
    case DefaultKind::unknown: break;
    }
    return "";
}

std::string detected_idle_advice(const Finding& f, const ServerInfo& server) {
    const uint32_t lb_timeout_s = f.lb.idle_timeout_s;
    const ServerKnowledge& k = knowledge(server.kind);
    const IdleDefault d = idle_default(server);
    std::string name = server_display(server);
    std::optional<uint32_t> measured = f.idle_close && f.idle_close->samples
                                           ? std::optional<uint32_t>(f.idle_close->p50_ms) : std::nullopt;
    uint32_t seconds = recommended_idle_timeout_s(lb_timeout_s ? lb_timeout_s : 0);
    if (d.kind == DefaultKind::no_keepalive) {
        if (server.kind == ServerKind::gunicorn)
            return fmt::format("{}: {}, so a connection it closed was reused by a client that did not see its "
                               "`Connection: close`; to keep connections alive use a threaded or async worker "
                               "(`-k gthread`) with `--keep-alive {}`",
                               name, d.why, lb_timeout_s ? seconds : 75);
        return fmt::format("{} keeps no connection alive ({}): put a proxy that does in front of it, or make its "
                           "clients stop reusing connections",
                           name, k.idle.note);
    }
    std::string closes = measured ? fmt::format("{} closes idle connections after {}{}", name, duration(*measured),
                                                current_idle_value(server, measured))
                                  : fmt::format("{} closes idle connections{}", name, current_idle_value(server, measured));
    if (lb_timeout_s == 0) {
        std::string knob = k.idle.name.empty() ? "its keep-alive idle timeout" : fmt::format("`{}`", k.idle.name);
        return fmt::format("{}; make {} longer than its clients' idle timeout, or have clients retry idempotent "
                           "requests that fail on a reused connection",
                           closes, knob);
    }
    std::string set = knob_setting(server.kind, Knob::idle_timeout, seconds);
    if (set.empty())
        return fmt::format("{}; behind this LB ({} s) make its keep-alive idle timeout longer than {} s ({} has no "
                           "setting tcpwhy knows: {})",
                           closes, lb_timeout_s, lb_timeout_s, k.display, k.idle.note.empty() ? "see its documentation" : k.idle.note);
    std::string fix = fmt::format("{}; behind this LB ({} s) set {}", closes, lb_timeout_s, set);
    if (measured && *measured >= lb_timeout_s * 1000ull)
        fix += fmt::format(" (it already waits longer than the configured LB idle timeout, yet the peer reused the "
                           "connection later still: check the LB's real idle timeout with --lb-idle-timeout)");
    return fix;
}

std::string idle_timeout_advice(const Finding& f) {
    if (f.backend.server && f.backend.server->kind != ServerKind::unknown)
        return detected_idle_advice(f, *f.backend.server);
    const uint32_t lb_timeout_s = f.lb.idle_timeout_s;
    if (lb_timeout_s == 0)
        return "make the server's keep-alive idle timeout longer than its clients' idle timeout, or have clients "
               "retry idempotent requests that fail on a reused connection";
    uint32_t seconds = recommended_idle_timeout_s(lb_timeout_s);
    std::string fix = fmt::format(
        "make the server's idle timeout longer than the LB's ({} s) so the LB always closes "
        "idle connections first: {}",
        lb_timeout_s, server_setting(f.backend.comm, seconds));
    // Detection ran and recognised nothing: say so, rather than let the guess pass for knowledge.
    if (f.backend.server)
        fix += fmt::format(" (tcpwhy did not recognise the server: {}; docs/servers.md lists those it knows)",
                           f.backend.server->via);
    uint32_t observed_p50_ms = f.idle_close ? f.idle_close->p50_ms : 0;
    if (observed_p50_ms >= lb_timeout_s * 1000ull)
        return fmt::format(
            "the backend already waits {:.1f} s, longer than the configured LB idle timeout ({} s), "
            "yet the peer reused the connection later still: check the LB's real idle timeout "
            "(--lb-idle-timeout), then {}",
            observed_p50_ms / 1000.0, lb_timeout_s, fix);
    return fix;
}

// Outbound connections of a detected client: the pool setting that keeps it from reusing a
// connection the upstream has closed. "" inbound, or when the client is not known.
std::string client_pool_hint(const BackendProfile& b) {
    if (!b.id.outbound || !b.server || b.server->kind == ServerKind::unknown) return "";
    const KnobSpec& pool = knowledge(b.server->kind).client_idle;
    if (pool.name.empty()) return "";
    std::string now = pool.default_kind == DefaultKind::value
                          ? fmt::format(" (default {})", duration(pool.default_ms))
                          : "";
    return fmt::format("; if {} reuses pooled connections the upstream already closed, keep its `{}`{} below the "
                       "upstream's idle timeout: {}",
                       server_display(*b.server), pool.name, now, pool.setting.substr(0, pool.setting.find(" (")));
}

std::string_view unit_of(SockOpt opt) {
    switch (opt) {
    case SockOpt::tcp_user_timeout: return " ms";
    case SockOpt::so_rcvtimeo:
    case SockOpt::so_sndtimeo: return " us";
    case SockOpt::tcp_keepidle:
    case SockOpt::tcp_keepintvl:
    case SockOpt::tcp_linger2:
    case SockOpt::tcp_defer_accept: return " s";
    case SockOpt::so_keepalive:
    case SockOpt::so_linger:
    case SockOpt::tcp_keepcnt: break;
    }
    return "";
}

}  // namespace

std::string duration(uint64_t ms) {
    if (ms < 1000) return fmt::format("{} ms", ms);
    if (ms < 120'000) return fmt::format("{:.1f} s", ms / 1000.0);
    return fmt::format("{:.0f} s", ms / 1000.0);
}

std::string four_tuple(const ConnectionRecord& c) {
    return format_endpoint(c.raddr, c.rport) + "->" + format_endpoint(c.laddr, c.lport);
}

std::string evidence(const ResetEvidence& ev) { return causes::connection_context(ev) + mechanism_evidence(ev); }

std::string lb_symptom(const Finding& f) {
    if (f.kind == FindingKind::outbound_pool_race)
        return "the pod's own client sees it, not the LB: Envoy/Istio 503 UC "
               "(upstream_reset_before_response_started{connection_termination}), Node.js ECONNRESET (socket hang up), "
               "Go `connection reset by peer`, Python `ConnectionResetError`";
    const LbPreset* preset = find_lb_preset(f.lb.name);
    std::string_view words = preset ? tcpwhy::lb_symptom(*preset, f.kind) : std::string_view();
    if (words.empty()) return "";
    return fmt::format("the load balancer ({}) shows this as {}", f.lb.name, words);
}

std::string mechanism_evidence(const ResetEvidence& ev) {
    switch (ev.mechanism) {
    case Mechanism::no_socket:
        return fmt::format(
            "no socket for the segment (a SYN to a port nobody listens on, or a connection this host no longer has): {}",
            reason_text(ev));
    case Mechanism::timewait: return timewait_evidence(ev);
    case Mechanism::data_after_fin:
        return data_after_fin_evidence(ev, ev.close_seen ? ev.close_idle : ev.idle_gap_ms >= ev.idle_bar_ms);
    case Mechanism::unread_at_close: return unread_evidence(ev);
    case Mechanism::linger_zero:
        if (ev.linger_zero_in_force) return fmt::format("close() with SO_LINGER {{1,0}} in force: {}", reason_text(ev));
        return fmt::format("abortive close (tcp_disconnect) without SO_LINGER {{1,0}} seen set: {}", reason_text(ev));
    case Mechanism::timer_expired: return timer_evidence(ev);
    case Mechanism::reset_received: return reset_received_evidence(ev);
    case Mechanism::unrecognised: break;
    }
    return fmt::format("{} (socket {}, state {})", reason_text(ev), to_string(ev.sk_kind), to_string(ev.sk_state));
}

std::string option_change(const SockOptChange& c) {
    std::string text = c.opt == SockOpt::so_linger
                           ? fmt::format("SO_LINGER {{{},{}}}", c.value, c.value2)
                           : fmt::format("{} {}{}", to_string(c.opt), c.value, unit_of(c.opt));
    if (c.previous && c.opt != SockOpt::so_linger) text += fmt::format(" (was {}{})", *c.previous, unit_of(c.opt));
    return text;
}

std::string backend_label(const BackendProfile& b) {
    const BackendId& id = b.id;
    std::string who;
    switch (id.workload) {
    case WorkloadKind::pod:
        who = id.namespace_name.empty() ? fmt::format("pod {}", id.pod)
                                        : fmt::format("pod {}/{}", id.namespace_name, id.pod);
        break;
    case WorkloadKind::host: who = "host"; break;
    case WorkloadKind::netns: who = fmt::format("netns {}", id.pod); break;
    case WorkloadKind::container: who = id.pod; break;
    case WorkloadKind::process: who = fmt::format("process {} in netns {}", id.pod, id.netns); break;
    case WorkloadKind::unknown:
        who = id.pod.empty() ? fmt::format("netns {}", id.netns) : fmt::format("pod {}", id.pod);
        break;
    }
    std::string process = b.comm.empty() ? "process unknown" : fmt::format("process {}", b.comm);
    if (id.outbound) return fmt::format("{} ({}, outbound to port {})", who, process, id.port);
    return fmt::format("{} ({}, port {})", who, process, id.port);
}

std::string summary(const Finding& f) {
    std::string who = backend_label(f.backend);
    switch (f.kind) {
    case FindingKind::idle_close_race: {
        std::string profile = f.idle_close ? idle_profile_text(*f.idle_close) : "closed idle connections";
        std::string lb = f.lb.idle_timeout_s ? "; " + lb_keeps_text(f.lb) : "";
        return fmt::format("{} {}{}; {} {} arrived on a closing connection and {} reset ({})", who, profile, lb,
                           f.count, plural(f.count, "request", "requests"), plural(f.count, "was", "were"),
                           reset_symptom(f.lb));
    }
    case FindingKind::idle_timeout_below_lb:
        return fmt::format(
            "{} {}; {}: requests the LB sends on a connection the backend is closing will be reset (none seen yet)",
            who, f.idle_close ? idle_profile_text(*f.idle_close) : "closes idle connections", lb_keeps_text(f.lb));
    default: break;
    }
    if (auto words = causes::summary(f, who)) return *words;
    return fmt::format("{}: {} {} {}", who, f.count, to_string(f.kind), plural(f.count, "reset", "resets"));
}

std::vector<std::string> evidence(const Finding& f) {
    std::vector<std::string> lines;
    if (auto own = causes::evidence(f)) lines = std::move(*own);
    else if (f.evidence) lines.push_back(evidence(*f.evidence));
    if (f.linked_change) lines.push_back(linked_change_text(f));
    return lines;
}

uint32_t recommended_idle_timeout_s(uint32_t lb_idle_timeout_s) {
    return lb_idle_timeout_s + std::max<uint32_t>(5, lb_idle_timeout_s / 30);
}

std::string advice(const Finding& f) {
    if (auto words = causes::advice(f)) return *words;
    switch (f.kind) {
    case FindingKind::idle_close_race:
    case FindingKind::idle_timeout_below_lb: return idle_timeout_advice(f);
    case FindingKind::close_with_unread_data:
        return "the process closed sockets with request data still unread: read the whole request (or "
               "shutdown(SHUT_WR) and drain) before close(), and do not close a connection while a pipelined "
               "request may be in flight";
    case FindingKind::linger_abort:
        return "SO_LINGER {1,0} makes close() send a reset instead of a FIN and drops unsent data: remove it "
               "unless avoiding TIME_WAIT is worth losing responses";
    case FindingKind::no_listener:
        return "segments arrived for a port with no listener: check that the service's target port matches the "
               "listening port and that readiness probes keep traffic away while the process restarts";
    case FindingKind::timewait_data:
        return "the peer sent data on a connection the backend had already closed: make the peer stop reusing "
               "connections the backend closed (shorter client idle timeout than the server's)" +
               client_pool_hint(f.backend);
    case FindingKind::keepalive_timeout:
        return "keep-alive probes went unanswered: the peer vanished or a middlebox (NAT, conntrack, firewall) "
               "dropped the idle flow; keep TCP_KEEPIDLE below the middlebox's idle timeout";
    case FindingKind::user_timeout: {
        const SockOpts& opts = f.backend.opts;
        std::string value =
            opts.has(SockOpt::tcp_user_timeout) ? fmt::format(" ({} ms)", opts.user_timeout_ms) : "";
        return fmt::format(
            "TCP_USER_TIMEOUT{} expired: raise it if the peer is only slow, or keep it and retry; a "
            "value below a few RTTs plus retransmission backoff aborts healthy connections",
            value);
    }
    case FindingKind::peer_reset:
        return "the peer reset the connection: look at the peer's logs (for an LB, its backend error logs) for why" +
               client_pool_hint(f.backend);
    case FindingKind::other: break;
    case FindingKind::rollout_drain:
    case FindingKind::process_crash:
    case FindingKind::accept_queue_overflow:
    case FindingKind::lb_response_timeout:
    case FindingKind::response_cut_short:
    case FindingKind::outbound_pool_race: break;  // causes::advice() words them when their facts are set
    }
    return "see the kernel reason in the evidence";
}

Words words(const Finding& f) {
    // The race's summary already names what the LB answers.
    std::string symptom = f.kind == FindingKind::idle_close_race ? "" : lb_symptom(f);
    return {summary(f), evidence(f), advice(f), std::move(symptom)};
}

std::string server_name(const BackendProfile& b) {
    if (!b.server || b.server->kind == ServerKind::unknown) return "";
    return server_display(*b.server);
}

std::string server_line(const BackendProfile& b) {
    if (!b.server) return "";
    const ServerInfo& server = *b.server;
    if (server.kind == ServerKind::unknown) return fmt::format("unknown ({})", server.via);
    const KnobSpec& idle = knowledge(server.kind).idle;
    const IdleDefault d = idle_default(server);
    std::string knob;
    switch (d.kind) {
    case DefaultKind::value:
        knob = fmt::format("; idle timeout `{}`, default {}{}", idle.name, duration(d.setting_ms),
                           d.closes_at_ms != d.setting_ms ? fmt::format(" (closes at {})", duration(d.closes_at_ms)) : "");
        break;
    case DefaultKind::fallback: knob = fmt::format("; idle timeout `{}` {}", idle.name, idle.note); break;
    case DefaultKind::none: knob = fmt::format("; idle timeout `{}`, off by default", idle.name); break;
    case DefaultKind::no_keepalive: knob = fmt::format("; keeps no connection alive ({})", d.why.empty() ? idle.note : d.why); break;
    case DefaultKind::unknown: break;
    }
    std::string configured = server.configured_by.empty() ? "" : fmt::format("; command line sets `{}`", server.configured_by);
    return fmt::format("{}{}{}; recognised by {}", server_display(server), knob, configured, server.via);
}

std::string server_setting(const BackendProfile& b, Knob knob, uint32_t seconds) {
    if (!b.server || b.server->kind == ServerKind::unknown) return "";
    return knob_setting(b.server->kind, knob, seconds);
}

std::string live_line(const FindingUpdate& u) {
    const Finding& f = u.finding;
    if (u.first) return fmt::format("finding [{}] {}", to_string(f.kind), summary(f));
    return fmt::format("update [{}] {}: {} now (+{})", to_string(f.kind), backend_label(f.backend), f.count, u.added);
}

}  // namespace tcpwhy::explain
