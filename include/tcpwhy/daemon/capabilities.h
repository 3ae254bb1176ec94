// Dropping privileges once the kernel programs are attached.
#pragma once

#include <string>
#include <vector>

namespace tcpwhy::daemon {

// Leaves only `keep` (CAP_* numbers) in this thread's effective and permitted sets,
// clears the inheritable and ambient sets, removes every other capability from the
// bounding set and sets no_new_privs, so neither this process nor what it might
// exec can regain them. Call before starting threads: capabilities are per thread.
bool drop_capabilities_except(const std::vector<int>& keep, std::string* error);

// The effective set as names, e.g. "cap_bpf" ("none" when empty).
std::string effective_capabilities();

}  // namespace tcpwhy::daemon
