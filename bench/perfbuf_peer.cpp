// perfbuf_peer: the perf-buffer-per-event baseline of bench/overhead (see perfbuf_peer.bpf.c).
// Prints a line per state change on stdout, as tcpstates does; on SIGINT/SIGTERM prints
// its counts on stderr: events, lost, and poll returns (each one a wake-up of this process).
#include <bpf/libbpf.h>
#include <arpa/inet.h>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>

#include "perfbuf_peer.skel.h"

namespace {

volatile std::sig_atomic_t stop = 0;

struct PeerEvent {
    uint64_t ts_ns;
    uint64_t skaddr;
    uint32_t pid;
    uint16_t sport, dport;
    uint16_t family;
    uint8_t oldstate, newstate;
    uint8_t saddr[16], daddr[16];
    char comm[16];
};

struct Counts {
    uint64_t events = 0, lost = 0;
};

void on_event(void* ctx, int, void* data, uint32_t size) {
    auto* counts = static_cast<Counts*>(ctx);
    if (size < sizeof(PeerEvent)) return;
    PeerEvent e;
    std::memcpy(&e, data, sizeof(e));
    ++counts->events;
    char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
    inet_ntop(e.family, e.saddr, src, sizeof(src));
    inet_ntop(e.family, e.daddr, dst, sizeof(dst));
    std::printf("%llu %u %.16s %s:%u %s:%u %u->%u\n", static_cast<unsigned long long>(e.ts_ns), e.pid, e.comm, src,
                e.sport, dst, e.dport, e.oldstate, e.newstate);
}

void on_lost(void* ctx, int, __u64 n) { static_cast<Counts*>(ctx)->lost += n; }

struct SkelDeleter {
    void operator()(perfbuf_peer_bpf* s) const { perfbuf_peer_bpf__destroy(s); }
};
struct PerfBufferDeleter {
    void operator()(perf_buffer* pb) const { perf_buffer__free(pb); }
};

}  // namespace

int main() {
    std::signal(SIGINT, [](int) { stop = 1; });
    std::signal(SIGTERM, [](int) { stop = 1; });
    std::unique_ptr<perfbuf_peer_bpf, SkelDeleter> skel(perfbuf_peer_bpf__open_and_load());
    if (!skel || perfbuf_peer_bpf__attach(skel.get())) {
        std::fprintf(stderr, "perfbuf_peer: cannot load or attach (run as root)\n");
        return 1;
    }
    Counts counts;
    // Default options: a wake-up for every record, as tcpstates and bpftrace have.
    std::unique_ptr<perf_buffer, PerfBufferDeleter> pb(
        perf_buffer__new(bpf_map__fd(skel->maps.events), 64, on_event, on_lost, &counts, nullptr));
    if (!pb) {
        std::fprintf(stderr, "perfbuf_peer: cannot open the perf buffer\n");
        return 1;
    }
    std::fprintf(stderr, "perfbuf_peer: attached\n");
    uint64_t wakeups = 0;
    while (!stop) {
        int n = perf_buffer__poll(pb.get(), 100);
        if (n > 0) ++wakeups;
    }
    std::fflush(stdout);
    std::fprintf(stderr, "perfbuf_peer: %llu events, %llu lost, %llu wakeups\n",
                 static_cast<unsigned long long>(counts.events), static_cast<unsigned long long>(counts.lost),
                 static_cast<unsigned long long>(wakeups));
    return 0;
}
