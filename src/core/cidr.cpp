#include "tcpwhy/cidr.h"

#include <charconv>

#include <fmt/format.h>

namespace tcpwhy {
namespace {

void set_error(std::string* error, std::string message) {
    if (error) *error = std::move(message);
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool prefix_matches(const IpAddr& network, int prefix, const uint8_t* bytes) {
    int full = prefix / 8, rest = prefix % 8;
    for (int i = 0; i < full; ++i)
        if (network.bytes[i] != bytes[i]) return false;
    if (rest == 0) return true;
    uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
    return (network.bytes[full] & mask) == (bytes[full] & mask);
}

}  // namespace

std::optional<Cidr> Cidr::parse(std::string_view text, std::string* error) {
    text = trim(text);
    auto slash = text.find('/');
    auto addr = IpAddr::parse(text.substr(0, slash));
    if (!addr) {
        set_error(error, fmt::format("'{}' is not an IPv4 or IPv6 address", text.substr(0, slash)));
        return std::nullopt;
    }
    int max_prefix = addr->family == 4 ? 32 : 128;
    int prefix = max_prefix;
    if (slash != std::string_view::npos) {
        auto digits = text.substr(slash + 1);
        auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
        if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size() || prefix < 0 ||
            prefix > max_prefix) {
            set_error(error, fmt::format("'{}': prefix length must be 0-{}", text, max_prefix));
            return std::nullopt;
        }
    }
    Cidr cidr{*addr, prefix};
    int byte_count = max_prefix / 8;
    for (int bit = prefix; bit < max_prefix; ++bit) {
        if (cidr.network.bytes[bit / 8] & (0x80 >> (bit % 8))) {
            IpAddr net = *addr;
            for (int b = prefix; b < byte_count * 8; ++b) net.bytes[b / 8] &= static_cast<uint8_t>(~(0x80 >> (b % 8)));
            set_error(error, fmt::format("'{}' has host bits set; did you mean {}/{}?", text, net.to_string(), prefix));
            return std::nullopt;
        }
    }
    return cidr;
}

bool Cidr::contains(const IpAddr& addr) const {
    if (addr.family == network.family) return prefix_matches(network, prefix, addr.bytes.data());
    // ::ffff:a.b.c.d, as a dual-stack listener sees an IPv4 peer
    static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (network.family == 4 && addr.family == 6 && std::equal(kMapped, kMapped + 12, addr.bytes.begin()))
        return prefix_matches(network, prefix, addr.bytes.data() + 12);
    return false;
}

std::string Cidr::to_string() const { return fmt::format("{}/{}", network.to_string(), prefix); }

std::optional<CidrSet> CidrSet::parse_list(std::string_view text, std::string* error) {
    std::vector<Cidr> ranges;
    while (true) {
        auto comma = text.find(',');
        auto item = trim(text.substr(0, comma));
        if (item.empty()) {
            set_error(error, "empty entry in CIDR list (expected e.g. 130.211.0.0/22,35.191.0.0/16)");
            return std::nullopt;
        }
        auto cidr = Cidr::parse(item, error);
        if (!cidr) return std::nullopt;
        ranges.push_back(*cidr);
        if (comma == std::string_view::npos) break;
        text.remove_prefix(comma + 1);
    }
    return CidrSet(std::move(ranges));
}

const Cidr* CidrSet::match(const IpAddr& addr) const {
    for (const auto& r : ranges_)
        if (r.contains(addr)) return &r;
    return nullptr;
}

std::string CidrSet::to_string() const {
    std::string out;
    for (const auto& r : ranges_) {
        if (!out.empty()) out += ',';
        out += r.to_string();
    }
    return out;
}

}  // namespace tcpwhy
