#include "tcpwhy/workload_resolver.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "tcpwhy/host_path.h"

namespace tcpwhy {
namespace {

// Directory entries; an unreadable directory is an empty list (and *err is set).
std::vector<std::string> list_dir(const std::string& path, int* err = nullptr) {
    std::vector<std::string> names;
    DIR* dir = opendir(path.c_str());
    if (!dir) {
        if (err) *err = errno;
        return names;
    }
    while (dirent* d = readdir(dir)) {
        if (d->d_name[0] == '.') continue;
        names.emplace_back(d->d_name);
    }
    closedir(dir);
    return names;
}

// Small /proc and cgroup files: read whole. nullopt and *err on failure.
std::optional<std::string> read_small_file(const std::string& path, int* err) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = errno;
        return std::nullopt;
    }
    std::string text;
    char buf[4096];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            *err = errno;
            close(fd);
            return std::nullopt;
        }
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
        if (text.size() > (1 << 20)) break;
    }
    close(fd);
    return text;
}

// "net:[4026531840]" -> 4026531840
std::optional<uint32_t> netns_of_link(const std::string& path, int* err) {
    char buf[64];
    ssize_t n = readlink(path.c_str(), buf, sizeof buf - 1);
    if (n < 0) {
        *err = errno;
        return std::nullopt;
    }
    buf[n] = 0;
    unsigned long inode = 0;
    if (sscanf(buf, "net:[%lu]", &inode) != 1) {
        *err = EINVAL;
        return std::nullopt;
    }
    return static_cast<uint32_t>(inode);
}

bool is_number(const std::string& s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

uint64_t now_mono_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + static_cast<uint64_t>(ts.tv_nsec);
}

struct PodInfo {
    std::string namespace_name, pod;
    std::vector<std::string> containers;  // directory names under the pod's log dir
};

// How good a name is for a namespace: a pod beats an `ip netns` name beats a container
// beats a bare process.
int rank(WorkloadKind kind) {
    switch (kind) {
    case WorkloadKind::pod: return 4;
    case WorkloadKind::netns: return 3;
    case WorkloadKind::container: return 2;
    case WorkloadKind::process: return 1;
    default: return 0;
    }
}

}  // namespace

WorkloadResolver::WorkloadResolver(ResolverOptions options)
    : options_(std::move(options)), table_(std::make_shared<WorkloadTable>()) {
    if (options_.pod_logs.empty()) options_.pod_logs = under_host_root(options_.host_root, "/var/log/pods");
    if (options_.container_logs.empty()) options_.container_logs = under_host_root(options_.host_root, "/var/log/containers");
}

void WorkloadResolver::note_problem(int err, const std::string& what) {
    if (err == ENOENT || err == ESRCH) counters_.vanished_pids++;
    else if (err == EACCES || err == EPERM) counters_.permission_denied++;
    else counters_.unreadable_entries++;
    if (counters_.first_problem.empty() && err != ENOENT && err != ESRCH)
        counters_.first_problem = fmt::format("{}: {}", what, strerror(err));
}

const Workload* WorkloadResolver::resolve(const Event& event, uint64_t now_ns) {
    const Workload* w = table_->lookup(event.netns, event.cgroup_id);
    bool netns_miss = event.netns && !table_->netns_workload(event.netns) && !unknown_netns_.count(event.netns);
    // The owner matters only where the namespace does not already name the socket: test that first.
    bool owner_miss = event.cgroup_id && (!w || w->kind == WorkloadKind::host) &&
                      !table_->cgroup_workload(event.cgroup_id) && !unknown_cgroups_.count(event.cgroup_id);
    if (netns_miss || owner_miss) {
        pending_ = true;
        if (!scanned_ || now_ns >= last_scan_ns_ + options_.min_rescan_interval_ns) {
            scan(now_ns);
            w = table_->lookup(event.netns, event.cgroup_id);
        }
        // Still unknown after a scan: wait for the periodic refresh rather than rescan per event.
        if (event.netns && !table_->netns_workload(event.netns)) unknown_netns_.insert(event.netns);
        if (event.cgroup_id && !table_->cgroup_workload(event.cgroup_id)) unknown_cgroups_.insert(event.cgroup_id);
    }
    return w;
}

bool WorkloadResolver::tick(uint64_t now_ns) {
    bool api_changed = kube_api_ && kube_api_->generation() != kube_generation_;
    bool due = !scanned_ || now_ns >= last_scan_ns_ + options_.refresh_interval_ns ||
               ((pending_ || api_changed) && now_ns >= last_scan_ns_ + options_.min_rescan_interval_ns);
    if (!due) return false;
    size_t before = changes_.size();
    scan(now_ns);
    return changes_.size() != before;
}

std::vector<WorkloadRecord> WorkloadResolver::take_changes() { return std::exchange(changes_, {}); }

void WorkloadResolver::scan(uint64_t now_ns) {
    uint64_t started = now_mono_ns();
    counters_.scans++;
    scanned_ = true;
    if (kube_api_) kube_generation_ = kube_api_->generation();
    pending_ = false;
    last_scan_ns_ = now_ns;
    unknown_netns_.clear();
    unknown_cgroups_.clear();
    const std::string proc = under_host_root(options_.host_root, "/proc");

    // The host's namespace: init's. Everyone in it shares it, so owners decide there.
    // init's, or kthreadd's: kernel threads always live in the initial namespace, and
    // some sandboxes refuse to show init's.
    int err = 0;
    for (const char* anchor : {"/1/ns/net", "/2/ns/net"}) {
        if (auto host = netns_of_link(proc + anchor, &err)) {
            host_netns_ = *host;
            break;
        }
    }
    if (!host_netns_) note_problem(err, proc + "/1/ns/net");

    // `ip netns` names.
    std::unordered_map<uint32_t, std::string> netns_names;
    const std::string run_netns = under_host_root(options_.host_root, "/run/netns");
    for (const auto& name : list_dir(run_netns)) {
        struct stat st{};
        if (stat((run_netns + "/" + name).c_str(), &st) == 0) netns_names[static_cast<uint32_t>(st.st_ino)] = name;
    }

    // Pods and container names the kubelet's log directories give.
    std::unordered_map<std::string, PodInfo> pods;  // by uid
    uint64_t malformed_dirs = 0;
    for (const auto& dir : list_dir(options_.pod_logs)) {
        auto parsed = parse_pod_log_dir(dir);
        if (!parsed) {
            malformed_dirs++;
            continue;
        }
        PodInfo info{parsed->namespace_name, parsed->pod, list_dir(options_.pod_logs + "/" + dir)};
        pods[parsed->uid] = std::move(info);
    }
    counters_.malformed_pod_dirs = malformed_dirs;
    counters_.pods = pods.size();
    std::unordered_map<std::string, std::string> container_names;  // by container id
    for (const auto& file : list_dir(options_.container_logs))
        if (auto link = parse_container_log_name(file)) container_names[link->container_id] = link->container;

    auto workload_of = [&](const CgroupIdentity& id) {
        Workload w;
        if (id.kubernetes) {
            w.kind = WorkloadKind::pod;
            w.pod_uid = id.pod_uid;
            w.qos = id.qos;
            if (auto it = pods.find(id.pod_uid); it != pods.end()) {
                w.namespace_name = it->second.namespace_name;
                w.pod = it->second.pod;
                if (it->second.containers.size() == 1) w.container = it->second.containers.front();
            }
        } else {
            w.kind = WorkloadKind::container;
        }
        w.container_id = id.container_id;
        w.runtime = id.runtime;
        if (auto it = container_names.find(id.container_id); !id.container_id.empty() && it != container_names.end())
            w.container = it->second;
        if (id.kubernetes && kube_api_) kube_api_->enrich(w);
        return w;
    };

    // cgroup v2 ids are the inode numbers of the cgroup directories: walk the tree
    // for the container and pod cgroups. Walking (rather than stat-ing the paths
    // /proc shows) works from inside a cgroup namespace too.
    std::unordered_map<uint64_t, Workload> by_cgroup;
    counters_.cgroup2_root.clear();
    for (const char* candidate : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
        std::string root = under_host_root(options_.host_root, candidate);
        struct stat st{};
        if (stat((root + "/cgroup.controllers").c_str(), &st) == 0) {
            counters_.cgroup2_root = root;
            break;
        }
    }
    uint64_t malformed_cgroups = 0;
    if (!counters_.cgroup2_root.empty()) {
        // Depth-bounded: kubelet's deepest layout is kubelet.slice/kubepods.slice/<qos>/<pod>/<container>.
        std::vector<std::pair<std::string, int>> stack{{"", 0}};
        while (!stack.empty()) {
            auto [rel, depth] = stack.back();
            stack.pop_back();
            std::string dir = counters_.cgroup2_root + rel;
            DIR* d = opendir(dir.c_str());
            if (!d) continue;
            while (dirent* e = readdir(d)) {
                if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
                std::string child = rel + "/" + e->d_name;
                if (auto id = parse_cgroup_path(child)) {
                    if (!id->container_id.empty() || id->kubernetes) by_cgroup[e->d_ino] = workload_of(*id);
                } else if (looks_like_kubepods(child) && std::string_view(e->d_name).find("pod") != std::string_view::npos &&
                           std::string_view(e->d_name).find("kubepods") == std::string_view::npos) {
                    malformed_cgroups++;
                }
                if (depth < 8) stack.emplace_back(child, depth + 1);
            }
            closedir(d);
        }
    }

    // Processes: which namespace each lives in, and what its cgroup says it is.
    std::unordered_map<uint32_t, Workload> by_netns;
    uint64_t processes = 0;
    for (const auto& pid_name : list_dir(proc)) {
        if (!is_number(pid_name)) continue;
        processes++;
        std::string base = proc + "/" + pid_name;
        err = 0;
        auto netns = netns_of_link(base + "/ns/net", &err);
        if (!netns) {
            note_problem(err, base + "/ns/net");
            continue;
        }
        // The host's namespace is named `host`; within it the cgroup walk above names the owners.
        if (*netns == host_netns_) continue;
        auto cgroup_text = read_small_file(base + "/cgroup", &err);
        if (!cgroup_text) {
            note_problem(err, base + "/cgroup");
            continue;
        }
        auto comm = read_small_file(base + "/comm", &err);
        std::string process = comm ? comm->substr(0, comm->find('\n')) : std::string();
        auto pid = static_cast<uint32_t>(std::stoul(pid_name));

        Workload w;
        std::optional<std::string> path = cgroup_path_of(*cgroup_text);
        std::optional<CgroupIdentity> id = path ? parse_cgroup_path(*path) : std::nullopt;
        // Counted by the cgroup walk when there is one; per process only on cgroup v1-only hosts.
        if (!id && counters_.cgroup2_root.empty() && path && looks_like_kubepods(*path) &&
            path->find("pod") != std::string::npos)
            malformed_cgroups++;
        if (id) w = workload_of(*id);
        else w.kind = WorkloadKind::process;
        w.process = process;
        w.pid = pid;

        Workload candidate = w;
        if (auto named = netns_names.find(*netns); named != netns_names.end() && rank(w.kind) < rank(WorkloadKind::netns)) {
            candidate = Workload{};
            candidate.kind = WorkloadKind::netns;
            candidate.netns_name = named->second;
            candidate.process = process;
            candidate.pid = pid;
        }
        auto [it, inserted] = by_netns.try_emplace(*netns, candidate);
        // Keep the best name; among equals the lowest pid (the pause/first process).
        if (!inserted && rank(candidate.kind) > rank(it->second.kind)) it->second = candidate;
    }
    counters_.processes_seen = processes;
    counters_.malformed_cgroups = malformed_cgroups;
    // Named namespaces no process lives in (yet): still named.
    for (const auto& [inode, name] : netns_names) {
        if (by_netns.count(inode)) continue;
        Workload w;
        w.kind = WorkloadKind::netns;
        w.netns_name = name;
        by_netns[inode] = w;
    }
    if (host_netns_) {
        Workload host;
        host.kind = WorkloadKind::host;
        by_netns[host_netns_] = host;
    }

    // Merge: changed and new entries become trace records; entries not seen again are
    // kept (late events and findings about a pod that went away still name it), up to a bound.
    uint64_t scan_no = counters_.scans;
    for (auto& [inode, w] : by_netns) {
        const Workload* old = table_->netns_workload(inode);
        netns_last_seen_scan_[inode] = scan_no;
        if (old && *old == w) continue;
        changes_.push_back(WorkloadRecord{inode, 0, w});
        table_->set_netns(inode, w);
    }
    for (auto& [cgroup_id, w] : by_cgroup) {
        const Workload* old = table_->cgroup_workload(cgroup_id);
        cgroup_last_seen_scan_[cgroup_id] = scan_no;
        if (old && *old == w) continue;
        changes_.push_back(WorkloadRecord{0, cgroup_id, w});
        table_->set_cgroup(cgroup_id, w);
    }
    if (netns_last_seen_scan_.size() + cgroup_last_seen_scan_.size() > by_netns.size() + by_cgroup.size() +
                                                                        options_.max_departed) {
        // Too many departed names: start over from what exists now.
        WorkloadTable fresh;
        for (auto& [inode, w] : by_netns) fresh.set_netns(inode, w);
        for (auto& [cgroup_id, w] : by_cgroup) fresh.set_cgroup(cgroup_id, w);
        *table_ = std::move(fresh);
        std::erase_if(netns_last_seen_scan_, [&](const auto& kv) { return kv.second != scan_no; });
        std::erase_if(cgroup_last_seen_scan_, [&](const auto& kv) { return kv.second != scan_no; });
    }
    counters_.unresolved_netns = 0;
    for (const auto& [inode, seen] : netns_last_seen_scan_)
        if (seen != scan_no) counters_.unresolved_netns++;
    counters_.last_scan_us = (now_mono_ns() - started) / 1000;
}

}  // namespace tcpwhy
