// `tcpwhy export`: a postmortem trace out of a running daemon's archive.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "tcpwhy/log.h"
#include "tcpwhy/daemon/server.h"
#include "tcpwhy/daemon/units.h"
#include "tcpwhy/jsonl.h"

namespace tcpwhy::cli {
namespace {

struct ExportArgs {
    std::string since = "30m";
    std::string output;
    std::string socket = "/run/tcpwhy/tcpwhy.sock";
};

int run_export(const ExportArgs& args) {
    auto since_s = daemon::parse_duration_s(args.since);
    if (!since_s) {
        print_error(fmt::format("--since {}: not a duration", args.since), "use seconds or a unit: 90s, 30m, 12h, 7d");
        return kExitUsage;
    }
    std::ofstream file;
    bool to_stdout = args.output == "-";
    if (!to_stdout) {
        file.open(args.output, std::ios::out | std::ios::trunc | std::ios::binary);
        if (!file) {
            print_error(fmt::format("cannot write {}: {}", args.output, strerror(errno)),
                        "choose a writable path for -o");
            return kExitUsage;
        }
    }
    std::ostream& out = to_stdout ? std::cout : file;

    std::string error;
    Fd fd = daemon::connect_unix(args.socket, &error);
    if (!fd) {
        print_error(error, "is `tcpwhy daemon` running? give its --socket PATH (and run as root: the socket is 0600)");
        return kExitFailure;
    }
    std::string request = nlohmann::json{{"cmd", "export"}, {"since_s", *since_s}}.dump() + "\n";
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
                    print_error(fmt::format("export failed: {}", message));
                    return kExitFailure;
                }
            } else {
                ++events;
            }
            ++lines;
            out << line << '\n';
        }
        pending.erase(0, start);
    }
    if (n < 0) {
        print_error(fmt::format("reading from {}: {}", args.socket, strerror(errno)));
        return kExitFailure;
    }
    if (first) {
        print_error("the daemon closed the connection without answering", "see the daemon's log");
        return kExitFailure;
    }
    out.flush();
    if (!out) {
        print_error(fmt::format("cannot write {}", args.output));
        return kExitFailure;
    }
    if (!to_stdout)
        log::info(fmt::format("wrote {} lines ({} after the header) of the last {} to {}; read it with `tcpwhy "
                              "report {}`",
                              lines, events, args.since, args.output, args.output));
    return kExitOk;
}

}  // namespace

Runner add_export(CLI::App& app) {
    auto* sub = app.add_subcommand(
        "export",
        "Pull a postmortem trace out of a running `tcpwhy daemon`'s archive (JSONL, the format of\n"
        "`tcpwhy trace -o`), for `tcpwhy report`.\n\n"
        "Examples:\n"
        "  tcpwhy export --since 30m -o /tmp/incident.jsonl && tcpwhy report /tmp/incident.jsonl\n"
        "  kubectl exec ds/tcpwhy -- tcpwhy export --since 2h -o /tmp/t.jsonl   # then kubectl cp");
    auto args = std::make_shared<ExportArgs>();
    sub->add_option("--since", args->since, "How far back: 90s, 30m, 12h, 7d")->capture_default_str();
    sub->add_option("-o,--output", args->output, "Trace file to write ('-': stdout)")->required();
    sub->add_option("--socket", args->socket, "The daemon's Unix socket")->capture_default_str();
    return [args] { return run_export(*args); };
}

}  // namespace tcpwhy::cli
