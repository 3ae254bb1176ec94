// `tcpwhy report TRACE...`: replay JSONL traces through the correlator and print
// findings, backends and counts (text or JSON), or one connection's timeline.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tcpwhy/correlator.h"
#include "tcpwhy/jsonl.h"

namespace tcpwhy {

// Exit codes of run_report().
inline constexpr int kReportOk = 0;
inline constexpr int kReportIoError = 1;     // a file could not be opened or read
inline constexpr int kReportInputError = 2;  // not a trace, unknown schema version, bad option value

struct ReportOptions {
    std::vector<std::string> inputs;            // trace files, plain or gzip; "-" is stdin. Replayed in this order.
    bool json = false;                          // --json
    std::optional<std::string> conn;            // --conn RADDR:RPORT ("[v6]:port" for IPv6): print that timeline
    std::string lb_preset = "gcp";              // --lb gcp|aws-alb|aws-nlb|azure|none
    std::optional<std::string> lb_ranges;       // --lb-ranges CIDR,...
    std::optional<uint32_t> lb_idle_timeout_s;  // --lb-idle-timeout SECONDS
    std::optional<uint32_t> lb_response_timeout_s;  // --lb-response-timeout SECONDS
    uint32_t idle_threshold_ms = 1000;          // --idle-threshold MS
    std::optional<std::string> html;            // --html FILE: also write the self-contained HTML postmortem
    int progress_fd = -1;                       // a terminal to draw a progress meter on (cmd_report: stderr if it is one)
};

// Runs the report; writes results to out and warnings/errors to err.
int run_report(const ReportOptions& options, std::ostream& out, std::ostream& err);

// ---- building blocks (used by run_report, `tcpwhy trace` and tests) ----------

// Reads one trace, a line at a time (memory does not grow with its length).
// gzip is detected by content, so plain and compressed files read the same way.
class TraceReader {
public:
    // Opens path ("-" for stdin). On failure, returns nullptr and sets *error.
    static std::unique_ptr<TraceReader> open(const std::string& path, std::string* error);
    // Reads an open file (taken over, closed with the reader), named `name` in messages.
    static std::unique_ptr<TraceReader> from_fd(int fd, const std::string& name, std::string* error);
    ~TraceReader();
    TraceReader(const TraceReader&) = delete;
    TraceReader& operator=(const TraceReader&) = delete;

    // Next non-empty line (without the newline), or nullopt at end of file or on a
    // read error (see error()). The view is valid until the next call, and at least
    // kLinePadding readable bytes follow it (what SIMD parsers read past a line's end).
    std::optional<std::string_view> next_line();
    uint64_t line_number() const { return line_number_; }
    const std::string& error() const { return error_; }
    const std::string& name() const { return name_; }

    // For progress: bytes of the file consumed so far and its size when it has one (a regular
    // file; 0 for a pipe). Both count the file as stored: compressed bytes for gzip.
    uint64_t bytes_read() const;
    uint64_t file_size() const { return file_size_; }

    static constexpr size_t kLinePadding = 64;

private:
    TraceReader(void* gz, std::string name, uint64_t file_size);
    bool fill();  // reads more into buf_ after what is pending; false at end of file or on error
    std::optional<std::string_view> overlong_line();
    void* gz_;  // gzFile; void* keeps zlib.h out of this header
    std::string name_;
    std::unique_ptr<char[]> buf_;  // lines are returned as views into it
    size_t begin_ = 0, end_ = 0;   // pending bytes: buf_[begin_, end_)
    bool eof_ = false;
    std::string line_;  // only a line longer than the buffer is copied here
    std::string error_;
    uint64_t line_number_ = 0;
    uint64_t file_size_ = 0;
};

struct ReplayStats {
    uint64_t events = 0;
    uint64_t bad_lines = 0;
    std::string first_bad;  // "file:line: reason"
    uint64_t first_ts_ns = 0, last_ts_ns = 0;
    std::vector<TraceHeader> headers;
    std::vector<std::string> warnings;  // e.g. a truncated gzip stream (what was read is used)
    std::shared_ptr<const WorkloadTable> workloads;  // names from the traces' `workload` lines
    std::shared_ptr<const ServerTable> servers;      // servers from the traces' `server` lines
};

// How far a replay is, for a progress meter.
struct ReplayProgress {
    uint64_t bytes_read = 0;   // of all inputs, as stored (compressed bytes for gzip)
    uint64_t bytes_total = 0;  // the inputs' sizes; 0: unknown (stdin)
    uint64_t events = 0;
    size_t file_index = 0;  // the input being read, from 0
    size_t files = 0;
};
using ReplayProgressFn = std::function<void(const ReplayProgress&)>;

// What the progress meter of `report` shows (on a terminal only): bytes read of the total (as
// stored: compressed for gzip), the file when there are several, events/s, time left.
std::string replay_progress_line(const ReplayProgress& progress, double elapsed_s);

// Replays the inputs into on_event (and correlator expiry). Returns kReportOk, or an
// error code with *error set: a file that does not start like a tcpwhy trace, or a
// schema version this tcpwhy does not read, is kReportInputError. `progress`, when set,
// is called as each input opens and ends and every few thousand lines in between.
// Every event goes to the one correlator: for traces of one node (replay_nodes() for several).
int replay_traces(const std::vector<std::string>& inputs, Correlator& correlator,
                  const std::function<void(const Event&)>& also, ReplayStats& stats, std::string* error,
                  const ReplayProgressFn& progress = {});

// ---- several nodes -------------------------------------------------------------

// Which node, and which boot of it, recorded a trace: socket cookies, network-namespace inodes
// (the host's is the same on every node) and CLOCK_MONOTONIC are unique and comparable only
// within one boot of one node. From each trace header; a header without boot_id (traces from
// before tcpwhy recorded it) is keyed by the hostname alone.
struct NodeKey {
    std::string hostname;
    std::string boot_id;
    auto operator<=>(const NodeKey&) const = default;
};

// One node-boot of a report: a correlator of its own, fed only the events recorded under its
// headers, and its own stats (headers, events, span on its own clock, names, bad lines).
struct NodeReplay {
    explicit NodeReplay(NodeKey k, CorrelatorConfig config) : key(std::move(k)), correlator(std::move(config)) {}
    NodeKey key;
    std::string name;  // the hostname; with the boot ("vm (boot cb84e5bc)") when a host has several
    Correlator correlator;
    ReplayStats stats;
};

struct ReplayHooks {
    std::function<void(NodeReplay&)> on_node;  // a node seen for the first time, before any of its events
    std::function<void(const NodeReplay&, const Event&)> on_event;  // after the node's correlator took it
};

// Replays the inputs, each event into the correlator of the node whose header it follows (an
// export stream, or archive segments, may carry several headers; a file without a header goes on
// with the node before it; lines before any header at all go to an unnamed node). Nodes in the
// order they first appear, named once all are known. Errors as replay_traces().
int replay_nodes(const std::vector<std::string>& inputs, const CorrelatorConfig& config, const ReplayHooks& hooks,
                 std::vector<std::unique_ptr<NodeReplay>>& nodes, std::string* error,
                 const ReplayProgressFn& progress = {});

// "130.211.0.143:51234" or "[2600:2d00:1:b029::5]:51234".
std::optional<std::pair<IpAddr, uint16_t>> parse_peer(std::string_view text);

// Renderers. Each takes the nodes of the report; with one node the output names none (as it
// always has, apart from JSON's `node` fields), with several every backend and finding says
// its node, and a per-node summary comes before the cluster-wide counts.
struct ReportNode {
    std::string name;  // the node as the report names it ("" for a report of one trace set)
    NodeKey key;
    const Correlator* correlator = nullptr;
    const ReplayStats* stats = nullptr;
};
std::vector<ReportNode> report_nodes(const std::vector<std::unique_ptr<NodeReplay>>& nodes);

void render_text_report(std::span<const ReportNode> nodes, std::ostream& out);
void render_text_report(const Correlator& correlator, const ReplayStats& stats, std::ostream& out);
// Every finding (facts, and the words the text shows), the backends table and the counts.
// Schema: docs/report-json.md.
inline constexpr int kReportJsonVersion = 2;
void render_json_report(std::span<const ReportNode> nodes, std::ostream& out);
void render_json_report(const Correlator& correlator, const ReplayStats& stats, std::ostream& out);
// A reset event as the HTML timeline draws it (every one, classified or not).
struct ResetMark {
    uint64_t ts_ns = 0;
    bool sent = true;   // reset_sent; false: reset_recv
    uint32_t node = 0;  // index into the report's nodes: whose clock ts_ns is on
};
// The HTML postmortem: findings with advice, per backend an idle-before-close histogram
// with the LB idle timeout marked, a timeline of resets, the affected connections. One
// file, no external assets. dropped_marks: reset events beyond those kept in marks.
void render_html_report(std::span<const ReportNode> nodes, const std::vector<ResetMark>& marks, uint64_t dropped_marks,
                        std::ostream& out);
void render_html_report(const Correlator& correlator, const ReplayStats& stats, const std::vector<ResetMark>& marks,
                        uint64_t dropped_marks, std::ostream& out);
// One connection's timeline: its events (either side of it, as traced) in time order
// and the correlator's verdict.
void render_timeline(const IpAddr& raddr, uint16_t rport, std::vector<Event> events,
                     const std::vector<ConnectionRecord>& records, std::ostream& out);

}  // namespace tcpwhy
