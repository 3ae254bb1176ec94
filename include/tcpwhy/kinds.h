// What a finding can be about: one row per kind, the only table of kinds there is.
// A row carries what every consumer needs to handle the kind without knowing it:
// its name (JSON, metrics labels), how severe it is (sort order, top's colour), its
// colour (HTML), and the socket options whose changes explain it. The correlator's
// classification rules (src/correlator/classify.cpp) decide when a kind applies; the
// explain module (include/tcpwhy/explain.h) says it in words. Adding a kind:
// docs/correlator.md, "Adding a finding kind".
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "tcpwhy/event.h"

namespace tcpwhy {

// Order is the display order of findings of equal weight and count.
enum class FindingKind : uint8_t {
    idle_close_race = 0,         // the backend closed an idle connection; the peer's data crossed the close
    close_with_unread_data = 1,  // closed with unread data (or data after the FIN) on a connection that was not idle
    linger_abort = 2,            // close() with SO_LINGER {1,0}
    no_listener = 3,             // a segment for which this host had no socket (SYN to a closed port, ...)
    timewait_data = 4,           // data to a TIME_WAIT socket that was not a backend idle close
    keepalive_timeout = 5,       // keep-alive probes went unanswered
    user_timeout = 6,            // TCP_USER_TIMEOUT expired
    peer_reset = 7,              // the peer reset the connection (reset received)
    other = 8,                   // a reset nothing else explains; the evidence names the kernel reason
    idle_timeout_below_lb = 9,   // no reset yet: the backend closes idle connections sooner than the LB
    rollout_drain = 10,          // the backend stopped listening (SIGTERM) while the LB still sent it connections
    process_crash = 11,          // the process died (a fatal signal, an OOM kill, exit != 0) holding connections
    accept_queue_overflow = 12,  // the listener's accept queue was full: handshakes dropped
    lb_response_timeout = 13,    // the LB gave up on a request the backend had not answered
    response_cut_short = 14,     // the backend reset a connection with response bytes still unacknowledged
    outbound_pool_race = 15,     // the pod's client reused a pooled connection its upstream had closed as idle
};
inline constexpr size_t kFindingKindCount = 16;

enum class Severity : uint8_t {
    notice = 0,    // worth knowing; nothing failed because of it
    warning = 1,   // requests failed, or will
    critical = 2,  // the cause the LB's 502s come from
};
std::string_view to_string(Severity severity);  // "notice", "warning", "critical"

struct KindInfo {
    FindingKind kind;
    std::string_view name;        // "idle_close_race": JSON, metrics labels, the trace's live lines
    Severity severity;
    std::string_view colour;      // "#c62828": the HTML report's accent for it
    bool counts_resets;           // its count is resets (else what its facts say: idle closes for
                                  // idle_timeout_below_lb, connections, dropped handshakes)
    uint8_t weight;               // findings sort by weight first (lower first), then by count
    std::span<const SockOpt> related_options;  // an option change to these, set before the resets, is evidence
};

std::span<const KindInfo> finding_kinds();  // indexed by FindingKind
const KindInfo& info(FindingKind kind);
std::string_view to_string(FindingKind kind);
std::optional<FindingKind> finding_kind_from_string(std::string_view name);

}  // namespace tcpwhy
