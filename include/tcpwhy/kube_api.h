// Optional enrichment from the Kubernetes API (`--kube-api`): labels, pod IP and the
// owning workload (Deployment, StatefulSet, DaemonSet, ...) of the pods on this node.
//
// A node-scoped list (fieldSelector=spec.nodeName=NODE), then a watch that keeps it
// current, on a background thread with reconnects and backoff. Everything tcpwhy
// names without the API (cgroups, /var/log/pods) keeps working when the API is
// unreachable: failures are counted and shown, never fatal.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>

#include "tcpwhy/workload.h"

namespace tcpwhy {

struct KubeApiOptions {
    std::string url;  // https://host:port (in cluster: from KUBERNETES_SERVICE_HOST/PORT)
    std::string token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    std::string ca_file = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
    std::string node_name;                 // whose pods (NODE_NAME, else the host name)
    uint32_t connect_timeout_ms = 5000;
    uint32_t initial_backoff_ms = 500;  // after a failed list or watch, doubling up to max_backoff_ms
    uint32_t max_backoff_ms = 30000;
    // A watch that delivers no byte for this long is taken as dead (a half-open connection, a
    // vanished API server) and reopened; bookmarks keep a healthy one from going this quiet.
    uint32_t low_speed_time_s = 120;
    size_t max_line_bytes = 8u << 20;    // one watch event (a pod object is at most ~1.5 MiB in etcd)
    size_t max_list_bytes = 256u << 20;  // the node's pod list

    // The in-cluster defaults; nullopt and *error outside a cluster.
    static std::optional<KubeApiOptions> in_cluster(std::string* error);
};

// What the API says about one pod.
struct KubePod {
    std::string uid, namespace_name, name, node, pod_ip, owner;
    std::map<std::string, std::string> labels;
};

// Parses a pod object (one item of a list, or a watch event's object). Pure.
std::optional<KubePod> parse_kube_pod(const std::string& json_object_text, std::string* error);

struct KubeApiStatus {
    bool synced = false;          // the first list succeeded
    uint64_t lists = 0;           // successful lists
    uint64_t watch_events = 0;    // ADDED/MODIFIED/DELETED applied
    uint64_t errors = 0;          // failed requests, bad responses, expired watches
    uint64_t pods = 0;            // pods known now
    std::string last_error;
};

class KubeApiClient {
public:
    explicit KubeApiClient(KubeApiOptions options);
    ~KubeApiClient();  // stops the thread
    KubeApiClient(const KubeApiClient&) = delete;
    KubeApiClient& operator=(const KubeApiClient&) = delete;

    void start();
    // Adds the API's labels, pod IP and owner (and names, when the node's files had
    // none) to a pod workload found by UID. False when the API does not know it.
    bool enrich(Workload& workload) const;
    // Grows whenever the pod set changes, so resolvers know to refresh names.
    uint64_t generation() const { return generation_.load(); }
    KubeApiStatus status() const;

private:
    enum class WatchEnd { resume, relist, failed };
    void run();
    bool list(std::string* resource_version);
    WatchEnd watch(std::string* resource_version);
    void apply_event(const std::string& line, std::string* resource_version, bool* expired);
    void fail(const std::string& error);

    KubeApiOptions options_;
    std::string token_;
    mutable std::mutex mutex_;
    std::unordered_map<std::string, KubePod> pods_;  // by uid
    KubeApiStatus status_;
    std::atomic<uint64_t> generation_{0};
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

}  // namespace tcpwhy
