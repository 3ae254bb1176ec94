// A host root for the resolver's tests, made of real files, symlinks and directories.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>

namespace tcpwhy::test {

namespace fs = std::filesystem;

// A host root made of real files: /proc/<pid>/{ns/net,cgroup,comm}, /run/netns,
// /var/log/pods, /var/log/containers and a cgroup v2 tree.
struct FakeHost {
    fs::path root;
    FakeHost() {
        root = fs::temp_directory_path() / fmt::format("tcpwhy-fakehost-{}-{}", getpid(), reinterpret_cast<uintptr_t>(this));
        fs::remove_all(root);
        fs::create_directories(root / "proc");
        fs::create_directories(root / "run/netns");
        fs::create_directories(root / "var/log/pods");
        fs::create_directories(root / "var/log/containers");
        fs::create_directories(root / "sys/fs/cgroup");
        write(root / "sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n");
    }
    ~FakeHost() { fs::remove_all(root); }

    static void write(const fs::path& path, const std::string& text) {
        fs::create_directories(path.parent_path());
        std::ofstream(path) << text;
    }
    void process(int pid, uint32_t netns, const std::string& cgroup, const std::string& comm) {
        // (a pid may come back: a pod that went away and a new one reusing it)
        fs::remove_all(root / "proc" / std::to_string(pid));
        fs::path dir = root / "proc" / std::to_string(pid);
        fs::create_directories(dir / "ns");
        fs::create_symlink(fmt::format("net:[{}]", netns), dir / "ns/net");
        write(dir / "cgroup", "0::" + cgroup + "\n");
        write(dir / "comm", comm + "\n");
    }
    uint64_t cgroup_dir(const std::string& path) {
        fs::path dir = root / "sys/fs/cgroup" / path.substr(1);
        fs::create_directories(dir);
        struct stat st{};
        stat(dir.c_str(), &st);
        return st.st_ino;
    }
    uint32_t named_netns(const std::string& name) {
        write(root / "run/netns" / name, "");
        struct stat st{};
        stat((root / "run/netns" / name).c_str(), &st);
        return static_cast<uint32_t>(st.st_ino);
    }
    // The process exits.
    void exit(int pid) { fs::remove_all(root / "proc" / std::to_string(pid)); }
};

}  // namespace tcpwhy::test
