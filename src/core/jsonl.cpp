// The trace's JSON Lines, read and written by hand: every line is one flat object (plus the
// small "opts" object), and `tcpwhy report` must replay millions of them per second, which a
// general JSON DOM does not allow (bench/README.md has the figures). Unknown fields, of any
// JSON type, are skipped.
#include "tcpwhy/jsonl.h"

#include <array>
#include <bit>
#include <cctype>
#include <charconv>
#include <cstring>
#include <limits>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>


namespace tcpwhy {
namespace {

// ---- writing ------------------------------------------------------------------------

// Length of the well-formed UTF-8 sequence s starts with (Unicode table 3-7), 0 when it is not one:
// no overlong forms, no surrogates, nothing past U+10FFFF.
size_t utf8_sequence_length(std::string_view s) {
    auto byte = [&](size_t k) { return k < s.size() ? static_cast<unsigned char>(s[k]) : 0; };
    auto in = [](unsigned char b, unsigned char lo, unsigned char hi) { return b >= lo && b <= hi; };
    unsigned char c = byte(0);
    if (in(c, 0xc2, 0xdf)) return in(byte(1), 0x80, 0xbf) ? 2 : 0;
    if (in(c, 0xe0, 0xef)) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return in(byte(1), lo, hi) && in(byte(2), 0x80, 0xbf) ? 3 : 0;
    }
    if (in(c, 0xf0, 0xf4)) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return in(byte(1), lo, hi) && in(byte(2), 0x80, 0xbf) && in(byte(3), 0x80, 0xbf) ? 4 : 0;
    }
    return 0;
}

// The output of ObjectWriter: a string sized ahead of the line, filled through a pointer, so
// each piece is one fixed-size copy with no capacity check call (lines are written per event).
class LineBuffer {
public:
    LineBuffer() { buf_.resize(kTypicalLine); }
    [[gnu::always_inline]] char* grow(size_t n) {
        if (len_ + n > buf_.size()) [[unlikely]]
            enlarge(n);
        char* p = buf_.data() + len_;
        len_ += n;
        return p;
    }
    [[gnu::always_inline]] void shrink_to(const char* end) { len_ = static_cast<size_t>(end - buf_.data()); }
    [[gnu::always_inline]] void put(char c) { *grow(1) = c; }
    [[gnu::always_inline]] void put(std::string_view s) { std::memcpy(grow(s.size()), s.data(), s.size()); }
    size_t size() const { return len_; }
    char* data() { return buf_.data(); }
    std::string take() {
        buf_.resize(len_);
        return std::move(buf_);
    }

private:
    [[gnu::noinline]] void enlarge(size_t n) { buf_.resize(std::max(buf_.size() * 2, len_ + n)); }
    static constexpr size_t kTypicalLine = 512;  // an event line is 250-450 bytes
    std::string buf_;
    size_t len_ = 0;
};

// Appends s as a JSON string; invalid UTF-8 (a task name can hold any bytes) becomes U+FFFD.
bool needs_escaping(unsigned char c) { return c == '"' || c == '\\' || c < 0x20 || c >= 0x80; }

void append_string(LineBuffer& out, std::string_view s) {
    out.put('"');
    // Names, states and addresses are plain ASCII: copy the run that needs no escaping at once.
    size_t i = 0;
    while (i < s.size() && !needs_escaping(static_cast<unsigned char>(s[i]))) ++i;
    out.put(s.substr(0, i));
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c == '"' || c == '\\') {
            out.put('\\');
            out.put(static_cast<char>(c));
            ++i;
        } else if (c < 0x20) {
            out.put(c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : fmt::format("\\u{:04x}", c));
            ++i;
        } else if (c < 0x80) {
            out.put(static_cast<char>(c));
            ++i;
        } else {
            size_t len = utf8_sequence_length(s.substr(i));
            if (len > 0) {
                out.put(s.substr(i, len));
                i += len;
            } else {
                out.put("\xef\xbf\xbd");  // U+FFFD as UTF-8, as the reader returns it: rewriting changes nothing
                ++i;
            }
        }
    }
    out.put('"');
}

// Writes `{"key":value,...}`. Every key is preceded by a comma, and done() turns the first into
// the opening brace.
class ObjectWriter {
public:
    // Inlined into to_json_line: the keys are literals, so each key copy becomes a few moves.
    template <typename T>
    [[gnu::always_inline]] ObjectWriter& num(std::string_view key, T value) {
        this->key(key);
        char* p = out_.grow(24);
        out_.shrink_to(std::to_chars(p, p + 24, value).ptr);
        return *this;
    }
    [[gnu::always_inline]] ObjectWriter& boolean(std::string_view key, bool value) {
        this->key(key);
        out_.put(value ? std::string_view("true") : std::string_view("false"));
        return *this;
    }
    [[gnu::always_inline]] ObjectWriter& str(std::string_view key, std::string_view value) {
        this->key(key);
        append_string(out_, value);
        return *this;
    }
    ObjectWriter& raw(std::string_view key, std::string_view json) {
        this->key(key);
        out_.put(json);
        return *this;
    }
    std::string done() {
        if (out_.size() == 0) return "{}";
        out_.data()[0] = '{';
        out_.put('}');
        return out_.take();
    }

private:
    [[gnu::always_inline]] void key(std::string_view k) {  // keys are tcpwhy's own identifiers: nothing to escape
        char* p = out_.grow(k.size() + 4);
        p[0] = ',';
        p[1] = '"';
        std::memcpy(p + 2, k.data(), k.size());
        p[k.size() + 2] = '"';
        p[k.size() + 3] = ':';
    }
    LineBuffer out_;
};

std::string opts_json(const SockOpts& opts) {
    ObjectWriter w;
    for (int i = 0; i < kSockOptCount; ++i) {
        auto opt = static_cast<SockOpt>(i);
        if (opts.has(opt)) w.num(to_string(opt), opts.value(opt));
    }
    return w.done();
}

// ---- reading ------------------------------------------------------------------------

struct ParseError {
    std::string message;
};

// The keys tcpwhy reads (plus `level`, read and ignored, since every setsockopt line has it).
// The field loop runs for every field of every line: it is the parser's hottest code.
enum class Key : uint8_t {
    unknown, v, ts_ns, type, cookie, netns, laddr, raddr, lport, rport, lb, pid, comm, cgroup_id,
    old_state, new_state, idle_rx_ms, idle_tx_ms, unread_bytes, bytes_rx, bytes_tx, abort, rst_received,
    reason, reason_inferred, has_skb, sk, sk_state, level, optname, value, value2, opts,
    tool, hostname, boot_id, kernel, clock, mono_start_ns, wall_start_ns, lb_ranges,
    // the causes beyond the race (closes in exiting tasks, listeners' queues, signals, overflows)
    send_queue_bytes, acceptq_len, acceptq_max, exiting, exit_code, oom_victim, how, signal, sender_pid,
    sender_comm, syn,
    // a backend's ordinary connections counted in the kernel (tally lines; the header's flag)
    opened, closed_local_first, closed_remote_first, local_idle_ms, outbound, tally,
};
constexpr size_t kKeyCount = static_cast<size_t>(Key::tally) + 1;

constexpr std::array<std::string_view, kKeyCount> kKeyNames = {
    "",           "v",         "ts_ns",     "type",        "cookie",       "netns",        "laddr",
    "raddr",      "lport",     "rport",     "lb",          "pid",          "comm",         "cgroup_id",
    "old_state",  "new_state", "idle_rx_ms", "idle_tx_ms", "unread_bytes", "bytes_rx",     "bytes_tx",
    "abort",      "rst_received", "reason", "reason_inferred", "has_skb",  "sk",           "sk_state",
    "level",      "optname",   "value",     "value2",      "opts",         "tool",         "hostname",
    "boot_id",    "kernel",    "clock",     "mono_start_ns", "wall_start_ns", "lb_ranges",
    "send_queue_bytes", "acceptq_len", "acceptq_max", "exiting", "exit_code", "oom_victim", "how",
    "signal",     "sender_pid", "sender_comm", "syn",
    "opened",     "closed_local_first", "closed_remote_first", "local_idle_ms", "outbound", "tally",
};

Key key_of(std::string_view k) {
    // By length, then by content: a few integer compares instead of a search.
    auto is = [&](Key key) { return k == kKeyNames[static_cast<size_t>(key)]; };
    auto first = [&](std::initializer_list<Key> keys) {
        for (Key key : keys)
            if (is(key)) return key;
        return Key::unknown;
    };
    switch (k.size()) {
    case 1: return first({Key::v});
    case 2: return first({Key::lb, Key::sk});
    case 3: return first({Key::pid, Key::how, Key::syn});
    case 4: return first({Key::type, Key::comm, Key::opts, Key::tool});
    case 5:
        return first({Key::ts_ns, Key::netns, Key::laddr, Key::lport, Key::raddr, Key::rport, Key::abort, Key::value,
                      Key::level, Key::clock, Key::tally});
    case 6: return first({Key::cookie, Key::reason, Key::value2, Key::kernel, Key::signal, Key::opened});
    case 7: return first({Key::has_skb, Key::optname, Key::boot_id, Key::exiting});
    case 8: return first({Key::bytes_rx, Key::bytes_tx, Key::sk_state, Key::hostname, Key::outbound});
    case 9: return first({Key::old_state, Key::new_state, Key::cgroup_id, Key::lb_ranges, Key::exit_code});
    case 10: return first({Key::idle_rx_ms, Key::idle_tx_ms, Key::oom_victim, Key::sender_pid});
    case 11: return first({Key::acceptq_len, Key::acceptq_max, Key::sender_comm});
    case 12: return first({Key::unread_bytes, Key::rst_received});
    case 13: return first({Key::mono_start_ns, Key::wall_start_ns, Key::local_idle_ms});
    case 15: return first({Key::reason_inferred});
    case 16: return first({Key::send_queue_bytes});
    case 18: return first({Key::closed_local_first});
    case 19: return first({Key::closed_remote_first});
    default: return Key::unknown;
    }
}

// tcpwhy writes an event's keys in one order (to_json_line below), some of them only on some
// events. The reader first checks whether the bytes ahead are `"key":` for the key that usually
// comes next, then for the one that comes next when the usual one is absent (a masked compare
// of 16 bytes each), and reads any other key, order or spacing the general way.
struct NextKeys {
    Key usual = Key::unknown, otherwise = Key::unknown;
};

constexpr std::array<NextKeys, kKeyCount> next_keys() {
    std::array<NextKeys, kKeyCount> next{};
    auto after = [&](Key key, Key usual, Key otherwise = Key::unknown) {
        next[static_cast<size_t>(key)] = {usual, otherwise};
    };
    after(Key::v, Key::ts_ns);
    after(Key::ts_ns, Key::type);
    after(Key::type, Key::cookie);
    after(Key::cookie, Key::netns);
    after(Key::netns, Key::laddr);
    after(Key::laddr, Key::lport);
    after(Key::lport, Key::raddr);
    after(Key::raddr, Key::rport);
    after(Key::rport, Key::lb);
    after(Key::lb, Key::pid, Key::cgroup_id);  // pid: only in the owner's context
    after(Key::pid, Key::comm);
    after(Key::comm, Key::cgroup_id, Key::old_state);
    after(Key::cgroup_id, Key::old_state, Key::reason);
    after(Key::old_state, Key::new_state);
    after(Key::new_state, Key::idle_rx_ms, Key::rst_received);
    after(Key::idle_rx_ms, Key::idle_tx_ms);
    after(Key::idle_tx_ms, Key::unread_bytes);
    after(Key::unread_bytes, Key::bytes_rx, Key::idle_rx_ms);
    after(Key::bytes_rx, Key::bytes_tx);
    after(Key::bytes_tx, Key::abort);
    after(Key::abort, Key::opts, Key::rst_received);
    after(Key::rst_received, Key::opts);
    after(Key::reason, Key::reason_inferred);
    after(Key::reason_inferred, Key::has_skb);
    after(Key::has_skb, Key::sk);
    after(Key::sk, Key::sk_state);
    after(Key::sk_state, Key::unread_bytes, Key::rst_received);
    after(Key::level, Key::optname);
    after(Key::optname, Key::value);
    after(Key::value, Key::value2);
    return next;
}
constexpr std::array<NextKeys, kKeyCount> kNextKey = next_keys();

// `"key":` as two little-endian words and the masks of its bytes (keys up to 13 characters).
struct KeyPattern {
    uint64_t word[2] = {0, 0};
    uint64_t mask[2] = {0, 0};
    uint8_t length = 0;  // 0: too long to predict
};

constexpr std::array<KeyPattern, kKeyCount> key_patterns() {
    std::array<KeyPattern, kKeyCount> patterns{};
    for (size_t k = 1; k < kKeyCount; ++k) {
        std::string_view name = kKeyNames[k];
        if (name.size() + 3 > 16) continue;
        KeyPattern& p = patterns[k];
        p.length = static_cast<uint8_t>(name.size() + 3);
        for (size_t i = 0; i < p.length; ++i) {
            char c = i == 0 || i == name.size() + 1 ? '"' : i == name.size() + 2 ? ':' : name[i - 1];
            p.word[i / 8] |= uint64_t{static_cast<unsigned char>(c)} << (8 * (i % 8));
            p.mask[i / 8] |= uint64_t{0xff} << (8 * (i % 8));
        }
    }
    return patterns;
}
constexpr std::array<KeyPattern, kKeyCount> kKeyPatterns = key_patterns();

[[gnu::always_inline]] inline uint64_t load_le64(const char* p) {
    uint64_t v;
    std::memcpy(&v, p, sizeof(v));
    if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
    return v;
}

// Bit 7 of each byte of w that equals c (above the lowest match, bits may be wrong: only the
// lowest is used).
[[gnu::always_inline]] inline uint64_t bytes_equal(uint64_t w, unsigned char c) {
    constexpr uint64_t ones = 0x0101010101010101ull;
    uint64_t x = w ^ (ones * c);
    return (x - ones) & ~x & (ones * 0x80);
}

// s equals the literal: a compare of constant size, which the compiler turns into a few loads.
template <size_t N>
[[gnu::always_inline]] inline bool eq(std::string_view s, const char (&literal)[N]) {
    return s.size() == N - 1 && std::memcmp(s.data(), literal, N - 1) == 0;
}

// Names as the writer spells them (the tables in src/core/event.cpp), matched by length and a
// letter or two with constant-size compares: an event line has two or three of them. Anything
// else is looked up in those tables, so what is accepted does not change.
std::optional<TcpState> state_of(std::string_view s) {
    switch (s.size()) {
    case 5: if (eq(s, "CLOSE")) return TcpState::close; break;
    case 6: if (eq(s, "LISTEN")) return TcpState::listen; break;
    case 8:
        if (eq(s, "SYN_RECV")) return TcpState::syn_recv;
        if (eq(s, "SYN_SENT")) return TcpState::syn_sent;
        if (eq(s, "LAST_ACK")) return TcpState::last_ack;
        break;
    case 9:
        if (eq(s, "FIN_WAIT1")) return TcpState::fin_wait1;
        if (eq(s, "FIN_WAIT2")) return TcpState::fin_wait2;
        if (eq(s, "TIME_WAIT")) return TcpState::time_wait;
        break;
    case 10: if (eq(s, "CLOSE_WAIT")) return TcpState::close_wait; break;
    case 11: if (eq(s, "ESTABLISHED")) return TcpState::established; break;
    }
    return tcp_state_from_string(s);
}

std::optional<EventType> event_type_of(std::string_view s) {
    if (eq(s, "state")) return EventType::state;
    if (eq(s, "close")) return EventType::close;
    if (eq(s, "setsockopt")) return EventType::setsockopt;
    return event_type_from_string(s);
}

std::optional<SockOpt> sock_opt_of(std::string_view s) {
    switch (s.size()) {
    case 12:
        if (eq(s, "SO_KEEPALIVE")) return SockOpt::so_keepalive;
        if (eq(s, "TCP_KEEPIDLE")) return SockOpt::tcp_keepidle;
        break;
    case 11: if (eq(s, "TCP_KEEPCNT")) return SockOpt::tcp_keepcnt; break;
    case 13: if (eq(s, "TCP_KEEPINTVL")) return SockOpt::tcp_keepintvl; break;
    case 16: if (eq(s, "TCP_USER_TIMEOUT")) return SockOpt::tcp_user_timeout; break;
    }
    return sock_opt_from_string(s);
}

// A dotted quad as IpAddr::parse reads it (no leading zeros, each part at most 255), without its
// general path: two addresses per event line.
bool parse_dotted_quad(std::string_view text, IpAddr& out) {
    out.bytes = {};
    const char* p = text.data();
    const char* end = p + text.size();
    for (int part = 0; part < 4; ++part) {
        if (p == end || static_cast<unsigned>(*p - '0') > 9) return false;
        unsigned value = static_cast<unsigned>(*p++ - '0');
        int digits = 1;
        while (p < end && static_cast<unsigned>(*p - '0') <= 9) {
            if (++digits > 3 || value == 0) return false;
            value = value * 10 + static_cast<unsigned>(*p++ - '0');
        }
        if (value > 255) return false;
        out.bytes[part] = static_cast<uint8_t>(value);
        if (part < 3 && (p == end || *p++ != '.')) return false;
    }
    if (p != end) return false;
    out.family = 4;
    return true;
}

class Cursor {
public:
    explicit Cursor(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

    [[gnu::always_inline]] void skip_ws() {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\r' || *p_ == '\n')) [[unlikely]]
            ++p_;
    }
    bool at_end() {
        skip_ws();
        return p_ == end_;
    }
    [[gnu::always_inline]] bool consume(char c) {
        skip_ws();
        if (p_ < end_ && *p_ == c) {
            ++p_;
            return true;
        }
        return false;
    }
    [[gnu::always_inline]] void expect(char c, const char* what) {
        if (!consume(c)) [[unlikely]]
            fail_expected(what);
    }
    char peek() {
        skip_ws();
        return p_ < end_ ? *p_ : '\0';
    }

    // A string's contents: a view into the line, or into scratch when it has escapes.
    [[gnu::always_inline]] std::string_view string(std::string& scratch) {
        expect('"', "a string");
        const char* start = p_;
        // Eight bytes at a time to the closing quote or a backslash, then byte by byte near the end.
        while (end_ - p_ >= 8) {
            uint64_t w = load_le64(p_);
            if (uint64_t hit = bytes_equal(w, '"') | bytes_equal(w, '\\')) {
                p_ += std::countr_zero(hit) / 8;
                goto found;
            }
            p_ += 8;
        }
        while (p_ < end_ && *p_ != '"' && *p_ != '\\') ++p_;
    found:
        if (p_ < end_ && *p_ == '"') [[likely]]
            return {start, static_cast<size_t>(p_++ - start)};
        return escaped_string(start, scratch);
    }

    // Consumes `"key":` when it is next, exactly so (see kNextKey).
    [[gnu::always_inline]] bool next_is(const KeyPattern& key) {
        skip_ws();
        if (key.length == 0 || end_ - p_ < 16) return false;
        if (((load_le64(p_) ^ key.word[0]) & key.mask[0]) | ((load_le64(p_ + 8) ^ key.word[1]) & key.mask[1]))
            return false;
        p_ += key.length;
        return true;
    }

    // An integer; anything else (a fraction, an exponent, a string) is an error naming the field.
    template <typename T>
    [[gnu::always_inline]] T integer(std::string_view field) {
        skip_ws();
        // Plain digits that fit: most numbers in a trace. Everything else takes the exact path.
        const char* q = p_;
        uint64_t value = 0;
        while (q < end_ && q - p_ < 19 && static_cast<unsigned>(*q - '0') < 10) value = value * 10 + (*q++ - '0');
        if (q > p_ && q - p_ < 19 && (q == end_ || !continues_number(*q)) &&
            value <= static_cast<uint64_t>(std::numeric_limits<T>::max())) [[likely]] {
            p_ = q;
            return static_cast<T>(value);
        }
        return integer_exact<T>(field);
    }

    [[gnu::always_inline]] bool boolean(std::string_view field) {
        skip_ws();
        if (literal("true")) return true;
        if (literal("false")) return false;
        throw ParseError{fmt::format("field {} is not a boolean", field)};
    }

    [[gnu::always_inline]] bool null() {
        skip_ws();
        return literal("null");
    }

    // Skips any JSON value: what unknown fields hold.
    void skip_value(int depth = 0) {
        if (depth > 32) throw ParseError{"nested too deeply"};
        std::string scratch;
        switch (peek()) {
        case '"': string(scratch); return;
        case '{':
            expect('{', "{");
            if (consume('}')) return;
            do {
                string(scratch);
                expect(':', "':'");
                skip_value(depth + 1);
            } while (consume(','));
            expect('}', "'}'");
            return;
        case '[':
            expect('[', "[");
            if (consume(']')) return;
            do skip_value(depth + 1);
            while (consume(','));
            expect(']', "']'");
            return;
        case 't': case 'f': boolean("value"); return;
        case 'n':
            if (!null()) throw ParseError{"invalid literal"};
            return;
        default:
            if (!skip_number()) throw ParseError{"invalid value"};
        }
    }

private:
    [[noreturn, gnu::noinline]] static void fail_expected(const char* what) {
        throw ParseError{fmt::format("expected {}", what)};
    }
    [[gnu::always_inline]] static bool continues_number(char c) {
        return static_cast<unsigned>(c - '0') < 10 || c == '.' || c == 'e' || c == 'E';
    }
    [[gnu::always_inline]] bool literal(std::string_view word) {
        if (static_cast<size_t>(end_ - p_) >= word.size() && std::memcmp(p_, word.data(), word.size()) == 0) {
            p_ += word.size();
            return true;
        }
        return false;
    }

    template <typename T>
    [[gnu::noinline]] T integer_exact(std::string_view field) {
        const char* start = p_;
        bool negative = p_ < end_ && *p_ == '-';
        T value{};
        auto [ptr, ec] = std::from_chars(p_, end_, value);
        if (ec == std::errc::result_out_of_range || (ec != std::errc{} && negative && std::is_unsigned_v<T>)) {
            skip_number();
            throw ParseError{fmt::format("field {} is out of range", field)};
        }
        if (ec != std::errc{} || ptr == start || (ptr < end_ && (*ptr == '.' || *ptr == 'e' || *ptr == 'E')))
            throw ParseError{fmt::format("field {} is not an integer", field)};
        p_ = ptr;
        return value;
    }

    [[gnu::noinline]] std::string_view escaped_string(const char* start, std::string& scratch) {
        scratch.assign(start, p_);
        while (p_ < end_ && *p_ != '"') {
            if (*p_ != '\\') {
                scratch += *p_++;
                continue;
            }
            if (++p_ == end_) break;
            char esc = *p_++;
            switch (esc) {
            case '"': case '\\': case '/': scratch += esc; break;
            case 'b': scratch += '\b'; break;
            case 'f': scratch += '\f'; break;
            case 'n': scratch += '\n'; break;
            case 'r': scratch += '\r'; break;
            case 't': scratch += '\t'; break;
            case 'u': append_utf8(scratch, unicode_escape()); break;
            default: throw ParseError{"invalid escape in string"};
            }
        }
        if (p_ == end_) throw ParseError{"unterminated string"};
        ++p_;
        return scratch;
    }

    bool skip_number() {
        const char* start = p_;
        while (p_ < end_ && (std::isdigit(static_cast<unsigned char>(*p_)) || *p_ == '-' || *p_ == '+' || *p_ == '.' ||
                             *p_ == 'e' || *p_ == 'E'))
            ++p_;
        return p_ > start;
    }
    uint32_t hex4() {
        if (end_ - p_ < 4) throw ParseError{"truncated \\u escape"};
        uint32_t v = 0;
        auto [ptr, ec] = std::from_chars(p_, p_ + 4, v, 16);
        if (ec != std::errc{} || ptr != p_ + 4) throw ParseError{"invalid \\u escape"};
        p_ += 4;
        return v;
    }
    uint32_t unicode_escape() {
        uint32_t cp = hex4();
        if (cp >= 0xd800 && cp < 0xdc00 && end_ - p_ >= 6 && p_[0] == '\\' && p_[1] == 'u') {
            p_ += 2;
            uint32_t low = hex4();
            if (low >= 0xdc00 && low < 0xe000) return 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            return 0xfffd;
        }
        return cp >= 0xd800 && cp < 0xe000 ? 0xfffd : cp;
    }
    static void append_utf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xc0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xe0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        } else {
            out += static_cast<char>(0xf0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
        }
    }

    const char* p_;
    const char* end_;
};

SockOpts parse_opts(Cursor& in) {
    SockOpts opts;
    std::string key_scratch;
    in.expect('{', "an object for opts");
    if (in.consume('}')) return opts;
    do {
        std::string_view key = in.string(key_scratch);
        in.expect(':', "':'");
        auto opt = sock_opt_of(key);
        if (opt && in.peek() != '"' && in.peek() != '{' && in.peek() != '[') {
            opts.set(*opt, in.integer<int64_t>(key));
        } else {
            in.skip_value();
        }
    } while (in.consume(','));
    in.expect('}', "'}' after opts");
    return opts;
}

[[gnu::always_inline]] inline void read_address(std::string_view text, IpAddr& out) {
    if (!parse_dotted_quad(text, out)) out = canonical(IpAddr::parse(text).value_or(IpAddr{}));
}

}  // namespace

std::string to_json_line(const Event& e) {
    ObjectWriter w;
    w.num("v", kTraceVersion).num("ts_ns", e.ts_ns).str("type", to_string(e.type)).num("cookie", e.cookie);
    w.num("netns", e.netns).str("laddr", e.laddr.to_string()).num("lport", e.lport);
    w.str("raddr", e.raddr.to_string()).num("rport", e.rport).boolean("lb", e.lb);
    if (e.pid) w.num("pid", e.pid).str("comm", e.comm);
    if (e.cgroup_id) w.num("cgroup_id", e.cgroup_id);
    auto accept_queue = [&] { w.num("acceptq_len", e.acceptq_len).num("acceptq_max", e.acceptq_max); };
    switch (e.type) {
    case EventType::state:
        w.str("old_state", to_string(e.old_state)).str("new_state", to_string(e.new_state));
        if (e.new_state == TcpState::listen || e.old_state == TcpState::listen) accept_queue();
        if (e.old_state == TcpState::established && e.new_state == TcpState::close_wait)
            w.num("idle_rx_ms", e.idle_rx_ms).num("idle_tx_ms", e.idle_tx_ms).num("bytes_rx", e.bytes_rx).num("bytes_tx", e.bytes_tx);
        break;
    case EventType::existing:
        w.str("new_state", to_string(e.new_state));
        if (e.new_state == TcpState::established || e.new_state == TcpState::close_wait)
            w.num("idle_rx_ms", e.idle_rx_ms).num("idle_tx_ms", e.idle_tx_ms);
        if (e.new_state == TcpState::listen) accept_queue();
        break;
    case EventType::close:
        w.str("old_state", to_string(e.old_state)).str("new_state", to_string(e.new_state));
        w.num("idle_rx_ms", e.idle_rx_ms).num("idle_tx_ms", e.idle_tx_ms).num("unread_bytes", e.unread_bytes);
        w.num("bytes_rx", e.bytes_rx).num("bytes_tx", e.bytes_tx).boolean("abort", e.abort);
        break;
    case EventType::reset_sent:
    case EventType::reset_recv:
        if (e.type == EventType::reset_sent)
            w.str("reason", to_string(e.reason))
                .boolean("reason_inferred", e.reason_inferred)
                .boolean("has_skb", e.has_skb);
        w.str("sk", to_string(e.sk_kind)).str("sk_state", to_string(e.sk_state));
        if (e.sk_kind == SockKind::full)
            w.num("unread_bytes", e.unread_bytes)
                .num("idle_rx_ms", e.idle_rx_ms)
                .num("idle_tx_ms", e.idle_tx_ms)
                .num("bytes_rx", e.bytes_rx)
                .num("bytes_tx", e.bytes_tx);
        if (e.syn) w.boolean("syn", true);
        break;
    case EventType::setsockopt:
        w.str("level", level_name(e.opt)).str("optname", to_string(e.opt)).num("value", e.value);
        if (e.opt == SockOpt::so_linger) w.num("value2", e.value2);
        break;
    case EventType::listen_overflow:
        accept_queue();
        w.str("how", to_string(e.overflow_how));
        break;
    case EventType::signal:
        w.str("signal", signal_name(e.signal)).num("sender_pid", e.sender_pid).str("sender_comm", e.sender_comm);
        break;
    case EventType::tally:
        w.boolean("outbound", e.direction == Direction::outbound).num("opened", e.tally.opened);
        w.num("closed_local_first", e.tally.closed_local_first).num("closed_remote_first", e.tally.closed_remote_first);
        w.num("local_idle_ms", e.tally.local_idle_ms).num("bytes_rx", e.bytes_rx).num("bytes_tx", e.bytes_tx);
        break;
    }
    if (e.send_queue_bytes) w.num("send_queue_bytes", e.send_queue_bytes);
    if (e.task_exiting) w.boolean("exiting", true).num("exit_code", e.exit_code);
    if (e.oom_victim) w.boolean("oom_victim", true);
    if (e.rst_received) w.boolean("rst_received", true);
    if (e.type != EventType::tally && e.direction != Direction::unknown)
        w.boolean("outbound", e.direction == Direction::outbound);
    if (e.opts.set_mask) w.raw("opts", opts_json(e.opts));
    return w.done();
}

std::string to_json_line(const TraceHeader& h) {
    ObjectWriter w;
    w.num("v", h.v).str("type", "header").str("tool", h.tool).str("hostname", h.hostname);
    if (!h.boot_id.empty()) w.str("boot_id", h.boot_id);
    w.str("kernel", h.kernel);
    w.str("clock", h.clock).num("mono_start_ns", h.mono_start_ns).num("wall_start_ns", h.wall_start_ns);
    w.str("lb_ranges", h.lb_ranges);
    if (h.tally) w.boolean("tally", true);
    return w.done();
}

std::string to_json_line(const WorkloadRecord& r) {
    const Workload& wl = r.workload;
    nlohmann::ordered_json j;
    j["v"] = kTraceVersion;
    j["type"] = "workload";
    if (r.netns) j["netns"] = r.netns;
    if (r.cgroup_id) j["cgroup_id"] = r.cgroup_id;
    j["kind"] = to_string(wl.kind);
    auto put = [&](const char* key, const std::string& value) {
        if (!value.empty()) j[key] = value;
    };
    put("namespace", wl.namespace_name);
    put("pod", wl.pod);
    put("container", wl.container);
    put("pod_uid", wl.pod_uid);
    put("container_id", wl.container_id);
    put("runtime", wl.runtime);
    put("qos", wl.qos);
    put("netns_name", wl.netns_name);
    put("process", wl.process);
    if (wl.pid) j["pid"] = wl.pid;
    if (!wl.labels.empty()) j["labels"] = wl.labels;
    put("pod_ip", wl.pod_ip);
    put("owner", wl.owner);
    // Names come from the node (pod names, labels): invalid UTF-8 is replaced, never fatal.
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string to_json_line(const ServerRecord& r) {
    const ServerInfo& s = r.server;
    nlohmann::ordered_json j;
    j["v"] = kTraceVersion;
    j["type"] = "server";
    j["pid"] = r.pid;
    if (r.start_time) j["start_time"] = r.start_time;
    auto put = [&](const char* key, const std::string& value) {
        if (!value.empty()) j[key] = value;
    };
    put("comm", r.comm);
    j["kind"] = to_string(s.kind);
    put("version", s.version);
    put("runtime", s.runtime);
    put("framework", s.framework);
    put("module", s.module);
    put("worker", s.worker);
    if (s.configured_idle_ms) j["configured_idle_ms"] = *s.configured_idle_ms;
    put("configured_by", s.configured_by);
    put("via", s.via);
    put("exe", s.exe);
    // Command lines and paths come from other processes: invalid UTF-8 is replaced, never fatal.
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

// Server lines are rarer still (one per process).
ParsedLine parse_server_line(std::string_view line) {
    ParsedLine out;
    ServerRecord& r = out.server;
    try {
        auto j = nlohmann::json::parse(line);
        r.pid = j.value("pid", uint32_t{0});
        if (r.pid == 0) throw std::runtime_error("server line without a pid");
        r.start_time = j.value("start_time", uint64_t{0});
        r.comm = j.value("comm", std::string());
        // A kind this tcpwhy does not know (a newer one's) reads as unknown: the rest still names it.
        ServerInfo& s = r.server;
        s.kind = server_kind_from_string(j.value("kind", std::string())).value_or(ServerKind::unknown);
        s.version = j.value("version", std::string());
        s.runtime = j.value("runtime", std::string());
        s.framework = j.value("framework", std::string());
        s.module = j.value("module", std::string());
        s.worker = j.value("worker", std::string());
        if (j.contains("configured_idle_ms")) s.configured_idle_ms = j["configured_idle_ms"].get<uint32_t>();
        s.configured_by = j.value("configured_by", std::string());
        s.via = j.value("via", std::string());
        s.exe = j.value("exe", std::string());
        out.kind = LineKind::server;
    } catch (const std::exception& error) {
        out.kind = LineKind::bad;
        out.error = fmt::format("bad server line: {}", error.what());
    }
    return out;
}

// Workload lines are rare (one per namespace or cgroup): nlohmann is plenty.
ParsedLine parse_workload_line(std::string_view line) {
    ParsedLine out;
    WorkloadRecord& r = out.workload;
    try {
        auto j = nlohmann::json::parse(line);
        r.netns = j.value("netns", uint32_t{0});
        r.cgroup_id = j.value("cgroup_id", uint64_t{0});
        auto kind = workload_kind_from_string(j.value("kind", std::string()));
        if (!kind) throw std::runtime_error("workload line without a known kind");
        if (r.netns == 0 && r.cgroup_id == 0) throw std::runtime_error("workload line names neither netns nor cgroup_id");
        Workload& w = r.workload;
        w.kind = *kind;
        w.namespace_name = j.value("namespace", std::string());
        w.pod = j.value("pod", std::string());
        w.container = j.value("container", std::string());
        w.pod_uid = j.value("pod_uid", std::string());
        w.container_id = j.value("container_id", std::string());
        w.runtime = j.value("runtime", std::string());
        w.qos = j.value("qos", std::string());
        w.netns_name = j.value("netns_name", std::string());
        w.process = j.value("process", std::string());
        w.pid = j.value("pid", uint32_t{0});
        if (j.contains("labels")) w.labels = j["labels"].get<std::map<std::string, std::string>>();
        w.pod_ip = j.value("pod_ip", std::string());
        w.owner = j.value("owner", std::string());
        out.kind = LineKind::workload;
    } catch (const std::exception& error) {
        out.kind = LineKind::bad;
        out.error = fmt::format("bad workload line: {}", error.what());
    }
    return out;
}

}  // namespace

ParsedLine parse_json_line(std::string_view line) {
    ParsedLine out;
    parse_json_line(line, out);
    return out;
}

void parse_json_line(std::string_view line, ParsedLine& out) {
    out.kind = LineKind::bad;
    out.error.clear();
    Event& e = out.event;
    e = Event{};
    // The header is reset only when the line has a header field: event lines never touch it.
    TraceHeader* header = nullptr;
    auto h = [&]() -> TraceHeader& {
        if (!header) {
            out.header = TraceHeader{};
            header = &out.header;
        }
        return *header;
    };
    enum class Type : uint8_t { none, event, header, workload, server, unknown };
    Type type = Type::none;
    EventType event_type = EventType::state;
    std::string unknown_type;
    std::optional<int64_t> version;
    bool has_ts = false;
    std::string scratch, key_scratch;
    std::optional<SockOpt> opt;
    std::string unknown_optname;
    NextKeys next{Key::v, Key::unknown};  // the keys expected next; v is the first tcpwhy writes
    try {
        Cursor in(line);
        if (!in.consume('{')) throw ParseError{"not a JSON object"};
        if (!in.consume('}')) {
            do {
                Key key;
                std::string_view key_text;  // names the field in errors
                if (in.next_is(kKeyPatterns[static_cast<size_t>(next.usual)])) [[likely]] {
                    key = next.usual;
                    key_text = kKeyNames[static_cast<size_t>(key)];
                } else if (in.next_is(kKeyPatterns[static_cast<size_t>(next.otherwise)])) {
                    key = next.otherwise;
                    key_text = kKeyNames[static_cast<size_t>(key)];
                } else {
                    // points into the line, or into key_scratch when escaped; resolved before any value is read
                    key_text = in.string(key_scratch);
                    key = key_of(key_text);
                    in.expect(':', "':'");
                }
                next = kNextKey[static_cast<size_t>(key)];
                if (in.null()) continue;  // null is as good as absent
                auto text = [&] { return std::string(in.string(scratch)); };
                auto state = [&] { return state_of(in.string(scratch)).value_or(TcpState::unknown); };
                switch (key) {
                case Key::v: version = in.integer<int64_t>(key_text); break;
                case Key::ts_ns: e.ts_ns = in.integer<uint64_t>(key_text), has_ts = true; break;
                case Key::type: {
                    std::string_view name = in.string(scratch);
                    if (auto t = event_type_of(name)) {
                        type = Type::event;
                        event_type = *t;
                    } else if (name == "header") {
                        type = Type::header;
                    } else if (name == "workload") {
                        type = Type::workload;
                    } else if (name == "server") {
                        type = Type::server;
                    } else {
                        type = name.empty() ? Type::none : Type::unknown;
                        unknown_type = name;
                    }
                    break;
                }
                case Key::cookie: e.cookie = in.integer<uint64_t>(key_text); break;
                case Key::netns: e.netns = in.integer<uint32_t>(key_text); break;
                case Key::laddr: read_address(in.string(scratch), e.laddr); break;
                case Key::raddr: read_address(in.string(scratch), e.raddr); break;
                case Key::lport: e.lport = in.integer<uint16_t>(key_text); break;
                case Key::rport: e.rport = in.integer<uint16_t>(key_text); break;
                case Key::lb: e.lb = in.boolean(key_text); break;
                case Key::pid: e.pid = in.integer<uint32_t>(key_text); break;
                case Key::comm: e.comm = in.string(scratch); break;
                case Key::cgroup_id: e.cgroup_id = in.integer<uint64_t>(key_text); break;
                case Key::old_state: e.old_state = state(); break;
                case Key::new_state: e.new_state = state(); break;
                case Key::idle_rx_ms: e.idle_rx_ms = in.integer<uint32_t>(key_text); break;
                case Key::idle_tx_ms: e.idle_tx_ms = in.integer<uint32_t>(key_text); break;
                case Key::unread_bytes: e.unread_bytes = in.integer<uint32_t>(key_text); break;
                case Key::bytes_rx: e.bytes_rx = in.integer<uint64_t>(key_text); break;
                case Key::bytes_tx: e.bytes_tx = in.integer<uint64_t>(key_text); break;
                case Key::abort: e.abort = in.boolean(key_text); break;
                case Key::rst_received: e.rst_received = in.boolean(key_text); break;
                case Key::reason:
                    e.reason = reset_reason_from_string(in.string(scratch)).value_or(ResetReason::unrecognised);
                    break;
                case Key::reason_inferred: e.reason_inferred = in.boolean(key_text); break;
                case Key::has_skb: e.has_skb = in.boolean(key_text); break;
                case Key::sk: e.sk_kind = sock_kind_from_string(in.string(scratch)).value_or(SockKind::none); break;
                case Key::sk_state: e.sk_state = state(); break;
                case Key::optname: {
                    std::string_view name = in.string(scratch);
                    opt = sock_opt_of(name);
                    if (!opt) unknown_optname = name;
                    break;
                }
                case Key::value: e.value = in.integer<int64_t>(key_text); break;
                case Key::value2: e.value2 = in.integer<int64_t>(key_text); break;
                case Key::opts: e.opts = parse_opts(in); break;
                case Key::tool: h().tool = text(); break;
                case Key::hostname: h().hostname = text(); break;
                case Key::boot_id: h().boot_id = text(); break;
                case Key::kernel: h().kernel = text(); break;
                case Key::clock: h().clock = text(); break;
                case Key::mono_start_ns: h().mono_start_ns = in.integer<uint64_t>(key_text); break;
                case Key::wall_start_ns: h().wall_start_ns = in.integer<uint64_t>(key_text); break;
                case Key::lb_ranges: h().lb_ranges = text(); break;
                case Key::level:  // implied by optname; like an unknown field, any value
                    if (in.peek() == '"') in.string(scratch);
                    else in.skip_value();
                    break;
                case Key::send_queue_bytes: e.send_queue_bytes = in.integer<uint32_t>(key_text); break;
                case Key::acceptq_len: e.acceptq_len = in.integer<uint32_t>(key_text); break;
                case Key::acceptq_max: e.acceptq_max = in.integer<uint32_t>(key_text); break;
                case Key::exiting: e.task_exiting = in.boolean(key_text); break;
                case Key::exit_code: e.exit_code = in.integer<uint16_t>(key_text); break;
                case Key::oom_victim: e.oom_victim = in.boolean(key_text); break;
                case Key::how:
                    e.overflow_how = overflow_how_from_string(in.string(scratch)).value_or(OverflowHow::unknown);
                    break;
                case Key::signal: e.signal = signal_from_name(in.string(scratch)).value_or(0); break;
                case Key::sender_pid: e.sender_pid = in.integer<uint32_t>(key_text); break;
                case Key::sender_comm: e.sender_comm = text(); break;
                case Key::syn: e.syn = in.boolean(key_text); break;
                case Key::opened: e.tally.opened = in.integer<uint64_t>(key_text); break;
                case Key::closed_local_first: e.tally.closed_local_first = in.integer<uint64_t>(key_text); break;
                case Key::closed_remote_first: e.tally.closed_remote_first = in.integer<uint64_t>(key_text); break;
                case Key::local_idle_ms: e.tally.local_idle_ms = in.integer<uint64_t>(key_text); break;
                case Key::outbound:
                    e.direction = in.boolean(key_text) ? Direction::outbound : Direction::inbound;
                    break;
                case Key::tally: h().tally = in.boolean(key_text); break;
                case Key::unknown: in.skip_value(); break;
                }
            } while (in.consume(','));
            in.expect('}', "'}' or ','");
        }
        if (!in.at_end()) throw ParseError{"text after the JSON object"};
    } catch (const ParseError& error) {
        out.kind = LineKind::bad;
        out.error = error.message;
        return;
    }

    if (!version) {
        out.error = "no schema version field \"v\"";
        return;
    }
    if (*version != kTraceVersion) {
        out.kind = LineKind::unsupported_version;
        out.error = fmt::format("trace schema version {} (this tcpwhy reads version {})", *version, kTraceVersion);
        return;
    }
    switch (type) {
    case Type::header:
        h().v = kTraceVersion;
        out.kind = LineKind::header;
        return;
    case Type::workload: {
        ParsedLine workload = parse_workload_line(line);
        out.kind = workload.kind;
        out.workload = std::move(workload.workload);
        out.error = std::move(workload.error);
        return;
    }
    case Type::server: {  // one per process: the general reader is fast enough
        ParsedLine server = parse_server_line(line);
        out.kind = server.kind;
        out.server = std::move(server.server);
        out.error = std::move(server.error);
        return;
    }
    case Type::none: out.error = "no type field"; return;
    case Type::unknown: out.error = fmt::format("unknown event type '{}'", unknown_type); return;
    case Type::event: break;
    }
    if (!has_ts) {
        out.error = "no ts_ns field";
        return;
    }
    e.type = event_type;
    if (e.type == EventType::setsockopt) {
        if (!opt) {
            out.error = unknown_optname.empty() ? "setsockopt without optname"
                                                : fmt::format("unknown optname '{}'", unknown_optname);
            return;
        }
        e.opt = *opt;
    }
    out.kind = LineKind::event;
}

}  // namespace tcpwhy
