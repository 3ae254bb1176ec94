#include "tcpwhy/workload.h"

#include <algorithm>
#include <array>
#include <cctype>

#include <fmt/format.h>

namespace tcpwhy {
namespace {

constexpr std::array<std::pair<WorkloadKind, std::string_view>, 6> kKindNames{{
    {WorkloadKind::unknown, "unknown"},
    {WorkloadKind::host, "host"},
    {WorkloadKind::netns, "netns"},
    {WorkloadKind::pod, "pod"},
    {WorkloadKind::container, "container"},
    {WorkloadKind::process, "process"},
}};

bool is_hex(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

bool is_container_id(std::string_view s) { return s.size() == 64 && is_hex(s); }

// 8-4-4-4-12 hex digits, with dashes (API and cgroupfs) or underscores (systemd slices).
std::optional<std::string> normalize_uid(std::string_view s) {
    if (s.size() != 36) return std::nullopt;
    std::string uid(s);
    for (size_t i = 0; i < uid.size(); ++i) {
        bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash_position) {
            if (uid[i] != '-' && uid[i] != '_') return std::nullopt;
            uid[i] = '-';
        } else if (!std::isxdigit(static_cast<unsigned char>(uid[i]))) {
            return std::nullopt;
        }
    }
    return uid;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> parts;
    size_t start = 0;
    while (start <= s.size()) {
        size_t end = s.find(sep, start);
        if (end == std::string_view::npos) end = s.size();
        if (end > start) parts.push_back(s.substr(start, end - start));
        start = end + 1;
    }
    return parts;
}

bool strip_suffix(std::string_view& s, std::string_view suffix) {
    if (!s.ends_with(suffix)) return false;
    s.remove_suffix(suffix.size());
    return true;
}

bool strip_prefix(std::string_view& s, std::string_view prefix) {
    if (!s.starts_with(prefix)) return false;
    s.remove_prefix(prefix.size());
    return true;
}

// A container scope: "cri-containerd-<id>.scope", "crio-<id>.scope", "docker-<id>.scope",
// "libpod-<id>.scope" (systemd driver) or "<id>", "crio-<id>" (cgroupfs driver).
// conmon's scope (CRI-O's monitor) is not the container.
std::optional<std::pair<std::string, std::string>> container_of(std::string_view segment) {
    strip_suffix(segment, ".scope");
    if (segment.starts_with("crio-conmon-")) return std::nullopt;
    static constexpr std::array<std::pair<std::string_view, std::string_view>, 5> kPrefixes{{
        {"cri-containerd-", "containerd"},
        {"crio-", "cri-o"},
        {"docker-", "docker"},
        {"libpod-", "podman"},
        {"containerd-", "containerd"},
    }};
    for (auto [prefix, runtime] : kPrefixes) {
        std::string_view rest = segment;
        if (strip_prefix(rest, prefix) && is_container_id(rest)) return std::pair{std::string(rest), std::string(runtime)};
    }
    if (is_container_id(segment)) return std::pair{std::string(segment), std::string()};
    return std::nullopt;
}

// The pod segment: "pod<uid>" (cgroupfs) or "kubepods[-<qos>]-pod<uid_>.slice" (systemd,
// possibly prefixed "kubelet-").
std::optional<std::string> pod_uid_of(std::string_view segment) {
    bool slice = strip_suffix(segment, ".slice");
    size_t at = slice ? segment.rfind("-pod") : std::string_view::npos;
    if (at != std::string_view::npos) return normalize_uid(segment.substr(at + 4));
    if (strip_prefix(segment, "pod")) return normalize_uid(segment);
    return std::nullopt;
}

}  // namespace

std::string_view to_string(WorkloadKind kind) {
    for (auto [k, name] : kKindNames)
        if (k == kind) return name;
    return "unknown";
}

std::optional<WorkloadKind> workload_kind_from_string(std::string_view name) {
    for (auto [k, n] : kKindNames)
        if (n == name) return k;
    return std::nullopt;
}

std::string Workload::name() const {
    switch (kind) {
    case WorkloadKind::pod: return pod.empty() ? fmt::format("pod {}", pod_uid.substr(0, 8)) : pod;
    case WorkloadKind::netns: return netns_name;
    case WorkloadKind::host: return "host";
    case WorkloadKind::container: return fmt::format("container {}", container_id.substr(0, 12));
    case WorkloadKind::process: return pid ? fmt::format("{}[{}]", process, pid) : process;
    case WorkloadKind::unknown: break;
    }
    return {};
}

bool looks_like_kubepods(std::string_view path) { return path.find("kubepods") != std::string_view::npos; }

std::optional<CgroupIdentity> parse_cgroup_path(std::string_view path) {
    auto segments = split(path, '/');
    CgroupIdentity id;
    auto kube = std::find_if(segments.begin(), segments.end(),
                             [](std::string_view s) { return s.find("kubepods") != std::string_view::npos; });
    if (kube != segments.end()) {
        id.kubernetes = true;
        id.driver = kube->ends_with(".slice") ? "systemd" : "cgroupfs";
        id.qos = "guaranteed";
        for (auto it = kube; it != segments.end(); ++it) {
            std::string_view s = *it;
            if (s == "burstable" || s.find("-burstable") != std::string_view::npos) id.qos = "burstable";
            if (s == "besteffort" || s.find("-besteffort") != std::string_view::npos) id.qos = "besteffort";
            if (auto uid = pod_uid_of(s)) {
                id.pod_uid = *uid;
                if (it + 1 != segments.end()) {
                    if (auto c = container_of(*(it + 1))) std::tie(id.container_id, id.runtime) = *c;
                }
                return id;
            }
        }
        return std::nullopt;  // a kubepods path without a valid pod segment (a QoS slice, or malformed)
    }
    // Off Kubernetes: the innermost container scope, or /docker/<id>.
    for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        std::string_view s = *it;
        if (auto c = container_of(s); c && (!c->second.empty() || (it + 1 != segments.rend() && *(it + 1) == "docker"))) {
            std::tie(id.container_id, id.runtime) = *c;
            if (id.runtime.empty()) id.runtime = "docker";
            return id;
        }
    }
    return std::nullopt;
}

std::optional<std::string> cgroup_path_of(std::string_view proc_cgroup) {
    std::optional<std::string> v1;
    for (auto line : split(proc_cgroup, '\n')) {
        // hierarchy-ID:controller-list:path; the path may itself contain ':'
        size_t first = line.find(':');
        if (first == std::string_view::npos) continue;
        size_t second = line.find(':', first + 1);
        if (second == std::string_view::npos) continue;
        std::string_view hierarchy = line.substr(0, first);
        std::string_view controllers = line.substr(first + 1, second - first - 1);
        std::string_view path = line.substr(second + 1);
        if (hierarchy == "0" && controllers.empty()) return std::string(path);
        if (!v1) {
            for (auto c : split(controllers, ','))
                if (c == "memory" || c == "pids" || c == "cpu") v1 = std::string(path);
        }
    }
    return v1;
}

std::optional<PodLogDir> parse_pod_log_dir(std::string_view dir_name) {
    // Namespace and pod names are DNS labels/subdomains: no '_' in them.
    auto parts = split(dir_name, '_');
    if (parts.size() != 3 || dir_name.find("__") != std::string_view::npos) return std::nullopt;
    auto uid = normalize_uid(parts[2]);
    if (!uid) return std::nullopt;
    return PodLogDir{std::string(parts[0]), std::string(parts[1]), *uid};
}

std::optional<ContainerLogLink> parse_container_log_name(std::string_view name) {
    if (!strip_suffix(name, ".log")) return std::nullopt;
    auto parts = split(name, '_');
    if (parts.size() != 3) return std::nullopt;
    std::string_view last = parts[2];
    if (last.size() < 66 || last[last.size() - 65] != '-') return std::nullopt;
    std::string_view id = last.substr(last.size() - 64);
    if (!is_container_id(id)) return std::nullopt;
    return ContainerLogLink{std::string(parts[0]), std::string(parts[1]), std::string(last.substr(0, last.size() - 65)),
                            std::string(id)};
}

// ---- WorkloadTable ---------------------------------------------------------

void WorkloadTable::set_netns(uint32_t netns, Workload workload) { by_netns_[netns] = std::move(workload); }
void WorkloadTable::set_cgroup(uint64_t cgroup_id, Workload workload) { by_cgroup_[cgroup_id] = std::move(workload); }

void WorkloadTable::clear() {
    by_netns_.clear();
    by_cgroup_.clear();
}

const Workload* WorkloadTable::netns_workload(uint32_t netns) const {
    auto it = by_netns_.find(netns);
    return it == by_netns_.end() ? nullptr : &it->second;
}

const Workload* WorkloadTable::cgroup_workload(uint64_t cgroup_id) const {
    auto it = by_cgroup_.find(cgroup_id);
    return it == by_cgroup_.end() ? nullptr : &it->second;
}

const Workload* WorkloadTable::lookup(uint32_t netns, uint64_t cgroup_id) const {
    const Workload* by_ns = netns_workload(netns);
    // In a pod's own namespace the pod is the answer whoever owns the socket; in the
    // host's namespace (hostNetwork pods, node daemons) only the owner's cgroup tells.
    if (!by_ns || by_ns->kind == WorkloadKind::host) {
        if (cgroup_id) {
            const Workload* by_owner = cgroup_workload(cgroup_id);
            if (by_owner && by_owner->kind != WorkloadKind::unknown) return by_owner;
        }
    }
    return by_ns;
}

void apply(WorkloadTable& table, const WorkloadRecord& record) {
    if (record.cgroup_id)
        table.set_cgroup(record.cgroup_id, record.workload);
    else if (record.netns)
        table.set_netns(record.netns, record.workload);
}

}  // namespace tcpwhy
