// The /proc reader: one detection per process, binaries analysed once per file.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "tcpwhy/host_path.h"

#include "tcpwhy/server_detector.h"

namespace tcpwhy {
namespace {

std::optional<std::string> read_file(const std::string& path, size_t limit, int* err) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = errno;
        return std::nullopt;
    }
    std::string text;
    char buf[8192];
    while (text.size() < limit) {
        ssize_t n = read(fd, buf, std::min(sizeof buf, limit - text.size()));
        if (n < 0) {
            *err = errno;
            close(fd);
            return std::nullopt;
        }
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    return text;
}

std::optional<std::string> read_link(const std::string& path, int* err) {
    char buf[4096];
    ssize_t n = readlink(path.c_str(), buf, sizeof buf - 1);
    if (n < 0) {
        *err = errno;
        return std::nullopt;
    }
    return std::string(buf, static_cast<size_t>(n));
}

std::string environ_value(std::string_view environ, std::string_view name) {
    while (!environ.empty()) {
        size_t end = environ.find('\0');
        std::string_view entry = environ.substr(0, end);
        if (entry.size() > name.size() && entry.starts_with(name) && entry[name.size()] == '=')
            return std::string(entry.substr(name.size() + 1));
        if (end == std::string_view::npos) break;
        environ.remove_prefix(end + 1);
    }
    return {};
}

// "gunicorn-20.1.0.egg-info" / "gunicorn-20.1.0.dist-info" in the interpreter's package
// directories (Debian's dist-packages, /usr/local, a virtualenv next to the interpreter).
std::string python_package_version(const std::string& root, std::string_view exe, std::string_view runtime,
                                   std::string_view package) {
    std::string prefix(exe.substr(0, exe.rfind('/')));          // .../bin
    prefix = prefix.substr(0, prefix.rfind('/'));              // ...
    std::string py = runtime.empty() ? std::string("python3") : std::string(runtime);
    std::vector<std::string> dirs = {prefix + "/lib/" + py + "/site-packages", prefix + "/lib/python3/dist-packages",
                                     prefix + "/local/lib/" + py + "/dist-packages",
                                     prefix + "/local/lib/" + py + "/site-packages",
                                     "/usr/lib/python3/dist-packages", "/usr/local/lib/" + py + "/site-packages"};
    std::string stem = std::string(package) + "-";
    for (const auto& dir : dirs) {
        DIR* d = opendir(under_host_root(root, dir).c_str());
        if (!d) continue;
        std::string found;
        while (dirent* e = readdir(d)) {
            std::string_view name = e->d_name;
            if (!name.starts_with(stem)) continue;
            for (std::string_view suffix : {".dist-info", ".egg-info"})
                if (name.ends_with(suffix)) {
                    std::string_view v = name.substr(stem.size(), name.size() - stem.size() - suffix.size());
                    found = std::string(v.substr(0, v.find('-')));  // "20.1.0-py3.11" in some egg-info names
                }
            if (!found.empty()) break;
        }
        closedir(d);
        if (!found.empty()) return found;
    }
    return {};
}

std::string_view python_package_of(ServerKind kind) {
    switch (kind) {
    case ServerKind::gunicorn: return "gunicorn";
    case ServerKind::uvicorn: return "uvicorn";
    case ServerKind::hypercorn: return "hypercorn";
    case ServerKind::waitress: return "waitress";
    case ServerKind::daphne: return "daphne";
    case ServerKind::aiohttp: return "aiohttp";
    default: return "";
    }
}

}  // namespace

// What one binary file says, kept per file identity.
struct ServerDetector::BinaryFacts {
    std::optional<GoBuildInfo> go;
    std::string node_version;
    std::string version;  // nginx/apache
};

ServerDetector::ServerDetector(ServerDetectorOptions options)
    : options_(std::move(options)),
      proc_(under_host_root(options_.host_root, "/proc")),
      table_(std::make_shared<ServerTable>(options_.max_processes)),
      budget_(options_.max_detections_per_tick) {}

ServerDetector::BinaryFacts* ServerDetector::binary_facts(const std::string& exe_link) {
    struct stat st{};
    if (stat(exe_link.c_str(), &st) != 0) return nullptr;
    std::string key = fmt::format("{}:{}:{}:{}", st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec);
    if (auto it = binaries_.find(key); it != binaries_.end()) return it->second.get();
    auto facts = std::make_shared<BinaryFacts>();
    ++counters_.binaries_read;
    facts->go = read_go_buildinfo(exe_link);
    if (binaries_.size() >= options_.max_binaries && !binaries_order_.empty()) {
        binaries_.erase(binaries_order_.front());
        binaries_order_.pop_front();
    }
    binaries_order_.push_back(key);
    return binaries_.emplace(key, std::move(facts)).first->second.get();
}

const ServerRecord* ServerDetector::note(uint32_t pid, std::string_view comm) {
    if (pid == 0) return nullptr;
    auto seen = seen_comm_.find(pid);
    if (seen != seen_comm_.end() && seen->second == comm) {
        // Same pid and comm: the same process unless the pid was reused; its start time is
        // checked at a tick, at most every kRecheckTicks per pid.
        uint64_t& checked = last_checked_[pid];
        if (ticks_ >= checked + kRecheckTicks && recheck_.size() < options_.max_detections_per_tick) {
            checked = ticks_;
            recheck_.push_back(pid);
        }
        return table_->lookup(pid);
    }
    // New, or the same pid running something else now (exec, or a reused pid).
    if (seen == seen_comm_.end()) {
        seen_order_.push_back(pid);
        if (seen_comm_.size() >= options_.max_processes && !seen_order_.empty()) {
            uint32_t oldest = seen_order_.front();
            seen_order_.pop_front();
            seen_comm_.erase(oldest);
            last_checked_.erase(oldest);
        }
    }
    seen_comm_[pid] = std::string(comm);
    last_checked_[pid] = ticks_;
    if (budget_ > 0) {
        --budget_;
        run(pid, comm);
    } else {
        ++counters_.deferred;
        if (queued_.size() < options_.max_processes) queued_.emplace_back(pid, std::string(comm));
    }
    return table_->lookup(pid);
}

void ServerDetector::tick() {
    ++ticks_;
    budget_ = options_.max_detections_per_tick;
    for (uint32_t pid : std::exchange(recheck_, {})) {
        const ServerRecord* known = table_->lookup(pid);
        int err = 0;
        auto stat_text = read_file(fmt::format("{}/{}/stat", proc_, pid), 4096, &err);
        auto start = stat_text ? parse_stat_start_time(*stat_text) : std::nullopt;
        if (known && start && *start != known->start_time && budget_ > 0) {
            --budget_;
            run(pid, known->comm);
        }
    }
    while (!queued_.empty() && budget_ > 0) {
        auto [pid, comm] = std::move(queued_.back());
        queued_.pop_back();
        --budget_;
        run(pid, comm);
    }
}

std::vector<ServerRecord> ServerDetector::take_changes() { return std::exchange(changes_, {}); }

void ServerDetector::run(uint32_t pid, std::string_view comm) {
    auto record = detect(pid);
    if (!record) return;
    if (record->comm.empty()) record->comm = std::string(comm);
    const ServerRecord* old = table_->lookup(pid);
    if (old && old->start_time == record->start_time && old->server == record->server) return;
    table_->set(*record);
    changes_.push_back(*record);
}

std::optional<ServerRecord> ServerDetector::detect(uint32_t pid) {
    ++counters_.detections;
    const std::string base = fmt::format("{}/{}", proc_, pid);
    const std::string root = base + "/root";
    auto problem = [&](int err, const std::string& what) {
        if (err == ENOENT || err == ESRCH) ++counters_.vanished;
        else if (err == EACCES || err == EPERM) ++counters_.permission_denied;
        if (counters_.first_problem.empty() && err != ENOENT && err != ESRCH)
            counters_.first_problem = fmt::format("{}: {}", what, std::strerror(err));
    };
    int err = 0;
    auto stat_text = read_file(base + "/stat", 4096, &err);
    if (!stat_text) {
        problem(err, base + "/stat");
        return std::nullopt;
    }
    ServerRecord record;
    record.pid = pid;
    record.start_time = parse_stat_start_time(*stat_text).value_or(0);
    if (auto open = stat_text->find('('), close = stat_text->rfind(')'); open != std::string::npos && close > open)
        record.comm = stat_text->substr(open + 1, close - open - 1);

    // exe needs the ptrace read check (CAP_SYS_PTRACE for other users' processes); cmdline does not.
    err = 0;
    std::string exe = read_link(base + "/exe", &err).value_or("");
    if (exe.empty()) problem(err, base + "/exe");
    auto cmdline = read_file(base + "/cmdline", 64 << 10, &err);
    std::vector<std::string> argv = cmdline ? split_cmdline(*cmdline) : std::vector<std::string>{};

    ServerInfo info = classify_cmdline(argv, exe, record.comm).value_or(ServerInfo{});
    if (info.exe.empty()) info.exe = exe;
    const bool readable_exe = !exe.empty();

    // A native binary: Go's build info says what it is.
    if (info.kind == ServerKind::unknown && info.module.empty() && readable_exe) {
        BinaryFacts* facts = binary_facts(base + "/exe");
        if (facts && facts->go)
            if (auto go = classify_go(*facts->go)) info = *go, info.exe = exe;
    }
    // A JVM running a jar: the jar's libraries (inside the container: through /proc/PID/root).
    if (info.kind == ServerKind::unknown && !info.module.empty() && info.module.ends_with(".jar")) {
        std::string jar = info.module.starts_with('/') ? root + info.module : base + "/cwd/" + info.module;
        std::string error;
        if (auto names = read_zip_names(jar, 65536, &error)) {
            if (auto from_jar = classify_jar_entries(*names)) {
                std::string module = info.module;
                info.kind = from_jar->kind;
                info.version = from_jar->version;
                info.framework = from_jar->framework;
                info.via = from_jar->via;
                info.module = module;
            }
        } else if (counters_.first_problem.empty()) {
            counters_.first_problem = error;
        }
    }
    // .NET (dotnet X.dll or an apphost) and Debian's libnode: what the process maps.
    const bool wants_maps = info.kind == ServerKind::unknown || info.kind == ServerKind::node;
    if (wants_maps) {
        if (auto maps = read_file(base + "/maps", 4 << 20, &err)) {
            MappedFacts mapped = classify_maps(*maps);
            if (info.kind == ServerKind::unknown && mapped.kestrel) {
                info.kind = ServerKind::kestrel;
                info.framework = "ASP.NET Core";
                info.via = "maps: Microsoft.AspNetCore.Server.Kestrel";
            } else if (info.kind == ServerKind::unknown && mapped.aiohttp) {
                // `python3 app.py` calling web.run_app(): only its loaded modules say so.
                info.kind = ServerKind::aiohttp;
                info.via = "maps: aiohttp's C extensions";
                std::string_view exe_name = std::string_view(exe).substr(exe.rfind('/') + 1);
                if (exe_name.starts_with("python") && exe_name.size() > 6) info.runtime = std::string(exe_name);
            }
            if (info.kind == ServerKind::node && !mapped.libnode.empty()) {
                info.version = read_node_version(root + mapped.libnode);
                if (!info.version.empty()) info.via += ", version from " + mapped.libnode;
            }
        }
    }

    // Versions, where they change the answer and are cheap to read.
    switch (info.kind) {
    case ServerKind::node:
        if (info.version.empty())
            if (auto environ = read_file(base + "/environ", 64 << 10, &err)) {
                info.version = environ_value(*environ, "NODE_VERSION");
                if (!info.version.empty()) info.via += ", version from NODE_VERSION";
            }
        if (info.version.empty() && readable_exe)
            if (BinaryFacts* facts = binary_facts(base + "/exe")) {
                if (facts->node_version.empty()) facts->node_version = read_node_version(base + "/exe");
                info.version = facts->node_version;
                if (!info.version.empty()) info.via += ", version from the binary";
            }
        if (info.version.starts_with('v')) info.version.erase(0, 1);
        break;
    case ServerKind::nginx:
    case ServerKind::apache:
        if (BinaryFacts* facts = readable_exe ? binary_facts(base + "/exe") : nullptr) {
            if (facts->version.empty())
                facts->version = read_binary_version(base + "/exe", info.kind == ServerKind::nginx ? "nginx/" : "Apache/");
            info.version = facts->version;
        }
        break;
    default:
        if (auto package = python_package_of(info.kind); !package.empty() && info.version.empty())
            info.version = python_package_version(root, exe, info.runtime, package);
        break;
    }
    if (info.kind == ServerKind::gunicorn && info.worker.find("Uvicorn") != std::string::npos)
        info.framework = "uvicorn worker";
    if (info.kind == ServerKind::unknown && info.via.empty())
        info.via = exe.empty() ? "not recognised (exe unreadable)" : fmt::format("not recognised: exe {}", exe);
    if (info.kind != ServerKind::unknown) ++counters_.recognised;
    record.server = std::move(info);
    return record;
}

}  // namespace tcpwhy
