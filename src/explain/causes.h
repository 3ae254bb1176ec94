// Words for the kinds about a backend's life (rollouts, crashes, full accept queues, LB
// timeouts, cut responses, outbound pools): explain.cpp calls these for those kinds.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tcpwhy/correlator.h"

namespace tcpwhy::explain::causes {

// nullopt: not one of these kinds (explain.cpp's own words apply).
std::optional<std::string> summary(const Finding& f, const std::string& who);
std::optional<std::vector<std::string>> evidence(const Finding& f);
std::optional<std::string> advice(const Finding& f);

// Evidence of one connection, for the facts ResetEvidence gained with these kinds (closed by an
// exit, while draining, response bytes discarded, the upstream's idle close); "" when none apply.
std::string connection_context(const ResetEvidence& ev);

}  // namespace tcpwhy::explain::causes
