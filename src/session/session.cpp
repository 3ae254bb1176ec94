#include "tcpwhy/session.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <fstream>

#include <fmt/format.h>

#include "tcpwhy/format.h"
#include "tcpwhy/log.h"

namespace tcpwhy {
namespace {

constexpr uint64_t kTickNs = 1'000'000'000;

// Locks only when another thread reads the session (the daemon's server): trace and top pay
// nothing per event for a lock nobody else takes.
class MaybeLock {
public:
    MaybeLock(std::mutex& mutex, bool shared) : mutex_(shared ? &mutex : nullptr) {
        if (mutex_) mutex_->lock();
    }
    ~MaybeLock() {
        if (mutex_) mutex_->unlock();
    }
    MaybeLock(const MaybeLock&) = delete;
    MaybeLock& operator=(const MaybeLock&) = delete;

private:
    std::mutex* mutex_;
};

}  // namespace

bool EventFilter::keep(const Event& e, const Workload* who) const {
    if (only_lb && !e.lb) return false;
    if (port && e.lport != *port && e.rport != *port) return false;
    if (netns && e.netns != *netns) return false;
    if (pid && e.pid != *pid) return false;
    if (!pod.empty() && (!who || who->name().find(pod) == std::string::npos)) return false;
    if (!namespace_name.empty() && (!who || who->namespace_name != namespace_name)) return false;
    return true;
}

TraceHeader local_trace_header(const CorrelatorConfig& config) {
    // Any pair of readings taken before the first event works as the trace's clock base.
    WallClock clock = WallClock::now();
    TraceHeader header;
    std::array<char, 256> host{};
    gethostname(host.data(), host.size() - 1);
    header.hostname = host.data();
    std::ifstream boot("/proc/sys/kernel/random/boot_id");
    std::getline(boot, header.boot_id);
    utsname u{};
    uname(&u);
    header.kernel = u.release;
    header.mono_start_ns = clock.mono_ns;
    header.wall_start_ns = clock.wall_ns;
    header.lb_ranges = config.lb_ranges.to_string();
    return header;
}

Session::Session(std::unique_ptr<EventSource> source, std::unique_ptr<WorkloadResolver> resolver,
                 SessionOptions options)
    : source_(std::move(source)),
      resolver_(std::move(resolver)),
      options_(std::move(options)),
      servers_(options_.servers ? std::make_unique<ServerDetector>(*options_.servers) : nullptr),
      header_(options_.header ? *options_.header : local_trace_header(options_.config)),
      view_(options_.config) {
    if (resolver_) view_.correlator().set_workloads(resolver_->table());
    if (servers_) view_.correlator().set_servers(servers_->table());
    if (source_->tallies()) {
        header_.tally = true;
        view_.correlator().set_opens_tallied(true);
    }
    status_.node = header_.hostname;
    status_.kernel = source_->kernel_release();
    status_.attach = source_->attach_summary();
}

Session::~Session() = default;

uint64_t Session::now() const { return options_.clock ? options_.clock() : WallClock::now().mono_ns; }

const CorrelatorConfig& Session::config() const { return view_.correlator().config(); }

void Session::add_sink(SessionSink& sink) { sinks_.push_back(&sink); }

ExistingSockets Session::start() {
    uint64_t started = now();
    {
        MaybeLock lock(mutex_, options_.shared);
        if (resolver_) resolver_->scan(started);
        drain_names();
    }
    ExistingSockets existing;
    try {
        existing = source_->list_existing(true);
    } catch (const std::exception& e) {
        existing.errors.push_back(fmt::format("{}: connections open before the start will look new", e.what()));
    }
    for (auto& e : existing.events) handle(e);
    next_tick_ns_ = started + kTickNs;
    next_sample_ns_ = options_.live_sample_interval_ns ? started + options_.live_sample_interval_ns : 0;
    tick(now());
    return existing;
}

void Session::pump(int timeout_ms) {
    source_->poll(timeout_ms, [this](Event& e) { handle(e); });
    uint64_t at = now();
    {
        // A peer's reset waits out the abort window before it counts: count it when that passes,
        // not up to a tick later (metrics and top would show it a second late).
        MaybeLock lock(mutex_, options_.shared);
        view_.correlator().settle_due(at);
    }
    if (at >= next_tick_ns_) {
        next_tick_ns_ = at + kTickNs;
        tick(at);
    }
}

void Session::finish() {
    source_->poll(0, [this](Event& e) { handle(e); });
    tick(now());
}

void Session::handle(Event& e) {
    ++counts_.received;
    ++counts_.by_type[std::min<size_t>(static_cast<size_t>(e.type), counts_.by_type.size() - 1)];
    // a tally has no peer address: the kernel applied the same rule to each of its connections
    if (e.type != EventType::tally) e.lb = config().is_lb_peer(e.raddr);
    MaybeLock lock(mutex_, options_.shared);
    // A name lookup; an unknown namespace or owner asks the resolver for a (rate-limited) scan.
    const Workload* who = resolver_ ? resolver_->resolve(e, e.ts_ns) : nullptr;
    if (!options_.filter.keep(e, who)) {
        ++counts_.filtered;
        return;
    }
    ++counts_.kept;
    // Which server the owner runs: a hash lookup, and once per process a detection from /proc.
    if (servers_ && e.pid) servers_->note(e.pid, e.comm);
    drain_names();  // names and servers go ahead of the events that need them
    drain_servers();
    view_.on_event(e);
    for (SessionSink* sink : sinks_) sink->on_event(e, who);
}

void Session::drain_names() {
    if (!resolver_ || !resolver_->has_changes()) return;
    for (const auto& record : resolver_->take_changes())
        for (SessionSink* sink : sinks_) sink->on_workload(record);
}

void Session::drain_servers() {
    if (!servers_ || !servers_->has_changes()) return;
    for (const auto& record : servers_->take_changes())
        for (SessionSink* sink : sinks_) sink->on_server(record);
}

void Session::sample_live_sockets() {
    ExistingSockets open;
    try {
        open = source_->list_existing(false);
    } catch (const std::exception& e) {
        log::debug(fmt::format("cannot sample live sockets: {}", e.what()));
        return;
    }
    MaybeLock lock(mutex_, options_.shared);
    view_.set_live_sockets(open.events, now());
}

void Session::tick(uint64_t now_ns) {
    kernel_ = source_->counters();
    status_.events_total = counts_.received;
    status_.dropped_total = kernel_.dropped();
    {
        MaybeLock lock(mutex_, options_.shared);
        if (resolver_) resolver_->tick(now_ns);
        if (servers_) servers_->tick();
        drain_names();
        drain_servers();
        view_.tick(now_ns, status_);
        if (options_.live_updates)
            for (const auto& update : view_.correlator().take_live_updates(now_ns))
                for (SessionSink* sink : sinks_) sink->on_finding(update);
    }
    if (next_sample_ns_ && now_ns >= next_sample_ns_) {
        next_sample_ns_ = now_ns + options_.live_sample_interval_ns;
        sample_live_sockets();
    }
    warn_about_drops();
    for (SessionSink* sink : sinks_) sink->on_tick(now_ns);
}

void Session::warn_about_drops() {
    uint64_t dropped = kernel_.dropped();
    if (dropped <= drops_reported_) return;
    log::warn(fmt::format("{} events dropped in the kernel so far (ring buffer full {}, malformed {}) -- raise --ring-mb",
                          dropped, kernel_.dropped_ringbuf_full, kernel_.malformed_records));
    drops_reported_ = dropped;
}

}  // namespace tcpwhy
