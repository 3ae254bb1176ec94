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

    void on_event(const Event& event);

    struct ResetKey {
        uint32_t netns = 0;
        uint16_t port = 0;     // the backend's port (see outbound); 0 for the overflow key
        bool outbound = false; // port is the remote one: the local port was not listening (an outgoing connection)
        std::string reason;    // kernel reason (reset_sent only)
        std::string lb_range;  // the LB range the peer is in, "" when none
        auto operator<=>(const ResetKey&) const = default;
    };
    const std::array<uint64_t, 8>& events_by_type() const { return by_type_; }
    const std::map<ResetKey, uint64_t>& resets_sent() const { return sent_; }
    const std::map<ResetKey, uint64_t>& resets_received() const { return received_; }
    uint64_t folded() const { return folded_; }

private:
    void count(std::map<ResetKey, uint64_t>& series, ResetKey key);
    bool listening(uint32_t netns, uint16_t port) const;

    std::set<uint64_t> listeners_;  // (netns << 16 | port) of listening sockets, as the events showed them
    const CorrelatorConfig& config_;
    size_t max_series_;
    std::array<uint64_t, 8> by_type_{};
    std::map<ResetKey, uint64_t> sent_, received_;
    uint64_t folded_ = 0;
};

// Everything one scrape renders; gathered under the daemon's lock, rendered outside it.
struct MetricsSnapshot {
    std::array<uint64_t, 8> events_by_type{};
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
