// libFuzzer target: `tcpwhy report --conn RADDR:RPORT` and the address and CIDR parsers
// beneath it. Whatever parses must print back to text that parses to the same value.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <fmt/format.h>

#include "tcpwhy/cidr.h"
#include "tcpwhy/report.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    if (auto peer = tcpwhy::parse_peer(text)) {
        const auto& [addr, port] = *peer;
        std::string printed = addr.family == 6 ? fmt::format("[{}]:{}", addr.to_string(), port)
                                               : fmt::format("{}:{}", addr.to_string(), port);
        auto again = tcpwhy::parse_peer(printed);
        if (!again || again->first.to_string() != addr.to_string() || again->second != port) std::abort();
    }
    if (auto addr = tcpwhy::IpAddr::parse(text)) {
        auto again = tcpwhy::IpAddr::parse(addr->to_string());
        if (!again || again->to_string() != addr->to_string()) std::abort();
    }
    std::string error;
    if (auto cidr = tcpwhy::Cidr::parse(text, &error)) {
        auto again = tcpwhy::Cidr::parse(cidr->to_string());
        if (!again || again->to_string() != cidr->to_string()) std::abort();
    } else if (error.empty()) {
        std::abort();
    }
    return 0;
}
