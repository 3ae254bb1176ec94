// Loads tcpwhy's kernel programs, attaches each hook by the best path this kernel
// allows, and hands decoded events to the caller. Everything it creates (programs,
// links, maps, the ring buffer) is released when the Tracer is destroyed; nothing is pinned.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tcpwhy/bpf/features.h"
#include "tcpwhy/cidr.h"
#include "tcpwhy/event.h"
#include "tcpwhy/event_source.h"

namespace tcpwhy {

// A failure tcpwhy cannot trace through; what() is one line naming the problem, fix() the remedy.
class TracerError : public std::runtime_error {
public:
    TracerError(const std::string& problem, std::string fix) : std::runtime_error(problem), fix_(std::move(fix)) {}
    const std::string& fix() const { return fix_; }

private:
    std::string fix_;
};

// Throws TracerError naming the problem and its fix when these features cannot trace.
void require_tracing_support(const KernelFeatures& features);

struct TracerOptions {
    size_t ring_bytes = 8u << 20;     // ring buffer size (power of two)
    uint64_t wakeup_bytes = 1u << 20;  // the kernel wakes the reader only past this fill level
    bool allow_fentry = true;          // let tests and `--attach tracepoint` force the tracepoint path
    bool allow_kprobe = true;
    // Every state change; by default only those the correlator needs leave the kernel
    // (docs/trace-format.md, "Which state changes").
    bool all_state_changes = false;
    // Count ordinary connections per backend in the kernel and hand them on as one `tally` event
    // per backend a second, instead of their own events (off with all_state_changes). The rest
    // of the fields apply the session's rules in the kernel: who is the load balancer, how quiet
    // a close may be and still be ordinary, how long a stopping signal makes a namespace's
    // closes worth sending.
    bool tally = false;
    CidrSet lb_ranges;
    bool lb_any_non_loopback_peer = false;
    uint32_t ordinary_idle_max_ms = 100;
    uint64_t drain_window_ns = 120ull * 1'000'000'000;
};


// How one hook was attached on this kernel, and why the better paths were not used.
struct HookStatus {
    std::string hook;      // "state", "close", "reset_active", "reset_reply", "reset_recv", "setsockopt"
    std::string attached;  // e.g. "tp_btf/inet_sock_set_state"; empty when none
    std::vector<std::string> passed_over;  // "fentry/tcp_close: load refused: Operation not permitted"
    std::string limitation;  // what the attached path cannot see on this kernel; empty when nothing
};

// The kernel as an event source (include/tcpwhy/event_source.h).
class Tracer final : public EventSource {
public:

    // Probes the kernel, loads and attaches. Throws TracerError when tracing cannot work.
    static std::unique_ptr<Tracer> start(const TracerOptions& options = {});
    // The same, with features already probed (doctor prints them first).
    static std::unique_ptr<Tracer> start(const TracerOptions& options, KernelFeatures features);
    ~Tracer() override;
    Tracer(const Tracer&) = delete;
    Tracer& operator=(const Tracer&) = delete;

    // Waits up to timeout_ms (the kernel does not wake us per event), then hands every
    // waiting event to sink. Returns the number of events consumed.
    size_t poll(int timeout_ms, const Sink& sink) override;

    KernelCounters counters() const override;
    // Times poll() was woken by the kernel (the ring past wakeup_bytes) rather than by its timeout:
    // what bench/overhead reports as wake-ups per event.
    uint64_t wakeups() const;
    const std::vector<HookStatus>& hooks() const { return hooks_; }
    const KernelFeatures& features() const { return features_; }
    // The attach paths in use, e.g. "fentry; resets via fentry" (close hook first).
    std::string attach_summary() const override;
    std::string kernel_release() const override { return features_.release; }
    // The socket iterator (bpf/tcpwhy_iter.bpf.c): needs CAP_SYS_ADMIN to enter other namespaces.
    // Also seeds the kernel's listener mirror with the listeners it finds.
    ExistingSockets list_existing(bool with_owners) override;
    bool tallies() const override;

    struct Impl;  // libbpf objects; opaque outside tracer.cpp

private:
    explicit Tracer(std::unique_ptr<Impl> impl, KernelFeatures features, std::vector<HookStatus> hooks);

    std::unique_ptr<Impl> impl_;
    KernelFeatures features_;
    std::vector<HookStatus> hooks_;
};

}  // namespace tcpwhy
