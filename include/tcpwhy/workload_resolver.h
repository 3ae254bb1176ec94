// Resolves live sockets to workloads by reading the host's /proc, cgroup tree,
// /run/netns and /var/log/pods (under --host-root when tcpwhy runs in a container).
//
// Cost model: an event costs hash lookups. The filesystem is read only by a scan,
// which runs when an event names a namespace or owner cgroup not seen before (at
// most once per min_rescan_interval) and every refresh_interval (pods that came or
// went). Scan cost grows with the number of processes, never with the event rate.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "tcpwhy/event.h"
#include "tcpwhy/kube_api.h"
#include "tcpwhy/workload.h"

namespace tcpwhy {

struct ResolverOptions {
    std::string host_root = "/";  // where the host's /proc, /sys, /run and /var/log are
    std::string pod_logs;         // default: <host_root>/var/log/pods
    std::string container_logs;   // default: <host_root>/var/log/containers
    uint64_t min_rescan_interval_ns = 1'000'000'000;
    uint64_t refresh_interval_ns = 30'000'000'000;
    size_t max_departed = 4096;  // names kept for namespaces/cgroups that went away (late events, findings)
};

// Everything a scan skipped or could not read: counted, never fatal; `doctor` shows it.
struct ResolverCounters {
    uint64_t scans = 0;
    uint64_t processes_seen = 0;
    uint64_t vanished_pids = 0;       // exited between listing and reading
    uint64_t permission_denied = 0;   // EACCES/EPERM on a /proc entry
    uint64_t unreadable_entries = 0;  // any other read failure
    uint64_t malformed_cgroups = 0;   // a kubepods path without a valid pod UID
    uint64_t malformed_pod_dirs = 0;  // /var/log/pods entries not <ns>_<pod>_<uid>
    uint64_t unresolved_netns = 0;    // namespaces no process lives in any more
    uint64_t pods = 0;                // pods known from /var/log/pods
    uint64_t last_scan_us = 0;
    std::string cgroup2_root;  // where cgroup v2 ids were resolved ("" when no cgroup2 mount)
    std::string first_problem;  // the first skipped entry and why
};

class WorkloadResolver {
public:
    explicit WorkloadResolver(ResolverOptions options = {});

    // Notes the event's namespace and owner; a new one triggers a scan when one is
    // allowed (rate-limited), else at the next tick(). Returns the workload, or nullptr.
    const Workload* resolve(const Event& event, uint64_t now_ns);
    // Runs a due scan (a pending miss, or the periodic refresh). True when names changed.
    bool tick(uint64_t now_ns);
    // Scans now.
    void scan(uint64_t now_ns);
    // Adds the API's labels, pod IP and owner to pods (--kube-api); names refresh
    // when the API's pod set changes.
    void set_kube_api(std::shared_ptr<const KubeApiClient> api) { kube_api_ = std::move(api); }
    const KubeApiClient* kube_api() const { return kube_api_.get(); }
    const ResolverOptions& options() const { return options_; }

    // The table findings read; stays valid (and is updated in place) for the resolver's life.
    std::shared_ptr<const WorkloadTable> table() const { return table_; }
    // Records that are new or changed since the last call: for `workload` trace lines.
    std::vector<WorkloadRecord> take_changes();
    bool has_changes() const { return !changes_.empty(); }
    const ResolverCounters& counters() const { return counters_; }
    uint32_t host_netns() const { return host_netns_; }

private:
    void note_problem(int err, const std::string& what);

    ResolverOptions options_;
    std::shared_ptr<const KubeApiClient> kube_api_;
    uint64_t kube_generation_ = 0;
    std::shared_ptr<WorkloadTable> table_;
    ResolverCounters counters_;
    uint32_t host_netns_ = 0;
    uint64_t last_scan_ns_ = 0;
    bool scanned_ = false;
    bool pending_ = false;
    // Keys looked up and not found by the last scan: they do not trigger another one.
    std::unordered_set<uint32_t> unknown_netns_;
    std::unordered_set<uint64_t> unknown_cgroups_;
    std::vector<WorkloadRecord> changes_;
    std::unordered_map<uint32_t, uint64_t> netns_last_seen_scan_;
    std::unordered_map<uint64_t, uint64_t> cgroup_last_seen_scan_;
};

}  // namespace tcpwhy
