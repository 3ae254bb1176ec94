// The live view: what `tcpwhy top` draws and what `tcpwhy daemon` serves to
// `top --connect`. It owns the correlator of a live session and adds what only a
// live session has: per-second reset counts (the sparklines), event rates and the
// event source's status (attach path, drops).
//
// Wire format between daemon and `top --connect` (a Unix stream socket): one JSON
// request per line, e.g. {"cmd":"snapshot"}; the daemon answers with one line,
// snapshot_json(). {"cmd":"export","since_s":1800} streams the JSONL trace of the
// last 30 minutes from the archive and closes the connection.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "tcpwhy/correlator.h"
#include "tcpwhy/event.h"

namespace tcpwhy {

// What the event source knows, for the view's header.
struct LiveStatus {
    std::string node;         // host name
    std::string kernel;       // uname -r
    std::string attach;       // Tracer::attach_summary()
    uint64_t events_total = 0;   // events consumed from the kernel so far
    uint64_t dropped_total = 0;  // events the kernel programs could not emit so far
};

class LiveView {
public:
    explicit LiveView(CorrelatorConfig config);
    ~LiveView();
    LiveView(const LiveView&) = delete;
    LiveView& operator=(const LiveView&) = delete;

    // Every event of the session, in order; feeds the correlator.
    void on_event(const Event& event);
    // About once a second: correlator expiry, rates, the sparkline's current second.
    void tick(uint64_t now_ns, const LiveStatus& status);

    Correlator& correlator();
    const Correlator& correlator() const;

    // The whole view as one line of JSON (no newline): header, one row per backend,
    // per backend its findings and recent connections.
    std::string snapshot_json() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tcpwhy
