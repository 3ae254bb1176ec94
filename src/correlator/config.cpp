// Load-balancer presets, CorrelatorConfig construction and enum names.
#include <array>

#include <fmt/format.h>

#include "tcpwhy/addr.h"
#include "tcpwhy/correlator.h"

namespace tcpwhy {
namespace {

constexpr std::array kLbPresets = {
    LbPreset{"gcp", "Google Cloud HTTP(S) load balancer", kGcpLbRanges, 600,
             "the LB answers these with 502, backend_connection_closed_before_data_sent_to_client"},
    // AWS and Azure load balancers have no fixed public source ranges: their nodes
    // take addresses from your own subnets, hence --lb-ranges.
    LbPreset{"aws-alb", "AWS Application Load Balancer", "", 60, "the ALB answers these with 502 Bad Gateway"},
    LbPreset{"aws-nlb", "AWS Network Load Balancer", "", 350, "clients see the connection reset"},
    LbPreset{"azure", "Azure Load Balancer", "", 240, "clients see the connection reset"},
    LbPreset{"none", "no load balancer", "", 0, "clients see a reset or an empty reply"},
};

constexpr std::array<std::string_view, kResetKindCount + 1> kFindingKindNames = {
    "idle_close_race",   "close_with_unread_data", "linger_abort", "no_listener", "timewait_data",
    "keepalive_timeout", "user_timeout",           "peer_reset",   "other",       "idle_timeout_below_lb"};

std::string_view unit_of(std::string_view optname) {
    if (optname == "TCP_USER_TIMEOUT") return " ms";
    if (optname == "SO_RCVTIMEO" || optname == "SO_SNDTIMEO") return " us";
    if (optname == "TCP_KEEPIDLE" || optname == "TCP_KEEPINTVL" || optname == "TCP_LINGER2" ||
        optname == "TCP_DEFER_ACCEPT")
        return " s";
    return "";
}

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

std::optional<CorrelatorConfig> CorrelatorConfig::from_options(std::string_view preset_name,
                                                               std::optional<std::string_view> ranges,
                                                               std::optional<uint32_t> idle_timeout_s,
                                                               std::string* error) {
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

std::string CorrelatorConfig::describe_lb() const {
    if (lb_idle_timeout_s == 0 && lb_ranges.empty()) return fmt::format("{} (no load balancer)", lb_name);
    std::string peers = !lb_ranges.empty()         ? lb_ranges.to_string()
                        : lb_any_non_loopback_peer ? "any non-loopback peer; give --lb-ranges to narrow"
                                                   : "no peers";
    return fmt::format("{} ({}, idle timeout {} s)", lb_name, peers, lb_idle_timeout_s);
}

std::string_view to_string(ResetKind kind) { return name_at(kFindingKindNames, static_cast<size_t>(kind)); }
std::string_view to_string(FindingKind kind) { return name_at(kFindingKindNames, static_cast<size_t>(kind)); }

std::string_view to_string(OpenKind kind) {
    constexpr std::array<std::string_view, 3> names = {"unknown", "accepted", "connected"};
    return name_at(names, static_cast<size_t>(kind));
}
std::string_view to_string(FirstClose kind) {
    constexpr std::array<std::string_view, 3> names = {"unknown", "local", "remote"};
    return name_at(names, static_cast<size_t>(kind));
}
std::string_view to_string(EndKind kind) {
    constexpr std::array<std::string_view, 5> names = {"open", "orderly", "reset_sent", "reset_received", "expired"};
    return name_at(names, static_cast<size_t>(kind));
}

std::string ConnectionRecord::four_tuple() const {
    auto endpoint = [](const IpAddr& addr, uint16_t port) {
        return addr.family == 6 ? fmt::format("[{}]:{}", addr.to_string(), port)
                                : fmt::format("{}:{}", addr.to_string(), port);
    };
    return endpoint(raddr, rport) + "->" + endpoint(laddr, lport);
}

std::string SockOptChange::describe() const {
    std::string text = optname == "SO_LINGER" ? fmt::format("SO_LINGER {{{},{}}}", value, value2)
                                              : fmt::format("{} {}{}", optname, value, unit_of(optname));
    if (previous && optname != "SO_LINGER") text += fmt::format(" (was {}{})", *previous, unit_of(optname));
    return text;
}

std::string BackendProfile::label() const {
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
    std::string process = comm.empty() ? "process unknown" : fmt::format("process {}", comm);
    if (id.outbound) return fmt::format("{} ({}, outbound to port {})", who, process, id.port);
    return fmt::format("{} ({}, port {})", who, process, id.port);
}

}  // namespace tcpwhy
