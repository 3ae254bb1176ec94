// What to do about a finding, in the words of the server that has the problem.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tcpwhy/correlator.h"

namespace tcpwhy::advice {

struct Context {
    FindingKind kind = FindingKind::other;
    std::string_view comm;           // the backend's process name
    uint32_t lb_idle_timeout_s = 0;  // 0: no load balancer
    uint32_t observed_p50_ms = 0;    // backend idle-close median (0: none observed)
    const SockOpts* opts = nullptr;  // timeout options seen on the backend
};

// The server idle timeout to recommend: the LB's plus a margin (5 s, or ~3% for
// long timeouts) so the LB always closes an idle connection first. 600 -> 620.
uint32_t recommended_idle_timeout_s(uint32_t lb_idle_timeout_s);

std::string advice_for(const Context& context);

}  // namespace tcpwhy::advice
