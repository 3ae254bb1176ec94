// From the kernel ABI (tcpwhy/abi.h) to the decoded Event.
#pragma once

#include <string>
#include <vector>

#include "tcpwhy/abi.h"
#include "tcpwhy/event.h"

namespace tcpwhy {

// The running kernel's enum sk_rst_reason, value -> tcpwhy's ResetReason (by name, from
// BTF; a name tcpwhy does not know maps to `unrecognised`). Empty when the kernel has none.
using ResetReasonMap = std::vector<ResetReason>;
// From the kernel's names (without the SK_RST_REASON_ prefix), indexed by value.
ResetReasonMap reset_reason_map(const std::vector<std::string>& kernel_names);

Event decode_event(const tcpwhy_event& raw, const ResetReasonMap& reasons);
// A backend's tally (the tally map's entry, its counters the difference since the last read;
// owner and options as read) as a `tally` event at ts_ns.
Event decode_tally(const tcpwhy_tally_key& key, const tcpwhy_tally_value& delta, uint64_t ts_ns);

// The reason a kernel without reset reasons would have given, from the socket's
// state when the reset left: the same reasons 6.10+ kernels name.
ResetReason infer_reset_reason(const Event& reset);

}  // namespace tcpwhy
