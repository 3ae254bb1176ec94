// Streaming trace input: one line at a time from plain or gzip files and stdin,
// and the replay loop that feeds a Correlator.
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "tcpwhy/report.h"

namespace tcpwhy {
namespace {

constexpr size_t kReadChunk = 64 * 1024;
// A longer "line" is not a trace line; keep its start (it fails to parse and is
// counted as corrupt) instead of letting one line take unbounded memory.
constexpr size_t kMaxLineBytes = 1024 * 1024;
// Settle time-driven state once per second of trace time, as the live trace does: expire()
// scans every live connection, so running it per N events made replay O(events x live).
constexpr uint64_t kExpireEveryTraceNs = 1'000'000'000;

gzFile as_gz(void* p) { return static_cast<gzFile>(p); }

}  // namespace

std::unique_ptr<TraceReader> TraceReader::open(const std::string& path, std::string* error) {
    gzFile gz = nullptr;
    if (path == "-") {
        int fd = dup(STDIN_FILENO);  // gzclose closes it; stdin stays open
        if (fd >= 0) gz = gzdopen(fd, "rb");
        if (!gz && fd >= 0) close(fd);
    } else {
        gz = gzopen(path.c_str(), "rb");  // reads plain files transparently
    }
    if (!gz) {
        if (error)
            *error = fmt::format("{}: {}", path == "-" ? "stdin" : path, errno ? std::strerror(errno) : "cannot open");
        return nullptr;
    }
    gzbuffer(gz, kReadChunk);
    return std::unique_ptr<TraceReader>(new TraceReader(gz, path == "-" ? "stdin" : path));
}

std::unique_ptr<TraceReader> TraceReader::from_fd(int fd, const std::string& name, std::string* error) {
    gzFile gz = fd >= 0 ? gzdopen(fd, "rb") : nullptr;
    if (!gz) {
        if (fd >= 0) close(fd);
        if (error) *error = fmt::format("{}: cannot open", name);
        return nullptr;
    }
    gzbuffer(gz, kReadChunk);
    return std::unique_ptr<TraceReader>(new TraceReader(gz, name));
}

TraceReader::TraceReader(void* gz, std::string name) : gz_(gz), name_(std::move(name)) {}

TraceReader::~TraceReader() { gzclose(as_gz(gz_)); }

std::optional<std::string_view> TraceReader::next_line() {
    char chunk[4096];
    while (true) {
        line_.clear();
        bool got_any = false;
        while (char* got = gzgets(as_gz(gz_), chunk, sizeof(chunk))) {
            got_any = true;
            size_t n = std::strlen(got);
            bool complete = n > 0 && got[n - 1] == '\n';
            if (complete) --n;
            if (line_.size() < kMaxLineBytes) line_.append(got, std::min(n, kMaxLineBytes - line_.size()));
            if (complete) break;
        }
        if (!got_any) {
            int code = Z_OK;
            const char* message = gzerror(as_gz(gz_), &code);
            if (code != Z_OK && code != Z_STREAM_END) error_ = fmt::format("{}: read error: {}", name_, message);
            return std::nullopt;
        }
        ++line_number_;
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        if (line_.find_first_not_of(" \t") != std::string::npos) return std::string_view(line_);
    }
}

namespace {

// Where the lines under one header go: a node's correlator, names and stats.
struct NodeSink {
    Correlator* correlator = nullptr;
    WorkloadTable* workloads = nullptr;
    ServerTable* servers = nullptr;  // `server` lines, by pid: pids repeat across nodes too
    ReplayStats* stats = nullptr;
    NodeReplay* node = nullptr;  // nullptr: replay_traces' single correlator
    // Expiry runs on the node's own clock: another node's CLOCK_MONOTONIC says nothing about this one's.
    uint64_t max_ts = 0;
    uint64_t last_expire_ts = 0;
};

// The one replay loop. sink_for(header) picks where the lines after a header go; it is asked
// with nullptr for lines before the first header of all. A file without a header of its own (a
// trace cut in pieces) goes on with the node of the file before it.
int replay_loop(const std::vector<std::string>& inputs, const std::function<NodeSink*(const TraceHeader*)>& sink_for,
                const std::function<void(const NodeSink&, const Event&)>& also, std::string* error) {
    auto fail = [error](int code, std::string message) {
        if (error) *error = std::move(message);
        return code;
    };
    NodeSink* sink = nullptr;
    auto current = [&] { return sink ? sink : (sink = sink_for(nullptr)); };
    for (const auto& path : inputs) {
        // A path that is not a readable file is bad input (exit 2), like every other: say which
        // and what to give instead. Errors while reading a file that opened are I/O errors (1).
        if (path != "-") {
            std::error_code ec;
            auto status = std::filesystem::status(path, ec);
            if (!std::filesystem::exists(status))
                return fail(kReportInputError, fmt::format("{}: no such file\n  fix: give the path of a trace from "
                                                           "`tcpwhy trace -o` or `tcpwhy export`",
                                                           path));
            if (std::filesystem::is_directory(status))
                return fail(kReportInputError,
                            fmt::format("{} is a directory\n  fix: give the trace files in it (e.g. {}/*.jsonl.gz for "
                                        "an archive's segments)",
                                        path, path));
        }
        std::string open_error;
        auto reader = TraceReader::open(path, &open_error);
        if (!reader) return fail(kReportInputError, open_error + "\n  fix: check the file's permissions");
        bool first_line = true;
        while (auto line = reader->next_line()) {
            ParsedLine parsed = parse_json_line(*line);
            auto where = [&] { return fmt::format("{}:{}", reader->name(), reader->line_number()); };
            if (parsed.kind == LineKind::unsupported_version)
                return fail(kReportInputError, fmt::format("{}: {}", where(), parsed.error));
            if (first_line && parsed.kind == LineKind::bad)
                return fail(kReportInputError,
                            fmt::format("{}: not a tcpwhy trace (first line: {})", reader->name(), parsed.error));
            first_line = false;
            switch (parsed.kind) {
            case LineKind::header:
                sink = sink_for(&parsed.header);
                if (parsed.header.tally) sink->correlator->set_opens_tallied(true);
                sink->stats->headers.push_back(std::move(parsed.header));
                break;
            case LineKind::workload: apply(*current()->workloads, parsed.workload); break;
            case LineKind::server: current()->servers->set(parsed.server); break;
            case LineKind::bad: {
                ReplayStats& stats = *current()->stats;
                if (stats.bad_lines++ == 0) stats.first_bad = fmt::format("{}: {}", where(), parsed.error);
                break;
            }
            case LineKind::event: {
                NodeSink& to = *current();
                const Event& e = parsed.event;
                ReplayStats& stats = *to.stats;
                ++stats.events;
                if (stats.first_ts_ns == 0 || e.ts_ns < stats.first_ts_ns) stats.first_ts_ns = e.ts_ns;
                to.max_ts = std::max(to.max_ts, e.ts_ns);
                to.correlator->on_event(e);
                if (also) also(to, e);
                if (to.max_ts >= to.last_expire_ts + kExpireEveryTraceNs) {
                    to.correlator->expire(to.max_ts);
                    to.last_expire_ts = to.max_ts;
                }
                break;
            }
            case LineKind::unsupported_version: break;  // returned above
            }
        }
        if (!reader->error().empty()) current()->stats->warnings.push_back(reader->error());
    }
    return kReportOk;
}

// "vm", or "vm (boot cb84e5bc)" where one hostname has several boots in the report.
void name_nodes(std::vector<std::unique_ptr<NodeReplay>>& nodes) {
    std::map<std::string, int> boots_of_host;
    for (const auto& n : nodes) boots_of_host[n->key.hostname]++;
    for (auto& n : nodes) {
        std::string host = n->key.hostname.empty() ? "(no header)" : n->key.hostname;
        if (boots_of_host[n->key.hostname] == 1)
            n->name = host;
        else
            n->name =
                fmt::format("{} (boot {})", host, n->key.boot_id.empty() ? "unknown" : n->key.boot_id.substr(0, 8));
    }
}

}  // namespace

int replay_traces(const std::vector<std::string>& inputs, Correlator& correlator,
                  const std::function<void(const Event&)>& also, ReplayStats& stats, std::string* error) {
    // Names recorded in the traces; the correlator reads them when it builds results.
    auto workloads = std::make_shared<WorkloadTable>();
    correlator.set_workloads(workloads);
    stats.workloads = workloads;
    // Servers detected live (`server` lines): the same advice as the live run gave.
    auto servers = std::make_shared<ServerTable>();
    correlator.set_servers(servers);
    stats.servers = servers;
    NodeSink only{&correlator, workloads.get(), servers.get(), &stats};
    std::function<void(const NodeSink&, const Event&)> each;
    if (also) each = [&also](const NodeSink&, const Event& e) { also(e); };
    int code = replay_loop(
        inputs, [&only](const TraceHeader*) { return &only; }, each, error);
    stats.last_ts_ns = only.max_ts;
    if (code == kReportOk) correlator.finish();
    return code;
}

int replay_nodes(const std::vector<std::string>& inputs, const CorrelatorConfig& config, const ReplayHooks& hooks,
                 std::vector<std::unique_ptr<NodeReplay>>& nodes, std::string* error) {
    std::map<NodeKey, NodeSink> sinks;  // std::map: a sink's address stays put as nodes are added
    auto sink_for = [&](const TraceHeader* header) -> NodeSink* {
        NodeKey key = header ? NodeKey{header->hostname, header->boot_id} : NodeKey{};
        auto [it, added] = sinks.try_emplace(key);
        if (!added) return &it->second;
        auto node = std::make_unique<NodeReplay>(key, config);
        auto workloads = std::make_shared<WorkloadTable>();  // a netns inode names a pod on its own node only
        node->correlator.set_workloads(workloads);
        node->stats.workloads = workloads;
        auto servers = std::make_shared<ServerTable>();  // by pid, and pids repeat across nodes
        node->correlator.set_servers(servers);
        node->stats.servers = servers;
        it->second = NodeSink{&node->correlator, workloads.get(), servers.get(), &node->stats, node.get()};
        if (hooks.on_node) hooks.on_node(*node);
        nodes.push_back(std::move(node));
        return &it->second;
    };
    std::function<void(const NodeSink&, const Event&)> each;
    if (hooks.on_event) each = [&hooks](const NodeSink& to, const Event& e) { hooks.on_event(*to.node, e); };
    int code = replay_loop(inputs, sink_for, each, error);
    for (auto& [key, sink] : sinks) sink.stats->last_ts_ns = sink.max_ts;
    if (code != kReportOk) return code;
    for (auto& node : nodes) node->correlator.finish();
    name_nodes(nodes);
    return kReportOk;
}

}  // namespace tcpwhy
