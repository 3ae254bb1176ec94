// The trace's JSON Lines, read and written by hand: every line is one flat object (plus the
// small "opts" object), and `tcpwhy report` must replay millions of them per second, which a
// general JSON DOM does not allow (bench/README.md has the figures). Unknown fields, of any
// JSON type, are skipped.
#include "tcpwhy/jsonl.h"

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

class Cursor {
public:
    explicit Cursor(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

    void skip_ws() {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\r' || *p_ == '\n')) ++p_;
    }
    bool at_end() {
        skip_ws();
        return p_ == end_;
    }
    bool consume(char c) {
        skip_ws();
        if (p_ < end_ && *p_ == c) {
            ++p_;
            return true;
        }
        return false;
    }
    void expect(char c, const char* what) {
        if (!consume(c)) throw ParseError{fmt::format("expected {}", what)};
    }
    char peek() {
        skip_ws();
        return p_ < end_ ? *p_ : '\0';
    }

    // A string's contents, unescaped into scratch when it has escapes.
    std::string_view string(std::string& scratch) {
        expect('"', "a string");
        const char* start = p_;
        while (p_ < end_ && *p_ != '"' && *p_ != '\\') ++p_;
        if (p_ < end_ && *p_ == '"') return {start, static_cast<size_t>(p_++ - start)};
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

    // An integer; anything else (a fraction, an exponent, a string) is an error naming the field.
    template <typename T>
    T integer(std::string_view field) {
        skip_ws();
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

    bool boolean(std::string_view field) {
        skip_ws();
        if (literal("true")) return true;
        if (literal("false")) return false;
        throw ParseError{fmt::format("field {} is not a boolean", field)};
    }

    bool null() {
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
    bool literal(std::string_view word) {
        if (static_cast<size_t>(end_ - p_) >= word.size() && std::memcmp(p_, word.data(), word.size()) == 0) {
            p_ += word.size();
            return true;
        }
        return false;
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

// Key comparison against a literal: a constant-size compare the compiler inlines, since the
// field dispatch below runs for every field of every line.
template <size_t N>
bool is(std::string_view key, const char (&name)[N]) {
    return key.size() == N - 1 && std::memcmp(key.data(), name, N - 1) == 0;
}

SockOpts parse_opts(Cursor& in) {
    SockOpts opts;
    std::string key_scratch;
    in.expect('{', "an object for opts");
    if (in.consume('}')) return opts;
    do {
        std::string_view key = in.string(key_scratch);
        in.expect(':', "':'");
        auto opt = sock_opt_from_string(key);
        if (opt && in.peek() != '"' && in.peek() != '{' && in.peek() != '[') {
            opts.set(*opt, in.integer<int64_t>(key));
        } else {
            in.skip_value();
        }
    } while (in.consume(','));
    in.expect('}', "'}' after opts");
    return opts;
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
        w.boolean("outbound", e.tally.outbound).num("opened", e.tally.opened);
        w.num("closed_local_first", e.tally.closed_local_first).num("closed_remote_first", e.tally.closed_remote_first);
        w.num("local_idle_ms", e.tally.local_idle_ms).num("bytes_rx", e.bytes_rx).num("bytes_tx", e.bytes_tx);
        break;
    }
    if (e.send_queue_bytes) w.num("send_queue_bytes", e.send_queue_bytes);
    if (e.task_exiting) w.boolean("exiting", true).num("exit_code", e.exit_code);
    if (e.oom_victim) w.boolean("oom_victim", true);
    if (e.rst_received) w.boolean("rst_received", true);
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
    Event& e = out.event;
    TraceHeader& h = out.header;
    std::optional<int64_t> version;
    std::string type_name;
    bool has_ts = false;
    std::string scratch, key_scratch;
    std::optional<SockOpt> opt;
    std::string unknown_optname;
    try {
        Cursor in(line);
        if (!in.consume('{')) throw ParseError{"not a JSON object"};
        if (!in.consume('}')) {
            do {
                // points into the line, or into key_scratch when escaped; compared before any value is read
                std::string_view key = in.string(key_scratch);
                in.expect(':', "':'");
                if (in.null()) continue;  // null is as good as absent
                auto text = [&] { return std::string(in.string(scratch)); };
                auto state = [&] { return tcp_state_from_string(in.string(scratch)).value_or(TcpState::unknown); };
                // Keys by frequency: state events dominate a trace.
                if (is(key, "v")) version = in.integer<int64_t>(key);
                else if (is(key, "ts_ns")) e.ts_ns = in.integer<uint64_t>(key), has_ts = true;
                else if (is(key, "type")) type_name = text();
                else if (is(key, "cookie")) e.cookie = in.integer<uint64_t>(key);
                else if (is(key, "netns")) e.netns = in.integer<uint32_t>(key);
                else if (is(key, "laddr")) e.laddr = canonical(IpAddr::parse(in.string(scratch)).value_or(IpAddr{}));
                else if (is(key, "raddr")) e.raddr = canonical(IpAddr::parse(in.string(scratch)).value_or(IpAddr{}));
                else if (is(key, "lport")) e.lport = in.integer<uint16_t>(key);
                else if (is(key, "rport")) e.rport = in.integer<uint16_t>(key);
                else if (is(key, "lb")) e.lb = in.boolean(key);
                else if (is(key, "pid")) e.pid = in.integer<uint32_t>(key);
                else if (is(key, "comm")) e.comm = text();
                else if (is(key, "cgroup_id")) e.cgroup_id = in.integer<uint64_t>(key);
                else if (is(key, "old_state")) e.old_state = state();
                else if (is(key, "new_state")) e.new_state = state();
                else if (is(key, "idle_rx_ms")) e.idle_rx_ms = in.integer<uint32_t>(key);
                else if (is(key, "idle_tx_ms")) e.idle_tx_ms = in.integer<uint32_t>(key);
                else if (is(key, "unread_bytes")) e.unread_bytes = in.integer<uint32_t>(key);
                else if (is(key, "bytes_rx")) e.bytes_rx = in.integer<uint64_t>(key);
                else if (is(key, "bytes_tx")) e.bytes_tx = in.integer<uint64_t>(key);
                else if (is(key, "abort")) e.abort = in.boolean(key);
                else if (is(key, "rst_received")) e.rst_received = in.boolean(key);
                else if (is(key, "reason")) {
                    std::string_view name = in.string(scratch);
                    e.reason = reset_reason_from_string(name).value_or(ResetReason::unrecognised);
                }
                else if (is(key, "reason_inferred")) e.reason_inferred = in.boolean(key);
                else if (is(key, "has_skb")) e.has_skb = in.boolean(key);
                else if (is(key, "sk")) e.sk_kind = sock_kind_from_string(in.string(scratch)).value_or(SockKind::none);
                else if (is(key, "sk_state")) e.sk_state = state();
                else if (is(key, "optname")) {
                    std::string_view name = in.string(scratch);
                    opt = sock_opt_from_string(name);
                    if (!opt) unknown_optname = name;
                }
                else if (is(key, "value")) e.value = in.integer<int64_t>(key);
                else if (is(key, "value2")) e.value2 = in.integer<int64_t>(key);
                else if (is(key, "opts")) e.opts = parse_opts(in);
                else if (is(key, "tool")) h.tool = text();
                else if (is(key, "hostname")) h.hostname = text();
                else if (is(key, "boot_id")) h.boot_id = text();
                else if (is(key, "kernel")) h.kernel = text();
                else if (is(key, "clock")) h.clock = text();
                else if (is(key, "mono_start_ns")) h.mono_start_ns = in.integer<uint64_t>(key);
                else if (is(key, "wall_start_ns")) h.wall_start_ns = in.integer<uint64_t>(key);
                else if (is(key, "lb_ranges")) h.lb_ranges = text();
                else if (is(key, "send_queue_bytes")) e.send_queue_bytes = in.integer<uint32_t>(key);
                else if (is(key, "acceptq_len")) e.acceptq_len = in.integer<uint32_t>(key);
                else if (is(key, "acceptq_max")) e.acceptq_max = in.integer<uint32_t>(key);
                else if (is(key, "exiting")) e.task_exiting = in.boolean(key);
                else if (is(key, "exit_code")) e.exit_code = in.integer<uint16_t>(key);
                else if (is(key, "oom_victim")) e.oom_victim = in.boolean(key);
                else if (is(key, "how")) e.overflow_how = overflow_how_from_string(in.string(scratch)).value_or(OverflowHow::unknown);
                else if (is(key, "signal")) e.signal = signal_from_name(in.string(scratch)).value_or(0);
                else if (is(key, "sender_pid")) e.sender_pid = in.integer<uint32_t>(key);
                else if (is(key, "sender_comm")) e.sender_comm = text();
                else if (is(key, "syn")) e.syn = in.boolean(key);
                else if (is(key, "opened")) e.tally.opened = in.integer<uint64_t>(key);
                else if (is(key, "closed_local_first")) e.tally.closed_local_first = in.integer<uint64_t>(key);
                else if (is(key, "closed_remote_first")) e.tally.closed_remote_first = in.integer<uint64_t>(key);
                else if (is(key, "local_idle_ms")) e.tally.local_idle_ms = in.integer<uint64_t>(key);
                else if (is(key, "outbound")) e.tally.outbound = in.boolean(key);
                else if (is(key, "tally")) h.tally = in.boolean(key);
                else in.skip_value();
            } while (in.consume(','));
            in.expect('}', "'}' or ','");
        }
        if (!in.at_end()) throw ParseError{"text after the JSON object"};
    } catch (const ParseError& error) {
        out.kind = LineKind::bad;
        out.error = error.message;
        return out;
    }

    if (!version) {
        out.error = "no schema version field \"v\"";
        return out;
    }
    if (*version != kTraceVersion) {
        out.kind = LineKind::unsupported_version;
        out.error = fmt::format("trace schema version {} (this tcpwhy reads version {})", *version, kTraceVersion);
        return out;
    }
    if (type_name == "header") {
        h.v = kTraceVersion;
        out.kind = LineKind::header;
        return out;
    }
    if (type_name == "workload") return parse_workload_line(line);
    if (type_name == "server") return parse_server_line(line);
    auto type = event_type_from_string(type_name);
    if (!type) {
        out.error = type_name.empty() ? "no type field" : fmt::format("unknown event type '{}'", type_name);
        return out;
    }
    if (!has_ts) {
        out.error = "no ts_ns field";
        return out;
    }
    e.type = *type;
    if (e.type == EventType::setsockopt) {
        if (!opt) {
            out.error = unknown_optname.empty() ? "setsockopt without optname"
                                                : fmt::format("unknown optname '{}'", unknown_optname);
            return out;
        }
        e.opt = *opt;
    }
    out.kind = LineKind::event;
    return out;
}

}  // namespace tcpwhy
