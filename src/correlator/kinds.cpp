// The table of finding kinds. One row per kind; every consumer reads these rows.
#include "tcpwhy/kinds.h"

namespace tcpwhy {
namespace {

constexpr std::array kLingerOptions = {SockOpt::so_linger};
constexpr std::array kUserTimeoutOptions = {SockOpt::tcp_user_timeout};
constexpr std::array kKeepaliveOptions = {SockOpt::so_keepalive, SockOpt::tcp_keepidle, SockOpt::tcp_keepintvl,
                                          SockOpt::tcp_keepcnt};

using enum FindingKind;
using enum Severity;
constexpr std::array<KindInfo, kFindingKindCount> kKinds = {{
    // kind                   name                      severity  colour     resets weight related options
    {idle_close_race,        "idle_close_race",        critical, "#d6453d", true,  0, {}},
    {close_with_unread_data, "close_with_unread_data", warning,  "#b5651d", true,  2, {}},
    {linger_abort,           "linger_abort",           warning,  "#3b75af", true,  2, kLingerOptions},
    {no_listener,            "no_listener",            warning,  "#6a51a3", true,  2, {}},
    {timewait_data,          "timewait_data",          warning,  "#b5651d", true,  2, {}},
    {keepalive_timeout,      "keepalive_timeout",      warning,  "#3b75af", true,  2, kKeepaliveOptions},
    {user_timeout,           "user_timeout",           warning,  "#3b75af", true,  2, kUserTimeoutOptions},
    {peer_reset,             "peer_reset",             notice,   "#7a7a7a", true,  2, {}},
    {other,                  "other",                  notice,   "#3b75af", true,  2, {}},
    {idle_timeout_below_lb,  "idle_timeout_below_lb",  warning,  "#e8a33d", false, 1, {}},
    {rollout_drain,          "rollout_drain",          critical, "#a23b72", true,  0, {}},
    {process_crash,          "process_crash",          critical, "#7b1fa2", false, 0, {}},
    {accept_queue_overflow,  "accept_queue_overflow",  critical, "#c2185b", false, 0, {}},
    {lb_response_timeout,    "lb_response_timeout",    warning,  "#ef6c00", false, 1, {}},
    {response_cut_short,     "response_cut_short",     warning,  "#8d6e63", true,  1, kLingerOptions},
    {outbound_pool_race,     "outbound_pool_race",     critical, "#d84315", true,  0, {}},
}};

constexpr bool rows_in_order() {
    for (size_t i = 0; i < kKinds.size(); ++i)
        if (static_cast<size_t>(kKinds[i].kind) != i) return false;
    return true;
}
static_assert(rows_in_order(), "kKinds is indexed by FindingKind: one row per kind, in enum order");

}  // namespace

std::span<const KindInfo> finding_kinds() { return kKinds; }

const KindInfo& info(FindingKind kind) {
    auto i = static_cast<size_t>(kind);
    return kKinds[i < kKinds.size() ? i : static_cast<size_t>(other)];
}

std::string_view to_string(FindingKind kind) { return info(kind).name; }

std::optional<FindingKind> finding_kind_from_string(std::string_view name) {
    for (const auto& row : kKinds)
        if (row.name == name) return row.kind;
    return std::nullopt;
}

std::string_view to_string(Severity severity) {
    switch (severity) {
    case notice: return "notice";
    case warning: return "warning";
    case critical: return "critical";
    }
    return "notice";
}

}  // namespace tcpwhy
