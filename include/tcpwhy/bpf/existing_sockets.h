// The TCP sockets that existed before the daemon started, in every network namespace
// on the node, as `existing` events (bpf/tcpwhy_iter.bpf.c), with their owning process
// where /proc names one. Needs what loading tracing programs needs, plus CAP_SYS_ADMIN
// to enter the other namespaces: run it before dropping capabilities.
#pragma once

#include <string>
#include <vector>

#include "tcpwhy/event.h"

namespace tcpwhy {

struct ExistingSockets {
    std::vector<Event> events;
    size_t namespaces = 0;            // network namespaces walked
    std::vector<std::string> errors;  // namespaces that could not be walked, and why
};

// Throws std::runtime_error when the iterator cannot be loaded at all.
ExistingSockets list_existing_sockets();

}  // namespace tcpwhy
