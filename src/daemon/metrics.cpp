#include "tcpwhy/daemon/metrics.h"

#include <algorithm>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

namespace tcpwhy::daemon {
namespace {

constexpr std::string_view kOther = "_other";
// Idle-close histogram boundaries in seconds: around the usual keep-alive timeouts
// (Node.js 5 s, nginx 75 s, LBs 60-600 s).
constexpr std::array<double, 13> kIdleBucketsS = {0.5, 1, 2, 5, 10, 15, 30, 60, 75, 120, 300, 600, 900};

// A backend as labels.
struct Who {
    std::string namespace_name, pod, port;
    auto operator<=>(const Who&) const = default;
    std::string labels() const {
        return fmt::format("namespace=\"{}\",pod=\"{}\",port=\"{}\"", escape_label_value(namespace_name),
                           escape_label_value(pod), escape_label_value(port));
    }
};

// Names for (netns, port) pairs, from the correlator's backends.
class Resolver {
public:
    explicit Resolver(const std::vector<BackendProfile>& backends) {
        for (const auto& b : backends) {
            by_port_[key(b.id.netns, b.id.port, b.id.outbound)] = &b.id;
            if (!b.id.pod.empty() || !b.id.namespace_name.empty()) by_netns_.try_emplace(b.id.netns, &b.id);
        }
    }
    Who of_backend(const BackendId& id) const { return {id.namespace_name, id.pod, std::to_string(id.port)}; }
    Who of_socket(uint32_t netns, uint16_t port, bool outbound) const {
        if (auto it = by_port_.find(key(netns, port, outbound)); it != by_port_.end()) return of_backend(*it->second);
        if (auto it = by_netns_.find(netns); it != by_netns_.end())
            return {it->second->namespace_name, it->second->pod, std::to_string(port)};
        return {"", "", std::to_string(port)};
    }

private:
    static uint64_t key(uint32_t netns, uint16_t port, bool outbound) {
        return (uint64_t{outbound} << 48) | (uint64_t{netns} << 16) | port;
    }
    std::unordered_map<uint64_t, const BackendId*> by_port_;
    std::unordered_map<uint32_t, const BackendId*> by_netns_;
};

// Keeps the max busiest label sets; the rest become _other.
class Folder {
public:
    void weigh(const Who& who, uint64_t weight) { weights_[who] += weight + 1; }
    void decide(size_t max) {
        std::vector<std::pair<uint64_t, Who>> ranked;
        for (auto& [who, w] : weights_) ranked.emplace_back(w, who);
        std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
        for (size_t i = 0; i < ranked.size() && i < max; ++i) kept_.insert(ranked[i].second);
        folded_ = ranked.size() > max ? ranked.size() - max : 0;
    }
    Who operator()(const Who& who) const {
        return kept_.count(who) ? who : Who{std::string(kOther), std::string(kOther), std::string(kOther)};
    }
    size_t folded() const { return folded_; }

private:
    std::map<Who, uint64_t> weights_;
    std::set<Who> kept_;
    size_t folded_ = 0;
};

class Exposition {
public:
    void family(std::string_view name, std::string_view type, std::string_view help) {
        out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    }
    template <typename T>
    void sample(std::string_view name, std::string_view labels, T value) {
        if (labels.empty()) out_ += fmt::format("{} {}\n", name, value);
        else out_ += fmt::format("{}{{{}}} {}\n", name, labels, value);
    }
    // A family of one type whose samples were summed per label string.
    template <typename T>
    void samples(std::string_view name, std::string_view type, std::string_view help,
                 const std::map<std::string, T>& values) {
        family(name, type, help);
        for (const auto& [labels, value] : values) sample(name, labels, value);
    }
    std::string take() { return std::move(out_); }

private:
    std::string out_;
};

struct IdleHistogram {
    std::array<uint64_t, kIdleBucketsS.size()> buckets{};  // not cumulative yet
    uint64_t count = 0;
    double sum_s = 0;
};

}  // namespace

std::string escape_label_value(std::string_view value) {
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        if (c == '\\') out += "\\\\";
        else if (c == '"') out += "\\\"";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

EventMetrics::EventMetrics(const CorrelatorConfig& config, size_t max_series)
    : config_(config), max_series_(max_series) {}

void EventMetrics::count(std::map<ResetKey, uint64_t>& series, ResetKey key) {
    auto it = series.find(key);
    if (it == series.end()) {
        if (sent_.size() + received_.size() >= max_series_) {
            ++folded_;
            key = ResetKey{.overflow = true};
        }
        it = series.try_emplace(std::move(key), 0).first;
    }
    ++it->second;
}

void EventMetrics::on_event(const Event& e, const BackendId& backend) {
    ++by_type_[std::min(static_cast<size_t>(e.type), by_type_.size() - 1)];
    if (e.type != EventType::reset_sent && e.type != EventType::reset_recv) return;
    ResetKey key{false, backend.netns, backend.port, backend.outbound,
                 e.type == EventType::reset_sent ? e.reason : ResetReason::none, config_.lb_range_label(e.raddr)};
    count(e.type == EventType::reset_sent ? sent_ : received_, std::move(key));
}

std::string render_prometheus(const MetricsSnapshot& s, size_t max_backends) {
    Resolver resolve(s.backends);
    Folder fold;
    auto who_of_key = [&](const EventMetrics::ResetKey& k) {
        return k.overflow ? Who{std::string(kOther), std::string(kOther), std::string(kOther)}
                          : resolve.of_socket(k.netns, k.port, k.outbound);
    };
    for (const auto& b : s.backends)
        fold.weigh(resolve.of_backend(b.id), b.connections_lb + b.connections_other + b.resets_total());
    for (const auto& [k, n] : s.resets_sent) fold.weigh(who_of_key(k), n);
    for (const auto& [k, n] : s.resets_received) fold.weigh(who_of_key(k), n);
    fold.decide(max_backends);

    Exposition out;

    std::map<std::string, uint64_t> series;
    for (size_t t = 1; t < s.events_by_type.size(); ++t) {
        auto name = to_string(static_cast<EventType>(t));
        if (name != "?") series[fmt::format("type=\"{}\"", name)] = s.events_by_type[t];
    }
    out.samples("tcpwhy_events_total", "counter", "Events received from the kernel (and the socket iterator), by type.",
                series);

    series.clear();
    series["where=\"ringbuf_full\""] = s.kernel.dropped_ringbuf_full;
    series["where=\"malformed\""] = s.kernel.malformed_records;
    if (s.archive) {
        series["where=\"archive_write\""] = s.archive->lines_dropped_write_error;
        series["where=\"archive_low_disk\""] = s.archive->lines_dropped_low_disk;
    }
    out.samples("tcpwhy_events_dropped_total", "counter",
                "Events lost: not emitted by the kernel programs (ring buffer full), or not archived.",
                series);

    auto reset_series = [&](const std::map<EventMetrics::ResetKey, uint64_t>& counts, bool with_reason) {
        std::map<std::string, uint64_t> by_labels;
        for (const auto& [k, n] : counts) {
            std::string labels = fold(who_of_key(k)).labels();
            if (with_reason)
                labels += fmt::format(",reason=\"{}\"", k.overflow ? kOther : to_string(k.reason));
            labels += fmt::format(",lb_range=\"{}\"", escape_label_value(k.overflow ? kOther : k.lb_range));
            by_labels[labels] += n;
        }
        return by_labels;
    };
    out.samples("tcpwhy_resets_sent_total", "counter",
                "RSTs this node sent, by local socket, kernel reason and the LB range of the peer (\"\" = not an LB).",
                reset_series(s.resets_sent, true));
    out.samples("tcpwhy_resets_received_total", "counter",
                "RSTs this node's sockets received, by local socket and the LB range of the peer.",
                reset_series(s.resets_received, false));

    // From the correlator: classified resets, races, idle closes, findings.
    std::map<std::string, uint64_t> classified, races, connections;
    std::map<std::string, IdleHistogram> idle;
    std::map<std::string, std::string> race_range;  // backend labels -> LB range named by its race finding
    for (const auto& f : s.findings)
        if (f.kind == FindingKind::idle_close_race && !f.lb.range.empty())
            race_range[fold(resolve.of_backend(f.backend.id)).labels()] = f.lb.range;
    for (const auto& b : s.backends) {
        std::string who = fold(resolve.of_backend(b.id)).labels();
        for (const KindInfo& row : finding_kinds()) {
            auto k = static_cast<size_t>(row.kind);
            if (b.resets_lb[k]) classified[fmt::format("{},class=\"{}\",peer=\"lb\"", who, row.name)] += b.resets_lb[k];
            if (b.resets_other[k])
                classified[fmt::format("{},class=\"{}\",peer=\"other\"", who, row.name)] += b.resets_other[k];
        }
        auto race = static_cast<size_t>(FindingKind::idle_close_race);
        if (b.resets_lb[race]) {
            auto it = race_range.find(who);
            std::string range = it != race_range.end() ? it->second : s.lb_name;
            races[fmt::format("{},lb_range=\"{}\"", who, escape_label_value(range))] += b.resets_lb[race];
        }
        if (b.resets_other[race]) races[fmt::format("{},lb_range=\"\"", who)] += b.resets_other[race];
        if (b.connections_lb) connections[who + ",peer=\"lb\""] += b.connections_lb;
        if (b.connections_other) connections[who + ",peer=\"other\""] += b.connections_other;
        if (!b.idle_close.samples) continue;
        IdleHistogram& h = idle[who];
        for (auto [low_ms, n] : b.idle_histogram) {
            int bucket = DurationHistogram::bucket_of(low_ms);
            double mid_s = (low_ms + DurationHistogram::bucket_high(bucket)) / 2000.0;
            auto at = std::lower_bound(kIdleBucketsS.begin(), kIdleBucketsS.end(), mid_s);
            if (at != kIdleBucketsS.end()) h.buckets[at - kIdleBucketsS.begin()] += n;
            h.count += n;
            h.sum_s += mid_s * n;
        }
    }
    out.samples("tcpwhy_resets_total", "counter",
                "Resets by the correlator's classification (class) and whether the peer is the load balancer; "
                "counted once the correlator has settled them.",
                classified);
    out.samples("tcpwhy_keepalive_races_total", "counter",
                "Requests that arrived on a connection the backend was closing for idleness, and were reset.", races);
    out.samples("tcpwhy_connections_total", "counter", "Connections seen per backend, by peer kind.", connections);

    out.family("tcpwhy_idle_close_seconds", "histogram",
               "How long connections the backend closed had been idle (bucket counts within 3%, sum from bucket "
               "midpoints).");
    for (const auto& [who, h] : idle) {
        uint64_t cumulative = 0;
        for (size_t i = 0; i < kIdleBucketsS.size(); ++i) {
            cumulative += h.buckets[i];
            out.sample("tcpwhy_idle_close_seconds_bucket", fmt::format("{},le=\"{}\"", who, kIdleBucketsS[i]),
                       cumulative);
        }
        out.sample("tcpwhy_idle_close_seconds_bucket", who + ",le=\"+Inf\"", h.count);
        out.sample("tcpwhy_idle_close_seconds_sum", who, fmt::format("{:.3f}", h.sum_s));
        out.sample("tcpwhy_idle_close_seconds_count", who, h.count);
    }

    std::map<std::string, uint64_t> findings;
    for (const auto& f : s.findings)
        findings[fmt::format("{},kind=\"{}\",severity=\"{}\"", fold(resolve.of_backend(f.backend.id)).labels(),
                             to_string(f.kind), to_string(info(f.kind).severity))] += f.count;
    out.samples("tcpwhy_findings", "gauge",
                "Current findings per backend and kind (severity: the kind's, critical, warning or notice); the value "
                "is the finding's count (resets; idle closes for "
                "idle_timeout_below_lb; for the kinds about a backend's life what docs/report-json.md says: refused "
                "connections for rollout_drain, closed connections for process_crash, dropped handshakes for "
                "accept_queue_overflow, abandoned requests for lb_response_timeout).",
                findings);

    // Which server each backend runs (an info metric: join it on namespace, pod, port). Bounded like
    // the rest: one series per exported backend, `server` one of tcpwhy's server kinds.
    std::map<std::string, uint64_t> servers;
    for (const auto& b : s.backends) {
        if (!b.server || b.server->kind == ServerKind::unknown) continue;
        Who who = fold(resolve.of_backend(b.id));
        if (who.pod == kOther && who.port == kOther) continue;
        servers[fmt::format("{},server=\"{}\",version=\"{}\"", who.labels(), to_string(b.server->kind),
                            escape_label_value(b.server->version))] = 1;
    }
    out.samples("tcpwhy_backend_server", "gauge",
                "The server a backend's process runs, as detected from /proc (kind and version); always 1.", servers);

    out.family("tcpwhy_connections_live", "gauge", "Connections the correlator holds now.");
    out.sample("tcpwhy_connections_live", "", s.counts.live_connections);
    out.family("tcpwhy_connections_existing", "gauge",
               "Connections that existed when the daemon started (learned with the socket iterator).");
    out.sample("tcpwhy_connections_existing", "", s.existing_connections);
    out.family("tcpwhy_backends", "gauge", "Backends the correlator knows.");
    out.sample("tcpwhy_backends", "", s.backends.size());
    out.family("tcpwhy_metrics_series_folded", "gauge",
               "Label sets folded into namespace/pod/port=\"_other\" by the --metrics-max-backends bound.");
    out.sample("tcpwhy_metrics_series_folded", "", fold.folded() + s.event_series_folded);

    if (s.archive) {
        out.family("tcpwhy_archive_bytes", "gauge", "Bytes of compressed trace in the archive.");
        out.sample("tcpwhy_archive_bytes", "", s.archive->bytes);
        out.family("tcpwhy_archive_segments", "gauge", "Segments in the archive.");
        out.sample("tcpwhy_archive_segments", "", s.archive->segments);
        out.family("tcpwhy_archive_write_errors_total", "counter", "Archive writes, flushes and opens that failed.");
        out.sample("tcpwhy_archive_write_errors_total", "", s.archive->write_errors);
        out.family("tcpwhy_archive_segments_deleted_total", "counter",
                   "Segments deleted by the archive's size, age and free-space limits.");
        out.sample("tcpwhy_archive_segments_deleted_total", "", s.archive->segments_deleted);
    }
    out.family("tcpwhy_uptime_seconds", "gauge", "Seconds since the daemon started tracing.");
    out.sample("tcpwhy_uptime_seconds", "", fmt::format("{:.0f}", s.uptime_s));
    out.family("tcpwhy_build_info", "gauge", "tcpwhy version, kernel and close-hook attach path.");
    out.sample("tcpwhy_build_info",
               fmt::format("version=\"{}\",kernel=\"{}\",attach=\"{}\"", escape_label_value(s.version),
                           escape_label_value(s.kernel_release), escape_label_value(s.attach)),
               1);
    return out.take();
}

}  // namespace tcpwhy::daemon
