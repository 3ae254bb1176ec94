// Reset classification: pure functions from one reset event plus what the
// correlator remembers about the connection's local close. No state lives here,
// so every rule can be tested on its own. The rules are in docs/correlator.md.
#pragma once

#include <cstdint>
#include <string>

#include "tcpwhy/correlator.h"
#include "tcpwhy/event.h"
#include "tcpwhy/histogram.h"

namespace tcpwhy::classify {

// What the correlator knew about the connection's local close when a reset came.
struct CloseFacts {
    bool seen = false;     // a close event was recorded for this connection
    bool idle = false;     // the close was judged an idle close (see idle_bar_ms)
    bool aborted = false;  // the close sent an RST instead of a FIN
    uint32_t idle_gap_ms = 0;
    uint32_t unread_bytes = 0;
    TcpState from_state = TcpState::unknown;
    uint64_t close_ts_ns = 0;
};

struct Verdict {
    FindingKind kind = FindingKind::other;
    ResetEvidence evidence;
};

// Backends below this many local closes are judged by the fixed threshold only.
inline constexpr uint64_t kMinClosesForRelativeBar = 5;
// The relative bar never goes below this: sub-100 ms quiet is request processing.
inline constexpr uint32_t kRelativeBarFloorMs = 100;

// A close quiet for at least this long is an idle close: the configured threshold,
// or half the backend's median close time when that is lower (servers whose own
// idle timeout is below the threshold). local_closes holds every local close's gap.
uint32_t idle_bar_ms(uint32_t threshold_ms, const DurationHistogram& local_closes);

// How long the connection had been quiet when the local side closed it. With
// unread bytes the request arrived just before the close (so idle_rx is tiny):
// the gap is then the time since the backend last sent. Otherwise both directions
// must have been quiet. A socket that never sent has no meaningful idle_tx.
uint32_t idle_gap_ms(const Event& close);

Verdict classify_reset_sent(const Event& reset, const CloseFacts& close, uint32_t idle_bar_ms);
Verdict classify_reset_received(const Event& reset, TcpState state_before, FirstClose first_close);

// The local abort-on-data path calls tcp_reset() on our own socket, so a
// reset_recv next to this reset on the same socket was not sent by the peer.
bool is_abort_on_data(const Event& reset_sent);

}  // namespace tcpwhy::classify
