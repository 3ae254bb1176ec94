// Load-balancer presets, CorrelatorConfig construction and the result enums' names.
#include <array>

#include <fmt/format.h>

#include "tcpwhy/addr.h"
#include "tcpwhy/correlator.h"

namespace tcpwhy {
namespace {

using enum FindingKind;

// How each load balancer shows each kind: the words of its own logs and status codes.
constexpr std::array<LbSymptom, 13> kGcpSymptoms = {{
    {idle_close_race, "502, statusDetails backend_connection_closed_before_data_sent_to_client"},
    {idle_timeout_below_lb, "502, statusDetails backend_connection_closed_before_data_sent_to_client (once a request "
                            "meets a closing connection)"},
    {close_with_unread_data, "502, statusDetails backend_connection_closed_before_data_sent_to_client"},
    {timewait_data, "502, statusDetails backend_connection_closed_before_data_sent_to_client"},
    {linger_abort, "502, statusDetails backend_connection_closed_before_data_sent_to_client"},
    {no_listener, "502, statusDetails failed_to_connect_to_backend"},
    {rollout_drain, "502, statusDetails failed_to_connect_to_backend (refused connections) and "
                    "backend_connection_closed_before_data_sent_to_client (pooled connections)"},
    {process_crash, "502, statusDetails backend_connection_closed_before_data_sent_to_client (or "
                    "backend_connection_closed_after_partial_response_sent mid-response), then "
                    "failed_to_connect_to_backend until the process listens again"},
    {accept_queue_overflow, "502, statusDetails failed_to_connect_to_backend (timeouts while connecting), or "
                            "backend_timeout"},
    {lb_response_timeout, "504/502, statusDetails backend_timeout"},
    {response_cut_short, "502, statusDetails backend_connection_closed_after_partial_response_sent"},
    {keepalive_timeout, "502, statusDetails backend_connection_closed_before_data_sent_to_client"},
    {user_timeout, "502, statusDetails backend_connection_closed_before_data_sent_to_client"},
}};
constexpr std::array<LbSymptom, 8> kAlbSymptoms = {{
    {idle_close_race, "502 Bad Gateway (the target closed the connection)"},
    {close_with_unread_data, "502 Bad Gateway"},
    {no_listener, "502 Bad Gateway (the target refused the connection)"},
    {rollout_drain, "502 Bad Gateway while the target deregisters (refused and reset connections)"},
    {process_crash, "502 Bad Gateway, then failed health checks"},
    {accept_queue_overflow, "504 Gateway Timeout (target connect timeout, 10 s)"},
    {lb_response_timeout, "504 Gateway Timeout (the idle timeout passed with no response)"},
    {response_cut_short, "502 Bad Gateway (a partial response)"},
}};
constexpr std::array<LbSymptom, 5> kLayer4Symptoms = {{
    {idle_close_race, "clients see the connection reset"},
    {rollout_drain, "clients see connections refused"},
    {process_crash, "clients see connections closed or reset, then refused"},
    {accept_queue_overflow, "clients see connect timeouts"},
    {response_cut_short, "clients see the connection reset mid-response"},
}};
constexpr std::array kLbPresets = {
    LbPreset{"gcp", "Google Cloud HTTP(S) load balancer", kGcpLbRanges, 600,
             "the LB answers these with 502, backend_connection_closed_before_data_sent_to_client", 30, kGcpSymptoms},
    // AWS and Azure load balancers have no fixed public source ranges: their nodes
    // take addresses from your own subnets, hence --lb-ranges.
    LbPreset{"aws-alb", "AWS Application Load Balancer", "", 60, "the ALB answers these with 502 Bad Gateway", 60,
             kAlbSymptoms},
    LbPreset{"aws-nlb", "AWS Network Load Balancer", "", 350, "clients see the connection reset", 0, kLayer4Symptoms},
    LbPreset{"azure", "Azure Load Balancer", "", 240, "clients see the connection reset", 0, kLayer4Symptoms},
    LbPreset{"none", "no load balancer", "", 0, "clients see a reset or an empty reply", 0, {}},
};

template <size_t N>
std::string_view name_at(const std::array<std::string_view, N>& names, size_t i) {
    return i < N ? names[i] : "?";
}

}  // namespace

std::span<const LbPreset> lb_presets() { return kLbPresets; }

const LbPreset* find_lb_preset(std::string_view name) {
    for (const auto& preset : kLbPresets)
        if (preset.name == name) return &preset;
    return nullptr;
}

std::string_view lb_symptom(const LbPreset& preset, FindingKind kind) {
    for (const auto& symptom : preset.symptoms)
        if (symptom.kind == kind) return symptom.text;
    return "";
}

std::optional<CorrelatorConfig> CorrelatorConfig::from_options(std::string_view preset_name,
                                                               std::optional<std::string_view> ranges,
                                                               std::optional<uint32_t> idle_timeout_s,
                                                               std::string* error,
                                                               std::optional<uint32_t> response_timeout_s) {
    const LbPreset* preset = find_lb_preset(preset_name);
    if (!preset) {
        if (error)
            *error = fmt::format("unknown --lb '{}' (expected gcp, aws-alb, aws-nlb, azure or none)", preset_name);
        return std::nullopt;
    }
    CorrelatorConfig config;
    config.lb_name = preset->name;
    config.lb_description = preset->description;
    config.lb_reset_symptom = preset->reset_symptom;
    config.lb_idle_timeout_s = idle_timeout_s.value_or(preset->idle_timeout_s);
    config.lb_response_timeout_s = response_timeout_s.value_or(preset->response_timeout_s);
    std::string_view range_text = ranges ? *ranges : preset->ranges;
    if (!range_text.empty()) {
        auto parsed = CidrSet::parse_list(range_text, error);
        if (!parsed) return std::nullopt;
        config.lb_ranges = std::move(*parsed);
    }
    config.lb_any_non_loopback_peer = config.lb_ranges.empty() && config.lb_idle_timeout_s > 0;
    return config;
}

CorrelatorConfig CorrelatorConfig::defaults() { return *from_options("gcp"); }

bool CorrelatorConfig::is_lb_peer(const IpAddr& peer) const {
    if (lb_ranges.contains(peer)) return true;
    return lb_any_non_loopback_peer && peer.family != 0 && !addr::is_loopback(peer);
}

std::string CorrelatorConfig::lb_range_label(const IpAddr& peer) const {
    if (const Cidr* range = lb_ranges.match(peer)) return range->to_string();
    return is_lb_peer(peer) ? "any" : "";
}

std::string CorrelatorConfig::describe_lb() const {
    if (lb_idle_timeout_s == 0 && lb_ranges.empty()) return fmt::format("{} (no load balancer)", lb_name);
    std::string peers = !lb_ranges.empty()         ? lb_ranges.to_string()
                        : lb_any_non_loopback_peer ? "any non-loopback peer; give --lb-ranges to narrow"
                                                   : "no peers";
    return fmt::format("{} ({}, idle timeout {} s)", lb_name, peers, lb_idle_timeout_s);
}


std::string_view to_string(OpenKind kind) {
    constexpr std::array<std::string_view, 3> names = {"unknown", "accepted", "connected"};
    return name_at(names, static_cast<size_t>(kind));
}
std::string_view to_string(FirstClose kind) {
    constexpr std::array<std::string_view, 3> names = {"unknown", "local", "remote"};
    return name_at(names, static_cast<size_t>(kind));
}
constexpr std::array<std::string_view, 5> kEndKindNames = {"open", "orderly", "reset_sent", "reset_received",
                                                           "expired"};
std::string_view to_string(EndKind kind) { return name_at(kEndKindNames, static_cast<size_t>(kind)); }
std::optional<EndKind> end_kind_from_string(std::string_view name) {
    for (size_t i = 0; i < kEndKindNames.size(); ++i)
        if (kEndKindNames[i] == name) return static_cast<EndKind>(i);
    return std::nullopt;
}

std::string_view to_string(Mechanism mechanism) {
    constexpr std::array<std::string_view, 8> names = {"no_socket",      "timewait",      "data_after_fin",
                                                       "unread_at_close", "linger_zero",   "timer_expired",
                                                       "reset_received",  "unrecognised"};
    return name_at(names, static_cast<size_t>(mechanism));
}
std::string_view to_string(ReasonSource source) {
    constexpr std::array<std::string_view, 3> names = {"kernel", "inferred", "none"};
    return name_at(names, static_cast<size_t>(source));
}

uint64_t BackendProfile::resets_total() const {
    uint64_t n = 0;
    for (size_t k = 0; k < kFindingKindCount; ++k) n += resets_lb[k] + resets_other[k];
    return n;
}

}  // namespace tcpwhy
