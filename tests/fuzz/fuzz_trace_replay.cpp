// libFuzzer target: a whole trace file (plain or gzip) through `tcpwhy report`'s path:
// TraceReader, the line parser, the correlator (expiry, eviction, findings) and the renderers, of one
// node and of every node the file's headers name.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

#include "tcpwhy/report.h"

namespace {

// The trace as a file the reader opens by path, without touching the disk.
class MemoryFile {
public:
    MemoryFile(const uint8_t* data, size_t size) : fd_(memfd_create("fuzz-trace", MFD_CLOEXEC)) {
        if (fd_ < 0) std::abort();
        for (size_t done = 0; done < size;) {
            ssize_t n = write(fd_, data + done, size - done);
            if (n <= 0) std::abort();
            done += static_cast<size_t>(n);
        }
    }
    ~MemoryFile() { close(fd_); }
    std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

private:
    int fd_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    MemoryFile file(data, size);
    tcpwhy::Correlator correlator;
    tcpwhy::ReplayStats stats;
    std::string error;
    if (tcpwhy::replay_traces({file.path()}, correlator, nullptr, stats, &error) != tcpwhy::kReportOk) return 0;
    std::ostringstream out;
    tcpwhy::render_text_report(correlator, stats, out);
    tcpwhy::render_json_report(correlator, stats, out);
    tcpwhy::render_html_report(correlator, stats, {}, 0, out);

    // The same file as `tcpwhy report` reads it: a correlator per node its headers name.
    std::vector<std::unique_ptr<tcpwhy::NodeReplay>> nodes;
    if (tcpwhy::replay_nodes({file.path()}, tcpwhy::CorrelatorConfig::defaults(), {}, nodes, &error) !=
            tcpwhy::kReportOk ||
        nodes.empty())
        return 0;
    auto view = tcpwhy::report_nodes(nodes);
    tcpwhy::render_text_report(view, out);
    tcpwhy::render_json_report(view, out);
    tcpwhy::render_html_report(view, {}, 0, out);
    return 0;
}
