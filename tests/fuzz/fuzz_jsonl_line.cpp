// libFuzzer target: one trace line, as `tcpwhy report` reads it from an untrusted file.
// Beyond "no crash, no sanitizer report": what tcpwhy writes is well-formed UTF-8 (strict JSON
// readers such as Python's reject anything else), and whatever parses as an event survives a
// write/read round trip unchanged, since a trace replayed later must give the same answers.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tcpwhy/jsonl.h"

namespace {

bool is_well_formed_utf8(std::string_view s) {
    auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    for (size_t i = 0; i < s.size();) {
        unsigned char c = at(i);
        size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        if (len == 0 || i + len > s.size()) return false;
        for (size_t k = 1; k < len; ++k)
            if ((at(i + k) & 0xc0) != 0x80) return false;
        if (len == 3) {
            unsigned cp = (c & 0x0f) << 12 | (at(i + 1) & 0x3f) << 6 | (at(i + 2) & 0x3f);
            if (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000)) return false;
        } else if (len == 4) {
            unsigned cp = (c & 0x07) << 18 | (at(i + 1) & 0x3f) << 12 | (at(i + 2) & 0x3f) << 6 | (at(i + 3) & 0x3f);
            if (cp < 0x10000 || cp > 0x10ffff) return false;
        }
        i += len;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view line(reinterpret_cast<const char*>(data), size);
    tcpwhy::ParsedLine parsed = tcpwhy::parse_json_line(line);
    if (parsed.kind == tcpwhy::LineKind::event) {
        std::string written = tcpwhy::to_json_line(parsed.event);
        if (!is_well_formed_utf8(written)) std::abort();
        tcpwhy::ParsedLine again = tcpwhy::parse_json_line(written);
        if (again.kind != tcpwhy::LineKind::event) std::abort();
        if (tcpwhy::to_json_line(again.event) != written) std::abort();
    } else if (parsed.kind == tcpwhy::LineKind::header) {
        std::string written = tcpwhy::to_json_line(parsed.header);
        if (!is_well_formed_utf8(written)) std::abort();
        if (tcpwhy::parse_json_line(written).kind != tcpwhy::LineKind::header) std::abort();
    }
    return 0;
}
