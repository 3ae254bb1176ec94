// A candidate trace-line reader on simdjson's On-Demand API, measured beside tcpwhy's own in
// replay_bench (bench/README.md says which won and why).
#pragma once

#include <memory>
#include <string_view>

#include "tcpwhy/jsonl.h"

namespace tcpwhy::bench {

class SimdjsonLineParser {
public:
    SimdjsonLineParser();
    ~SimdjsonLineParser();
    // `line` must have TraceReader::kLinePadding readable bytes after it (TraceReader's lines do).
    void parse(std::string_view line, ParsedLine& out);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tcpwhy::bench
