// A candidate trace-line reader on simdjson's On-Demand API, measured beside tcpwhy's own in
// replay_bench (bench/README.md says which won and why).
#pragma once

#include <functional>
#include <memory>
#include <string_view>

#include "tcpwhy/jsonl.h"

namespace tcpwhy::bench {

// SIMDJSON_PADDING, for callers that do not include simdjson.h.
size_t simdjson_padding();

class SimdjsonLineParser {
public:
    SimdjsonLineParser();
    ~SimdjsonLineParser();
    // `line` must have TraceReader::kLinePadding readable bytes after it (TraceReader's lines do).
    void parse(std::string_view line, ParsedLine& out);
    // simdjson's way with JSON lines: one iterate_many over many lines (`text`: whole lines, with
    // SIMDJSON_PADDING readable bytes after it), `each` called with every document read. Returns
    // the documents seen.
    uint64_t parse_many(std::string_view text, ParsedLine& out, const std::function<void(const ParsedLine&)>& each);
    static constexpr size_t kBatchBytes = 1 << 20;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tcpwhy::bench
