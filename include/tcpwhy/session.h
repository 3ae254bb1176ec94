// One live session: the pipeline `trace`, `top` and the daemon all run. Events from the
// source are marked `lb`, named by the resolver, filtered, fed to the live view (and its
// correlator), then handed to the command's sinks; about once a second the session ticks:
// the correlator settles what time decides, the resolver rescans when due, new names go to
// the sinks ahead of the events that need them, findings reached or grown go to the sinks
// that want them. The sockets already open when it starts go through the same pipeline
// first. Each command adds only its options and its sinks (text/JSON lines, the screen,
// the archive and metrics), so a fix in the live path is a fix everywhere.
//
// Nothing here grows without bound: the resolver's and the server detector's change lists are
// drained every tick whether a sink writes them or not, and the correlator, resolver and
// detector keep their own caps.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tcpwhy/correlator.h"
#include "tcpwhy/event_source.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/live_view.h"
#include "tcpwhy/server_detector.h"
#include "tcpwhy/workload_resolver.h"

namespace tcpwhy {

// Which events a session keeps (trace's --only-lb, --port, --netns, --pid, --pod, --namespace).
// Findings follow the filter: `--netns pod` explains that pod.
struct EventFilter {
    bool only_lb = false;
    std::optional<uint16_t> port;    // local or remote
    std::optional<uint32_t> netns;
    std::optional<uint32_t> pid;
    std::string pod;                 // substring of the workload's name
    std::string namespace_name;      // exact Kubernetes namespace
    bool keep(const Event& event, const Workload* who) const;
};

// What a command adds to the pipeline. Called on the session's thread; with
// SessionOptions::shared, while the session's mutex is held (on_tick excepted).
class SessionSink {
public:
    virtual ~SessionSink() = default;
    // Every event the filter kept, after the correlator has seen it.
    virtual void on_event(const Event& event, const Workload* who) = 0;
    // A name that is new or changed, before the first event that needs it.
    virtual void on_workload(const WorkloadRecord&) {}
    // A process's server, detected the first time one of its events is kept (and again after an
    // exec or a pid reuse), before that event.
    virtual void on_server(const ServerRecord&) {}
    // A finding reached or grown (SessionOptions::live_updates).
    virtual void on_finding(const FindingUpdate&) {}
    // About once a second, after the session's own tick, without the mutex.
    virtual void on_tick(uint64_t /*now_ns*/) {}
};

// The header of a trace recorded on this host now: host name, boot id, kernel, the clock pair.
TraceHeader local_trace_header(const CorrelatorConfig& config);

struct SessionOptions {
    CorrelatorConfig config = CorrelatorConfig::defaults();
    EventFilter filter;
    bool live_updates = false;  // compute findings reached or grown every tick (trace's live lines)
    // Re-list the open sockets this often for how long each has been idle (top's live
    // connections); 0: only when asked (sample_live_sockets()).
    uint64_t live_sample_interval_ns = 0;
    // Another thread reads the view (the daemon's server): the session then changes its state
    // only under mutex().
    bool shared = false;
    // CLOCK_MONOTONIC nanoseconds; tests drive a session through hours in milliseconds with
    // their own. Default: the real clock.
    std::function<uint64_t()> clock;
    // The trace header, when the caller made it already (the daemon's archive starts with it);
    // else local_trace_header() at construction.
    std::optional<TraceHeader> header;
    // Detect the server behind each process (include/tcpwhy/server_detector.h), reading the host's
    // /proc under its host_root; nullopt: no detection (tests with synthetic pids).
    std::optional<ServerDetectorOptions> servers;
};

struct SessionCounts {
    std::array<uint64_t, kEventTypeCount> by_type{};  // received from the source
    uint64_t received = 0;
    uint64_t kept = 0;      // passed the filter
    uint64_t filtered = 0;  // did not
};

class Session {
public:
    // resolver: nullptr with --no-names.
    Session(std::unique_ptr<EventSource> source, std::unique_ptr<WorkloadResolver> resolver, SessionOptions options);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    void add_sink(SessionSink& sink);

    // Once, before the first pump(): scans names, then puts the sockets open now through the
    // pipeline as `existing` events, so their closes and resets are not orphans. What could not
    // be listed is in the result's errors; a source that cannot list at all is one error there.
    ExistingSockets start();
    // Waits up to timeout_ms for events and handles them; ticks when a second has passed.
    void pump(int timeout_ms);
    // What the source still holds, then a last tick: call once at the end.
    void finish();
    // Lists the open sockets now for their idle times (top --once, before its snapshot).
    void sample_live_sockets();

    const TraceHeader& header() const { return header_; }
    const CorrelatorConfig& config() const;
    LiveView& view() { return view_; }
    const Correlator& correlator() const { return view_.correlator(); }
    WorkloadResolver* resolver() { return resolver_.get(); }
    ServerDetector* servers() { return servers_.get(); }
    const SessionCounts& counts() const { return counts_; }
    // The source's counters as of the last tick (a map read: not per event).
    const KernelCounters& kernel() const { return kernel_; }
    const LiveStatus& status() const { return status_; }
    std::mutex& mutex() { return mutex_; }

private:
    uint64_t now() const;
    void handle(Event& event);
    void tick(uint64_t now_ns);
    void drain_names();
    void drain_servers();
    void warn_about_drops();

    std::unique_ptr<EventSource> source_;
    std::unique_ptr<WorkloadResolver> resolver_;
    SessionOptions options_;
    std::unique_ptr<ServerDetector> servers_;
    TraceHeader header_;
    LiveView view_;
    std::vector<SessionSink*> sinks_;
    SessionCounts counts_;
    KernelCounters kernel_;
    LiveStatus status_;
    uint64_t next_tick_ns_ = 0;
    uint64_t next_sample_ns_ = 0;
    uint64_t drops_reported_ = 0;
    std::mutex mutex_;
};

}  // namespace tcpwhy
