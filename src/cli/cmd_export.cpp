// `tcpwhy export`: a postmortem trace out of a running daemon's archive.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <csignal>
#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "tcpwhy/log.h"
#include "tcpwhy/daemon/export.h"
#include "tcpwhy/daemon/server.h"
#include "tcpwhy/daemon/units.h"
#include "tcpwhy/jsonl.h"
#include "tcpwhy/progress.h"

namespace tcpwhy::cli {
namespace {

struct ExportArgs {
    std::string since = "30m";
    std::string output = "-";
    bool gzip = false;
    std::string socket = "/run/tcpwhy/tcpwhy.sock";
};

// Where the trace goes: a file or stdout, plain or gzip. In a pod, stdout is the way out
// (kubectl exec ... > incident.jsonl.gz): nothing has to fit in the container's own disk.
class TraceOutput {
public:
    static std::unique_ptr<TraceOutput> open(const std::string& path, bool gzip, std::string* error) {
        auto out = std::unique_ptr<TraceOutput>(new TraceOutput);
        out->path_ = path == "-" ? "stdout" : path;
        int fd = path == "-" ? dup(STDOUT_FILENO) : ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            *error = fmt::format("cannot write {}: {}", out->path_, strerror(errno));
            return nullptr;
        }
        out->fd_ = fd;
        if (gzip) {
            out->gz_ = gzdopen(fd, "wb6");
            if (!out->gz_) {
                *error = fmt::format("cannot start gzip on {}", out->path_);
                return nullptr;
            }
            out->fd_ = -1;  // gzclose closes it
        }
        return out;
    }
    ~TraceOutput() {
        if (gz_) gzclose(gz_);
        if (fd_ >= 0) ::close(fd_);
    }
    bool write(std::string_view data) {
        if (failed_) return false;
        if (gz_) {
            failed_ = gzwrite(gz_, data.data(), static_cast<unsigned>(data.size())) != static_cast<int>(data.size());
            return !failed_;
        }
        while (!data.empty()) {
            ssize_t n = ::write(fd_, data.data(), data.size());
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                failed_ = true;
                error_ = strerror(errno);
                return false;
            }
            data.remove_prefix(static_cast<size_t>(n));
        }
        return true;
    }
    bool failed() const { return failed_; }
    // Finishes the gzip stream; false (and why) when anything was not written.
    bool finish(std::string* error) {
        if (gz_) {
            int rc = gzclose(gz_);
            gz_ = nullptr;
            failed_ = failed_ || rc != Z_OK;
        } else if (fd_ >= 0) {
            failed_ = ::close(fd_) != 0 || failed_;
            fd_ = -1;
        }
        if (failed_) *error = fmt::format("cannot write {}{}", path_, error_.empty() ? "" : ": " + error_);
        return !failed_;
    }

private:
    TraceOutput() = default;
    std::string path_, error_;
    int fd_ = -1;
    gzFile gz_ = nullptr;
    bool failed_ = false;
};

// "export: 12.0 MiB of 40.0 MiB (30%), 450 k events/s, 0:12 left, segment 3 of 12": the
// archive's bytes as stored (gzip), like `report`'s meter.
std::string export_progress_text(const daemon::ExportProgress& p, double elapsed_s) {
    std::string line = "export: " + pace_text(p.bytes_read, p.bytes_total, p.events, elapsed_s);
    if (p.segments > 1) line += fmt::format(", segment {} of {}", std::min(p.segment + 1, p.segments), p.segments);
    return line;
}

int run_export(const ExportArgs& args) {
    auto since_s = daemon::parse_duration_s(args.since);
    if (!since_s) {
        print_error(fmt::format("--since {}: not a duration", args.since), "use seconds or a unit: 90s, 30m, 12h, 7d");
        return kExitUsage;
    }
    signal(SIGPIPE, SIG_IGN);  // a reader that went away is a write error, said below
    const bool to_stdout = args.output == "-";
    const bool gzip = args.gzip || args.output.ends_with(".gz");
    if (to_stdout && isatty(STDOUT_FILENO)) {
        print_error("export writes the trace to stdout, which is a terminal here",
                    "redirect it (tcpwhy export --since 30m --gzip > incident.jsonl.gz) or give -o FILE");
        return kExitUsage;
    }
    std::string error;
    auto out = TraceOutput::open(args.output, gzip, &error);
    if (!out) {
        print_error(error, "choose a writable path for -o (or - for stdout)");
        return kExitUsage;
    }

    Fd fd = daemon::connect_unix(args.socket, &error);
    if (!fd) {
        print_error(error, "is `tcpwhy daemon` running? give its --socket PATH (and run as root: the socket is 0600)");
        return kExitFailure;
    }
    // On a terminal (stderr), a progress meter: the daemon says how far through the archive's
    // segments it is, in lines of its own between the trace's, only when asked (a pipe gets none).
    ProgressMeter meter(STDERR_FILENO);
    nlohmann::json ask = {{"cmd", "export"}, {"since_s", *since_s}};
    if (meter.active()) ask["progress"] = true;
    std::string request = ask.dump() + "\n";
    if (send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
        print_error(fmt::format("cannot send to {}: {}", args.socket, strerror(errno)));
        return kExitFailure;
    }

    // The daemon answers with the JSONL trace and closes, or with one {"error":...} line.
    std::string pending;
    uint64_t lines = 0, events = 0;
    bool first = true;
    char buf[65536];
    ssize_t n;
    daemon::ExportProgress where;
    auto progress_line = [&] { return export_progress_text(where, meter.elapsed_s()); };
    while ((n = recv(fd.get(), buf, sizeof(buf), 0)) > 0 || (n < 0 && errno == EINTR)) {
        if (n < 0) continue;
        pending.append(buf, static_cast<size_t>(n));
        size_t start = 0, newline;
        while ((newline = pending.find('\n', start)) != std::string::npos) {
            std::string_view line(pending.data() + start, newline - start);
            start = newline + 1;
            if (first) {
                first = false;
                auto parsed = parse_json_line(line);
                if (parsed.kind != LineKind::header) {
                    auto answer = nlohmann::json::parse(line, nullptr, false);
                    std::string message = answer.is_object() && answer.contains("error") && answer["error"].is_string()
                                              ? answer["error"].get<std::string>()
                                              : "the daemon did not answer with a trace";
                    meter.finish();
                    print_error(fmt::format("export failed: {}", message));
                    return kExitFailure;
                }
            } else if (auto p = daemon::parse_export_progress_line(line)) {
                where = *p;
                meter.update(progress_line);
                continue;  // the daemon's word to us, not part of the trace
            } else {
                ++events;
            }
            ++lines;
            if (!out->write(std::string_view(line.data(), line.size() + 1))) break;  // the line and its newline
        }
        pending.erase(0, start);
        if (out->failed()) break;  // said below
    }
    meter.finish();  // before anything else is printed
    if (n < 0) {
        print_error(fmt::format("reading from {}: {}", args.socket, strerror(errno)));
        return kExitFailure;
    }
    if (first) {
        print_error("the daemon closed the connection without answering", "see the daemon's log");
        return kExitFailure;
    }
    if (!out->finish(&error)) {
        print_error(error, to_stdout ? "is the reading end still there (kubectl exec ... > FILE)?"
                                     : "is there room on that filesystem? -o - streams to stdout instead");
        return kExitFailure;
    }
    // On stderr, so it never mixes with a trace on stdout.
    log::info(fmt::format("wrote {} lines ({} after the header) of the last {} to {}{}; read it with `tcpwhy report {}`",
                          lines, events, args.since, to_stdout ? "stdout" : args.output, gzip ? " (gzip)" : "",
                          to_stdout ? "FILE" : args.output));
    return kExitOk;
}

}  // namespace

Runner add_export(CLI::App& app) {
    auto* sub = app.add_subcommand(
        "export",
        "Pull a postmortem trace out of a running `tcpwhy daemon`'s archive (JSONL, the format of\n"
        "`tcpwhy trace -o`), for `tcpwhy report`. Streams to stdout unless -o is given, so from a\n"
        "pod the trace leaves through kubectl and never lands on the pod's disk.\n\n"
        "Examples:\n"
        "  kubectl -n tcpwhy exec POD -- tcpwhy export --since 30m --gzip > incident.jsonl.gz\n"
        "  tcpwhy report incident.jsonl.gz\n"
        "  tcpwhy export --since 2h -o /var/tmp/t.jsonl.gz   # gzip: the name ends in .gz\n\n"
        "On a terminal, stderr shows the progress (archive bytes read of the total, events/s,\n"
        "time left); piped or redirected, nothing.");
    auto args = std::make_shared<ExportArgs>();
    sub->add_option("--since", args->since, "How far back: 90s, 30m, 12h, 7d")->capture_default_str();
    sub->add_option("-o,--output", args->output, "Trace file to write ('-': stdout; a name ending in .gz: gzip)")
        ->capture_default_str();
    sub->add_flag("--gzip", args->gzip, "Compress the trace (gzip); `tcpwhy report` reads it as it is");
    sub->add_option("--socket", args->socket, "The daemon's Unix socket")->capture_default_str();
    return [args] { return run_export(*args); };
}

}  // namespace tcpwhy::cli
