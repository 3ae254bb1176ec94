#include "tcpwhy/format.h"

#include <ctime>

#include <fmt/format.h>

namespace tcpwhy {
namespace {

uint64_t clock_ns(clockid_t id) {
    timespec ts{};
    clock_gettime(id, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

std::string format_time(uint64_t wall_ns) {
    time_t secs = static_cast<time_t>(wall_ns / 1'000'000'000ull);
    tm local{};
    localtime_r(&secs, &local);
    return fmt::format("{:02}:{:02}:{:02}.{:03}", local.tm_hour, local.tm_min, local.tm_sec,
                       (wall_ns / 1'000'000ull) % 1000);
}

std::string detail(const Event& e) {
    switch (e.type) {
    case EventType::state: return fmt::format("{} -> {}", to_string(e.old_state), to_string(e.new_state));
    case EventType::close:
        return fmt::format("{} -> {} idle_rx={}ms idle_tx={}ms unread={}B rx={}B tx={}B{}", to_string(e.old_state),
                           to_string(e.new_state), e.idle_rx_ms, e.idle_tx_ms, e.unread_bytes, e.bytes_rx, e.bytes_tx,
                           e.abort ? " ABORT" : "");
    case EventType::reset_sent:
        return fmt::format("reason={}{} sk={} state={}{}", to_string(e.reason), e.reason_inferred ? "(inferred)" : "",
                           to_string(e.sk_kind), to_string(e.sk_state),
                           e.sk_kind == SockKind::full ? fmt::format(" unread={}B", e.unread_bytes) : "");
    case EventType::reset_recv: return fmt::format("state={} idle_rx={}ms", to_string(e.sk_state), e.idle_rx_ms);
    case EventType::existing: return fmt::format("{} before tracing started", to_string(e.new_state));
    case EventType::setsockopt:
        if (e.opt == SockOpt::so_linger)
            return fmt::format("{} onoff={} linger={}s", to_string(e.opt), e.value, e.value2);
        if (e.opt == SockOpt::so_rcvtimeo || e.opt == SockOpt::so_sndtimeo)
            return fmt::format("{}={}us", to_string(e.opt), e.value);
        return fmt::format("{}={}", to_string(e.opt), e.value);
    }
    return "";
}

}  // namespace

WallClock WallClock::now() { return {clock_ns(CLOCK_MONOTONIC), clock_ns(CLOCK_REALTIME)}; }

std::string format_endpoint(const IpAddr& addr, uint16_t port) {
    if (addr.family == 6) return fmt::format("[{}]:{}", addr.to_string(), port);
    return fmt::format("{}:{}", addr.to_string(), port);
}

std::string format_event_header() {
    return fmt::format("{:<12} {:<10} {:>7} {:<15} {:<20} {:<28} {:<28} {:<3} {}", "TIME", "EVENT", "PID", "COMM",
                       "WHO", "LOCAL", "REMOTE", "LB", "DETAIL");
}

std::string format_event_line(const Event& e, const WallClock& clock, std::string_view who) {
    return fmt::format("{:<12} {:<10} {:>7} {:<15} {:<20} {:<28} {:<28} {:<3} {}",
                       format_time(clock.to_wall_ns(e.ts_ns)), to_string(e.type), e.pid ? std::to_string(e.pid) : "-",
                       e.comm.empty() ? "-" : e.comm, who.empty() ? fmt::format("netns:{}", e.netns) : std::string(who),
                       format_endpoint(e.laddr, e.lport), format_endpoint(e.raddr, e.rport), e.lb ? "LB" : "",
                       detail(e));
}

}  // namespace tcpwhy
