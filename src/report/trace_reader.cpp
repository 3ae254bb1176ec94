// Streaming trace input: one line at a time from plain or gzip files and stdin,
// and the replay loop that feeds a Correlator.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "tcpwhy/report.h"

namespace tcpwhy {
namespace {

// Lines are found with memchr in one buffer and handed out as views into it, so a line is
// never copied on its way to the parser; zlib inflates (or, for a plain file, reads) straight
// into it, since its reads are larger than zlib's own buffer.
constexpr size_t kBufferBytes = 256 * 1024;
constexpr size_t kZlibBuffer = 64 * 1024;
// A longer "line" is not a trace line; keep its start (it fails to parse and is
// counted as corrupt) instead of letting one line take unbounded memory.
constexpr size_t kMaxLineBytes = 1024 * 1024;
// Settle time-driven state once per second of trace time, as the live trace does: expire()
// scans every live connection, so running it per N events made replay O(events x live).
constexpr uint64_t kExpireEveryTraceNs = 1'000'000'000;
// How often the replay loop reports progress (the meter itself redraws a few times a second).
constexpr uint64_t kProgressEveryLines = 16 * 1024;

gzFile as_gz(void* p) { return static_cast<gzFile>(p); }

uint64_t regular_file_size(int fd) {
    struct stat st{};
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
}

// Blank: spaces and tabs, and NULs (the zero-filled tail a crash can leave in a file), which
// the reader has always skipped.
bool is_blank(std::string_view line) {
    for (char c : line)
        if (c != ' ' && c != '\t' && c != '\0') return false;
    return true;
}

}  // namespace

std::unique_ptr<TraceReader> TraceReader::open(const std::string& path, std::string* error) {
    const bool is_stdin = path == "-";
    int fd = is_stdin ? dup(STDIN_FILENO) : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // gzclose closes it
    gzFile gz = fd >= 0 ? gzdopen(fd, "rb") : nullptr;  // reads plain files transparently
    if (!gz) {
        int saved = errno;
        if (fd >= 0) close(fd);
        if (error)
            *error = fmt::format("{}: {}", is_stdin ? "stdin" : path, saved ? std::strerror(saved) : "cannot open");
        return nullptr;
    }
    gzbuffer(gz, kZlibBuffer);
    return std::unique_ptr<TraceReader>(new TraceReader(gz, is_stdin ? "stdin" : path, regular_file_size(fd)));
}

std::unique_ptr<TraceReader> TraceReader::from_fd(int fd, const std::string& name, std::string* error) {
    gzFile gz = fd >= 0 ? gzdopen(fd, "rb") : nullptr;
    if (!gz) {
        if (fd >= 0) close(fd);
        if (error) *error = fmt::format("{}: cannot open", name);
        return nullptr;
    }
    gzbuffer(gz, kZlibBuffer);
    return std::unique_ptr<TraceReader>(new TraceReader(gz, name, regular_file_size(fd)));
}

TraceReader::TraceReader(void* gz, std::string name, uint64_t file_size)
    : gz_(gz), name_(std::move(name)), buf_(std::make_unique<char[]>(kBufferBytes + kLinePadding)),
      file_size_(file_size) {}

TraceReader::~TraceReader() { gzclose(as_gz(gz_)); }

uint64_t TraceReader::bytes_read() const {
    z_off_t offset = gzoffset(as_gz(gz_));
    return offset > 0 ? static_cast<uint64_t>(offset) : 0;
}

bool TraceReader::fill() {
    if (eof_) return false;
    if (begin_ > 0) {
        std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
    }
    int n = gzread(as_gz(gz_), buf_.get() + end_, static_cast<unsigned>(kBufferBytes - end_));
    if (n > 0) {
        end_ += static_cast<size_t>(n);
        return true;
    }
    eof_ = true;
    int code = Z_OK;
    const char* message = gzerror(as_gz(gz_), &code);
    if (code != Z_OK && code != Z_STREAM_END) error_ = fmt::format("{}: read error: {}", name_, message);
    return false;
}

// The buffer is full and holds no newline: copy the line out, keeping at most kMaxLineBytes of it.
std::optional<std::string_view> TraceReader::overlong_line() {
    line_.reserve(kMaxLineBytes + kLinePadding);
    line_.assign(buf_.get() + begin_, end_ - begin_);
    begin_ = end_ = 0;
    while (fill()) {
        const char* data = buf_.get();
        const char* newline = static_cast<const char*>(std::memchr(data, '\n', end_));
        size_t part = newline ? static_cast<size_t>(newline - data) : end_;
        line_.append(data, std::min(part, kMaxLineBytes - std::min(kMaxLineBytes, line_.size())));
        begin_ = newline ? part + 1 : end_;
        if (newline) break;
    }
    return std::string_view(line_);
}

std::optional<std::string_view> TraceReader::next_line() {
    while (true) {
        const char* data = buf_.get();
        std::string_view line;
        if (auto* newline = static_cast<const char*>(std::memchr(data + begin_, '\n', end_ - begin_))) {
            line = {data + begin_, static_cast<size_t>(newline - (data + begin_))};
            begin_ = static_cast<size_t>(newline - data) + 1;
        } else if (end_ - begin_ == kBufferBytes) {
            line = *overlong_line();
        } else if (fill()) {
            continue;
        } else if (begin_ < end_) {  // the last line, without a newline
            line = {data + begin_, end_ - begin_};
            begin_ = end_;
        } else {
            return std::nullopt;  // end of file, or error() says why not
        }
        ++line_number_;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (!is_blank(line)) return line;
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
                const std::function<void(const NodeSink&, const Event&)>& also, std::string* error,
                const ReplayProgressFn& progress) {
    auto fail = [error](int code, std::string message) {
        if (error) *error = std::move(message);
        return code;
    };
    NodeSink* sink = nullptr;
    auto current = [&] { return sink ? sink : (sink = sink_for(nullptr)); };
    ReplayProgress where;
    where.files = inputs.size();
    if (progress) {
        // Sizes as stored (compressed for gzip): what bytes_read() counts. Unknown for stdin.
        bool known = true;
        for (const auto& path : inputs) {
            std::error_code ec;
            uint64_t size = path == "-" ? 0 : std::filesystem::file_size(path, ec);
            known = known && path != "-" && !ec;
            where.bytes_total += size;
        }
        if (!known) where.bytes_total = 0;
    }
    uint64_t bytes_before = 0;  // of the inputs already read
    uint64_t events = 0;        // of every node, for the meter
    // Events are parsed two lines ahead of the one the correlator takes: what it will look up in
    // tables far larger than the cache is fetched (Correlator::prefetch, then prefetch_more)
    // while the next lines are parsed, instead of the correlator waiting on memory (most of its
    // time, with a few hundred thousand connections live). The lines are reused: a replay
    // parses millions. Any other line (a header, names, a bad line) first lets the waiting
    // events through, so every line takes effect in the trace's order, and the events waiting
    // are always the current node's.
    constexpr size_t kAhead = 3;
    std::array<ParsedLine, kAhead> lines;
    size_t next = 0, pending = 0;  // lines[next] is parsed into; the `pending` before it wait
    auto correlate = [&](const Event& e) {
        NodeSink& to = *current();
        ReplayStats& stats = *to.stats;
        ++stats.events;
        ++events;
        if (stats.first_ts_ns == 0 || e.ts_ns < stats.first_ts_ns) stats.first_ts_ns = e.ts_ns;
        to.max_ts = std::max(to.max_ts, e.ts_ns);
        to.correlator->on_event(e);
        if (also) also(to, e);
        if (to.max_ts >= to.last_expire_ts + kExpireEveryTraceNs) {
            to.correlator->expire(to.max_ts);
            to.last_expire_ts = to.max_ts;
        }
    };
    auto slot = [&](size_t back) -> ParsedLine& { return lines[(next + kAhead - back) % kAhead]; };
    auto correlate_pending = [&] {
        for (; pending > 0; --pending) correlate(slot(pending).event);
    };
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
        auto report_progress = [&] {
            where.bytes_read = bytes_before + reader->bytes_read();
            where.events = events;
            progress(where);
        };
        if (progress) report_progress();
        bool first_line = true;
        uint64_t lines_until_progress = kProgressEveryLines;
        while (auto line = reader->next_line()) {
            ParsedLine& parsed = lines[next];
            parse_json_line(*line, parsed);
            if (parsed.kind == LineKind::event) [[likely]] {
                first_line = false;
                if (sink) {
                    // current()'s correlator: the node is known once a line has named it.
                    sink->correlator->prefetch(parsed.event);
                    if (pending >= 1) sink->correlator->prefetch_more(slot(1).event);
                }
                if (pending == kAhead - 1) correlate(slot(kAhead - 1).event);
                else ++pending;
                next = (next + 1) % kAhead;
                if (progress && --lines_until_progress == 0) {
                    lines_until_progress = kProgressEveryLines;
                    report_progress();
                }
                continue;
            }
            auto where_line = [&] { return fmt::format("{}:{}", reader->name(), reader->line_number()); };
            if (parsed.kind == LineKind::unsupported_version)
                return fail(kReportInputError, fmt::format("{}: {}", where_line(), parsed.error));
            if (first_line && parsed.kind == LineKind::bad)
                return fail(kReportInputError,
                            fmt::format("{}: not a tcpwhy trace (first line: {})", reader->name(), parsed.error));
            first_line = false;
            correlate_pending();  // parsed is lines[next]: not one of the pending
            switch (parsed.kind) {
            case LineKind::header:
                sink = sink_for(&parsed.header);
                if (parsed.header.tally) sink->correlator->set_opens_tallied(true);
                sink->stats->headers.push_back(parsed.header);
                break;
            case LineKind::workload: apply(*current()->workloads, parsed.workload); break;
            case LineKind::server: current()->servers->set(parsed.server); break;
            case LineKind::bad: {
                ReplayStats& stats = *current()->stats;
                if (stats.bad_lines++ == 0) stats.first_bad = fmt::format("{}: {}", where_line(), parsed.error);
                break;
            }
            case LineKind::event:
            case LineKind::unsupported_version: break;  // handled above
            }
        }
        correlate_pending();
        if (!reader->error().empty()) current()->stats->warnings.push_back(reader->error());
        if (progress) {
            report_progress();
            bytes_before = where.bytes_read;
            ++where.file_index;
        }
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
                  const std::function<void(const Event&)>& also, ReplayStats& stats, std::string* error,
                  const ReplayProgressFn& progress) {
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
        inputs, [&only](const TraceHeader*) { return &only; }, each, error, progress);
    stats.last_ts_ns = only.max_ts;
    if (code == kReportOk) correlator.finish();
    return code;
}

int replay_nodes(const std::vector<std::string>& inputs, const CorrelatorConfig& config, const ReplayHooks& hooks,
                 std::vector<std::unique_ptr<NodeReplay>>& nodes, std::string* error, const ReplayProgressFn& progress) {
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
    int code = replay_loop(inputs, sink_for, each, error, progress);
    for (auto& [key, sink] : sinks) sink.stats->last_ts_ns = sink.max_ts;
    if (code != kReportOk) return code;
    for (auto& node : nodes) node->correlator.finish();
    name_nodes(nodes);
    return kReportOk;
}

}  // namespace tcpwhy
