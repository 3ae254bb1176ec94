#include "tcpwhy/correlator.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

#include "tcpwhy/addr.h"
#include "causes.h"
#include "address_pool.h"
#include "classify.h"
#include "conn_table.h"
#include "tuple_index.h"

namespace tcpwhy {
namespace {

constexpr uint16_t kOverflowBackendPort = 0;
constexpr size_t kMaxOptChangesPerBackend = 16;
constexpr size_t kMaxUnattributedOptChanges = 256;
constexpr uint64_t kEndedGraceNs = 2'000'000'000;  // late events of a connection that ended without TIME_WAIT
constexpr uint8_t kLbRangeUnknown = UINT8_MAX;     // an LB peer in range index >= 255
constexpr size_t kMaxWatchedRecords = 1000;        // watch_peer(): a port reused that often is enough

// Everything the correlator keeps per connection while it lives: fixed-size, no heap (strings,
// evidence, exist only for reset connections). Held by the hundred thousand, so packed: an
// IPv4 address in place and an IPv6 one as an index into Impl::ipv6 (laddr_of(), raddr_of()),
// flags in bits, and the two timestamps only a reset needs beside it (Impl::reset_timing).
struct LiveConn {
    uint64_t cookie = 0;  // the table's key; 0 marks a free slot
    uint64_t first_ts_ns = 0, last_ts_ns = 0, close_ts_ns = 0, end_ts_ns = 0;
    uint64_t bytes_rx = 0, bytes_tx = 0;
    uint32_t laddr = 0, raddr = 0;  // by laddr_family/raddr_family: 4: the address; 6: an AddressPool index
    uint32_t netns = 0;
    uint32_t backend = 0;  // index into Impl::backends
    uint32_t idle_gap_ms = 0, unread_at_close = 0;
    uint32_t peer_fin_idle_ms = 0;  // quiet before the peer's FIN, when it closed an idle connection
    uint16_t lport = 0, rport = 0;
    uint8_t laddr_family = 0, raddr_family = 0;  // IpAddr::family: 0 (none), 4 or 6
    TcpState state = TcpState::unknown;
    TcpState state_at_peer_reset = TcpState::unknown;
    TcpState close_from_state = TcpState::unknown;
    OpenKind opened = OpenKind::unknown;
    FirstClose first_close = FirstClose::unknown;
    EndKind end = EndKind::open;
    FindingKind reset_kind = FindingKind::other;
    uint8_t lb_range = 0;  // 1 + index of the LB range holding raddr; 0: none matched
    bool lb_peer : 1 = false;
    bool local_close_seen : 1 = false;
    bool idle_close : 1 = false;
    bool aborted : 1 = false;
    bool reset_counted : 1 = false;  // one reset verdict per connection
    bool ended : 1 = false;
    bool has_reset_timing : 1 = false;  // an entry in Impl::reset_timing
    bool open_tallied : 1 = false;  // its open was in a tally: it counts in the backend's tallied live count
    uint8_t cause_bits = 0;  // kClosedByExit, kClosedWhileDraining, kLbGaveUp, kPeerClosedIdle
};
// LiveConn::cause_bits: what the connection's close had to do with its backend's life.
constexpr uint8_t kClosedByExit = 1 << 0;         // closed by its process's exit
constexpr uint8_t kClosedWhileDraining = 1 << 1;  // closed after a stopping signal or the listener's close
constexpr uint8_t kLbGaveUp = 1 << 2;             // the LB closed it with a request unanswered
constexpr uint8_t kPeerClosedIdle = 1 << 3;       // the (upstream) peer closed it as idle
// The budget is 128 B per live connection, the table's index (at most 11 B: 4-byte entries, at
// least 3/8 full) included: bench/replay_bench's "memory" rows and bench/ingest.py measure it.
static_assert(sizeof(LiveConn) <= 112, "live state per connection: 128 B with the table, see bench/README.md");

// When a reset received is ours and when our abort-on-data reset was sent: kept only for
// connections that had either.
struct ResetTiming {
    uint64_t pending_peer_reset_ts_ns = 0;  // a reset_recv waiting to be told apart from our own abort
    uint64_t local_abort_ts_ns = 0;         // when we reset it on data after our FIN
};

struct BackendKey {
    uint32_t netns = 0;
    uint16_t port = 0;
    bool outbound = false;
    IpAddr laddr;  // zero unless split_backends_by_laddr
    bool operator==(const BackendKey&) const = default;
};

struct BackendKeyHash {
    size_t operator()(const BackendKey& k) const {
        uint64_t h = (uint64_t{k.netns} << 17) ^ (uint64_t{k.port} << 1) ^ uint64_t { k.outbound };
        for (auto b : k.laddr.bytes) h = h * 1099511628211ull ^ b;
        return std::hash<uint64_t>{}(h);
    }
};

struct ResetTally {
    uint64_t lb = 0, other = 0;
    uint64_t first_ts_ns = 0, last_ts_ns = 0;
    uint8_t last_lb_range = 0;
    std::optional<ResetEvidence> last_evidence;
    std::deque<ConnectionRecord> recent;  // newest at the back, bounded
};

struct Backend {
    BackendId id;
    std::string comm;
    uint32_t pid = 0;
    uint64_t cgroup_id = 0;  // the owner's, for naming backends in a shared (host) namespace
    uint64_t connections_lb = 0, connections_other = 0, live = 0;
    uint64_t closed_local_first = 0, closed_remote_first = 0, aborted_local = 0;
    DurationHistogram idle_closes;   // closes judged idle: the profile findings quote
    DurationHistogram local_closes;  // every local close of an open connection: base of the relative idle bar
    std::array<ResetTally, kFindingKindCount> resets;
    SockOpts opts;
    std::deque<SockOptChange> opt_changes;
    uint32_t listeners_open = 0;  // listening sockets on the port now
    uint32_t listener_pid = 0;    // who last put one into LISTEN
    uint32_t backlog = 0;         // its backlog in force
    // Open connections the kernel tallied, by peer: opened - ended, signed because a tally can
    // arrive after the individual end of a connection it counted (reported at 0 or more).
    int64_t tally_live_lb = 0, tally_live_other = 0;
    std::unique_ptr<correlator::BackendCauses> causes;  // rollouts, crashes, queues, timeouts: when one applies

    correlator::BackendCauses& causes_of() {
        if (!causes) causes = std::make_unique<correlator::BackendCauses>();
        return *causes;
    }
};

// A setsockopt on a socket the correlator cannot place yet (no cookie, e.g.
// before connect), kept per process so findings can still link it.
struct UnattributedChange {
    uint32_t netns = 0;
    SockOptChange change;
};

OpenKind opened_by(const Event& e) {
    if (e.type != EventType::state) return OpenKind::unknown;
    if (e.old_state == TcpState::syn_sent || e.new_state == TcpState::syn_sent) return OpenKind::connected;
    // A child socket's first state change is LISTEN -> SYN_RECV (kernel 6.18), then
    // SYN_RECV -> ESTABLISHED.
    if (e.old_state == TcpState::listen || e.old_state == TcpState::syn_recv || e.old_state == TcpState::new_syn_recv)
        return OpenKind::accepted;
    return OpenKind::unknown;
}

// The listening socket itself: it starts or stops listening. (A child socket's
// LISTEN -> SYN_RECV is a connection, not a listener.)
bool is_listener_event(const Event& e) {
    return (e.type == EventType::state || e.type == EventType::existing) &&
           (e.new_state == TcpState::listen || (e.old_state == TcpState::listen && e.new_state == TcpState::close));
}

uint64_t listener_key(uint32_t netns, uint16_t port) { return (uint64_t{netns} << 16) | port; }

// A connection by its four-tuple in its namespace: the words mixed by multiply-xorshift
// (computed for every close; a byte-at-a-time hash was 4% of trace's CPU).
uint64_t mix64(uint64_t h, uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 31);
}

uint64_t tuple_key(uint32_t netns, const IpAddr& laddr, uint16_t lport, const IpAddr& raddr, uint16_t rport) {
    uint64_t words[4];
    std::memcpy(&words[0], laddr.bytes.data(), 16);
    std::memcpy(&words[2], raddr.bytes.data(), 16);
    uint64_t h = mix64(0, (uint64_t{netns} << 32) | (uint64_t{lport} << 16) | rport);
    for (uint64_t w : words) h = mix64(h, w);
    return h;
}

uint64_t abs_diff(uint64_t a, uint64_t b) { return a > b ? a - b : b - a; }

IdleStats idle_stats_of(const DurationHistogram& h) {
    return {h.count(), h.percentile(0.5), h.percentile(0.9), h.max(), h.exact()};
}

void push_bounded(auto& ring, auto&& item, size_t bound) {
    ring.push_back(std::forward<decltype(item)>(item));
    while (ring.size() > bound) ring.pop_front();
}

}  // namespace

struct Correlator::Impl {
    CorrelatorConfig config;
    correlator::CookieTable<LiveConn> conns;  // by socket cookie; elements stay put
    correlator::AddressPool ipv6;             // the IPv6 addresses of conns
    std::unordered_map<uint64_t, ResetTiming> reset_timing;  // by cookie: conns with has_reset_timing
    std::deque<Backend> backends;             // stable addresses; indices in LiveConn
    std::unordered_map<BackendKey, uint32_t, BackendKeyHash> backend_index;
    std::optional<uint32_t> overflow_backend;
    std::unordered_set<uint64_t> listening_ports;              // listener_key(netns, port)
    std::unordered_map<uint64_t, uint32_t> listener_backends;  // listener cookie -> backend
    // Connections closed locally or reset, by four-tuple: a reset the listener or the
    // stack sends later for the same tuple (the peer's segments still in flight) belongs to them.
    correlator::TupleIndex closed_by_tuple;
    // Time-driven work in time order, so expire() and eviction touch only what is due instead
    // of every connection: (time, cookie). An entry can be stale (its connection dropped or
    // moved on): it is checked before use.
    std::deque<std::pair<uint64_t, uint64_t>> ended_queue;     // ended connections, by end time
    std::deque<std::pair<uint64_t, uint64_t>> retained_queue;  // of those, kept for TIME_WAIT resets
    std::deque<std::pair<uint64_t, uint64_t>> settle_queue;    // pending peer resets, by arrival
    uint64_t next_stale_scan_ns = 0;  // no open connection can be stale before this
    std::shared_ptr<const WorkloadTable> workloads;
    std::shared_ptr<const ServerTable> servers;
    std::deque<UnattributedChange> unattributed_changes;
    correlator::SignalLog signals;  // stopping signals to processes that listen
    std::optional<std::pair<IpAddr, uint16_t>> watched_peer;
    std::vector<ConnectionRecord> watched_records;
    CorrelatorCounts counts;
    bool opens_tallied = false;  // the events come with tallies (CorrelatorConfig::opens_tallied, a trace's header)

    struct Announcement {
        uint64_t count = 0;
        uint64_t ts_ns = 0;
    };
    std::unordered_map<uint64_t, Announcement> announced;  // (backend << 8 | finding kind)

    explicit Impl(CorrelatorConfig c) : config(std::move(c)), opens_tallied(config.opens_tallied) {
        config.max_live_connections = std::min(config.max_live_connections, decltype(conns)::kMaxSize - 1);
    }

    // ---- a connection's addresses ----

    IpAddr address_of(uint32_t value, uint8_t family) const {
        IpAddr a;
        a.family = family;
        if (family == 4) std::memcpy(a.bytes.data(), &value, 4);
        else if (family != 0) a.bytes = ipv6.at(value);
        return a;
    }
    IpAddr laddr_of(const LiveConn& c) const { return address_of(c.laddr, c.laddr_family); }
    IpAddr raddr_of(const LiveConn& c) const { return address_of(c.raddr, c.raddr_family); }

    void hold_address(uint32_t& value, uint8_t& family, const IpAddr& a) {
        release_address(value, family);
        family = a.family;
        if (family == 4) std::memcpy(&value, a.bytes.data(), 4);
        else if (family != 0) value = ipv6.hold(a.bytes);
    }
    void release_address(uint32_t& value, uint8_t& family) {
        if (family != 0 && family != 4) ipv6.release(value);
        value = 0;
        family = 0;
    }

    uint64_t tuple_key_of(const LiveConn& c) const {
        return tuple_key(c.netns, laddr_of(c), c.lport, raddr_of(c), c.rport);
    }

    // ---- reset timing, beside the connection ----

    ResetTiming* timing_of(const LiveConn& c) {
        return c.has_reset_timing ? &reset_timing.find(c.cookie)->second : nullptr;
    }
    ResetTiming& timing_for(LiveConn& c) {
        c.has_reset_timing = true;
        return reset_timing[c.cookie];
    }

    // ---- peers and backends ----

    uint8_t lb_range_of(const IpAddr& peer) const {
        const Cidr* range = config.lb_ranges.match(peer);
        if (!range) return 0;
        auto index = static_cast<size_t>(range - config.lb_ranges.ranges().data());
        return index + 1 < kLbRangeUnknown ? static_cast<uint8_t>(index + 1) : kLbRangeUnknown;
    }


    std::string lb_range_text(uint8_t range) const {
        const auto& ranges = config.lb_ranges.ranges();
        if (range && range != kLbRangeUnknown && range <= ranges.size()) return ranges[range - 1].to_string();
        if (range == kLbRangeUnknown) return config.lb_ranges.to_string();
        return config.lb_any_non_loopback_peer ? "any" : "";
    }

    bool is_outbound(OpenKind opened, const Event& e) const {
        if (opened != OpenKind::unknown) return opened == OpenKind::connected;
        // First met after its open (opened before tracing began, or its open tallied): the
        // kernel's listener mirror decides when it was asked, as it did for the tallies; then a
        // known listener; otherwise the higher port is taken to be the ephemeral one.
        if (e.direction != Direction::unknown) return e.direction == Direction::outbound;
        if (listening_ports.contains(listener_key(e.netns, e.lport))) return false;
        return e.lport > e.rport;
    }

    // The one rule that keys backends: inbound by the local (listening) port, outbound by the
    // remote service port.
    BackendKey key_of(const Event& e, OpenKind opened) const {
        bool outbound = is_outbound(opened, e);
        return BackendKey{e.netns, outbound ? e.rport : e.lport, outbound,
                          config.split_backends_by_laddr ? e.laddr : IpAddr{}};
    }

    uint32_t backend_for(uint32_t netns, uint16_t service_port, bool outbound, const IpAddr& laddr) {
        BackendKey key{netns, service_port, outbound, config.split_backends_by_laddr ? laddr : IpAddr{}};
        if (auto it = backend_index.find(key); it != backend_index.end()) return it->second;
        if (backends.size() >= config.max_backends) {
            ++counts.backends_overflowed;
            if (!overflow_backend) overflow_backend = add_backend(BackendKey{0, kOverflowBackendPort, false, {}});
            return *overflow_backend;
        }
        uint32_t index = add_backend(key);
        backend_index.emplace(key, index);
        return index;
    }

    uint32_t add_backend(const BackendKey& key) {
        Backend& b = backends.emplace_back();
        b.id = BackendId{key.netns, key.port, key.outbound, key.laddr, {}};
        return static_cast<uint32_t>(backends.size() - 1);
    }

    void note_owner(Backend& b, const Event& e) {
        // Events outside the owner's context (softirq, timers) carry the socket's cgroup only.
        if (e.pid == 0) {
            if (e.cgroup_id && !b.cgroup_id) b.cgroup_id = e.cgroup_id;
            return;
        }
        b.pid = e.pid;
        if (e.cgroup_id) b.cgroup_id = e.cgroup_id;
        if (b.comm != e.comm) b.comm = e.comm;
    }

    void note_opts_in_force(Backend& b, const SockOpts& opts) {
        if (opts.set_mask == 0) return;
        for (int i = 0; i < kSockOptCount; ++i) {
            auto opt = static_cast<SockOpt>(i);
            if (opts.has(opt)) b.opts.set(opt, opts.value(opt));
        }
    }

    // ---- connections ----

    LiveConn& connection_for(uint64_t cookie, const Event& e) {
        auto [element, inserted] = conns.try_emplace(cookie);
        LiveConn& c = *element;
        if (!inserted) {
            fill_missing_addresses(c, e);
            return c;
        }
        ++counts.connections;
        c.open_tallied = opens_tallied && !open_not_tallied(e);
        c.first_ts_ns = e.ts_ns;
        c.netns = e.netns;
        hold_address(c.laddr, c.laddr_family, e.laddr);
        hold_address(c.raddr, c.raddr_family, e.raddr);
        c.lport = e.lport;
        c.rport = e.rport;
        c.opened = opened_by(e);
        c.lb_range = lb_range_of(e.raddr);
        c.lb_peer = config.is_lb_peer(e.raddr);
        BackendKey key = key_of(e, c.opened);
        c.backend = backend_for(key.netns, key.port, key.outbound, e.laddr);
        // tallied: it reached ESTABLISHED while traced, the way its backend says (not when)
        if (c.open_tallied && c.opened == OpenKind::unknown)
            c.opened = key.outbound ? OpenKind::connected : OpenKind::accepted;
        Backend& b = backends[c.backend];
        if (!key.outbound && e.laddr.family) b.id.laddr = e.laddr;
        if (!c.open_tallied) {
            ++(c.lb_peer ? b.connections_lb : b.connections_other);
            ++b.live;
        }
        // Elements stay put while others are added or erased: c is still c after eviction.
        if (conns.size() > config.max_live_connections) evict_least_recent(cookie);
        return c;
    }

    // SO_LINGER {1,0} zeroes the remote port before some events: keep what we knew. And
    // connect() changes the state to SYN_SENT before it picks the local port: take it
    // from the events that follow.
    void fill_missing_addresses(LiveConn& c, const Event& e) {
        if (c.rport == 0 && e.rport != 0) c.rport = e.rport;
        if (c.raddr_family == 0 && e.raddr.family != 0) hold_address(c.raddr, c.raddr_family, e.raddr);
        if (c.lport == 0 && e.lport != 0) c.lport = e.lport;
        if (c.laddr_family == 0 && e.laddr.family != 0) hold_address(c.laddr, c.laddr_family, e.laddr);
    }

    void mark_ended(uint64_t cookie, LiveConn& c, uint64_t ts_ns) {
        if (c.ended) return;
        c.ended = true;
        c.end_ts_ns = ts_ns;
        ended_queue.emplace_back(ts_ns, cookie);
        if (c.end == EndKind::open) c.end = EndKind::orderly;
        end_live(c);
    }

    void end_live(const LiveConn& c) {
        Backend& b = backends[c.backend];
        if (!c.open_tallied) --b.live;
        else --(c.lb_peer ? b.tally_live_lb : b.tally_live_other);
    }

    // In tally mode every connection's open is tallied but those that never reached ESTABLISHED
    // (a failed connect, a handshake reset), those the kernel could not tally (sent as the
    // transition to ESTABLISHED) and those open before tracing began.
    static bool open_not_tallied(const Event& e) {
        if (e.type == EventType::existing) return true;
        if (e.type == EventType::state)
            return e.new_state == TcpState::syn_sent || e.old_state == TcpState::syn_sent ||
                   e.old_state == TcpState::syn_recv || e.old_state == TcpState::listen ||
                   e.old_state == TcpState::new_syn_recv;
        return (e.type == EventType::reset_sent || e.type == EventType::reset_recv) &&
               (e.sk_state == TcpState::syn_sent || e.sk_state == TcpState::syn_recv);
    }

    // A backend's ordinary connections, counted by the kernel (docs/correlator.md, "Tallies").
    void on_tally(const Event& e) {
        const bool outbound = e.direction == Direction::outbound;
        uint32_t index = backend_for(e.netns, outbound ? e.rport : e.lport, outbound, IpAddr{});
        Backend& b = backends[index];
        note_owner(b, e);
        note_opts_in_force(b, e.opts);
        const uint64_t ended = e.tally.closed_local_first + e.tally.closed_remote_first;
        (e.lb ? b.connections_lb : b.connections_other) += e.tally.opened;
        (e.lb ? b.tally_live_lb : b.tally_live_other) +=
            static_cast<int64_t>(e.tally.opened) - static_cast<int64_t>(ended);
        b.closed_local_first += e.tally.closed_local_first;
        b.closed_remote_first += e.tally.closed_remote_first;
        // Every one quieter than any idle bar: the relative bar's base keeps them, at their mean.
        if (uint64_t n = e.tally.closed_local_first)
            b.local_closes.add(static_cast<uint32_t>(std::min<uint64_t>(e.tally.local_idle_ms / n, UINT32_MAX)), n);
    }

    void drop(LiveConn& c) {
        const uint64_t cookie = c.cookie;
        settle_peer_reset(cookie, c);
        if (!c.ended) end_live(c);
        if (c.local_close_seen || c.reset_counted) closed_by_tuple.erase_if(tuple_key_of(c), cookie);
        release_address(c.laddr, c.laddr_family);
        release_address(c.raddr, c.raddr_family);
        if (c.has_reset_timing) reset_timing.erase(cookie);
        conns.erase(cookie);
    }

    // Past the cap, drop the least recently active eighth (amortised: one sort per
    // cap/8 new connections), never the connection being inserted.
    void evict_least_recent(uint64_t keep_cookie) {
        size_t target = config.max_live_connections - config.max_live_connections / 8;
        // Ended connections first, the longest ended first: they are kept only for late resets,
        // while an open one, however idle, can still be the next race.
        for (auto* queue : {&retained_queue, &ended_queue}) {
            while (conns.size() > target && !queue->empty()) {
                prefetch_ahead(*queue);
                auto [end_ts, cookie] = queue->front();
                queue->pop_front();
                LiveConn* c = ended_entry(end_ts, cookie);
                if (!c) continue;
                if (cookie == keep_cookie) {  // the caller holds it: leave it queued
                    queue->emplace_front(end_ts, cookie);
                    break;
                }
                drop(*c);
                ++counts.evicted_over_cap;
            }
        }
        if (conns.size() <= target) return;
        std::vector<std::pair<uint64_t, uint64_t>> by_age;  // (last_ts, cookie)
        by_age.reserve(conns.size());
        conns.for_each([&](const LiveConn& c) {
            if (c.cookie != keep_cookie) by_age.emplace_back(std::max(c.last_ts_ns, c.first_ts_ns), c.cookie);
        });
        size_t excess = conns.size() > target ? conns.size() - target : 0;
        excess = std::min(excess, by_age.size());
        std::nth_element(by_age.begin(), by_age.begin() + static_cast<std::ptrdiff_t>(excess), by_age.end());
        for (size_t i = 0; i < excess; ++i) {
            drop(*conns.find(by_age[i].second));
            ++counts.evicted_over_cap;
        }
    }

    ConnectionRecord record_of(uint64_t cookie, const LiveConn& c) const {
        ConnectionRecord r;
        r.cookie = cookie;
        r.netns = c.netns;
        r.laddr = laddr_of(c);
        r.raddr = raddr_of(c);
        r.lport = c.lport;
        r.rport = c.rport;
        r.lb_peer = c.lb_peer;
        r.opened = c.opened;
        r.open_counted = c.open_tallied;
        r.first_close = c.first_close;
        r.end = c.end;
        r.aborted = c.aborted;
        r.first_ts_ns = c.first_ts_ns;
        r.close_ts_ns = c.close_ts_ns;
        r.end_ts_ns = c.end_ts_ns;
        r.last_ts_ns = c.last_ts_ns;
        r.idle_before_close_ms = c.idle_gap_ms;
        r.unread_at_close = c.unread_at_close;
        r.bytes_rx = c.bytes_rx;
        r.bytes_tx = c.bytes_tx;
        if (c.reset_counted) r.reset = c.reset_kind;
        return r;
    }

    // ---- verdicts ----

    void count_reset(uint32_t backend, ConnectionRecord record, classify::Verdict verdict, uint8_t lb_range,
                     uint64_t ts_ns) {
        auto kind = static_cast<size_t>(verdict.kind);
        ++counts.resets[kind];
        ResetTally& tally = backends[backend].resets[kind];
        ++(record.lb_peer ? tally.lb : tally.other);
        if (tally.first_ts_ns == 0) tally.first_ts_ns = ts_ns;
        tally.last_ts_ns = ts_ns;
        if (record.lb_peer) tally.last_lb_range = lb_range;
        tally.last_evidence = verdict.evidence;
        record.reset = verdict.kind;
        record.reset_ts_ns = ts_ns;
        record.evidence = std::move(verdict.evidence);
        record.last_ts_ns = std::max(record.last_ts_ns, ts_ns);  // the reset is its latest event
        if (watched_peer && watched_records.size() < kMaxWatchedRecords &&
            addr::same_endpoint(record.raddr, record.rport, watched_peer->first, watched_peer->second))
            watched_records.push_back(record);
        push_bounded(tally.recent, std::move(record), config.recent_connections_per_kind);
    }

    void settle_peer_reset(uint64_t cookie, LiveConn& c) {
        ResetTiming* timing = timing_of(c);
        if (!timing || timing->pending_peer_reset_ts_ns == 0) return;
        uint64_t ts = timing->pending_peer_reset_ts_ns;
        timing->pending_peer_reset_ts_ns = 0;
        if (c.reset_counted) return;  // we had reset it ourselves
        Event as_received;
        as_received.sk_state = c.state_at_peer_reset;
        auto verdict = classify::classify_reset_received(as_received, c.state_at_peer_reset, c.first_close);
        refine_reset_received(c, verdict);
        c.reset_counted = true;
        c.reset_kind = verdict.kind;
        if (c.end == EndKind::open || c.end == EndKind::orderly) c.end = EndKind::reset_received;
        count_reset(c.backend, record_of(cookie, c), std::move(verdict), c.lb_range, ts);
    }

    void settle_if_due(uint64_t cookie, LiveConn& c, uint64_t now_ns) {
        if (!c.has_reset_timing) return;  // most connections: nothing pending
        if (ResetTiming* t = timing_of(c);
            t->pending_peer_reset_ts_ns && now_ns > t->pending_peer_reset_ts_ns + config.local_abort_window_ns)
            settle_peer_reset(cookie, c);
    }

    // ---- stops, full queues, timeouts (causes.h) ----

    // With a load balancer these kinds are about its peers; without one (--lb none), about every peer.
    bool lb_only() const { return config.lb_idle_timeout_s > 0; }
    bool counts_for_lb(bool lb_peer) const { return lb_peer || !lb_only(); }

    // The stop of b that something at ts belongs to: the latest, while it lasts (the drain window,
    // until the port listens again), of the same process when pid is given.
    correlator::StopEpisode* current_stop(Backend& b, uint64_t ts, uint32_t pid = 0) {
        if (!b.causes || b.causes->stops.empty()) return nullptr;
        correlator::StopEpisode& s = b.causes->stops.back();
        if (s.relisten_ts_ns && ts >= s.relisten_ts_ns) return nullptr;
        if (ts < s.start_ts_ns || ts - s.start_ts_ns > config.drain_window_ns) return nullptr;
        if (pid && s.pid && s.pid != pid) return nullptr;
        return &s;
    }

    // The latest stop whose process exited, while its exit is recent: what a connection its exit
    // closed belongs to, even after the port listens again.
    correlator::StopEpisode* exit_stop(Backend& b, uint64_t ts) {
        if (!b.causes) return nullptr;
        for (auto it = b.causes->stops.rbegin(); it != b.causes->stops.rend(); ++it)
            if (it->by_exit && ts >= it->exit_ts_ns && ts - it->exit_ts_ns <= config.drain_window_ns) return &*it;
        return nullptr;
    }

    correlator::StopEpisode& stop_for(Backend& b, uint64_t ts, uint32_t pid, const std::string& comm) {
        if (auto* s = current_stop(b, ts, pid)) {
            if (!s->pid && pid) s->pid = pid, s->comm = comm;
            return *s;
        }
        auto& causes = b.causes_of();
        correlator::StopEpisode& s = causes.stops.emplace_back();
        if (causes.stops.size() > correlator::BackendCauses::kMaxStops) causes.stops.pop_front();
        s.start_ts_ns = ts;
        s.pid = pid;
        s.comm = comm;
        if (const auto* signal = pid ? signals.stop_before(pid, ts, config.stop_signal_memory_ns) : nullptr) {
            s.signal_ts_ns = signal->ts_ns;
            s.signal = signal->signal;
            s.signal_sender = signal->sender;
        }
        return s;
    }

    bool draining(const Backend& b, uint64_t ts) const {
        uint64_t since = b.causes ? b.causes->draining_since_ns : 0;
        return since && ts >= since && ts - since <= config.drain_window_ns;
    }

    void start_draining(Backend& b, uint64_t ts) {
        auto& causes = b.causes_of();
        if (!draining(b, ts)) causes.draining_since_ns = ts;
    }

    // The first close (or listener close) a dying process made: how it died decides rollout or crash.
    void note_exit(correlator::StopEpisode& s, const Event& e) {
        if (s.by_exit) return;
        s.by_exit = true;
        s.exit_ts_ns = e.ts_ns;
        s.exit_code = e.exit_code;
        s.oom_victim = e.oom_victim;
        if (s.comm.empty()) s.comm = e.comm;
        s.crash = e.oom_victim || (correlator::abnormal_exit(e.exit_code) && !s.signal_ts_ns);
        if (s.signal_ts_ns && !s.kill_ts_ns && exit_signal(e.exit_code) == 9 /* SIGKILL */) {
            const auto* kill = signals.kill_between(s.pid, s.signal_ts_ns, e.ts_ns);
            s.kill_ts_ns = kill ? kill->ts_ns : e.ts_ns;
        }
    }

    void on_signal(const Event& e) {
        signals.add({e.ts_ns, e.pid, e.signal, signals_sender(e)});
        for (Backend& b : backends) {
            if (b.id.outbound || b.id.netns != e.netns || (b.listener_pid != e.pid && b.pid != e.pid)) continue;
            if (e.signal == 9 /* SIGKILL */) {
                if (auto* s = current_stop(b, e.ts_ns, e.pid); s && s->signal_ts_ns && !s->kill_ts_ns) s->kill_ts_ns = e.ts_ns;
                continue;
            }
            correlator::StopEpisode& s = stop_for(b, e.ts_ns, e.pid, e.comm);
            if (!s.signal_ts_ns) {
                s.signal_ts_ns = e.ts_ns;
                s.signal = e.signal;
                s.signal_sender = signals_sender(e);
            }
            start_draining(b, e.ts_ns);
        }
    }

    static std::string signals_sender(const Event& e) {
        return e.sender_comm.empty() ? fmt::format("pid {}", e.sender_pid) : fmt::format("{}[{}]", e.sender_comm, e.sender_pid);
    }

    // The last listener of the port closed: the port refuses connections from now on.
    void stop_listening(Backend& b, const Event& e) {
        correlator::StopEpisode& s = stop_for(b, e.ts_ns, e.pid, e.comm);
        s.listener_close_ts_ns = e.ts_ns;
        if (e.task_exiting) note_exit(s, e);
        start_draining(b, e.ts_ns);
    }

    void on_listen_overflow(const Event& e) {
        auto it = e.cookie ? listener_backends.find(e.cookie) : listener_backends.end();
        uint32_t index = it != listener_backends.end() ? it->second : backend_for(e.netns, e.lport, false, e.laddr);
        Backend& b = backends[index];
        b.causes_of().add_overflow(e.ts_ns, e.overflow_how == OverflowHow::drop, config.is_lb_peer(e.raddr),
                                   e.acceptq_len, e.acceptq_max ? e.acceptq_max : b.backlog);
    }

    // How long a request had waited for a response when the peer closed or reset (0: none waiting).
    static uint32_t request_waited_ms(const Event& e) {
        if (e.bytes_rx == 0) return 0;
        return e.bytes_tx == 0 || e.idle_rx_ms < e.idle_tx_ms ? e.idle_rx_ms : 0;
    }

    void note_gave_up(uint64_t cookie, LiveConn& c, Backend& b, const Event& e, uint32_t waited_ms, bool by_reset) {
        auto& k = b.causes_of();
        c.cause_bits |= kLbGaveUp;
        ++k.gave_up;
        if (by_reset) ++k.gave_up_by_reset;
        if (c.lb_peer) ++k.gave_up_lb;
        k.gave_up_waited.add(waited_ms);
        if (!k.gave_up_first_ts_ns) k.gave_up_first_ts_ns = e.ts_ns;
        k.gave_up_last_ts_ns = e.ts_ns;
        push_bounded(k.gave_up_recent, record_of(cookie, c), correlator::BackendCauses::kMaxRecent);
    }

    // The peer's FIN on an open connection: an LB that gave up on a request, or an upstream closing
    // a connection it let idle (the pod being the client).
    void on_peer_fin(LiveConn& c, Backend& b, const Event& e) {
        if (!b.id.outbound) {
            uint32_t waited = request_waited_ms(e);
            if (counts_for_lb(c.lb_peer) && waited >= config.lb_gave_up_after_ms)
                note_gave_up(e.cookie, c, b, e, waited, false);
            return;
        }
        if (e.bytes_rx == 0 && e.bytes_tx == 0) return;
        // The load balancer's own sockets (traced where it runs on the node): their reset is the
        // backend's keep-alive race, explained on the backend's side; this side stays a peer_reset.
        if (config.lb_ranges.contains(laddr_of(c))) return;
        uint32_t idle = std::min(e.idle_rx_ms, e.idle_tx_ms);
        if (idle < config.idle_threshold_ms) return;
        c.cause_bits |= kPeerClosedIdle;
        c.peer_fin_idle_ms = idle;
        b.causes_of().upstream_idle.add(idle);
    }

    // A close the process's exit made, or one made while the backend drains.
    void note_close_cause(uint64_t cookie, LiveConn& c, Backend& b, const Event& e) {
        if (b.id.outbound) return;
        if (!e.task_exiting) {
            if (draining(b, e.ts_ns)) c.cause_bits |= kClosedWhileDraining;
            return;
        }
        c.cause_bits |= kClosedByExit;
        correlator::StopEpisode& s = stop_for(b, e.ts_ns, e.pid, e.comm);
        note_exit(s, e);
        ++s.exit_closes;
        if (c.lb_peer) ++s.exit_closes_lb;
        if (correlator::request_in_flight(e)) {
            ++s.in_flight;
            if (c.lb_peer) ++s.in_flight_lb;
        }
        if (e.send_queue_bytes) ++s.mid_response;
        if (e.abort) ++s.aborted;
        if (s.crash) push_bounded(b.causes->exit_recent, record_of(cookie, c), correlator::BackendCauses::kMaxRecent);
    }

    // What a reset sent on a connection means once the backend's life is known: the end of a stop
    // (a rollout or a crash) before any rule about the connection alone; a response cut short.
    void refine_reset_sent(const LiveConn& c, Backend& b, const Event& e, classify::Verdict& v) {
        v.evidence.send_queue_bytes = e.send_queue_bytes;
        const Mechanism m = v.evidence.mechanism;
        const bool on_connection = m == Mechanism::data_after_fin || m == Mechanism::unread_at_close ||
                                   m == Mechanism::timewait || m == Mechanism::linger_zero;
        correlator::StopEpisode* stop = nullptr;
        if (c.cause_bits & kClosedByExit) {
            v.evidence.closed_by_exit = true;
            stop = exit_stop(b, e.ts_ns);
        } else if ((c.cause_bits & kClosedWhileDraining) && on_connection) {
            v.evidence.closed_while_draining = true;
            stop = current_stop(b, e.ts_ns);
        }
        if (stop) {
            v.kind = stop->crash ? FindingKind::process_crash : FindingKind::rollout_drain;
            if (!stop->crash || !(e.sk_kind == SockKind::full && !e.has_skb)) {  // its own abort is counted at the close
                ++stop->pooled_resets;
                if (counts_for_lb(c.lb_peer)) ++stop->pooled_resets_lb;
                stop->last_refused_ts_ns = std::max(stop->last_refused_ts_ns, e.ts_ns);
            }
            return;
        }
        bool cut = e.send_queue_bytes > 0 &&
                   (m == Mechanism::unread_at_close || m == Mechanism::linger_zero || m == Mechanism::data_after_fin);
        if (cut && v.kind != FindingKind::idle_close_race) v.kind = FindingKind::response_cut_short;
    }

    // A reset received: the LB giving up on a request, or an upstream's answer to a reused
    // connection it had closed as idle.
    void refine_reset_received(const LiveConn& c, classify::Verdict& v) {
        if (c.cause_bits & kLbGaveUp) {
            v.kind = FindingKind::lb_response_timeout;
        } else if ((c.cause_bits & kPeerClosedIdle) && c.first_close == FirstClose::remote) {
            v.kind = FindingKind::outbound_pool_race;
            v.evidence.peer_idle_ms = c.peer_fin_idle_ms;
        }
    }

    // A SYN refused (or a segment of a forgotten connection reset) while the port does not listen
    // after a stop: the LB did not know yet.
    void refine_stateless_reset(Backend& b, const Event& e, bool lb_peer, classify::Verdict& v) {
        if (v.evidence.mechanism != Mechanism::no_socket || b.id.outbound || b.listeners_open) return;
        correlator::StopEpisode* s = current_stop(b, e.ts_ns);
        if (!s || !s->listener_close_ts_ns || e.ts_ns < s->listener_close_ts_ns) return;
        v.kind = s->crash ? FindingKind::process_crash : FindingKind::rollout_drain;
        bool counted = counts_for_lb(lb_peer);
        if (e.syn) {
            ++s->refused;
            if (counted) ++s->refused_lb;
        } else {
            ++s->pooled_resets;
            if (counted) ++s->pooled_resets_lb;
        }
        s->last_refused_ts_ns = std::max(s->last_refused_ts_ns, e.ts_ns);
    }

    // ---- event handlers ----

    void on_state(LiveConn& c, const Event& e) {
        if (c.opened == OpenKind::unknown) c.opened = opened_by(e);
        c.state = e.new_state;
        Backend& b = backends[c.backend];
        if (c.first_close == FirstClose::unknown) {
            if (e.old_state == TcpState::established && e.new_state == TcpState::close_wait) {
                c.first_close = FirstClose::remote;
                ++b.closed_remote_first;
                on_peer_fin(c, b, e);
            } else if (e.old_state == TcpState::established && e.new_state == TcpState::fin_wait1) {
                c.first_close = FirstClose::local;
                ++b.closed_local_first;
            }
        }
        // The kernel does not send the end of a connection the local side closed with a FIN
        // (FIN_WAIT2->CLOSE, LAST_ACK->CLOSE): our FIN is its end here.
        if (e.new_state == TcpState::close || e.new_state == TcpState::fin_wait1 ||
            e.new_state == TcpState::last_ack)
            mark_ended(e.cookie, c, e.ts_ns);
    }

    void on_close(LiveConn& c, const Event& e) {
        Backend& b = backends[c.backend];
        note_close_cause(e.cookie, c, b, e);
        c.local_close_seen = true;
        c.close_ts_ns = e.ts_ns;
        c.close_from_state = e.old_state;
        c.aborted = e.abort;
        c.unread_at_close = e.unread_bytes;
        c.bytes_rx = e.bytes_rx;
        c.bytes_tx = e.bytes_tx;
        c.idle_gap_ms = classify::idle_gap_ms(e);
        if (e.abort) ++b.aborted_local;
        if (c.first_close == FirstClose::unknown) {
            c.first_close = e.old_state == TcpState::close_wait ? FirstClose::remote : FirstClose::local;
            ++(c.first_close == FirstClose::local ? b.closed_local_first : b.closed_remote_first);
        }
        // Only a close of an open connection can be the backend's idle timeout; after
        // the peer's FIN the peer was the one that gave up. A process exiting or stopping
        // closes connections whatever their idle time: those say nothing of its timeout.
        if (e.old_state == TcpState::established && !(c.cause_bits & (kClosedByExit | kClosedWhileDraining))) {
            uint32_t bar = classify::idle_bar_ms(config.idle_threshold_ms, b.local_closes);
            c.idle_close = c.idle_gap_ms >= bar;
            b.local_closes.add(c.idle_gap_ms);
            if (c.idle_close) b.idle_closes.add(c.idle_gap_ms);
        }
        c.state = e.new_state;
        mark_ended(e.cookie, c, e.ts_ns);  // FIN or abort: what follows is the kernel's, not the application's
    }

    classify::CloseFacts close_facts(const LiveConn& c) const {
        return {c.local_close_seen, c.idle_close,       c.aborted,    c.idle_gap_ms,
                c.unread_at_close,  c.close_from_state, c.close_ts_ns};
    }

    void on_reset_sent(uint64_t cookie, LiveConn& c, const Event& e) {
        if (classify::is_abort_on_data(e)) {
            ResetTiming& timing = timing_for(c);
            timing.local_abort_ts_ns = e.ts_ns;
            if (timing.pending_peer_reset_ts_ns &&
                abs_diff(timing.pending_peer_reset_ts_ns, e.ts_ns) <= config.local_abort_window_ns) {
                timing.pending_peer_reset_ts_ns = 0;
                ++counts.local_reset_recv;
            }
        }
        if (c.reset_counted) return;  // a retransmitted segment earns another RST: one verdict per connection
        Backend& b = backends[c.backend];
        uint32_t bar = classify::idle_bar_ms(config.idle_threshold_ms, b.local_closes);
        auto verdict = classify::classify_reset_sent(e, close_facts(c), bar);
        refine_reset_sent(c, b, e, verdict);
        c.reset_counted = true;
        c.reset_kind = verdict.kind;
        c.end = EndKind::reset_sent;
        ConnectionRecord record = record_of(cookie, c);
        record.reset_reason = e.reason;
        count_reset(c.backend, std::move(record), std::move(verdict), c.lb_range, e.ts_ns);
    }

    void on_reset_recv(LiveConn& c, const Event& e) {
        ResetTiming* timing = timing_of(c);
        if (timing && timing->local_abort_ts_ns &&
            abs_diff(timing->local_abort_ts_ns, e.ts_ns) <= config.local_abort_window_ns) {
            ++counts.local_reset_recv;
            return;
        }
        if ((timing && timing->pending_peer_reset_ts_ns) || c.reset_counted) return;
        Backend& b = backends[c.backend];
        uint32_t waited = request_waited_ms(e);
        if (!b.id.outbound && !(c.cause_bits & kLbGaveUp) && counts_for_lb(c.lb_peer) &&
            waited >= config.lb_gave_up_after_ms && c.first_close == FirstClose::unknown)
            note_gave_up(e.cookie, c, b, e, waited, true);
        timing_for(c).pending_peer_reset_ts_ns = e.ts_ns;
        settle_queue.emplace_back(e.ts_ns, e.cookie);
        c.state_at_peer_reset = e.sk_state != TcpState::unknown ? e.sk_state : c.state;
    }

    // A reset sent for a segment with no socket at all, or by the listening socket answering
    // a segment for a connection it no longer has.
    bool is_segment_reset(const Event& e) const {
        return e.type == EventType::reset_sent &&
               (e.cookie == 0 || e.sk_kind == SockKind::none || e.sk_state == TcpState::listen ||
                listener_backends.count(e.cookie));
    }

    // The connection this host just closed or reset on the segment's tuple, if any.
    const LiveConn* closed_connection_of(const Event& e) const {
        if (!e.rport) return nullptr;  // only connections with a peer port are indexed
        auto cookie = closed_by_tuple.get(tuple_key(e.netns, e.laddr, e.lport, e.raddr, e.rport));
        return cookie ? conns.find(*cookie) : nullptr;
    }

    // A segment reset whose tuple belongs to a connection this host just closed or reset is
    // that connection's reset (or the tail of one already counted: the peer's segments that
    // were in flight), not a new one.
    bool attach_segment_reset(const Event& e) {
        const LiveConn* found = closed_connection_of(e);
        if (!found) return false;
        LiveConn& c = *conns.find(found->cookie);
        if (c.reset_counted) {
            ++counts.follow_up_resets;
            return true;
        }
        c.last_ts_ns = std::max(c.last_ts_ns, e.ts_ns);
        on_reset_sent(c.cookie, c, e);
        return true;
    }

    // A reset with no socket behind it: nothing to look up, classify from the segment.
    void on_stateless_reset(const Event& e) {
        if (attach_segment_reset(e)) return;
        uint8_t range = lb_range_of(e.raddr);
        BackendKey key = key_of(e, OpenKind::unknown);
        uint32_t backend = backend_for(key.netns, key.port, key.outbound, e.laddr);
        ConnectionRecord record;
        record.netns = e.netns;
        record.laddr = e.laddr;
        record.raddr = e.raddr;
        record.lport = e.lport;
        record.rport = e.rport;
        record.lb_peer = config.is_lb_peer(e.raddr);
        record.first_ts_ns = record.last_ts_ns = record.end_ts_ns = e.ts_ns;
        record.end = EndKind::reset_sent;
        record.reset_reason = e.reason;
        auto verdict = classify::classify_reset_sent(e, {}, config.idle_threshold_ms);
        refine_stateless_reset(backends[backend], e, record.lb_peer, verdict);
        count_reset(backend, std::move(record), std::move(verdict), range, e.ts_ns);
    }

    void on_listener(const Event& e) {
        uint64_t key = listener_key(e.netns, e.lport);
        uint32_t backend = backend_for(e.netns, e.lport, false, e.laddr);
        Backend& b = backends[backend];
        note_owner(b, e);
        if (e.new_state == TcpState::listen) {
            listening_ports.insert(key);
            bool added = !e.cookie || listener_backends.insert_or_assign(e.cookie, backend).second;
            if (added) ++b.listeners_open;
            if (e.acceptq_max) b.backlog = e.acceptq_max;
            if (e.pid) b.listener_pid = e.pid;
            // Listening again ends the stop: later refusals are something else.
            if (b.causes) {
                b.causes->draining_since_ns = 0;
                auto& stops = b.causes->stops;
                if (!stops.empty() && !stops.back().relisten_ts_ns && e.ts_ns >= stops.back().start_ts_ns)
                    stops.back().relisten_ts_ns = e.ts_ns;
            }
        } else {
            bool known = e.cookie && listener_backends.erase(e.cookie);
            if (known && b.listeners_open) --b.listeners_open;
            if (b.listeners_open == 0 && e.type == EventType::state) stop_listening(b, e);
        }
    }

    std::optional<uint32_t> backend_of_cookie(uint64_t cookie) const {
        if (cookie == 0) return std::nullopt;
        if (const LiveConn* c = conns.find(cookie)) return c->backend;
        if (auto it = listener_backends.find(cookie); it != listener_backends.end()) return it->second;
        return std::nullopt;
    }

    void on_setsockopt(const Event& e) {
        const SockOpt opt = e.opt;
        // SockOpts keeps linger as seconds-or-off; the event has {onoff, seconds}.
        int64_t value = opt == SockOpt::so_linger ? (e.value ? e.value2 : -1) : e.value;
        SockOptChange change{e.ts_ns, e.pid, e.comm, opt, e.value, e.value2, std::nullopt};
        if (auto backend = backend_of_cookie(e.cookie)) {
            Backend& b = backends[*backend];
            note_owner(b, e);
            if (b.opts.has(opt)) {
                if (b.opts.value(opt) == value) return;  // not a change
                change.previous = b.opts.value(opt);
            }
            b.opts.set(opt, value);
            push_bounded(b.opt_changes, std::move(change), kMaxOptChangesPerBackend);
            return;
        }
        // Most recent same option by the same process: skip repeats (a client sets
        // the same options on every socket).
        for (auto it = unattributed_changes.rbegin(); it != unattributed_changes.rend(); ++it) {
            if (it->change.pid != e.pid || it->change.opt != opt) continue;
            if (it->change.value == e.value && it->change.value2 == e.value2) return;
            change.previous = it->change.value;
            break;
        }
        push_bounded(unattributed_changes, UnattributedChange{e.netns, std::move(change)}, kMaxUnattributedOptChanges);
    }

    void on_event(const Event& e) {
        ++counts.events;
        ++counts.events_by_type[std::min<size_t>(static_cast<size_t>(e.type), counts.events_by_type.size() - 1)];
        if (e.type == EventType::setsockopt) return on_setsockopt(e);
        if (e.type == EventType::signal) return on_signal(e);
        if (e.type == EventType::listen_overflow) return on_listen_overflow(e);
        if (e.type == EventType::tally) return on_tally(e);
        if (is_listener_event(e)) return on_listener(e);
        // A child's LISTEN->SYN_RECV that still carries its listener's cookie (6.1 clones it first).
        if (e.type == EventType::state && e.old_state == TcpState::listen && listener_backends.count(e.cookie)) {
            ++counts.ignored_events;
            return;
        }
        if (is_segment_reset(e)) return on_stateless_reset(e);
        if (e.cookie == 0) {
            ++counts.ignored_events;
            return;
        }

        LiveConn& c = connection_for(e.cookie, e);
        settle_if_due(e.cookie, c, e.ts_ns);
        c.last_ts_ns = std::max(c.last_ts_ns, e.ts_ns);
        Backend& b = backends[c.backend];
        note_owner(b, e);
        note_opts_in_force(b, e.opts);
        switch (e.type) {
        case EventType::state: on_state(c, e); break;
        case EventType::close: on_close(c, e); break;
        case EventType::reset_sent: on_reset_sent(e.cookie, c, e); break;
        case EventType::reset_recv: on_reset_recv(c, e); break;
        case EventType::setsockopt: break;
        case EventType::existing: break;  // the connection is known now: its close or reset is not an orphan
        case EventType::listen_overflow:
        case EventType::signal:
        case EventType::tally: break;  // handled above
        }
        if ((e.type == EventType::close || e.type == EventType::reset_sent) && c.rport &&
            (c.local_close_seen || c.reset_counted))
            closed_by_tuple.set(tuple_key_of(c), e.cookie);
    }

    // The connection a queue entry names, if it is still the one the entry was made for.
    LiveConn* ended_entry(uint64_t end_ts_ns, uint64_t cookie) {
        LiveConn* c = conns.find(cookie);
        return c && c->ended && c->end_ts_ns == end_ts_ns ? c : nullptr;
    }

    // The queues name connections in time order, each a lookup in a table much larger than the
    // cache: while one entry is handled, fetch those a few entries ahead.
    void prefetch_ahead(const std::deque<std::pair<uint64_t, uint64_t>>& queue) const {
        constexpr size_t kIndexAhead = 16, kElementAhead = 8;
        if (queue.size() > kIndexAhead) conns.prefetch(queue[kIndexAhead].second);
        if (queue.size() > kElementAhead) conns.prefetch_element(queue[kElementAhead].second);
    }

    void settle_due(uint64_t now_ns) {
        while (!settle_queue.empty() && now_ns > settle_queue.front().first + config.local_abort_window_ns) {
            uint64_t cookie = settle_queue.front().second;
            settle_queue.pop_front();
            if (LiveConn* c = conns.find(cookie)) settle_if_due(cookie, *c, now_ns);
        }
    }

    void expire(uint64_t now_ns) {
        settle_due(now_ns);
        while (!ended_queue.empty() && now_ns > ended_queue.front().first + kEndedGraceNs) {
            prefetch_ahead(ended_queue);
            auto [end_ts, cookie] = ended_queue.front();
            ended_queue.pop_front();
            LiveConn* c = ended_entry(end_ts, cookie);
            if (!c) continue;
            if (now_ns > end_ts + retention_of(*c)) drop(*c);
            else retained_queue.emplace_back(end_ts, cookie);
        }
        while (!retained_queue.empty() && now_ns > retained_queue.front().first + config.closed_retention_ns) {
            prefetch_ahead(retained_queue);
            auto [end_ts, cookie] = retained_queue.front();
            retained_queue.pop_front();
            if (LiveConn* c = ended_entry(end_ts, cookie)) drop(*c);
        }
        if (now_ns >= next_stale_scan_ns) expire_stale(now_ns);
    }

    // Open connections silent for stale_after. Activity only postpones staleness, so after a
    // scan nothing can go stale before the earliest deadline it saw: the next scan waits for it.
    void expire_stale(uint64_t now_ns) {
        uint64_t next = now_ns + config.stale_after_ns;
        conns.for_each([&](LiveConn& c) {  // drop() erases c only: the walk goes on
            if (c.ended) return;
            uint64_t deadline = stale_deadline(c);
            if (now_ns > deadline) {
                c.end = EndKind::expired;
                ++counts.expired_stale;
                drop(c);
                return;
            }
            next = std::min(next, deadline);
        });
        next_stale_scan_ns = next;
    }

    // How long an ended connection is kept. One we closed with a FIN lives on as a TIME_WAIT
    // socket that can still answer late data with a reset (same cookie): that long.
    uint64_t retention_of(const LiveConn& c) const {
        bool may_time_wait = c.local_close_seen && !c.aborted;
        return may_time_wait ? config.closed_retention_ns : kEndedGraceNs;
    }

    // When an open connection with no further event counts as gone.
    uint64_t stale_deadline(const LiveConn& c) const {
        return std::max(c.last_ts_ns, c.first_ts_ns) + config.stale_after_ns;
    }

    // ---- results ----

    BackendProfile profile_of(const Backend& b) const {
        BackendProfile p;
        p.id = b.id;
        if (const Workload* w = workloads ? workloads->lookup(b.id.netns, b.cgroup_id) : nullptr) {
            p.id.pod = w->name();
            p.id.namespace_name = w->namespace_name;
            p.id.container = w->container;
            p.id.workload = w->kind;
        }
        p.comm = b.comm;
        p.pid = b.pid;
        if (const ServerRecord* r = servers && b.pid ? servers->lookup(b.pid) : nullptr) p.server = r->server;
        p.connections_lb = b.connections_lb;
        p.connections_other = b.connections_other;
        p.live_connections = b.live + static_cast<uint64_t>(std::max<int64_t>(0, b.tally_live_lb)) +
                             static_cast<uint64_t>(std::max<int64_t>(0, b.tally_live_other));
        p.closed_local_first = b.closed_local_first;
        p.closed_remote_first = b.closed_remote_first;
        p.aborted_local = b.aborted_local;
        p.idle_close = idle_stats_of(b.idle_closes);
        p.idle_histogram = b.idle_closes.buckets();
        for (size_t k = 0; k < kFindingKindCount; ++k) {
            p.resets_lb[k] = b.resets[k].lb;
            p.resets_other[k] = b.resets[k].other;
        }
        p.opts = b.opts;
        p.opt_changes.assign(b.opt_changes.begin(), b.opt_changes.end());
        for (const auto& u : unattributed_changes)
            if (b.pid && u.change.pid == b.pid) p.opt_changes.push_back(u.change);
        std::sort(p.opt_changes.begin(), p.opt_changes.end(),
                  [](const auto& x, const auto& y) { return x.ts_ns < y.ts_ns; });
        return p;
    }

    // Races count only against LB peers when there is a load balancer; without one
    // (--lb none) every peer of the backend is a client that can hit the race.
    uint64_t race_count(const Backend& b) const {
        const ResetTally& t = b.resets[static_cast<size_t>(FindingKind::idle_close_race)];
        return config.lb_idle_timeout_s > 0 ? t.lb : t.lb + t.other;
    }

    bool closes_sooner_than_lb(const Backend& b) const {
        return config.lb_idle_timeout_s > 0 && !b.id.outbound && b.connections_lb > 0 && b.idle_closes.count() > 0 &&
               b.idle_closes.percentile(0.5) < uint64_t{config.lb_idle_timeout_s} * 1000;
    }

    // The latest change to an option the kind's row names, set before the latest reset of that kind.
    static std::optional<SockOptChange> linked_change(FindingKind kind, const BackendProfile& p, const ResetTally& t) {
        auto related = info(kind).related_options;
        const SockOptChange* best = nullptr;
        for (const auto& change : p.opt_changes)
            if (std::find(related.begin(), related.end(), change.opt) != related.end() && change.ts_ns <= t.last_ts_ns)
                best = &change;
        if (!best) return std::nullopt;
        return *best;
    }

    Finding make_finding(FindingKind kind, const Backend& b, uint64_t count) const {
        Finding f;
        f.kind = kind;
        f.backend = profile_of(b);
        f.count = count;
        f.lb.name = config.lb_name;
        f.lb.idle_timeout_s = config.lb_idle_timeout_s;
        f.lb.response_timeout_s = config.lb_response_timeout_s;
        if (b.idle_closes.count()) f.idle_close = idle_stats_of(b.idle_closes);
        if (!info(kind).counts_resets) {
            f.lb.range = config.lb_any_non_loopback_peer ? "any" : config.lb_ranges.to_string();
            return f;
        }
        const ResetTally& t = b.resets[static_cast<size_t>(kind)];
        f.count_lb = t.lb;
        f.count_other = t.other;
        f.lb.range = lb_range_text(t.last_lb_range);
        f.first_ts_ns = t.first_ts_ns;
        f.last_ts_ns = t.last_ts_ns;
        f.evidence = t.last_evidence;
        f.linked_change = linked_change(kind, f.backend, t);
        if (kind == FindingKind::outbound_pool_race && b.causes && b.causes->upstream_idle.count())
            f.upstream = correlator::upstream_facts(*b.causes);
        // With a load balancer a race is about its peers: the connections listed are theirs.
        bool lb_only = kind == FindingKind::idle_close_race && config.lb_idle_timeout_s > 0;
        for (auto it = t.recent.rbegin(); it != t.recent.rend(); ++it)
            if (!lb_only || it->lb_peer) f.connections.push_back(*it);
        f.connections_not_kept = count > f.connections.size() ? count - f.connections.size() : 0;
        return f;
    }

    // The connections a finding lists, newest first: the reset ones of its kind and the ones kept
    // beside them (closed by a crash, given up on by the LB), once each.
    static void list_connections(Finding& f, const ResetTally& t, const std::deque<ConnectionRecord>& more) {
        std::vector<ConnectionRecord> all(t.recent.begin(), t.recent.end());
        for (const auto& r : more)
            if (std::none_of(all.begin(), all.end(), [&](const auto& x) { return x.cookie && x.cookie == r.cookie; }))
                all.push_back(r);
        auto latest = [](const ConnectionRecord& r) { return std::max({r.last_ts_ns, r.reset_ts_ns, r.close_ts_ns}); };
        std::stable_sort(all.begin(), all.end(), [&](const auto& x, const auto& y) { return latest(x) > latest(y); });
        f.connections = std::move(all);
        f.connections_not_kept = f.count > f.connections.size() ? f.count - f.connections.size() : 0;
    }

    // The kinds about the backend's life, from its causes (causes.h).
    void add_cause_findings(uint32_t index, const Backend& b, std::vector<std::pair<uint32_t, Finding>>& out) const {
        const correlator::BackendCauses& k = *b.causes;
        auto tally = [&](FindingKind kind) -> const ResetTally& { return b.resets[static_cast<size_t>(kind)]; };
        auto with_tally = [&](Finding& f, FindingKind kind) {
            const ResetTally& t = tally(kind);
            f.count_lb = t.lb;
            f.count_other = t.other;
            if (t.last_lb_range) f.lb.range = lb_range_text(t.last_lb_range);
            f.evidence = t.last_evidence;
        };
        if (DrainFacts drain = correlator::drain_facts(k.stops, lb_only()); drain.stops) {
            Finding f = make_finding(FindingKind::rollout_drain, b, 0);
            f.count = drain.refused + drain.pooled_resets + drain.in_flight;
            f.first_ts_ns = drain.listener_close_ts_ns ? drain.listener_close_ts_ns : drain.signal_ts_ns;
            f.last_ts_ns = std::max(drain.last_refused_ts_ns, f.first_ts_ns);
            list_connections(f, tally(FindingKind::rollout_drain), {});
            f.drain = std::move(drain);
            out.emplace_back(index, std::move(f));
        }
        if (CrashFacts crash = correlator::crash_facts(k.stops); crash.crashes) {
            Finding f = make_finding(FindingKind::process_crash, b, 0);
            with_tally(f, FindingKind::process_crash);
            f.count = crash.connections + crash.refused;
            f.first_ts_ns = crash.ts_ns;
            f.last_ts_ns = crash.ts_ns + uint64_t{crash.refused_for_ms.value_or(0)} * 1'000'000;
            list_connections(f, tally(FindingKind::process_crash), k.exit_recent);
            f.crash = std::move(crash);
            out.emplace_back(index, std::move(f));
        }
        if (uint64_t n = k.overflow_drops + k.overflow_synacks) {
            Finding f = make_finding(FindingKind::accept_queue_overflow, b, n);
            f.first_ts_ns = k.overflow_first_ts_ns;
            f.last_ts_ns = k.overflow_last_ts_ns;
            f.count_lb = k.overflow_lb;
            f.count_other = n - k.overflow_lb;
            f.overflow = correlator::overflow_facts(k);
            if (!f.overflow->backlog) f.overflow->backlog = b.backlog;
            out.emplace_back(index, std::move(f));
        }
        if (k.gave_up) {
            Finding f = make_finding(FindingKind::lb_response_timeout, b, k.gave_up);
            f.first_ts_ns = k.gave_up_first_ts_ns;
            f.last_ts_ns = k.gave_up_last_ts_ns;
            f.count_lb = k.gave_up_lb;
            f.count_other = k.gave_up - k.gave_up_lb;
            list_connections(f, tally(FindingKind::lb_response_timeout), k.gave_up_recent);
            f.lb_timeout = correlator::lb_timeout_facts(k, config.lb_response_timeout_s);
            out.emplace_back(index, std::move(f));
        }
    }

    // (backend index, finding) in display order: by the kind's weight (races, then backends
    // closing sooner than the LB, then the rest), then by count.
    std::vector<std::pair<uint32_t, Finding>> indexed_findings() const {
        std::vector<std::pair<uint32_t, Finding>> out;
        for (uint32_t i = 0; i < backends.size(); ++i) {
            const Backend& b = backends[i];
            if (uint64_t races = race_count(b))
                out.emplace_back(i, make_finding(FindingKind::idle_close_race, b, races));
            else if (closes_sooner_than_lb(b))
                out.emplace_back(i, make_finding(FindingKind::idle_timeout_below_lb, b, b.idle_closes.count()));
            for (const KindInfo& row : finding_kinds()) {
                if (!row.counts_resets || row.kind == FindingKind::idle_close_race ||
                    row.kind == FindingKind::rollout_drain)
                    continue;
                const ResetTally& t = b.resets[static_cast<size_t>(row.kind)];
                if (uint64_t n = t.lb + t.other) out.emplace_back(i, make_finding(row.kind, b, n));
            }
            if (b.causes) add_cause_findings(i, b, out);
        }
        std::stable_sort(out.begin(), out.end(),
                         [](const auto& x, const auto& y) { return finding_before(x.second, y.second); });
        return out;
    }
};

bool finding_before(const Finding& a, const Finding& b) {
    uint8_t wa = info(a.kind).weight, wb = info(b.kind).weight;
    if (wa != wb) return wa < wb;
    return a.count > b.count;
}

Correlator::Correlator(CorrelatorConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Correlator::~Correlator() = default;
Correlator::Correlator(Correlator&&) noexcept = default;
Correlator& Correlator::operator=(Correlator&&) noexcept = default;

void Correlator::on_event(const Event& event) { impl_->on_event(event); }

void Correlator::prefetch(const Event& event) const {
    const Impl& impl = *impl_;
    impl.conns.prefetch(event.cookie);
    // A close or reset writes (or reads) its four-tuple's entry: a miss per connection otherwise.
    if ((event.type == EventType::close || event.type == EventType::reset_sent) && event.rport)
        impl.closed_by_tuple.prefetch(tuple_key(event.netns, event.laddr, event.lport, event.raddr, event.rport));
}

void Correlator::prefetch_more(const Event& event) const { impl_->conns.prefetch_element(event.cookie); }
void Correlator::expire(uint64_t now_ns) { impl_->expire(now_ns); }
void Correlator::settle_due(uint64_t now_ns) { impl_->settle_due(now_ns); }

void Correlator::finish() {
    // In the order the resets arrived: each pending one has its entry in the settle queue.
    for (const auto& [ts, cookie] : impl_->settle_queue)
        if (LiveConn* c = impl_->conns.find(cookie)) impl_->settle_peer_reset(cookie, *c);
}

std::vector<Finding> Correlator::findings() const {
    std::vector<Finding> out;
    for (auto& [index, finding] : impl_->indexed_findings()) out.push_back(std::move(finding));
    return out;
}

std::vector<BackendProfile> Correlator::backends() const {
    std::vector<BackendProfile> out;
    out.reserve(impl_->backends.size());
    for (const auto& b : impl_->backends) out.push_back(impl_->profile_of(b));
    return out;
}

std::vector<ConnectionRecord> Correlator::connections_with_peer(const IpAddr& peer, uint16_t rport) const {
    std::vector<ConnectionRecord> out;
    auto seen = [&out](uint64_t cookie) {
        return cookie && std::any_of(out.begin(), out.end(), [cookie](const auto& r) { return r.cookie == cookie; });
    };
    // Reset connections first: their records carry the evidence.
    for (const auto& r : impl_->watched_records)
        if (addr::same_endpoint(r.raddr, r.rport, peer, rport) && !seen(r.cookie)) out.push_back(r);
    for (const auto& b : impl_->backends)
        for (const auto& tally : b.resets)
            for (const auto& r : tally.recent)
                if (addr::same_endpoint(r.raddr, r.rport, peer, rport) && !seen(r.cookie)) out.push_back(r);
    impl_->conns.for_each([&](const LiveConn& c) {
        if (addr::same_endpoint(impl_->raddr_of(c), c.rport, peer, rport) && !seen(c.cookie))
            out.push_back(impl_->record_of(c.cookie, c));
    });
    std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) { return x.first_ts_ns < y.first_ts_ns; });
    return out;
}

std::vector<ConnectionRecord> Correlator::recent_resets() const {
    std::vector<ConnectionRecord> out;
    for (const auto& b : impl_->backends)
        for (const auto& tally : b.resets) out.insert(out.end(), tally.recent.begin(), tally.recent.end());
    std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) { return x.last_ts_ns < y.last_ts_ns; });
    return out;
}

CorrelatorCounts Correlator::counts() const {
    CorrelatorCounts c = impl_->counts;
    c.live_connections = impl_->conns.size();
    return c;
}

const CorrelatorConfig& Correlator::config() const { return impl_->config; }

std::vector<FindingUpdate> Correlator::take_live_updates(uint64_t now_ns) {
    std::vector<FindingUpdate> updates;
    for (auto& [index, f] : impl_->indexed_findings()) {
        uint64_t key = (uint64_t{index} << 8) | static_cast<uint64_t>(f.kind);
        auto [it, first] = impl_->announced.try_emplace(key);
        Impl::Announcement& a = it->second;
        if (!first && !(f.count > a.count && now_ns >= a.ts_ns + impl_->config.live_update_interval_ns)) continue;
        uint64_t added = f.count - a.count;
        a = {f.count, now_ns};
        updates.push_back({std::move(f), first, added});
    }
    return updates;
}

void Correlator::watch_peer(const IpAddr& raddr, uint16_t rport) { impl_->watched_peer = std::pair{raddr, rport}; }

void Correlator::set_opens_tallied(bool tallied) { impl_->opens_tallied = tallied; }

void Correlator::set_workloads(std::shared_ptr<const WorkloadTable> table) { impl_->workloads = std::move(table); }

void Correlator::set_servers(std::shared_ptr<const ServerTable> table) { impl_->servers = std::move(table); }

BackendId Correlator::backend_of(const Event& e) const {
    const Impl& impl = *impl_;
    std::optional<uint32_t> index;
    if (impl.is_segment_reset(e)) {
        if (const LiveConn* c = impl.closed_connection_of(e)) index = c->backend;
    } else {
        index = impl.backend_of_cookie(e.cookie);
    }
    if (index) return impl.backends[*index].id;
    BackendKey key = impl.key_of(e, is_listener_event(e) ? OpenKind::accepted : opened_by(e));
    if (auto it = impl.backend_index.find(key); it != impl.backend_index.end()) return impl.backends[it->second].id;
    return BackendId{key.netns, key.port, key.outbound, e.laddr, {}, {}, {}, WorkloadKind::unknown};
}

size_t Correlator::live_connection_bytes() { return sizeof(LiveConn); }

std::vector<BackendActivity> Correlator::backend_activity(size_t max_recent) const {
    const Impl& impl = *impl_;
    std::vector<BackendActivity> out(impl.backends.size());
    // Per backend, the newest max_recent connections in memory: a min-heap on (last activity, cookie).
    using Candidate = std::pair<uint64_t, uint64_t>;
    std::vector<std::vector<Candidate>> newest(out.size());
    auto newer_first = [](const Candidate& x, const Candidate& y) { return x.first > y.first; };
    impl.conns.for_each([&](const LiveConn& c) {
        BackendActivity& activity = out[c.backend];
        // a tallied open is in the backend's tallied live count until it ends
        if (!c.ended && !c.open_tallied) ++(c.lb_peer ? activity.live_lb : activity.live_other);
        if (max_recent == 0) return;
        auto& heap = newest[c.backend];
        Candidate candidate{std::max(c.last_ts_ns, c.first_ts_ns), c.cookie};
        if (heap.size() < max_recent) {
            heap.push_back(candidate);
            std::push_heap(heap.begin(), heap.end(), newer_first);
        } else if (candidate.first > heap.front().first) {
            std::pop_heap(heap.begin(), heap.end(), newer_first);
            heap.back() = candidate;
            std::push_heap(heap.begin(), heap.end(), newer_first);
        }
    });
    for (size_t i = 0; i < out.size(); ++i) {
        out[i].live_lb += static_cast<uint64_t>(std::max<int64_t>(0, impl.backends[i].tally_live_lb));
        out[i].live_other += static_cast<uint64_t>(std::max<int64_t>(0, impl.backends[i].tally_live_other));
    }
    auto latest = [](const ConnectionRecord& r) { return std::max({r.first_ts_ns, r.last_ts_ns, r.reset_ts_ns}); };
    for (size_t i = 0; i < out.size(); ++i) {
        auto& recent = out[i].recent;
        for (const auto& tally : impl.backends[i].resets)
            recent.insert(recent.end(), tally.recent.begin(), tally.recent.end());
        for (const auto& entry : newest[i]) {
            const uint64_t cookie = entry.second;  // a plain name: clang 14 cannot capture structured bindings
            ConnectionRecord live = impl.record_of(cookie, *impl.conns.find(cookie));
            auto reset = std::find_if(recent.begin(), recent.end(), [&](const auto& r) { return r.cookie == cookie; });
            if (reset == recent.end()) {
                recent.push_back(std::move(live));
                continue;
            }
            // The ring's record was taken at the reset; the live one knows what came after.
            live.reset_ts_ns = reset->reset_ts_ns;
            live.reset_reason = std::move(reset->reset_reason);
            live.evidence = std::move(reset->evidence);
            *reset = std::move(live);
        }
        std::sort(recent.begin(), recent.end(), [&](const auto& x, const auto& y) { return latest(x) > latest(y); });
        if (recent.size() > max_recent) recent.resize(max_recent);
    }
    return out;
}

}  // namespace tcpwhy
