// From the kernel ABI (tcpwhy/abi.h) to the decoded Event.
#pragma once

#include <string>
#include <vector>

#include "tcpwhy/abi.h"
#include "tcpwhy/event.h"

namespace tcpwhy {

// Names of the running kernel's enum sk_rst_reason values, without the
// SK_RST_REASON_ prefix, indexed by value. Empty when the kernel has none.
using ResetReasonNames = std::vector<std::string>;

Event decode_event(const tcpwhy_event& raw, const ResetReasonNames& reasons);

// The reason a kernel without reset reasons would have given, from the socket's
// state when the reset left: the same names 6.10+ kernels use.
std::string infer_reset_reason(const Event& reset);

}  // namespace tcpwhy
