// libFuzzer target: --lb, --lb-ranges and --lb-idle-timeout as a user types them
// (CorrelatorConfig::from_options, hence the CIDR list parser), then the questions the
// tracer asks of the result for every event.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "tcpwhy/correlator.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // Layout: 4 bytes idle timeout (0xffffffff: not given), then "preset\0ranges".
    if (size < 4) return 0;
    uint32_t idle = 0;
    std::memcpy(&idle, data, 4);
    std::string_view rest(reinterpret_cast<const char*>(data + 4), size - 4);
    auto nul = rest.find('\0');
    std::string_view preset = rest.substr(0, nul);
    std::optional<std::string_view> ranges;
    if (nul != std::string_view::npos) ranges = rest.substr(nul + 1);
    std::optional<uint32_t> idle_timeout;
    if (idle != 0xffffffffu) idle_timeout = idle;

    std::string error;
    auto config = tcpwhy::CorrelatorConfig::from_options(preset, ranges, idle_timeout, &error);
    if (!config) {
        if (error.empty()) std::abort();  // a rejection always says why
        return 0;
    }
    (void)config->describe_lb();
    (void)config->lb_ranges.to_string();
    for (const char* peer : {"130.211.0.143", "10.0.0.1", "127.0.0.1", "::1", "::ffff:35.191.3.4", "2600:2d00:1:b029::5"})
        (void)config->is_lb_peer(*tcpwhy::IpAddr::parse(peer));
    // What a range list prints must parse back to the same list.
    if (!config->lb_ranges.empty()) {
        std::string printed = config->lb_ranges.to_string();
        auto again = tcpwhy::CidrSet::parse_list(printed);
        if (!again || again->to_string() != printed) std::abort();
    }
    return 0;
}
