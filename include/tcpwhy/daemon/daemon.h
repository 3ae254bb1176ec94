// The running daemon: a live session whose events also go to the rotating archive and the
// metrics, served on HTTP (/metrics, /healthz) and the control socket (top --connect,
// export). The session (include/tcpwhy/session.h) does the tracing; the daemon is its
// sinks and its servers. Design notes and limits: docs/daemon.md.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "tcpwhy/daemon/archive.h"
#include "tcpwhy/daemon/metrics.h"
#include "tcpwhy/daemon/server.h"
#include "tcpwhy/fd.h"
#include "tcpwhy/session.h"

namespace tcpwhy::daemon {

struct DaemonSettings {
    size_t metrics_max_backends = 200;
    std::string version;
};

class Daemon final : public SessionSink {
public:
    // session must have been made with SessionOptions::shared (the server thread reads it).
    // archive: nullptr with --archive none.
    Daemon(Session& session, std::unique_ptr<Archive> archive, DaemonSettings settings);
    ~Daemon() override;

    // Serves and traces until stop() returns true; then drains the source, stops the server
    // and exports, and finishes the archive. Returns the exit code.
    int run(Fd http_listener, Fd unix_listener, const std::function<bool()>& stop);

    // What Session::start() found, for the tcpwhy_connections_existing metric.
    void set_existing_connections(uint64_t count);

    // SessionSink: every kept event and name into the archive, events into the metrics.
    void on_event(const Event& event, const Workload* who) override;
    void on_workload(const WorkloadRecord& record) override;
    void on_server(const ServerRecord& record) override;
    void on_tick(uint64_t now_ns) override;

    // The HTTP and control handlers (the server thread calls them).
    HttpResponse http(const std::string& path);
    std::optional<std::string> control(const std::string& line, Fd& client);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tcpwhy::daemon
