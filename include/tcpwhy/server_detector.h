// Detects the server a process runs from what the node can read about it: /proc/PID/exe and
// cmdline (interpreters and the module or script they run), environ (NODE_VERSION), maps (the
// assemblies .NET loads), the binary itself (the Go build info the linker embeds, Node's release
// string) and, through /proc/PID/root, files inside a container (a Spring Boot jar's libraries).
//
// Cost model: once per process, never per event. The session asks about a pid the first time a
// process-context event names it (a hash lookup after that); what a binary says is cached by
// the file's identity (device, inode, size, mtime), so a hundred pods of one image read it once.
// Both caches are bounded. A process that changed comm (exec) or start time (a reused pid) is
// detected again.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tcpwhy/server.h"

namespace tcpwhy {

// ---- pure parsers (tests feed them real files and real command lines) -----------------

// /proc/PID/cmdline split at NULs (a process that rewrote its title into one string, as
// gunicorn, puma and nginx do, stays one argument).
std::vector<std::string> split_cmdline(std::string_view raw);

// What the command line and executable say: interpreters with their module or script
// (node, python -m gunicorn, ruby puma, java -jar, dotnet X.dll), native servers, process
// titles. `exe` is the resolved /proc/PID/exe path ("" unknown). nullopt: nothing matched
// (a Go or other native binary is for the binary readers below).
std::optional<ServerInfo> classify_cmdline(const std::vector<std::string>& argv, std::string_view exe,
                                           std::string_view comm);

// The Go linker's build information: the runtime version and the module list
// (`go version -m` prints the same). Empty `go_version`: none found.
struct GoModule {
    std::string path, version;
};
struct GoBuildInfo {
    std::string go_version;  // "go1.19.8"
    std::string path;        // the main package's path ("command-line-arguments" for go build file.go)
    GoModule main;           // the main module
    std::vector<GoModule> deps;
    bool has(std::string_view module_prefix) const;
};
// The text of runtime/debug's modinfo ("path\t...\nmod\t...\ndep\t...\n"), without its sentinels.
GoBuildInfo parse_go_modinfo(std::string_view modinfo);
// The contents of a .go.buildinfo section (or the data segment that holds it), starting at its
// "\xff Go buildinf:" header. Go 1.18+ inlines the strings; older binaries point at them, and
// `read_at` (virtual address, length) reads those. nullopt: no header, or a malformed one.
using ReadAt = std::function<std::optional<std::string>(uint64_t vaddr, size_t len)>;
std::optional<GoBuildInfo> parse_go_buildinfo(std::string_view section, const ReadAt& read_at = nullptr);
// From an ELF file: the .go.buildinfo section, or the writable segment that holds it when the
// sections are stripped. nullopt: not ELF, not Go, or unreadable (*error says which).
std::optional<GoBuildInfo> read_go_buildinfo(const std::string& elf_path, std::string* error = nullptr);
// What Go build info says runs there: Caddy, Traefik, fasthttp, or net/http (with gin/echo/chi/
// fiber as the framework). nullopt for a Go binary with no HTTP server in it.
std::optional<ServerInfo> classify_go(const GoBuildInfo& info);

// A version string in an ELF file's read-only data, right after `marker`: "nginx/" -> "1.22.1",
// "Apache/" -> "2.4.71". "" when absent.
std::string read_binary_version(const std::string& elf_path, std::string_view marker);
// Node's version from its binary (or libnode): the release URL its read-only data carries
// ("https://nodejs.org/download/release/v20.20.2/"). "" when absent.
std::string read_node_version(const std::string& elf_path);
// What /proc/PID/maps says: ASP.NET Core's Kestrel assemblies, libnode's soname.
struct MappedFacts {
    bool kestrel = false;   // Microsoft.AspNetCore.Server.Kestrel*.dll mapped
    bool dotnet = false;    // libcoreclr.so mapped
    bool aiohttp = false;   // aiohttp's C extensions mapped (a Python process serving with aiohttp)
    std::string libnode;    // path of a mapped libnode.so.N ("" none)
};
MappedFacts classify_maps(std::string_view maps);

// The names of the entries of a zip (a jar), from its central directory; at most max_entries.
std::optional<std::vector<std::string>> read_zip_names(const std::string& path, size_t max_entries = 65536,
                                                       std::string* error = nullptr);
// What a jar's libraries say: Tomcat, Jetty, Undertow or Netty (Spring Boot as the framework), with versions.
std::optional<ServerInfo> classify_jar_entries(std::span<const std::string> names);

// /proc/PID/stat's start time (field 22, clock ticks since boot). nullopt when malformed.
std::optional<uint64_t> parse_stat_start_time(std::string_view stat);

// ---- the /proc reader ----------------------------------------------------------------

struct ServerDetectorOptions {
    std::string host_root = "/";     // where the host's /proc is (--host-root)
    size_t max_processes = 8192;     // cached processes (pid, start time) -> detection
    size_t max_binaries = 1024;      // cached binary analyses (by file identity)
    size_t max_detections_per_tick = 64;  // a fork storm is detected over several ticks, not at once
};

struct ServerDetectorCounters {
    uint64_t detections = 0;      // processes examined
    uint64_t recognised = 0;      // ... that matched a server
    uint64_t binaries_read = 0;   // binaries whose build info / version was read (cache misses)
    uint64_t vanished = 0;        // exited before they could be read
    uint64_t permission_denied = 0;
    uint64_t deferred = 0;        // over the per-tick budget, detected at a later tick
    std::string first_problem;
};

class ServerDetector {
public:
    explicit ServerDetector(ServerDetectorOptions options = {});

    // A process-context event named (pid, comm): a hash lookup; the first time (or after an
    // exec changed comm) the process is detected now, within the tick's budget, else queued.
    // Returns the record when known.
    const ServerRecord* note(uint32_t pid, std::string_view comm);
    // About once a second: detects what was queued, resets the budget.
    void tick();
    // Detects one process now, ignoring caches and budget (doctor, tests).
    std::optional<ServerRecord> detect(uint32_t pid);

    // Records detected since the last call, for `server` trace lines.
    std::vector<ServerRecord> take_changes();
    bool has_changes() const { return !changes_.empty(); }
    // pid -> server for the correlator; updated in place.
    std::shared_ptr<const ServerTable> table() const { return table_; }
    const ServerDetectorCounters& counters() const { return counters_; }

private:
    struct BinaryFacts;
    BinaryFacts* binary_facts(const std::string& exe_link);  // nullptr: cannot stat it
    void run(uint32_t pid, std::string_view comm);

    ServerDetectorOptions options_;
    std::string proc_;
    std::shared_ptr<ServerTable> table_;
    std::unordered_map<uint32_t, std::string> seen_comm_;  // pid -> comm detection ran for
    std::list<uint32_t> seen_order_;                        // oldest first, for the bound
    std::vector<std::pair<uint32_t, std::string>> queued_;
    std::unordered_map<std::string, std::shared_ptr<BinaryFacts>> binaries_;  // by file identity
    std::list<std::string> binaries_order_;
    size_t budget_;
    static constexpr uint64_t kRecheckTicks = 30;        // a pid's start time is checked every 30 s at most
    uint64_t ticks_ = 0;
    std::unordered_map<uint32_t, uint64_t> last_checked_;  // pid -> tick of the last start-time check
    std::vector<uint32_t> recheck_;
    std::vector<ServerRecord> changes_;
    ServerDetectorCounters counters_;
};

}  // namespace tcpwhy
