// The TCP sockets open now, as `existing` events (bpf/tcpwhy_iter.bpf.c).
//
// list_existing_sockets(): every socket in every network namespace on the node, with its owning
// process where /proc names one. Needs what loading tracing programs needs, plus CAP_SYS_ADMIN to
// enter the other namespaces: run it before dropping capabilities (the start's snapshot).
//
// HeldSockets: the sockets processes hold, with the process, listed by an iterator link made
// once (before the drop) and read as often as wanted afterwards with only CAP_BPF: the live
// idle times `top` shows, also from a daemon that dropped its other capabilities. It sees the
// processes of its own PID namespace (the host's in the DaemonSet: hostPID).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tcpwhy/event_source.h"

namespace tcpwhy {

// Throws std::runtime_error when the iterator cannot be loaded at all. with_owners: find
// each socket's process through /proc/PID/fd (a walk of every process's fds).
ExistingSockets list_existing_sockets(bool with_owners = true);

class HeldSockets {
public:
    // Loads and attaches the iterator; throws std::runtime_error when it cannot.
    HeldSockets();
    ~HeldSockets();
    HeldSockets(const HeldSockets&) = delete;
    HeldSockets& operator=(const HeldSockets&) = delete;

    // One socket once, however many processes hold it; throws std::runtime_error on a failed read.
    ExistingSockets list() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tcpwhy
