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

// " exiting=SIGKILL oom", "" for a live process.
std::string exit_detail(const Event& e) {
    if (!e.task_exiting) return "";
    return fmt::format(" exiting={}{}", exit_code_text(e.exit_code), e.oom_victim ? " oom_victim" : "");
}

std::string send_queue_detail(const Event& e) {
    return e.send_queue_bytes ? fmt::format(" sendq={}B", e.send_queue_bytes) : "";
}

std::string state_detail(const Event& e) {
    std::string text = fmt::format("{} -> {}", to_string(e.old_state), to_string(e.new_state));
    if (e.new_state == TcpState::listen || e.old_state == TcpState::listen)
        text += fmt::format(" queue={}/{}", e.acceptq_len, e.acceptq_max);
    if (e.old_state == TcpState::established && e.new_state == TcpState::close_wait)
        text += fmt::format(" idle_rx={}ms idle_tx={}ms rx={}B tx={}B", e.idle_rx_ms, e.idle_tx_ms, e.bytes_rx, e.bytes_tx);
    return text + send_queue_detail(e) + exit_detail(e);
}

std::string detail(const Event& e) {
    switch (e.type) {
    case EventType::state: return state_detail(e);
    case EventType::close:
        return fmt::format("{} -> {} idle_rx={}ms idle_tx={}ms unread={}B rx={}B tx={}B{}{}{}", to_string(e.old_state),
                           to_string(e.new_state), e.idle_rx_ms, e.idle_tx_ms, e.unread_bytes, e.bytes_rx, e.bytes_tx,
                           send_queue_detail(e), e.abort ? " ABORT" : "", exit_detail(e));
    case EventType::reset_sent:
        return fmt::format("reason={}{} sk={} state={}{}{}{}", to_string(e.reason), e.reason_inferred ? "(inferred)" : "",
                           to_string(e.sk_kind), to_string(e.sk_state),
                           e.sk_kind == SockKind::full ? fmt::format(" unread={}B", e.unread_bytes) : "",
                           send_queue_detail(e), e.syn ? " SYN" : "");
    case EventType::listen_overflow:
        return fmt::format("accept queue full {}/{} ({})", e.acceptq_len, e.acceptq_max, to_string(e.overflow_how));
    case EventType::signal:
        return fmt::format("{} from {}[{}]", signal_name(e.signal), terminal_safe(e.sender_comm), e.sender_pid);
    case EventType::reset_recv: return fmt::format("state={} idle_rx={}ms", to_string(e.sk_state), e.idle_rx_ms);
    case EventType::tally:
        return fmt::format("{} opened={} closed_local_first={} closed_remote_first={} rx={}B tx={}B",
                           e.direction == Direction::outbound ? "outbound" : "inbound", e.tally.opened, e.tally.closed_local_first,
                           e.tally.closed_remote_first, e.bytes_rx, e.bytes_tx);
    case EventType::existing:
        return fmt::format("{} before tracing started{}", to_string(e.new_state),
                           e.new_state == TcpState::listen ? fmt::format(" queue={}/{}", e.acceptq_len, e.acceptq_max)
                                                           : "");
    case EventType::setsockopt:
        if (e.opt == SockOpt::so_linger)
            return fmt::format("{} onoff={} linger={}s", to_string(e.opt), e.value, e.value2);
        if (e.opt == SockOpt::so_rcvtimeo || e.opt == SockOpt::so_sndtimeo)
            return fmt::format("{}={}us", to_string(e.opt), e.value);
        return fmt::format("{}={}", to_string(e.opt), e.value);
    }
    return "";
}

// The length of the valid UTF-8 sequence at text[i] and its code point; 0 when it is not one.
size_t utf8_sequence(std::string_view text, size_t i, uint32_t* code_point) {
    auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
    unsigned char lead = byte(i);
    size_t length = lead >= 0xf0 && lead <= 0xf4 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc2 && lead <= 0xdf ? 2 : 0;
    if (length == 0 || lead > 0xf4 || i + length > text.size()) return 0;
    uint32_t cp = lead & (0x7f >> length);
    for (size_t k = 1; k < length; ++k) {
        if ((byte(i + k) & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (byte(i + k) & 0x3f);
    }
    static constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kSmallest[length] || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000)) return 0;  // overlong, surrogates
    *code_point = cp;
    return length;
}

// Code points that steer a terminal or the direction of what follows.
bool is_control_code_point(uint32_t cp) {
    return (cp >= 0x80 && cp < 0xa0) || cp == 0x061c || cp == 0x200e || cp == 0x200f ||
           (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

std::string make_terminal_safe(std::string_view text, bool keep_line_breaks) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
        auto c = static_cast<unsigned char>(text[i]);
        if ((c >= 0x20 && c < 0x7f) || (keep_line_breaks && (c == '\n' || c == '\t'))) {
            out += static_cast<char>(c);
            ++i;
            continue;
        }
        uint32_t cp = 0;
        size_t length = c >= 0x80 ? utf8_sequence(text, i, &cp) : 0;
        if (length == 0) {
            out += fmt::format("\\x{:02x}", c);
            ++i;
        } else if (is_control_code_point(cp)) {
            out += fmt::format("\\u{:04x}", cp);
            i += length;
        } else {
            out.append(text.substr(i, length));
            i += length;
        }
    }
    return out;
}

}  // namespace

std::string terminal_safe(std::string_view text) { return make_terminal_safe(text, false); }
std::string terminal_safe_text(std::string_view text) { return make_terminal_safe(text, true); }

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
                       e.comm.empty() ? "-" : terminal_safe(e.comm),
                       who.empty() ? fmt::format("netns:{}", e.netns) : terminal_safe(who),
                       format_endpoint(e.laddr, e.lport), format_endpoint(e.raddr, e.rport), e.lb ? "LB" : "",
                       detail(e));
}

}  // namespace tcpwhy
