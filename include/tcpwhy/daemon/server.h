// The daemon's two listeners, served by one thread: HTTP on TCP for Prometheus
// (/metrics) and probes (/healthz), and the Unix control socket for `tcpwhy top
// --connect` and `tcpwhy export` (protocol: include/tcpwhy/live_view.h).
//
// Any pod of the cluster can reach the HTTP port, so the one thread must never wait on a
// client: sockets are non-blocking and poll(2)ed, every request has a deadline that is
// checked on every round (not only when bytes arrive), answers are queued and written as
// the client reads them, and a full house evicts the oldest client still sending its
// request, so a burst of idle connections cannot lock out the kubelet's probes. Why a
// hand-written server and not an embedded library: docs/daemon.md ("The HTTP server").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tcpwhy/fd.h"

namespace tcpwhy::daemon {

// "0.0.0.0:9090" (IPv4 only), "[::]:9090" or ":9090" (IPv6 and IPv4: a dual-stack socket,
// IPv4 alone where the node has IPv6 turned off), "127.0.0.1:0" (any free port). Sets *error.
Fd listen_tcp(const std::string& host_port, std::string* error);
// The bound address, e.g. "127.0.0.1:40123".
std::string local_address(const Fd& listener);
// A stream socket at path with mode 0600. A stale socket file (no one answers) is
// replaced; a live one is an error (another daemon).
Fd listen_unix(const std::string& path, std::string* error);
// Connects to a Unix stream socket; sets *error on failure.
Fd connect_unix(const std::string& path, std::string* error);

struct HttpResponse {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
    // > 0: the same answer serves every request for this path for that long, so a client
    // asking in a loop costs one rendering (and one copy in memory) per period.
    int64_t reuse_ms = 0;
};

struct ServerHandlers {
    std::function<HttpResponse(const std::string& path)> http;
    // One request line of the control protocol -> one answer line (no newline).
    // Return nullopt when the handler took the connection over (export).
    std::function<std::optional<std::string>(const std::string& line, Fd& client)> control;
};

struct ServerLimits {
    size_t max_http_clients = 512;      // lowered to fit RLIMIT_NOFILE
    size_t max_unix_clients = 16;
    int64_t request_timeout_ms = 5000;  // from accept to the end of the request's headers
    int64_t response_timeout_ms = 10000;  // to write the whole answer
    int64_t unix_idle_timeout_ms = 60000;  // a control client that sends nothing for this long
    size_t max_request_bytes = 16 << 10;
};

// What the server turned away, for tests and the daemon's stop summary.
struct ServerStats {
    uint64_t http_served = 0;
    uint64_t request_timeouts = 0;   // no complete request within request_timeout_ms
    uint64_t response_timeouts = 0;  // the client did not read the answer within response_timeout_ms
    uint64_t evicted = 0;            // closed to make room for a new client
    uint64_t unix_idle_closed = 0;
    uint64_t oversized = 0;          // requests past max_request_bytes
};

class Server {
public:
    Server(Fd http_listener, Fd unix_listener, ServerHandlers handlers, ServerLimits limits = {});
    ~Server();  // stops and joins
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    ServerStats stats() const;

private:
    struct Client;
    void run();
    void accept_from(int listener, bool http, int64_t now);
    void read_from(Client& client, int64_t now);
    void write_to(Client& client, int64_t now);
    void answer_http(Client& client, int64_t now);
    void answer_control(Client& client, int64_t now);
    bool make_room(bool http);
    int poll_timeout_ms(int64_t now) const;

    Fd http_, unix_;
    ServerHandlers handlers_;
    ServerLimits limits_;
    Fd wake_read_, wake_write_;
    std::vector<std::unique_ptr<Client>> clients_;
    struct CachedAnswer;
    std::vector<std::shared_ptr<CachedAnswer>> cache_;
    mutable std::mutex stats_mutex_;
    ServerStats stats_;
    std::thread thread_;
};

}  // namespace tcpwhy::daemon
