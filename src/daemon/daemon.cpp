#include "tcpwhy/daemon/daemon.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <functional>
#include <list>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tcpwhy/daemon/export.h"
#include "tcpwhy/format.h"
#include "tcpwhy/log.h"

namespace tcpwhy::daemon {
namespace {

constexpr int64_t kHealthyLoopAgeMs = 10'000;  // /healthz fails when the event loop has not turned for this long
constexpr size_t kMaxConcurrentExports = 2;

int64_t mono_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::string error_json(const std::string& message) { return nlohmann::json{{"error", message}}.dump(); }

// Exports run on threads of their own: a long one must not hold up /healthz or the event loop.
class Exports {
public:
    bool start(std::function<void()> work) {
        std::lock_guard lock(mutex_);
        reap_locked();
        if (running_.size() >= kMaxConcurrentExports) return false;
        auto done = std::make_shared<std::atomic<bool>>(false);
        running_.push_back({std::thread([work = std::move(work), done] {
                                work();
                                done->store(true);
                            }),
                            done});
        return true;
    }
    ~Exports() {
        std::lock_guard lock(mutex_);
        for (auto& r : running_) r.thread.join();
    }

private:
    struct Running {
        std::thread thread;
        std::shared_ptr<std::atomic<bool>> done;
    };
    void reap_locked() {
        for (auto it = running_.begin(); it != running_.end();) {
            if (it->done->load()) {
                it->thread.join();
                it = running_.erase(it);
            } else {
                ++it;
            }
        }
    }
    std::mutex mutex_;
    std::list<Running> running_;
};

}  // namespace

struct Daemon::Impl {
    Impl(Session& s, std::unique_ptr<Archive> a, DaemonSettings settings)
        : session(s),
          archive(std::move(a)),
          settings(std::move(settings)),
          header_line(to_json_line(s.header())),
          metrics(s.config()) {
        if (archive && (session.resolver() || session.servers())) {
            // Every segment starts with the names and servers known so far, so an export of any
            // time range names the backends and words the fix as the live run did.
            std::shared_ptr<const WorkloadTable> names = session.resolver() ? session.resolver()->table() : nullptr;
            std::shared_ptr<const ServerTable> servers = session.servers() ? session.servers()->table() : nullptr;
            archive->set_preamble([names, servers] {
                std::string lines;
                if (names) {
                    for (const auto& [netns, w] : names->netns_entries())
                        lines += to_json_line(WorkloadRecord{netns, 0, w}) + '\n';
                    for (const auto& [cgroup_id, w] : names->cgroup_entries())
                        lines += to_json_line(WorkloadRecord{0, cgroup_id, w}) + '\n';
                }
                if (servers)
                    for (const auto& [pid, record] : servers->entries()) lines += to_json_line(record) + '\n';
                return lines;
            });
        }
    }

    Session& session;
    std::unique_ptr<Archive> archive;
    DaemonSettings settings;
    const std::string header_line;
    const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
    EventMetrics metrics;  // under the session's mutex, like everything the session changes
    uint64_t archive_errors_reported = 0;
    uint64_t existing_connections = 0;  // under the session's mutex
    std::atomic<int64_t> heartbeat_ms{mono_ms()};
    std::atomic<bool> stopping{false};
    std::optional<Exports> exports{std::in_place};  // declared last: its threads use the members above

    MetricsSnapshot metrics_snapshot() {
        MetricsSnapshot snap;
        {
            std::lock_guard lock(session.mutex());
            const Correlator& c = session.correlator();
            snap.backends = c.backends();
            snap.findings = c.findings();
            snap.counts = c.counts();
            snap.events_by_type = metrics.events_by_type();
            snap.resets_sent = metrics.resets_sent();
            snap.resets_received = metrics.resets_received();
            snap.event_series_folded = metrics.folded();
            snap.kernel = session.kernel();
            snap.existing_connections = existing_connections;
            snap.kernel_release = session.status().kernel;
            snap.attach = session.status().attach;
        }
        if (archive) snap.archive = archive->stats();
        snap.lb_name = session.config().lb_name;
        snap.uptime_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        snap.version = settings.version;
        return snap;
    }

    std::optional<std::string> start_export(uint64_t since_s, bool progress, Fd& client) {
        uint64_t now_ns = WallClock::now().wall_ns;
        uint64_t cutoff_ns = since_s >= now_ns / 1'000'000'000ull ? 0 : now_ns - since_s * 1'000'000'000ull;
        archive->rotate();  // what was written up to now becomes a closed segment, read whole
        auto segments = archive->segments_since(static_cast<time_t>(cutoff_ns / 1'000'000'000ull));
        auto owned = std::make_shared<Fd>(std::move(client));
        bool started_export =
            exports->start([this, owned, segments, cutoff_ns, progress] {
                stream_export(owned->get(), segments, cutoff_ns, progress);
            });
        if (started_export) return std::nullopt;
        client = std::move(*owned);
        return error_json(fmt::format("{} exports are running already; try again shortly", kMaxConcurrentExports));
    }

    // On an export thread: the segments as one JSONL stream, in blocking writes of up to 256 KiB.
    // With `progress` (the client draws a meter), a progress line between trace lines a few times
    // a second.
    void stream_export(int fd, const std::vector<ArchiveSegment>& segments, uint64_t cutoff_ns, bool progress) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        std::string buffer;
        auto flush = [&] {
            std::string_view rest = buffer;
            while (!rest.empty()) {
                ssize_t n = send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) return false;
                rest.remove_prefix(static_cast<size_t>(n));
            }
            buffer.clear();
            return true;
        };
        auto next_progress = std::chrono::steady_clock::time_point{};
        std::function<void(const ExportProgress&)> on_progress;
        if (progress) {
            on_progress = [&](const ExportProgress& p) {
                auto now = std::chrono::steady_clock::now();
                if (now < next_progress && p.segment < p.segments) return;
                next_progress = now + std::chrono::milliseconds(250);
                buffer += export_progress_line(p);
                buffer += '\n';
                flush();  // now, so the meter moves while a slow segment is read
            };
        }
        export_segments(
            segments, cutoff_ns, header_line,
            [&](std::string_view line) {
                if (stopping.load()) return false;
                buffer.append(line);
                buffer += '\n';
                return buffer.size() < (256 << 10) || flush();
            },
            on_progress);
        flush();
    }
};

Daemon::Daemon(Session& session, std::unique_ptr<Archive> archive, DaemonSettings settings)
    : impl_(std::make_unique<Impl>(session, std::move(archive), std::move(settings))) {
    session.add_sink(*this);
}

Daemon::~Daemon() = default;

void Daemon::set_existing_connections(uint64_t count) {
    std::lock_guard lock(impl_->session.mutex());
    impl_->existing_connections = count;
}

void Daemon::on_event(const Event& e, const Workload*) {
    if (impl_->archive) impl_->archive->write(to_json_line(e));
    impl_->metrics.on_event(e, impl_->session.correlator().backend_of(e));
}

// New or changed names go into the archive ahead of the events that need them.
void Daemon::on_workload(const WorkloadRecord& record) {
    if (impl_->archive) impl_->archive->write(to_json_line(record));
}

// Servers as they are detected, like names.
void Daemon::on_server(const ServerRecord& record) {
    if (impl_->archive) impl_->archive->write(to_json_line(record));
}

// About once a second: archive limits and their warnings.
void Daemon::on_tick(uint64_t) {
    Archive* archive = impl_->archive.get();
    if (!archive) return;
    archive->maintain(time(nullptr));
    auto a = archive->stats();
    if (a.write_errors > impl_->archive_errors_reported) {
        log::warn(fmt::format("archive: {} write errors so far ({} lines not archived); last: {}", a.write_errors,
                              a.lines_dropped_write_error + a.lines_dropped_low_disk, a.last_error));
        impl_->archive_errors_reported = a.write_errors;
    }
}

int Daemon::run(Fd http_listener, Fd unix_listener, const std::function<bool()>& stop) {
    Session& session = impl_->session;
    std::optional<Server> server;
    server.emplace(std::move(http_listener), std::move(unix_listener),
                   ServerHandlers{[this](const std::string& path) { return http(path); },
                                  [this](const std::string& line, Fd& client) { return control(line, client); }});
    impl_->heartbeat_ms = mono_ms();
    while (!stop()) {
        session.pump(25);
        impl_->heartbeat_ms = mono_ms();
    }
    session.finish();
    impl_->stopping = true;
    server.reset();
    impl_->exports.reset();  // joins them; they stop at their next line
    std::string archived;
    if (impl_->archive) {
        impl_->archive->close();
        auto a = impl_->archive->stats();
        archived = fmt::format("; archived {} lines in {} segments ({} write errors)", a.lines_written, a.segments,
                               a.write_errors);
    }
    log::info(fmt::format("daemon stopped: {} events, {} dropped in the kernel{}", session.counts().received,
                          session.kernel().dropped(), archived));
    return 0;
}

HttpResponse Daemon::http(const std::string& path) {
    constexpr const char* kText = "text/plain; charset=utf-8";
    if (path == "/healthz") {
        int64_t age = mono_ms() - impl_->heartbeat_ms.load();
        if (age > kHealthyLoopAgeMs) return {503, kText, fmt::format("event loop stalled for {} ms\n", age)};
        std::string body = "ok\n";
        if (impl_->archive) {
            auto a = impl_->archive->stats();
            if (a.write_errors) body += fmt::format("archive: {} write errors, last: {}\n", a.write_errors, a.last_error);
        }
        return {200, kText, body};
    }
    // Rendered at most once a second however often it is asked for (any pod can ask).
    if (path == "/metrics")
        return {200, "text/plain; version=0.0.4; charset=utf-8",
                render_prometheus(impl_->metrics_snapshot(), impl_->settings.metrics_max_backends), 1000};
    if (path == "/") return {200, kText, "tcpwhy daemon: /metrics (Prometheus), /healthz\n"};
    return {404, kText, "not found: try /metrics or /healthz\n"};
}

// The control protocol (include/tcpwhy/live_view.h). nullopt: the export took the connection.
std::optional<std::string> Daemon::control(const std::string& line, Fd& client) {
    auto request = nlohmann::json::parse(line, nullptr, false);
    if (!request.is_object() || !request.contains("cmd") || !request["cmd"].is_string())
        return error_json(R"(expected one JSON object per line, e.g. {"cmd":"snapshot"})");
    std::string cmd = request["cmd"];
    if (cmd == "snapshot") {
        std::lock_guard lock(impl_->session.mutex());
        return impl_->session.view().snapshot_json();
    }
    if (cmd != "export") return error_json(fmt::format("unknown cmd '{}': snapshot or export", cmd));
    if (!impl_->archive) return error_json("this daemon keeps no archive (--archive none)");
    auto since = request.value("since_s", nlohmann::json(1800));
    if (!since.is_number_unsigned()) return error_json("since_s must be a non-negative number of seconds");
    // "progress": true asks for progress lines between the trace's (tcpwhy export on a terminal).
    bool progress = request.value("progress", nlohmann::json(false)).is_boolean() && request.value("progress", false);
    return impl_->start_export(since.get<uint64_t>(), progress, client);
}

}  // namespace tcpwhy::daemon
