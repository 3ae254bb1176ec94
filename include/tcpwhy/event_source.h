// What a live session knows of its event source beyond the events: how many the
// kernel emitted and how many it could not deliver. Pure data, so the daemon's
// metrics and the tests read it without linking the loader (src/bpf).
#pragma once

#include <array>
#include <cstdint>

namespace tcpwhy {

struct KernelCounters {
    std::array<uint64_t, 8> emitted{};  // by EventType value
    uint64_t dropped_ringbuf_full = 0;
    uint64_t malformed_records = 0;  // shorter than any event: received and discarded by userspace
    uint64_t dropped() const { return dropped_ringbuf_full + malformed_records; }
};

}  // namespace tcpwhy
