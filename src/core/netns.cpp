#include "tcpwhy/netns.h"

#include <sys/stat.h>

#include <cctype>
#include <charconv>

#include <fmt/format.h>

namespace tcpwhy {

std::optional<uint32_t> resolve_netns(std::string_view text, std::string* error) {
    if (!text.empty() && std::isdigit(static_cast<unsigned char>(text.front()))) {
        uint32_t inode = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), inode);
        if (ec == std::errc{} && end == text.data() + text.size() && inode != 0) return inode;
        if (error) *error = fmt::format("--netns '{}' is not a namespace inode", text);
        return std::nullopt;
    }
    if (text.empty() || text.find('/') != std::string_view::npos) {
        if (error) *error = fmt::format("--netns '{}' is not a namespace name", text);
        return std::nullopt;
    }
    std::string path = fmt::format("/run/netns/{}", text);
    struct stat st{};
    if (stat(path.c_str(), &st) != 0) {
        if (error)
            *error = fmt::format("network namespace '{}' does not exist ({} not found; `ip netns list` shows the names)",
                                 text, path);
        return std::nullopt;
    }
    return static_cast<uint32_t>(st.st_ino);
}

}  // namespace tcpwhy
