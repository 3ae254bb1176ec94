#include "tcpwhy/jsonl.h"

#include <limits>
#include <stdexcept>
#include <type_traits>

#include <nlohmann/json.hpp>

namespace tcpwhy {
namespace {

using nlohmann::json;

json opts_to_json(const SockOpts& opts) {
    json j = json::object();
    for (int i = 0; i < kSockOptCount; ++i) {
        auto opt = static_cast<SockOpt>(i);
        if (opts.has(opt)) j[std::string(to_string(opt))] = opts.value(opt);
    }
    return j;
}

SockOpts opts_from_json(const json& j) {
    SockOpts opts;
    if (!j.is_object()) return opts;
    for (const auto& [key, value] : j.items()) {
        auto opt = sock_opt_from_string(key);
        if (opt && value.is_number_integer()) opts.set(*opt, value.get<int64_t>());
    }
    return opts;
}

struct FieldError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A missing field takes the fallback; a present one must fit the type exactly
// (nlohmann would turn -5 into 4294967291 for an unsigned field).
template <typename T>
T get_or(const json& j, const char* key, T fallback) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
        if (!it->is_number_integer()) throw FieldError(std::string("field ") + key + " is not an integer");
        if constexpr (std::is_unsigned_v<T>) {
            if (it->is_number_unsigned() ? it->get<uint64_t>() > std::numeric_limits<T>::max() : it->get<int64_t>() < 0)
                throw FieldError(std::string("field ") + key + " is out of range");
        } else if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
            throw FieldError(std::string("field ") + key + " is out of range");
        }
    }
    return it->get<T>();
}

}  // namespace

std::string to_json_line(const Event& e) {
    json j;
    j["v"] = kTraceVersion;
    j["ts_ns"] = e.ts_ns;
    j["type"] = to_string(e.type);
    j["cookie"] = e.cookie;
    j["netns"] = e.netns;
    j["laddr"] = e.laddr.to_string();
    j["lport"] = e.lport;
    j["raddr"] = e.raddr.to_string();
    j["rport"] = e.rport;
    j["lb"] = e.lb;
    if (e.pid) {
        j["pid"] = e.pid;
        j["comm"] = e.comm;
        j["cgroup_id"] = e.cgroup_id;
    }
    switch (e.type) {
    case EventType::state:
        j["old_state"] = to_string(e.old_state);
        j["new_state"] = to_string(e.new_state);
        break;
    case EventType::close:
        j["old_state"] = to_string(e.old_state);
        j["new_state"] = to_string(e.new_state);
        j["idle_rx_ms"] = e.idle_rx_ms;
        j["idle_tx_ms"] = e.idle_tx_ms;
        j["unread_bytes"] = e.unread_bytes;
        j["bytes_rx"] = e.bytes_rx;
        j["bytes_tx"] = e.bytes_tx;
        j["abort"] = e.abort;
        break;
    case EventType::reset_sent:
    case EventType::reset_recv:
        if (e.type == EventType::reset_sent) {
            j["reason"] = e.reason;
            j["reason_inferred"] = e.reason_inferred;
            j["has_skb"] = e.has_skb;
        }
        j["sk"] = to_string(e.sk_kind);
        j["sk_state"] = to_string(e.sk_state);
        if (e.sk_kind == SockKind::full) {
            j["unread_bytes"] = e.unread_bytes;
            j["idle_rx_ms"] = e.idle_rx_ms;
        }
        break;
    case EventType::setsockopt:
        j["level"] = e.level;
        j["optname"] = e.optname;
        j["value"] = e.value;
        if (e.optname == "SO_LINGER") j["value2"] = e.value2;
        break;
    }
    if (e.rst_received) j["rst_received"] = true;
    if (e.opts.set_mask) j["opts"] = opts_to_json(e.opts);
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string to_json_line(const TraceHeader& h) {
    json j;
    j["v"] = h.v;
    j["type"] = "header";
    j["tool"] = h.tool;
    j["hostname"] = h.hostname;
    j["kernel"] = h.kernel;
    j["clock"] = h.clock;
    j["mono_start_ns"] = h.mono_start_ns;
    j["wall_start_ns"] = h.wall_start_ns;
    j["lb_ranges"] = h.lb_ranges;
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

ParsedLine parse_json_line(std::string_view line) {
    ParsedLine out;
    json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
        out.error = "not a JSON object";
        return out;
    }
    try {
        auto v = j.find("v");
        if (v == j.end() || !v->is_number_integer()) {
            out.error = "no schema version field \"v\"";
            return out;
        }
        if (v->get<int>() != kTraceVersion) {
            out.kind = LineKind::unsupported_version;
            out.error = "trace schema version " + std::to_string(v->get<int>()) + " (this tcpwhy reads version " +
                        std::to_string(kTraceVersion) + ")";
            return out;
        }
        auto type_name = j.at("type").get<std::string>();
        if (type_name == "header") {
            out.kind = LineKind::header;
            auto& h = out.header;
            h.tool = get_or<std::string>(j, "tool", "");
            h.hostname = get_or<std::string>(j, "hostname", "");
            h.kernel = get_or<std::string>(j, "kernel", "");
            h.clock = get_or<std::string>(j, "clock", "CLOCK_MONOTONIC");
            h.mono_start_ns = get_or<uint64_t>(j, "mono_start_ns", 0);
            h.wall_start_ns = get_or<uint64_t>(j, "wall_start_ns", 0);
            h.lb_ranges = get_or<std::string>(j, "lb_ranges", "");
            return out;
        }
        auto type = event_type_from_string(type_name);
        if (!type) {
            out.error = "unknown event type '" + type_name + "'";
            return out;
        }
        Event& e = out.event;
        e.type = *type;
        if (!j.contains("ts_ns")) throw FieldError("no ts_ns field");
        e.ts_ns = get_or<uint64_t>(j, "ts_ns", 0);
        e.cookie = get_or<uint64_t>(j, "cookie", 0);
        e.netns = get_or<uint32_t>(j, "netns", 0);
        if (auto a = IpAddr::parse(get_or<std::string>(j, "laddr", ""))) e.laddr = *a;
        if (auto a = IpAddr::parse(get_or<std::string>(j, "raddr", ""))) e.raddr = *a;
        e.lport = get_or<uint16_t>(j, "lport", 0);
        e.rport = get_or<uint16_t>(j, "rport", 0);
        e.lb = get_or<bool>(j, "lb", false);
        e.pid = get_or<uint32_t>(j, "pid", 0);
        e.comm = get_or<std::string>(j, "comm", "");
        e.cgroup_id = get_or<uint64_t>(j, "cgroup_id", 0);
        e.old_state = tcp_state_from_string(get_or<std::string>(j, "old_state", "")).value_or(TcpState::unknown);
        e.new_state = tcp_state_from_string(get_or<std::string>(j, "new_state", "")).value_or(TcpState::unknown);
        e.idle_rx_ms = get_or<uint32_t>(j, "idle_rx_ms", 0);
        e.idle_tx_ms = get_or<uint32_t>(j, "idle_tx_ms", 0);
        e.unread_bytes = get_or<uint32_t>(j, "unread_bytes", 0);
        e.bytes_rx = get_or<uint64_t>(j, "bytes_rx", 0);
        e.bytes_tx = get_or<uint64_t>(j, "bytes_tx", 0);
        e.abort = get_or<bool>(j, "abort", false);
        e.rst_received = get_or<bool>(j, "rst_received", false);
        e.reason = get_or<std::string>(j, "reason", "");
        e.reason_inferred = get_or<bool>(j, "reason_inferred", false);
        e.has_skb = get_or<bool>(j, "has_skb", false);
        e.sk_kind = sock_kind_from_string(get_or<std::string>(j, "sk", "")).value_or(SockKind::none);
        e.sk_state = tcp_state_from_string(get_or<std::string>(j, "sk_state", "")).value_or(TcpState::unknown);
        e.level = get_or<std::string>(j, "level", "");
        e.optname = get_or<std::string>(j, "optname", "");
        e.value = get_or<int64_t>(j, "value", 0);
        e.value2 = get_or<int64_t>(j, "value2", 0);
        if (auto it = j.find("opts"); it != j.end()) e.opts = opts_from_json(*it);
        out.kind = LineKind::event;
    } catch (const json::exception& ex) {
        out.kind = LineKind::bad;
        out.error = ex.what();
    } catch (const FieldError& ex) {
        out.kind = LineKind::bad;
        out.error = ex.what();
    }
    return out;
}

}  // namespace tcpwhy
