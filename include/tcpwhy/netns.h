// Network namespaces by name (as `ip netns` names them) or inode.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tcpwhy {

// "4026532281" or "pod" (a bind mount under /run/netns). nullopt and *error when neither.
std::optional<uint32_t> resolve_netns(std::string_view inode_or_name, std::string* error);

}  // namespace tcpwhy
