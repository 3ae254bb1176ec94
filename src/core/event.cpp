#include "tcpwhy/event.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

namespace tcpwhy {
namespace {

constexpr std::array<std::string_view, kEventTypeCount> kEventTypeNames = {
    "", "state", "close", "reset_sent", "reset_recv", "setsockopt", "existing", "listen_overflow", "signal", "tally"};
constexpr std::array<std::string_view, 3> kOverflowHowNames = {"", "drop", "synack_retransmit"};

struct SignalName {
    int number;
    std::string_view name;
};
// The signals that end or stop servers (and that wait statuses name), x86-64/asm-generic numbering.
constexpr std::array kSignalNames = {
    SignalName{1, "SIGHUP"},   SignalName{2, "SIGINT"},   SignalName{3, "SIGQUIT"},  SignalName{4, "SIGILL"},
    SignalName{5, "SIGTRAP"},  SignalName{6, "SIGABRT"},  SignalName{7, "SIGBUS"},   SignalName{8, "SIGFPE"},
    SignalName{9, "SIGKILL"},  SignalName{10, "SIGUSR1"}, SignalName{11, "SIGSEGV"}, SignalName{12, "SIGUSR2"},
    SignalName{13, "SIGPIPE"}, SignalName{14, "SIGALRM"}, SignalName{15, "SIGTERM"}, SignalName{24, "SIGXCPU"},
    SignalName{25, "SIGXFSZ"}, SignalName{31, "SIGSYS"},
};
constexpr std::array<std::string_view, 13> kStateNames = {
    "UNKNOWN",   "ESTABLISHED", "SYN_SENT",   "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",
    "CLOSE",     "CLOSE_WAIT",  "LAST_ACK",   "LISTEN",   "CLOSING",   "NEW_SYN_RECV"};
constexpr std::array<std::string_view, 4> kSockKindNames = {"none", "full", "timewait", "request"};
constexpr std::array<std::string_view, kSockOptCount> kSockOptNames = {
    "SO_KEEPALIVE",  "SO_LINGER",      "SO_RCVTIMEO", "SO_SNDTIMEO",      "TCP_KEEPIDLE",
    "TCP_KEEPINTVL", "TCP_KEEPCNT",    "TCP_USER_TIMEOUT", "TCP_LINGER2", "TCP_DEFER_ACCEPT"};

constexpr std::array<std::string_view, kResetReasonCount> kResetReasonNames = {
    "",
    "NOT_SPECIFIED",
    "NO_SOCKET",
    "TCP_INVALID_ACK_SEQUENCE",
    "TCP_RFC7323_PAWS",
    "TCP_TOO_OLD_ACK",
    "TCP_ACK_UNSENT_DATA",
    "TCP_FLAGS",
    "TCP_OLD_ACK",
    "TCP_ABORT_ON_DATA",
    "TCP_TIMEWAIT_SOCKET",
    "INVALID_SYN",
    "TCP_ABORT_ON_CLOSE",
    "TCP_ABORT_ON_LINGER",
    "TCP_ABORT_ON_MEMORY",
    "TCP_STATE",
    "TCP_KEEPALIVE_TIMEOUT",
    "TCP_DISCONNECT_WITH_DATA",
    "MPTCP_RST_EUNSPEC",
    "MPTCP_RST_EMPTCP",
    "MPTCP_RST_ERESOURCE",
    "MPTCP_RST_EPROHIBIT",
    "MPTCP_RST_EWQ2BIG",
    "MPTCP_RST_EBADPERF",
    "MPTCP_RST_EMIDDLEBOX",
    "ERROR",
    "UNRECOGNISED",
};

// The kernel's socket-option names that are the same option in another time layout.
struct SockOptAlias {
    std::string_view name;
    SockOpt opt;
};
constexpr std::array kSockOptAliases = {
    SockOptAlias{"SO_RCVTIMEO_OLD", SockOpt::so_rcvtimeo}, SockOptAlias{"SO_RCVTIMEO_NEW", SockOpt::so_rcvtimeo},
    SockOptAlias{"SO_SNDTIMEO_OLD", SockOpt::so_sndtimeo}, SockOptAlias{"SO_SNDTIMEO_NEW", SockOpt::so_sndtimeo},
};

template <typename Enum, size_t N>
std::optional<Enum> find_name(const std::array<std::string_view, N>& names, std::string_view name, size_t first = 0) {
    for (size_t i = first; i < N; ++i)
        if (names[i] == name) return static_cast<Enum>(i);
    return std::nullopt;
}

template <size_t N>
std::string_view name_at(const std::array<std::string_view, N>& names, size_t i, std::string_view fallback) {
    return i < N ? names[i] : fallback;
}

}  // namespace

std::string_view to_string(OverflowHow how) { return name_at(kOverflowHowNames, static_cast<size_t>(how), ""); }
std::optional<OverflowHow> overflow_how_from_string(std::string_view name) {
    return find_name<OverflowHow>(kOverflowHowNames, name, 1);
}

std::string_view signal_name(int signal) {
    for (const auto& s : kSignalNames)
        if (s.number == signal) return s.name;
    return "";
}
std::optional<int> signal_from_name(std::string_view name) {
    for (const auto& s : kSignalNames)
        if (s.name == name) return s.number;
    return std::nullopt;
}

std::string exit_code_text(uint16_t status) {
    int sig = exit_signal(status);
    if (sig == 0) return "exit " + std::to_string(exit_status(status));
    std::string name(signal_name(sig));
    if (name.empty()) name = "signal " + std::to_string(sig);
    return (status & 0x80) ? name + " (core dumped)" : name;
}

std::string_view to_string(EventType type) { return name_at(kEventTypeNames, static_cast<size_t>(type), "?"); }
std::optional<EventType> event_type_from_string(std::string_view name) {
    return find_name<EventType>(kEventTypeNames, name, 1);
}

std::string_view to_string(TcpState state) { return name_at(kStateNames, static_cast<size_t>(state), "UNKNOWN"); }
std::optional<TcpState> tcp_state_from_string(std::string_view name) {
    return find_name<TcpState>(kStateNames, name);
}

std::string_view to_string(SockKind kind) { return name_at(kSockKindNames, static_cast<size_t>(kind), "none"); }
std::optional<SockKind> sock_kind_from_string(std::string_view name) {
    return find_name<SockKind>(kSockKindNames, name);
}

std::string_view to_string(ResetReason reason) {
    return name_at(kResetReasonNames, static_cast<size_t>(reason), "UNRECOGNISED");
}
std::optional<ResetReason> reset_reason_from_string(std::string_view name) {
    return find_name<ResetReason>(kResetReasonNames, name);
}

std::string_view to_string(SockOpt opt) { return name_at(kSockOptNames, static_cast<size_t>(opt), "?"); }
std::optional<SockOpt> sock_opt_from_string(std::string_view name) {
    if (auto opt = find_name<SockOpt>(kSockOptNames, name)) return opt;
    for (const auto& alias : kSockOptAliases)
        if (alias.name == name) return alias.opt;
    return std::nullopt;
}

std::string_view level_name(SockOpt opt) {
    return static_cast<int>(opt) <= static_cast<int>(SockOpt::so_sndtimeo) ? "SOL_SOCKET" : "IPPROTO_TCP";
}

namespace {

// Dotted quad without a copy or inet_pton: trace replay parses two addresses per event.
bool parse_ipv4(std::string_view text, uint8_t* out) {
    int part = 0;
    size_t i = 0;
    for (; part < 4; ++part) {
        if (i >= text.size() || text[i] < '0' || text[i] > '9') return false;
        unsigned value = 0;
        size_t digits = 0;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
            if (++digits > 3 || (digits > 1 && value == 0)) return false;  // no leading zeros, like inet_pton
            value = value * 10 + static_cast<unsigned>(text[i++] - '0');
        }
        if (value > 255) return false;
        out[part] = static_cast<uint8_t>(value);
        if (part < 3 && (i >= text.size() || text[i++] != '.')) return false;
    }
    return i == text.size();
}

}  // namespace

std::optional<IpAddr> IpAddr::parse(std::string_view text) {
    if (text.empty() || text.size() > INET6_ADDRSTRLEN) return std::nullopt;
    if (IpAddr v4addr; parse_ipv4(text, v4addr.bytes.data())) {
        v4addr.family = 4;
        return v4addr;
    }
    std::string s(text);
    IpAddr addr;
    if (inet_pton(AF_INET, s.c_str(), addr.bytes.data()) == 1) {
        addr.family = 4;
        return addr;
    }
    if (inet_pton(AF_INET6, s.c_str(), addr.bytes.data()) == 1) {
        addr.family = 6;
        return addr;
    }
    return std::nullopt;
}

IpAddr canonical(const IpAddr& a) {
    constexpr std::array<uint8_t, 12> kV4MappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (a.family != 6 || !std::equal(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), a.bytes.begin())) return a;
    IpAddr v4;
    v4.family = 4;
    std::copy(a.bytes.begin() + 12, a.bytes.end(), v4.bytes.begin());
    return v4;
}

std::string IpAddr::to_string() const {
    if (family == 4) {
        // Every event line has two addresses; glibc's inet_ntop formats IPv4 through sprintf.
        char buf[16];
        char* p = buf;
        for (int i = 0; i < 4; ++i) {
            if (i) *p++ = '.';
            p = std::to_chars(p, buf + sizeof(buf), bytes[i]).ptr;
        }
        return std::string(buf, p);
    }
    char buf[INET6_ADDRSTRLEN] = {};
    if (family == 6) inet_ntop(AF_INET6, bytes.data(), buf, sizeof(buf));
    else return "-";
    return buf;
}

int64_t SockOpts::value(SockOpt opt) const {
    switch (opt) {
    case SockOpt::so_keepalive: return keepalive;
    case SockOpt::so_linger: return linger_onoff ? linger_s : -1;
    case SockOpt::so_rcvtimeo: return static_cast<int64_t>(rcvtimeo_us);
    case SockOpt::so_sndtimeo: return static_cast<int64_t>(sndtimeo_us);
    case SockOpt::tcp_keepidle: return keepidle_s;
    case SockOpt::tcp_keepintvl: return keepintvl_s;
    case SockOpt::tcp_keepcnt: return keepcnt;
    case SockOpt::tcp_user_timeout: return user_timeout_ms;
    case SockOpt::tcp_linger2: return linger2_s;
    case SockOpt::tcp_defer_accept: return defer_accept_s;
    }
    return 0;
}

void SockOpts::set(SockOpt opt, int64_t v) {
    set_mask |= 1u << static_cast<int>(opt);
    switch (opt) {
    case SockOpt::so_keepalive: keepalive = v != 0; break;
    case SockOpt::so_linger:
        linger_onoff = v >= 0;
        linger_s = static_cast<int32_t>(v < 0 ? 0 : v);
        break;
    case SockOpt::so_rcvtimeo: rcvtimeo_us = static_cast<uint64_t>(v); break;
    case SockOpt::so_sndtimeo: sndtimeo_us = static_cast<uint64_t>(v); break;
    case SockOpt::tcp_keepidle: keepidle_s = static_cast<uint32_t>(v); break;
    case SockOpt::tcp_keepintvl: keepintvl_s = static_cast<uint32_t>(v); break;
    case SockOpt::tcp_keepcnt: keepcnt = static_cast<uint32_t>(v); break;
    case SockOpt::tcp_user_timeout: user_timeout_ms = static_cast<uint32_t>(v); break;
    case SockOpt::tcp_linger2: linger2_s = static_cast<int32_t>(v); break;
    case SockOpt::tcp_defer_accept: defer_accept_s = static_cast<uint32_t>(v); break;
    }
}

}  // namespace tcpwhy
