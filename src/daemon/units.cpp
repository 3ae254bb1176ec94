#include "tcpwhy/daemon/units.h"

#include <cctype>
#include <charconv>
#include <string>

namespace tcpwhy::daemon {
namespace {

// The number and what follows it, lower-cased.
std::optional<std::pair<uint64_t, std::string>> split_number(std::string_view text) {
    uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || ptr == text.data()) return std::nullopt;
    std::string suffix;
    for (const char* p = ptr; p < text.data() + text.size(); ++p)
        suffix += static_cast<char>(std::tolower(static_cast<unsigned char>(*p)));
    return std::pair(value, suffix);
}

std::optional<uint64_t> scaled(uint64_t value, uint64_t unit) {
    if (unit && value > UINT64_MAX / unit) return std::nullopt;
    return value * unit;
}

}  // namespace

std::optional<uint64_t> parse_size(std::string_view text) {
    auto parts = split_number(text);
    if (!parts) return std::nullopt;
    auto [value, suffix] = *parts;
    for (const char* tail : {"ib", "b", "i"})
        if (suffix.size() > 1 && suffix.ends_with(tail)) {
            suffix.resize(suffix.size() - std::string_view(tail).size());
            break;
        }
    if (suffix.empty() || suffix == "b") return value;
    if (suffix == "k") return scaled(value, 1ull << 10);
    if (suffix == "m") return scaled(value, 1ull << 20);
    if (suffix == "g") return scaled(value, 1ull << 30);
    if (suffix == "t") return scaled(value, 1ull << 40);
    return std::nullopt;
}

std::optional<uint64_t> parse_duration_s(std::string_view text) {
    auto parts = split_number(text);
    if (!parts) return std::nullopt;
    auto [value, suffix] = *parts;
    if (suffix.empty() || suffix == "s") return value;
    if (suffix == "m") return scaled(value, 60);
    if (suffix == "h") return scaled(value, 3600);
    if (suffix == "d") return scaled(value, 86400);
    return std::nullopt;
}

}  // namespace tcpwhy::daemon
