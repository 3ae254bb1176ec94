// The live session (trace's, top's and the daemon's pipeline) with a real resolver over a
// host root of real files, fed events the way the ring buffer hands them over.
#include <catch2/catch.hpp>

#include <deque>

#include "event_builders.h"
#include "fake_host.h"
#include "tcpwhy/session.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {

// The events a kernel would have produced, handed over as the ring buffer does: whatever is
// queued at each poll. Listing open sockets returns what the test says is open.
class QueuedSource final : public EventSource {
public:
    std::deque<Event> queue;
    std::vector<Event> open;

    size_t poll(int, const Sink& sink) override {
        size_t n = 0;
        for (; !queue.empty(); ++n) {
            Event e = std::move(queue.front());
            queue.pop_front();
            sink(e);
        }
        return n;
    }
    KernelCounters counters() const override { return {}; }
    std::string attach_summary() const override { return "test"; }
    std::string kernel_release() const override { return "6.18.0"; }
    ExistingSockets list_existing(bool) override { return {open, 1, {}}; }
};

struct Names final : public SessionSink {
    size_t events = 0, names = 0;
    void on_event(const Event&, const Workload*) override { ++events; }
    void on_workload(const WorkloadRecord&) override { ++names; }
};

}  // namespace

TEST_CASE("session: pods come and go for hours and nothing in top's pipeline grows with them") {
    FakeHost host;
    host.process(2, 4026531840, "/", "kthreadd");
    uint64_t clock_ns = sec(1);
    auto source = std::make_unique<QueuedSource>();
    QueuedSource& kernel = *source;
    ResolverOptions names;
    names.host_root = host.root.string();
    names.max_departed = 256;
    SessionOptions options;
    options.clock = [&] { return clock_ns; };
    options.config.max_live_connections = 1024;
    options.config.max_backends = 512;
    options.live_sample_interval_ns = sec(5);  // top's
    Session session(std::move(source), std::make_unique<WorkloadResolver>(names), std::move(options));
    ExistingSockets existing = session.start();
    CHECK(existing.errors.empty());

    // 2000 pods, one a second, each living 20 s in its own network namespace with a backend
    // on 8080 that takes a few connections and closes them idle, one of them racing.
    constexpr int kPods = 2000, kLifetimeS = 20;
    size_t peak_names = 0, peak_live = 0, peak_backends = 0;
    for (int i = 0; i < kPods; ++i) {
        const uint32_t netns = 4026540000u + static_cast<uint32_t>(i);
        host.process(10000 + i, netns, fmt::format("/user.slice/pod-{}.scope", i), "node");
        if (i >= kLifetimeS) host.exit(10000 + i - kLifetimeS);
        for (uint64_t c = 0; c < 3; ++c) {
            Sock s{.cookie = 1'000'000ull * static_cast<uint64_t>(i + 1) + c, .netns = netns, .rport = static_cast<uint16_t>(40000 + c)};
            kernel.queue.push_back(accepted(s, clock_ns));
            kernel.queue.push_back(idle_fin(s, clock_ns + ms(600), 6000));
            if (c == 0)
                kernel.queue.push_back(
                    reset_sent(s, clock_ns + ms(602), "TCP_ABORT_ON_DATA", SockKind::full, TcpState::close, true));
        }
        kernel.open = {state(Sock{.cookie = 7, .netns = netns}, clock_ns, TcpState::established,
                             TcpState::established)};
        kernel.open.back().type = EventType::existing;
        session.pump(0);
        clock_ns += sec(1);
        session.pump(0);  // a tick: names drained, state expired, live connections sampled
        WorkloadResolver& resolver = *session.resolver();
        CHECK_FALSE(resolver.has_changes());  // drained every tick, whether a sink writes them or not
        auto table = resolver.table();
        peak_names = std::max(peak_names, table->netns_entries().size() + table->cgroup_entries().size());
        peak_live = std::max(peak_live, session.correlator().counts().live_connections);
        if (i % 100 == 99) peak_backends = std::max(peak_backends, session.correlator().backends().size());
    }
    INFO("peak names " << peak_names << ", live connections " << peak_live << ", backends " << peak_backends);
    // Names: the pods alive now plus at most max_departed that went away (late events still name them).
    CHECK(peak_names <= 2 * (kLifetimeS + 2) + 256 + 2 * kLifetimeS);
    CHECK(peak_live <= 1024);
    CHECK(peak_backends <= 512 + 1);  // past the bound, one overflow backend
    CHECK(session.counts().kept == session.counts().received);
    CHECK(session.correlator().counts().resets[static_cast<size_t>(FindingKind::idle_close_race)] == kPods);
}

TEST_CASE("session: names reach the sinks ahead of the events that need them, and filters apply") {
    FakeHost host;
    host.process(2, 4026531840, "/", "kthreadd");
    const uint32_t pod_netns = 4026550001;
    host.process(300, pod_netns, "/user.slice/x.scope", "node");
    auto source = std::make_unique<QueuedSource>();
    QueuedSource& kernel = *source;
    ResolverOptions resolver_options;
    resolver_options.host_root = host.root.string();
    uint64_t clock_ns = sec(1);
    SessionOptions options;
    options.clock = [&] { return clock_ns; };
    options.filter.netns = pod_netns;
    Session session(std::move(source), std::make_unique<WorkloadResolver>(resolver_options), std::move(options));
    Names sink;
    session.add_sink(sink);
    Sock pod{.netns = pod_netns};
    Sock elsewhere{.cookie = 2, .netns = 4026531840};
    kernel.open = {state(pod, 0, TcpState::established, TcpState::established)};
    kernel.open.back().type = EventType::existing;
    session.start();
    CHECK(sink.names > 0);     // before the first event
    CHECK(sink.events == 1);   // the open socket, as an existing event
    kernel.queue = {accepted(elsewhere, clock_ns), idle_fin(pod, clock_ns, 6000)};
    session.pump(0);
    CHECK(sink.events == 2);   // the other namespace's event was filtered out
    CHECK(session.counts().filtered == 1);
    CHECK(session.counts().by_type[static_cast<size_t>(EventType::existing)] == 1);
}

TEST_CASE("session: a received reset is settled once its abort window passes, not at the next second's tick") {
    // The LB's side of the race (tests/monitoring saw it up to 1.1 s late in Prometheus): its
    // socket had the pod's FIN, sent its request anyway and got the pod's reset.
    auto source = std::make_unique<QueuedSource>();
    QueuedSource& kernel = *source;
    uint64_t clock_ns = sec(1);
    SessionOptions options;
    options.clock = [&] { return clock_ns; };
    Session session(std::move(source), nullptr, std::move(options));
    session.start();  // ticks at 1 s; the next tick is due at 2 s
    auto peer_resets = [&] {
        size_t n = 0;
        for (const auto& f : session.correlator().findings()) n += f.kind == FindingKind::peer_reset ? f.count : 0;
        return n;
    };
    Sock lb{.cookie = 77, .laddr = "130.211.0.143", .lport = 51068, .raddr = "10.56.5.6", .rport = 8080};
    Event fin = peer_fin(lb, sec(1) + ms(10), 2500, 2500, 153, 53);
    fin.direction = Direction::outbound;
    Event reset = reset_recv(lb, sec(1) + ms(11), TcpState::close_wait);
    reset.direction = Direction::outbound;
    kernel.queue = {fin, reset};
    clock_ns = sec(1) + ms(11);
    session.pump(0);
    CHECK(peer_resets() == 0);  // it may still turn out to be our own abort's echo
    clock_ns = sec(1) + ms(140);  // past the 100 ms window, long before the next tick
    session.pump(0);
    CHECK(peer_resets() == 1);
}
