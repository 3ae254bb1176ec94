#include "tcpwhy/log.h"

#include <memory>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace tcpwhy::log {
namespace {

spdlog::logger& logger() {
    // Unbuffered stderr, and no pattern of spdlog's own: the lines are tcpwhy's.
    static std::shared_ptr<spdlog::logger> instance = [] {
        auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
        auto made = std::make_shared<spdlog::logger>("tcpwhy", std::move(sink));
        made->set_pattern("tcpwhy: %v");
        made->set_level(spdlog::level::info);
        made->flush_on(spdlog::level::trace);
        return made;
    }();
    return *instance;
}

}  // namespace

void set_verbose(bool on) { logger().set_level(on ? spdlog::level::debug : spdlog::level::info); }
bool verbose() { return logger().should_log(spdlog::level::debug); }

void info(std::string_view message) { logger().info("{}", message); }
void warn(std::string_view message) { logger().warn("WARNING {}", message); }
void error(std::string_view problem, std::string_view fix) {
    if (fix.empty()) logger().error("{}", problem);
    else logger().error("{}\n  fix: {}", problem, fix);
}
void debug(std::string_view message) { logger().debug("debug: {}", message); }

}  // namespace tcpwhy::log
