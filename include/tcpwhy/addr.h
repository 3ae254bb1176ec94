// Address helpers the correlator and the report share.
#pragma once

#include <algorithm>
#include <array>

#include "tcpwhy/event.h"

namespace tcpwhy::addr {

inline constexpr std::array<uint8_t, 12> kV4MappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

inline bool is_v4_mapped(const IpAddr& a) {
    return a.family == 6 && std::equal(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), a.bytes.begin());
}

// ::ffff:a.b.c.d as a.b.c.d, so a dual-stack listener's peers match what users type.
inline IpAddr unmapped(const IpAddr& a) {
    if (!is_v4_mapped(a)) return a;
    IpAddr v4;
    v4.family = 4;
    std::copy(a.bytes.begin() + 12, a.bytes.end(), v4.bytes.begin());
    return v4;
}

inline bool is_loopback(const IpAddr& a) {
    if (a.family == 4) return a.bytes[0] == 127;
    if (a.family != 6) return false;
    constexpr std::array<uint8_t, 16> kLoopback6 = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return a.bytes == kLoopback6 || (is_v4_mapped(a) && a.bytes[12] == 127);
}

inline bool same_endpoint(const IpAddr& a, uint16_t a_port, const IpAddr& b, uint16_t b_port) {
    return a_port == b_port && unmapped(a) == unmapped(b);
}

}  // namespace tcpwhy::addr
