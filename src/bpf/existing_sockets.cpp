#include "tcpwhy/bpf/existing_sockets.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>

#include "tcpwhy/fd.h"
#include "tcpwhy/decode.h"
#include "tcpwhy_iter.skel.h"

namespace tcpwhy {
namespace {

struct SkeletonDeleter {
    void operator()(tcpwhy_iter_bpf* skel) const { tcpwhy_iter_bpf__destroy(skel); }
};
struct LinkDeleter {
    void operator()(bpf_link* link) const { bpf_link__destroy(link); }
};

bool all_digits(const char* s) {
    if (!*s) return false;
    for (; *s; ++s)
        if (*s < '0' || *s > '9') return false;
    return true;
}

// One path per distinct network namespace: processes' /proc/PID/ns/net and `ip netns` names.
std::map<ino_t, std::string> network_namespaces() {
    std::map<ino_t, std::string> found;
    auto add = [&](const std::string& path) {
        struct stat st{};
        if (stat(path.c_str(), &st) == 0) found.try_emplace(st.st_ino, path);
    };
    add("/proc/self/ns/net");
    if (DIR* d = opendir("/proc")) {
        while (dirent* entry = readdir(d))
            if (all_digits(entry->d_name)) add(fmt::format("/proc/{}/ns/net", entry->d_name));
        closedir(d);
    }
    if (DIR* d = opendir("/run/netns")) {
        while (dirent* entry = readdir(d))
            if (entry->d_name[0] != '.') add(fmt::format("/run/netns/{}", entry->d_name));
        closedir(d);
    }
    return found;
}

// Every record of an iterator made from link_fd, read to its end.
std::vector<tcpwhy_event> read_iterator(int link_fd, const std::string& what, std::string* error) {
    std::vector<tcpwhy_event> out;
    Fd iter(bpf_iter_create(link_fd));
    if (!iter) {
        *error = fmt::format("{}: cannot create the socket iterator: {}", what, strerror(errno));
        return out;
    }
    std::string bytes;
    char buf[16384];
    ssize_t n;
    while ((n = read(iter.get(), buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
        if (n > 0) bytes.append(buf, static_cast<size_t>(n));
    if (n < 0) *error = fmt::format("{}: reading the socket iterator: {}", what, strerror(errno));
    for (size_t at = 0; at + sizeof(tcpwhy_event) <= bytes.size(); at += sizeof(tcpwhy_event)) {
        tcpwhy_event raw;
        std::memcpy(&raw, bytes.data() + at, sizeof(raw));
        out.push_back(raw);
    }
    return out;
}

// Reads the iterator in the namespace at ns_path, on a thread of its own: the
// iterator walks the namespace of the task that reads it, and setns() moves only that thread.
std::vector<tcpwhy_event> walk_namespace(int link_fd, const std::string& ns_path, std::string* error) {
    std::vector<tcpwhy_event> out;
    std::thread([&] {
        Fd ns(open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!ns || setns(ns.get(), CLONE_NEWNET) != 0) {
            *error = fmt::format("{}: cannot enter: {}", ns_path, strerror(errno));
            return;
        }
        out = read_iterator(link_fd, ns_path, error);
    }).join();
    return out;
}

struct Owner {
    uint32_t pid = 0;
    std::string comm;
};

// Owners of the given socket inodes, from /proc/PID/fd (the first process found holding each).
std::unordered_map<uint64_t, Owner> socket_owners(const std::set<uint64_t>& inodes) {
    std::unordered_map<uint64_t, Owner> owners;
    if (inodes.empty()) return owners;
    DIR* proc = opendir("/proc");
    if (!proc) return owners;
    while (dirent* entry = readdir(proc)) {
        if (!all_digits(entry->d_name)) continue;
        std::string fd_dir = fmt::format("/proc/{}/fd", entry->d_name);
        DIR* fds = opendir(fd_dir.c_str());
        if (!fds) continue;
        std::string comm;
        while (dirent* fd = readdir(fds)) {
            char target[64];
            ssize_t len = readlinkat(dirfd(fds), fd->d_name, target, sizeof(target) - 1);
            if (len <= 8 || std::strncmp(target, "socket:[", 8) != 0) continue;
            target[len] = '\0';
            uint64_t ino = std::strtoull(target + 8, nullptr, 10);
            if (!inodes.count(ino) || owners.count(ino)) continue;
            if (comm.empty()) {
                std::ifstream in(fmt::format("/proc/{}/comm", entry->d_name));
                std::getline(in, comm);
            }
            owners[ino] = {static_cast<uint32_t>(std::strtoul(entry->d_name, nullptr, 10)), comm};
        }
        closedir(fds);
    }
    closedir(proc);
    return owners;
}

using Skeleton = std::unique_ptr<tcpwhy_iter_bpf, SkeletonDeleter>;

enum class Listing { per_namespace, held };

// The iterator object with only that listing's program loaded.
Skeleton load_iterator(Listing listing) {
    Skeleton skel(tcpwhy_iter_bpf__open());
    if (!skel) throw std::runtime_error(fmt::format("cannot open the socket iterator: {}", strerror(errno)));
    bpf_program__set_autoload(skel->progs.list_tcp_sockets, listing == Listing::per_namespace);
    bpf_program__set_autoload(skel->progs.list_held_tcp_sockets, listing == Listing::held);
    if (tcpwhy_iter_bpf__load(skel.get()) != 0)
        throw std::runtime_error(fmt::format("cannot load the socket iterator: {}", strerror(errno)));
    return skel;
}

}  // namespace

struct HeldSockets::Impl {
    Skeleton skel;
    std::unique_ptr<bpf_link, LinkDeleter> link;
};

HeldSockets::HeldSockets() : impl_(std::make_unique<Impl>()) {
    impl_->skel = load_iterator(Listing::held);
    impl_->link.reset(bpf_program__attach_iter(impl_->skel->progs.list_held_tcp_sockets, nullptr));
    if (!impl_->link)
        throw std::runtime_error(fmt::format("cannot attach the held-socket iterator: {}", strerror(errno)));
}

HeldSockets::~HeldSockets() = default;

ExistingSockets HeldSockets::list() const {
    std::string error;
    auto raws = read_iterator(bpf_link__fd(impl_->link.get()), "held sockets", &error);
    if (!error.empty()) throw std::runtime_error(error);
    ExistingSockets result;
    std::set<uint64_t> seen;  // a socket several processes hold (fork) is one socket: one inode
    for (const auto& raw : raws)
        if (seen.insert(raw.existing.sock_ino ? raw.existing.sock_ino : raw.cookie).second)
            result.events.push_back(decode_event(raw, {}));
    return result;
}

ExistingSockets list_existing_sockets(bool with_owners) {
    Skeleton skel = load_iterator(Listing::per_namespace);
    std::unique_ptr<bpf_link, LinkDeleter> link(bpf_program__attach_iter(skel->progs.list_tcp_sockets, nullptr));
    if (!link) throw std::runtime_error(fmt::format("cannot attach the socket iterator: {}", strerror(errno)));

    ExistingSockets result;
    std::vector<tcpwhy_event> raws;
    for (const auto& [ino, path] : network_namespaces()) {
        std::string error;
        auto found = walk_namespace(bpf_link__fd(link.get()), path, &error);
        if (!error.empty()) result.errors.push_back(std::move(error));
        else ++result.namespaces;
        raws.insert(raws.end(), found.begin(), found.end());
    }
    std::set<uint64_t> inodes;
    if (with_owners)
        for (const auto& raw : raws)
            if (raw.existing.sock_ino) inodes.insert(raw.existing.sock_ino);
    auto owners = socket_owners(inodes);
    for (const auto& raw : raws) {
        Event e = decode_event(raw, {});
        if (auto it = owners.find(raw.existing.sock_ino); raw.existing.sock_ino && it != owners.end()) {
            e.pid = it->second.pid;
            e.comm = it->second.comm;
        }
        result.events.push_back(std::move(e));
    }
    return result;
}

}  // namespace tcpwhy
