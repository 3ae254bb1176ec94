// The trace's event lines read with simdjson's On-Demand API, for replay_bench to measure beside
// tcpwhy's own reader (src/core/jsonl.cpp) on the same lines: same fields, same types, same
// rules (null is absent, unknown fields skipped, integers only, ranges checked, text after the
// object rejected). Lines simdjson refuses as invalid UTF-8 go to tcpwhy's reader, which
// accepts them as every trace reader of tcpwhy has (tests/unit/report_test.cpp).
#include "jsonl_simdjson.h"

#include <limits>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <simdjson.h>

#include "tcpwhy/report.h"

static_assert(tcpwhy::TraceReader::kLinePadding >= simdjson::SIMDJSON_PADDING,
              "simdjson reads up to SIMDJSON_PADDING bytes past a line's end");

namespace tcpwhy::bench {
namespace {

using simdjson::error_code;
namespace od = simdjson::ondemand;

struct Failure {
    std::string message;
};

void check(error_code error, std::string_view what) {
    if (error) [[unlikely]]
        throw Failure{fmt::format("{}: {}", what, simdjson::error_message(error))};
}

template <typename T>
T integer(od::value& value, std::string_view field) {
    if constexpr (std::is_signed_v<T>) {
        int64_t v = 0;
        check(value.get_int64().get(v), field);
        return static_cast<T>(v);
    } else {
        uint64_t v = 0;
        check(value.get_uint64().get(v), field);
        if (v > std::numeric_limits<T>::max()) throw Failure{fmt::format("field {} is out of range", field)};
        return static_cast<T>(v);
    }
}

bool boolean(od::value& value, std::string_view field) {
    bool b = false;
    check(value.get_bool().get(b), field);
    return b;
}

std::string_view string(od::value& value, std::string_view field) {
    std::string_view s;
    check(value.get_string().get(s), field);
    return s;
}

TcpState state(od::value& value, std::string_view field) {
    return tcp_state_from_string(string(value, field)).value_or(TcpState::unknown);
}

IpAddr address(od::value& value, std::string_view field) {
    return canonical(IpAddr::parse(string(value, field)).value_or(IpAddr{}));
}

SockOpts options(od::value& value) {
    SockOpts opts;
    od::object object;
    check(value.get_object().get(object), "opts");
    for (auto field : object) {
        std::string_view key;
        check(field.unescaped_key().get(key), "opts key");
        od::value v = field.value();
        auto opt = sock_opt_from_string(key);
        if (!opt) continue;
        od::json_type type = od::json_type::null;
        check(v.type().get(type), key);
        if (type != od::json_type::string && type != od::json_type::object && type != od::json_type::array)
            opts.set(*opt, integer<int64_t>(v, key));
    }
    return opts;
}

// What one line's fields said, before the checks that need all of them.
struct Fields {
    std::optional<int64_t> version;
    std::string type_name;
    bool has_ts = false;
    std::optional<SockOpt> opt;
};

enum class Read { ok, utf8 };  // utf8: simdjson refused the text; tcpwhy's reader decides

Read read_fields(od::object& object, Event& e, Fields& f) {
    for (auto field : object) {
        std::string_view key;
        error_code error = field.unescaped_key().get(key);
        if (error == simdjson::UTF8_ERROR) return Read::utf8;
        check(error, "key");
        od::value v = field.value();
        bool is_null = false;
        check(v.is_null().get(is_null), key);
        if (is_null) continue;
        // tcpwhy's writer puts keys in this order; the rare ones last.
        if (key == "v") f.version = integer<int64_t>(v, key);
        else if (key == "ts_ns") e.ts_ns = integer<uint64_t>(v, key), f.has_ts = true;
        else if (key == "type") f.type_name = string(v, key);
        else if (key == "cookie") e.cookie = integer<uint64_t>(v, key);
        else if (key == "netns") e.netns = integer<uint32_t>(v, key);
        else if (key == "laddr") e.laddr = address(v, key);
        else if (key == "lport") e.lport = integer<uint16_t>(v, key);
        else if (key == "raddr") e.raddr = address(v, key);
        else if (key == "rport") e.rport = integer<uint16_t>(v, key);
        else if (key == "lb") e.lb = boolean(v, key);
        else if (key == "pid") e.pid = integer<uint32_t>(v, key);
        else if (key == "comm") e.comm = string(v, key);
        else if (key == "cgroup_id") e.cgroup_id = integer<uint64_t>(v, key);
        else if (key == "old_state") e.old_state = state(v, key);
        else if (key == "new_state") e.new_state = state(v, key);
        else if (key == "idle_rx_ms") e.idle_rx_ms = integer<uint32_t>(v, key);
        else if (key == "idle_tx_ms") e.idle_tx_ms = integer<uint32_t>(v, key);
        else if (key == "unread_bytes") e.unread_bytes = integer<uint32_t>(v, key);
        else if (key == "bytes_rx") e.bytes_rx = integer<uint64_t>(v, key);
        else if (key == "bytes_tx") e.bytes_tx = integer<uint64_t>(v, key);
        else if (key == "abort") e.abort = boolean(v, key);
        else if (key == "rst_received") e.rst_received = boolean(v, key);
        else if (key == "reason")
            e.reason = reset_reason_from_string(string(v, key)).value_or(ResetReason::unrecognised);
        else if (key == "reason_inferred") e.reason_inferred = boolean(v, key);
        else if (key == "has_skb") e.has_skb = boolean(v, key);
        else if (key == "sk") e.sk_kind = sock_kind_from_string(string(v, key)).value_or(SockKind::none);
        else if (key == "sk_state") e.sk_state = state(v, key);
        else if (key == "optname") f.opt = sock_opt_from_string(string(v, key));
        else if (key == "value") e.value = integer<int64_t>(v, key);
        else if (key == "value2") e.value2 = integer<int64_t>(v, key);
        else if (key == "opts") e.opts = options(v);
    }
    return Read::ok;
}

// An event when every check passes; false sends the line to tcpwhy's reader (errors and the
// rare kinds, read as tcpwhy reads them).
bool finish_event(const Fields& f, ParsedLine& out) {
    if (!f.version || *f.version != kTraceVersion) return false;
    auto type = event_type_from_string(f.type_name);
    if (!type || !f.has_ts || (*type == EventType::setsockopt && !f.opt)) return false;
    out.event.type = *type;
    if (f.opt) out.event.opt = *f.opt;
    out.kind = LineKind::event;
    return true;
}

}  // namespace

size_t simdjson_padding() { return simdjson::SIMDJSON_PADDING; }

struct SimdjsonLineParser::Impl {
    od::parser parser;
};

SimdjsonLineParser::SimdjsonLineParser() : impl_(std::make_unique<Impl>()) {}
SimdjsonLineParser::~SimdjsonLineParser() = default;

void SimdjsonLineParser::parse(std::string_view line, ParsedLine& out) {
    out.kind = LineKind::bad;
    out.error.clear();
    out.event = Event{};
    Fields fields;
    try {
        od::document doc;
        error_code error =
            impl_->parser.iterate(simdjson::padded_string_view(line.data(), line.size(), line.size() + simdjson::SIMDJSON_PADDING))
                .get(doc);
        if (error == simdjson::UTF8_ERROR) return parse_json_line(line, out);
        check(error, "line");
        od::object object;
        error = doc.get_object().get(object);
        if (error == simdjson::UTF8_ERROR) return parse_json_line(line, out);
        if (error) throw Failure{"not a JSON object"};
        if (read_fields(object, out.event, fields) == Read::utf8) return parse_json_line(line, out);
        const char* after = nullptr;  // in bounds: something follows the object
        if (doc.current_location().get(after) == simdjson::SUCCESS) throw Failure{"text after the JSON object"};
    } catch (const Failure& failure) {
        out.error = failure.message;
        return;
    }
    if (!finish_event(fields, out)) parse_json_line(line, out);
}

uint64_t SimdjsonLineParser::parse_many(std::string_view text, ParsedLine& out,
                                        const std::function<void(const ParsedLine&)>& each) {
    uint64_t documents = 0;
    od::document_stream stream;
    check(impl_->parser.iterate_many(text.data(), text.size(), kBatchBytes).get(stream), "stream");
    for (auto it = stream.begin(); it != stream.end(); ++it) {
        ++documents;
        out.kind = LineKind::bad;
        out.error.clear();
        out.event = Event{};
        Fields fields;
        bool done = false;
        try {
            od::document_reference doc;
            od::object object;
            if (!(*it).get(doc) && !doc.get_object().get(object) && read_fields(object, out.event, fields) == Read::ok)
                done = finish_event(fields, out);
        } catch (const Failure&) {
        }
        if (!done) parse_json_line(it.source(), out);
        each(out);
    }
    return documents;
}

}  // namespace tcpwhy::bench
