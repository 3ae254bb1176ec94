// A memory cgroup for one test, so the OOM killer can take a real process (tests/kernel).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "harness.h"

namespace tcpwhy::test {

// A memory cgroup of `limit` bytes for one test (v1 memory controller, or cgroup v2 with the memory
// controller enabled at its root); removed at the end. Empty path where neither is available.
class MemoryCgroup {
public:
    MemoryCgroup(const std::string& name, uint64_t limit) {
        if (std::filesystem::exists("/sys/fs/cgroup/memory/memory.limit_in_bytes")) {
            path_ = "/sys/fs/cgroup/memory/" + name;
            std::filesystem::create_directories(path_);
            std::ofstream(path_ + "/memory.limit_in_bytes") << limit;
            return;
        }
        std::string v2 = std::filesystem::exists("/sys/fs/cgroup/cgroup.controllers") ? "/sys/fs/cgroup" : "";
        if (v2.empty() || slurp(v2 + "/cgroup.controllers").find("memory") == std::string::npos) return;
        std::ofstream(v2 + "/cgroup.subtree_control") << "+memory";
        path_ = v2 + "/" + name;
        std::filesystem::create_directories(path_);
        std::ofstream(path_ + "/memory.max") << limit;
        std::ofstream(path_ + "/memory.swap.max") << 0;
    }
    ~MemoryCgroup() {
        if (path_.empty()) return;
        for (int i = 0; i < 100 && rmdir(path_.c_str()) != 0; ++i) sleep_ms(20);
    }
    MemoryCgroup(const MemoryCgroup&) = delete;
    MemoryCgroup& operator=(const MemoryCgroup&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

}  // namespace tcpwhy::test
