// The daemon's two listeners, served by one thread: HTTP on TCP for Prometheus
// (/metrics) and probes (/healthz), and the Unix control socket for `tcpwhy top
// --connect` and `tcpwhy export` (protocol: include/tcpwhy/live_view.h). Plain
// sockets and poll(2); requests are small, answers are built by the handlers.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tcpwhy/fd.h"

namespace tcpwhy::daemon {

// "0.0.0.0:9090", "127.0.0.1:0" (any free port), "[::]:9090". Sets *error on failure.
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
};

struct ServerHandlers {
    std::function<HttpResponse(const std::string& path)> http;
    // One request line of the control protocol -> one answer line (no newline).
    // Return nullopt when the handler took the connection over (export).
    std::function<std::optional<std::string>(const std::string& line, Fd& client)> control;
};

class Server {
public:
    Server(Fd http_listener, Fd unix_listener, ServerHandlers handlers);
    ~Server();  // stops and joins
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

private:
    struct Client {
        Fd fd;
        bool http = false;
        std::string buffer;
        int64_t deadline_ms = 0;  // HTTP: the request must be complete by then
    };
    void run();
    void serve_http(Client& client);
    bool serve_control(Client& client);  // false: close it

    Fd http_, unix_;
    ServerHandlers handlers_;
    Fd wake_read_, wake_write_;
    std::vector<Client> clients_;
    std::thread thread_;
};

}  // namespace tcpwhy::daemon
