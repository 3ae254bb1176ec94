// A node's path as this process sees it: the daemon reads the node through --host-root
// (a container sees the node's /proc and /sys only where they are mounted).
#pragma once

#include <string>
#include <string_view>

namespace tcpwhy {

// `/proc/1/cgroup` under root `/host` is `/host/proc/1/cgroup`; under `/` or "" it is itself.
inline std::string under_host_root(const std::string& root, std::string_view path) {
    if (root.empty() || root == "/") return std::string(path);
    std::string out = root;
    if (out.back() == '/') out.pop_back();
    return out + std::string(path);
}

}  // namespace tcpwhy
