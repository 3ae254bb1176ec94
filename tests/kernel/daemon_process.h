// `tcpwhy daemon` as a child process for the kernel tests, and what they read from it:
// /metrics samples, control-socket answers, the BPF objects it holds.
#pragma once

#include <signal.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "harness.h"

namespace tcpwhy::test {

namespace fs = std::filesystem;

// Exit code, and stdout and stderr together, of a shell command.
inline std::pair<int, std::string> shell(const std::string& command) {
    auto [exit_code, text] = run_shell(command);
    return {exit_code, text};
}

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "tcpwhy-daemon-XXXXXX").string();
        path = mkdtemp(tmpl.data());
    }
    ~TempDir() { fs::remove_all(path); }
};

// A port of this test process's own, so concurrent runs on the node do not share series.
inline uint16_t unique_port() { return static_cast<uint16_t>(20000 + getpid() % 20000); }

// The BPF objects a process holds, from /proc/PID/fdinfo.
struct BpfIds {
    std::set<uint32_t> progs, links, maps;
};
inline BpfIds bpf_ids_of(pid_t pid) {
    BpfIds ids;
    for (const auto& entry : fs::directory_iterator(fmt::format("/proc/{}/fdinfo", pid))) {
        std::ifstream in(entry.path());
        std::string key;
        uint32_t value;
        std::string line;
        while (std::getline(in, line)) {
            std::istringstream fields(line);
            if (!(fields >> key >> value)) continue;
            if (key == "prog_id:") ids.progs.insert(value);
            else if (key == "link_id:") ids.links.insert(value);
            else if (key == "map_id:") ids.maps.insert(value);
        }
    }
    return ids;
}

// Which of these ids `bpftool prog|link|map show` lists now.
inline std::vector<std::string> loaded(const BpfIds& ids) {
    std::vector<std::string> found;
    for (const auto& [kind, mine] : {std::pair{"prog", &ids.progs}, {"link", &ids.links}, {"map", &ids.maps}}) {
        auto listing = nlohmann::json::parse(shell(fmt::format("bpftool -j {} show 2>/dev/null", kind)).second,
                                             nullptr, false);
        REQUIRE(listing.is_array());
        for (const auto& object : listing)
            if (uint32_t id = object.value("id", 0u); mine->count(id)) found.push_back(fmt::format("{} {}", kind, id));
    }
    return found;
}

// The same, after giving the kernel a moment to free what lost its last reference.
inline std::vector<std::string> still_loaded(const BpfIds& ids) {
    std::vector<std::string> left;
    for (int attempt = 0; attempt < 50; ++attempt) {
        left = loaded(ids);
        if (left.empty()) break;
        sleep_ms(100);
    }
    return left;
}

// `tcpwhy daemon` with a temporary archive and socket and a free metrics port on 127.0.0.1;
// no free-space reserve, so the test's outcome does not depend on the machine's disk.
class DaemonProcess {
public:
    // `prefix` runs before the binary (e.g. setpriv with the DaemonSet's capabilities).
    // `keep_default_floor`: leave --archive-min-free at the daemon's default instead of 0.
    DaemonProcess(const fs::path& dir, const std::string& extra = "", const fs::path& archive_dir = {},
                  const std::string& prefix = "", bool keep_default_floor = false)
        : archive(archive_dir.empty() ? dir / "archive" : archive_dir),
          socket(dir / "tcpwhy.sock"),
          err_(dir / fmt::format("daemon-{}.err", ++runs_)) {
        std::string cmd = fmt::format(
            "exec {} {} daemon --archive {} --socket {} --metrics-addr 127.0.0.1:0 {} {} >{} 2>&1", prefix,
            TCPWHY_BINARY, archive.string(), socket.string(),
            keep_default_floor || extra.find("--archive-min-free") != std::string::npos ? "" : "--archive-min-free 0",
            extra, err_.string());
        pid = fork();
        if (pid == 0) {
            execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
            _exit(127);
        }
        std::smatch m;
        // Loading, and walking every namespace's sockets, can take seconds on a loaded node.
        for (int i = 0; i < 3000; ++i) {
            std::string text = stderr_text();
            if (std::regex_search(text, m, std::regex(R"(metrics http://(\S+)/metrics)"))) {
                metrics_addr = m[1];
                return;
            }
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                throw std::runtime_error("daemon exited at start: " + text);
            }
            sleep_ms(20);
        }
        throw std::runtime_error("daemon did not start within 60 s; its stderr: " + stderr_text());
    }
    ~DaemonProcess() {
        if (pid > 0) stop(SIGKILL);
    }
    DaemonProcess(const DaemonProcess&) = delete;
    DaemonProcess& operator=(const DaemonProcess&) = delete;

    // Sends sig and waits; the exit code, or 128 + signal.
    int stop(int sig) {
        kill(pid, sig);
        int status = 0;
        waitpid(pid, &status, 0);
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::string stderr_text() const { return slurp(err_.string()); }
    std::string get(const std::string& path) const {
        return shell(fmt::format("curl -sf --max-time 20 http://{}{}", metrics_addr, path)).second;
    }

    fs::path archive, socket;
    pid_t pid = -1;
    std::string metrics_addr;

private:
    fs::path err_;
    static inline int runs_ = 0;
};

// Sum of the samples of `name` whose labels hold every one of `labels` (e.g. port="8080").
inline double metric(const std::string& text, const std::string& name, const std::vector<std::string>& labels = {}) {
    double sum = 0;
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
        if (line.empty() || line[0] == '#') continue;
        auto end_of_name = line.find_first_of("{ ");
        if (line.substr(0, end_of_name) != name) continue;
        std::string label_text =
            line[end_of_name] == '{' ? line.substr(end_of_name, line.rfind('}') - end_of_name) : "";
        bool all = true;
        for (const auto& l : labels) all = all && label_text.find(l) != std::string::npos;
        if (all) sum += std::stod(line.substr(line.rfind(' ') + 1));
    }
    return sum;
}

// One request-response line exchange on the control socket.
inline std::string control_request(const fs::path& socket, const std::string& request) {
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, socket.c_str(), sizeof(sa.sun_path) - 1);
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return "connect failed";
    send_all(fd, request + "\n");
    std::string answer;
    while (answer.find('\n') == std::string::npos) {
        std::string part = recv_some(fd);
        if (part.empty()) break;
        answer += part;
    }
    return answer.substr(0, answer.find('\n'));
}

}  // namespace tcpwhy::test

namespace tcpwhy::test {

// What tests/support/deploy_manifest.py reads from deploy/ (caps, setpriv-bounding, args, mounts).
inline std::string deploy_manifest(const std::string& what, const std::string& overlay = "") {
    auto [rc, out] = shell(fmt::format("python3 {0}/tests/support/deploy_manifest.py {0}/deploy {1} {2}",
                                       TCPWHY_SOURCE_DIR, what, overlay.empty() ? "" : "--overlay " + overlay));
    if (rc != 0) throw std::runtime_error("deploy_manifest.py " + what + ": " + out);
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
}

// The container's args from deploy/, without the ones a test must point elsewhere on a shared
// machine (archive, socket, metrics address): DaemonProcess gives those.
inline std::string manifest_daemon_args(const std::string& overlay = "") {
    std::istringstream lines(deploy_manifest("args", overlay));
    std::string line, args;
    bool first = true;
    while (std::getline(lines, line)) {
        if (first) {
            first = false;
            if (line != "daemon") throw std::runtime_error("the DaemonSet does not run `tcpwhy daemon`: " + line);
            continue;
        }
        if (line.rfind("--archive=", 0) == 0 || line.rfind("--socket=", 0) == 0 ||
            line.rfind("--metrics-addr=", 0) == 0 || line.rfind("--archive-min-free=", 0) == 0)
            continue;
        args += " '" + line + "'";
    }
    return args;
}

// Starts a command the way the container runtime starts the pod's process: as uid 0 with exactly
// the DaemonSet's capabilities as bounding, permitted and effective sets, none inheritable or ambient.
inline std::string with_manifest_capabilities() {
    return fmt::format("setpriv --bounding-set {} --inh-caps -all --ambient-caps -all", deploy_manifest("setpriv-bounding"));
}

}  // namespace tcpwhy::test
