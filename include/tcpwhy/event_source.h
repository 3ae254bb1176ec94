// Where a live session's events come from, and what it knows beyond the events. The
// kernel (Tracer, include/tcpwhy/bpf/tracer.h) is the source in production; the session
// (include/tcpwhy/session.h) depends only on this interface, so it and everything it
// feeds build and test without libbpf.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tcpwhy/event.h"

namespace tcpwhy {

struct KernelCounters {
    std::array<uint64_t, kEventTypeCount> emitted{};  // by EventType value
    uint64_t dropped_ringbuf_full = 0;
    uint64_t malformed_records = 0;  // shorter than any event: received and discarded by userspace
    uint64_t tally_full = 0;  // ordinary connections sent one by one because the tally map was full (nothing lost)
    uint64_t dropped() const { return dropped_ringbuf_full + malformed_records; }
};

// The TCP sockets open now in every network namespace of the node, as `existing` events
// (listening and open sockets; each with its idle times, and its owner where /proc names one).
struct ExistingSockets {
    std::vector<Event> events;
    size_t namespaces = 0;            // network namespaces walked
    std::vector<std::string> errors;  // namespaces that could not be walked, and why
};

class EventSource {
public:
    // Each event as a mutable lvalue, so the session can annotate it (`lb`) without a copy.
    using Sink = std::function<void(Event&)>;

    virtual ~EventSource() = default;
    // Waits up to timeout_ms, then hands every waiting event to sink; returns how many.
    virtual size_t poll(int timeout_ms, const Sink& sink) = 0;
    virtual KernelCounters counters() const = 0;
    // The attach paths in use, e.g. "fentry; resets via fentry" (close hook first).
    virtual std::string attach_summary() const = 0;
    virtual std::string kernel_release() const = 0;
    // The sockets open now. with_owners: all of them, in every namespace, each with its process
    // from /proc where one holds it (the start's snapshot: slower, and needs setns()); without:
    // the ones processes hold (the live samples of idle times), which the tracer can still list
    // after the daemon dropped its capabilities. Throws std::runtime_error when they cannot be
    // listed at all.
    virtual ExistingSockets list_existing(bool with_owners) = 0;
    // Whether ordinary connections come as `tally` events instead of their own (the kernel's tally).
    virtual bool tallies() const { return false; }
};

}  // namespace tcpwhy
