// `tcpwhy report`: placeholder until the correlator lands.
#include "cli/commands.h"

namespace tcpwhy::cli {

Runner add_report(CLI::App& app) {
    auto* sub = app.add_subcommand("report", "Explain the resets in recorded traces (postmortem)");
    auto files = std::make_shared<std::vector<std::string>>();
    sub->add_option("trace", *files, "JSONL trace files ('-' for stdin)")->required();
    return [files] {
        print_error("report is not available in this build");
        return kExitFailure;
    };
}

}  // namespace tcpwhy::cli
