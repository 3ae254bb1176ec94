#include "tcpwhy/top/daemon_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tcpwhy/fd.h"

namespace tcpwhy::top {
namespace {

constexpr size_t kMaxAnswerBytes = 64u << 20;  // a snapshot of thousands of backends is a few MiB

}  // namespace

std::optional<Snapshot> fetch_snapshot(const std::string& socket_path, int timeout_ms, std::string* error) {
    auto fail = [&](std::string why) -> std::optional<Snapshot> {
        *error = fmt::format("{}: {}", socket_path, why);
        return std::nullopt;
    };
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof(address.sun_path)) return fail("socket path too long");
    std::memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);

    Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return fail(fmt::format("socket: {}", std::strerror(errno)));
    if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0)
        return fail(fmt::format("cannot connect: {}", std::strerror(errno)));

    constexpr std::string_view kRequest = "{\"cmd\":\"snapshot\"}\n";
    if (send(fd.get(), kRequest.data(), kRequest.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(kRequest.size()))
        return fail(fmt::format("cannot send the request: {}", std::strerror(errno)));

    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    std::string answer;
    char buffer[65536];
    while (answer.find('\n') == std::string::npos) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return fail(fmt::format("no answer within {} ms", timeout_ms));
        pollfd p{fd.get(), POLLIN, 0};
        int ready = poll(&p, 1, static_cast<int>(left.count()));
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) return fail(fmt::format("poll: {}", std::strerror(errno)));
        if (ready == 0) continue;
        ssize_t n = recv(fd.get(), buffer, sizeof(buffer), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(fmt::format("read: {}", std::strerror(errno)));
        if (n == 0) {
            if (answer.empty()) return fail("the daemon closed the connection without answering");
            break;  // a last line without its newline
        }
        answer.append(buffer, static_cast<size_t>(n));
        if (answer.size() > kMaxAnswerBytes) return fail("answer larger than 64 MiB");
    }
    answer.resize(std::min(answer.find('\n'), answer.size()));
    // The daemon answers what it cannot do with {"error": "..."}.
    auto reply = nlohmann::json::parse(answer, nullptr, false);
    if (reply.is_object() && reply.contains("error") && reply["error"].is_string())
        return fail("the daemon answered: " + reply["error"].get<std::string>());
    std::string why;
    auto snapshot = parse_snapshot(answer, &why);
    if (!snapshot) return fail("answer is not a snapshot: " + why);
    return snapshot;
}

}  // namespace tcpwhy::top
