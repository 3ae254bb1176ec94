// Who is behind a socket: the pod, container, `ip netns` name or process that owns it.
//
// This header is pure (no I/O): the parsers for the names the kubelet and container
// runtimes give cgroups and log directories, and the WorkloadTable that maps a
// socket's network namespace and owner cgroup to a Workload. The table is filled
// live by WorkloadResolver (src/workload/resolver.h, which reads /proc) or, on
// replay, from the `workload` lines a trace carries.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tcpwhy {

enum class WorkloadKind : uint8_t {
    unknown = 0,
    host,       // the host's own network namespace and processes
    netns,      // a namespace named by `ip netns` (a bind mount under /run/netns)
    pod,        // a Kubernetes pod (from cgroup path + /var/log/pods)
    container,  // a container outside Kubernetes (docker, podman, containerd)
    process,    // an unnamed namespace: the process living in it
};
std::string_view to_string(WorkloadKind kind);
std::optional<WorkloadKind> workload_kind_from_string(std::string_view name);

struct Workload {
    WorkloadKind kind = WorkloadKind::unknown;
    std::string namespace_name;  // Kubernetes namespace
    std::string pod;             // pod name
    std::string container;       // container name
    std::string pod_uid;
    std::string container_id;    // 64 hex digits
    std::string runtime;         // containerd, cri-o, docker, podman
    std::string qos;             // guaranteed, burstable, besteffort
    std::string netns_name;      // `ip netns` name
    std::string process;         // comm of a process in the namespace / the owner
    uint32_t pid = 0;
    // From the Kubernetes API (--kube-api) only.
    std::map<std::string, std::string> labels;
    std::string pod_ip;
    std::string owner;  // "Deployment/web", "StatefulSet/db", "ReplicaSet/web-5d9c" when no Deployment

    // The short name tables and findings show: "web-1", "pod" (netns), "host",
    // "nginx[1234]", "container 3f2a9c1b0d4e".
    std::string name() const;
    bool operator==(const Workload&) const = default;
};

// ---- names the kubelet and runtimes give --------------------------------------

// What a process's cgroup path says about it.
struct CgroupIdentity {
    bool kubernetes = false;    // under a kubepods hierarchy
    std::string pod_uid;        // with dashes, as the API spells it
    std::string qos;            // guaranteed, burstable, besteffort (kubernetes only)
    std::string driver;         // "systemd" (kubepods.slice/...) or "cgroupfs" (/kubepods/...)
    std::string container_id;   // 64 hex digits; empty for the pod-level cgroup
    std::string runtime;        // containerd, cri-o, docker, podman; "" when the name does not say
};

// Parses a cgroup path: the kubelet's cgroupfs and systemd layouts (any QoS class,
// containerd / CRI-O / Docker container scopes, nested under kubelet.slice or a
// cgroup-namespace prefix such as "/../.."), and off Kubernetes docker-, libpod- and
// /docker/<id> containers. nullopt for a path that names neither (the host, a user
// session) and for a kubepods path whose pod UID is malformed.
std::optional<CgroupIdentity> parse_cgroup_path(std::string_view path);

// Whether a kubepods path was recognised but malformed (counted by the resolver).
bool looks_like_kubepods(std::string_view path);

// From the contents of /proc/<pid>/cgroup: the cgroup v2 path ("0::/...") if there
// is one, else the v1 path of the memory, pids or cpu controller.
std::optional<std::string> cgroup_path_of(std::string_view proc_cgroup);

// /var/log/pods/<namespace>_<pod>_<uid>
struct PodLogDir {
    std::string namespace_name, pod, uid;
};
std::optional<PodLogDir> parse_pod_log_dir(std::string_view dir_name);

// /var/log/containers/<pod>_<namespace>_<container>-<container id>.log
struct ContainerLogLink {
    std::string pod, namespace_name, container, container_id;
};
std::optional<ContainerLogLink> parse_container_log_name(std::string_view file_name);

// ---- the table ------------------------------------------------------------

// Maps a socket to its workload. A pod's network namespace names the pod; in the
// namespace many workloads share (the host's, kind `host`: hostNetwork pods, daemons),
// the owner's cgroup decides. Lookups are hash lookups: nothing here grows with the event rate.
class WorkloadTable {
public:
    void set_netns(uint32_t netns, Workload workload);
    void set_cgroup(uint64_t cgroup_id, Workload workload);
    void clear();

    // The workload of a socket in `netns` whose recorded owner is in cgroup
    // `cgroup_id` (0: unknown). nullptr when nothing is known.
    const Workload* lookup(uint32_t netns, uint64_t cgroup_id) const;
    const Workload* netns_workload(uint32_t netns) const;
    const Workload* cgroup_workload(uint64_t cgroup_id) const;

    size_t netns_count() const { return by_netns_.size(); }
    size_t cgroup_count() const { return by_cgroup_.size(); }
    const std::unordered_map<uint32_t, Workload>& netns_entries() const { return by_netns_; }
    const std::unordered_map<uint64_t, Workload>& cgroup_entries() const { return by_cgroup_; }

private:
    std::unordered_map<uint32_t, Workload> by_netns_;
    std::unordered_map<uint64_t, Workload> by_cgroup_;
};

// One `workload` line of a trace: what a netns (cgroup_id 0) or an owner cgroup
// (netns 0) was resolved to when the trace was recorded.
struct WorkloadRecord {
    uint32_t netns = 0;
    uint64_t cgroup_id = 0;
    Workload workload;
};
void apply(WorkloadTable& table, const WorkloadRecord& record);

}  // namespace tcpwhy
