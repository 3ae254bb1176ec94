// The TCP sockets that existed before the daemon started, in every network namespace
// on the node, as `existing` events (bpf/tcpwhy_iter.bpf.c), with their owning process
// where /proc names one. Needs what loading tracing programs needs, plus CAP_SYS_ADMIN
// to enter the other namespaces: run it before dropping capabilities.
#pragma once

#include <string>
#include <vector>

#include "tcpwhy/event_source.h"

namespace tcpwhy {

// Throws std::runtime_error when the iterator cannot be loaded at all. with_owners: find
// each socket's process through /proc/PID/fd (a walk of every process's fds).
ExistingSockets list_existing_sockets(bool with_owners = true);

}  // namespace tcpwhy
