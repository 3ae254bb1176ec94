// libFuzzer target: what server detection reads from other processes and their files: command
// lines and process titles, Go build info (both layouts, with pointers resolved into the input
// itself), modinfo text, /proc/PID/stat, /proc/PID/maps, a jar's entry names; and the trace's
// `server` line made of what they found, which must read back to the same server kind.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tcpwhy/jsonl.h"
#include "tcpwhy/server_detector.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace tcpwhy;
    std::string_view text(reinterpret_cast<const char*>(data), size);
    auto check_line = [](const ServerInfo& info) {
        if (static_cast<size_t>(info.kind) >= kServerKindCount) std::abort();
        auto parsed = parse_json_line(to_json_line(ServerRecord{1, 2, "fuzz", info}));
        if (parsed.kind != LineKind::server || parsed.server.server.kind != info.kind) std::abort();
    };
    auto argv = split_cmdline(text);
    for (std::string_view exe : {"/usr/bin/python3.11", "/usr/bin/java", "/usr/bin/node", "/usr/bin/ruby3.1", ""})
        if (auto info = classify_cmdline(argv, exe, "fuzz")) check_line(*info);
    if (!argv.empty())
        if (auto info = classify_cmdline(argv, argv.front(), argv.front())) check_line(*info);
    auto read_at = [text](uint64_t addr, size_t len) -> std::optional<std::string> {
        if (addr > text.size() || len > text.size() - addr) return std::nullopt;
        return std::string(text.substr(addr, len));
    };
    if (auto go = parse_go_buildinfo(text, read_at))
        if (auto info = classify_go(*go)) check_line(*info);
    if (auto info = classify_go(parse_go_modinfo(text))) check_line(*info);
    (void)parse_stat_start_time(text);
    (void)classify_maps(text);
    std::vector<std::string> names;
    for (size_t start = 0; start < text.size();) {
        size_t end = text.find('\n', start);
        if (end == std::string_view::npos) end = text.size();
        names.emplace_back(text.substr(start, end - start));
        start = end + 1;
    }
    if (auto info = classify_jar_entries(names)) check_line(*info);
    return 0;
}
