// Prometheus text exposition (format 0.0.4) of what the daemon sees. Counters the
// kernel's events decide at once (events, resets sent/received by kernel reason) are
// counted as events arrive (EventMetrics); what needs the correlator's judgement
// (reset classes, keep-alive races, idle-close times, findings) is read from it at
// scrape time. Label cardinality is bounded: see docs/daemon.md.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <set>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "tcpwhy/event_source.h"
#include "tcpwhy/daemon/archive.h"
#include "tcpwhy/correlator.h"

namespace tcpwhy::daemon {

// Counted per event, in the event loop.
class EventMetrics {
public:
    // At most max_series (netns, port, reason, lb_range) keys are kept; later keys are
    // folded into one overflow key and counted in folded().
    EventMetrics(const CorrelatorConfig& config, size_t max_series = 16384);

    // backend: the one the correlator counts the event toward (Correlator::backend_of), so
    // both label a reset with the same port.
    void on_event(const Event& event, const BackendId& backend);

    struct ResetKey {
        bool overflow = false;  // the key past max_series that the rest fold into
        uint32_t netns = 0;
        uint16_t port = 0;     // the backend's port (see outbound)
        bool outbound = false; // port is the remote one: the local side of an outgoing connection
        ResetReason reason = ResetReason::none;  // kernel reason (reset_sent only)
        std::string lb_range;  // CorrelatorConfig::lb_range_label() of the peer
        auto operator<=>(const ResetKey&) const = default;
    };
    const std::array<uint64_t, kEventTypeCount>& events_by_type() const { return by_type_; }
    const std::map<ResetKey, uint64_t>& resets_sent() const { return sent_; }
    const std::map<ResetKey, uint64_t>& resets_received() const { return received_; }
    uint64_t folded() const { return folded_; }

private:
    void count(std::map<ResetKey, uint64_t>& series, ResetKey key);

    const CorrelatorConfig& config_;
    size_t max_series_;
    std::array<uint64_t, kEventTypeCount> by_type_{};
    std::map<ResetKey, uint64_t> sent_, received_;
    uint64_t folded_ = 0;
};

// Everything one scrape renders; gathered under the daemon's lock, rendered outside it.
struct MetricsSnapshot {
    std::array<uint64_t, kEventTypeCount> events_by_type{};
    std::map<EventMetrics::ResetKey, uint64_t> resets_sent, resets_received;
    uint64_t event_series_folded = 0;
    KernelCounters kernel;
    std::optional<ArchiveStats> archive;
    std::vector<BackendProfile> backends;
    std::vector<Finding> findings;
    CorrelatorCounts counts;
    std::string lb_name;
    uint64_t existing_connections = 0;  // learned from the socket iterator at start
    double uptime_s = 0;
    std::string version, kernel_release, attach;
};

// max_backends: label sets (namespace, pod, port) beyond this many, the least busy
// first, are folded into namespace="_other",pod="_other",port="_other".
std::string render_prometheus(const MetricsSnapshot& snapshot, size_t max_backends);

// "a\"b" -> a\"b with Prometheus label-value escaping (backslash, quote, newline).
std::string escape_label_value(std::string_view value);

}  // namespace tcpwhy::daemon
