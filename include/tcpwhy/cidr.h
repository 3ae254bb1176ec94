// CIDR ranges and the load-balancer source ranges tcpwhy watches for.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tcpwhy/event.h"

namespace tcpwhy {

struct Cidr {
    IpAddr network;  // host bits cleared
    int prefix = 0;

    // "130.211.0.0/22", "2600:2d00:1:b029::/64", or a bare address (/32, /128).
    // Host bits set beyond the prefix are an error: they usually mean a typo.
    static std::optional<Cidr> parse(std::string_view text, std::string* error = nullptr);
    bool contains(const IpAddr& addr) const;
    std::string to_string() const;
};

// A list of ranges; an IPv4-mapped IPv6 peer (::ffff:a.b.c.d) matches the IPv4 range.
class CidrSet {
public:
    CidrSet() = default;
    explicit CidrSet(std::vector<Cidr> ranges) : ranges_(std::move(ranges)) {}
    // Comma-separated list; returns nullopt and sets *error on the first bad entry.
    static std::optional<CidrSet> parse_list(std::string_view text, std::string* error = nullptr);

    // The range that holds addr, or nullptr.
    const Cidr* match(const IpAddr& addr) const;
    bool contains(const IpAddr& addr) const { return match(addr) != nullptr; }
    const std::vector<Cidr>& ranges() const { return ranges_; }
    bool empty() const { return ranges_.empty(); }
    std::string to_string() const;

private:
    std::vector<Cidr> ranges_;
};

// Google Cloud HTTP(S) load balancer and health-check source ranges.
inline constexpr std::string_view kGcpLbRanges = "130.211.0.0/22,35.191.0.0/16,2600:2d00:1:b029::/64,2600:2d00:1:1::/64";

}  // namespace tcpwhy
