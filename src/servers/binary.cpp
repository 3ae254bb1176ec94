// What a binary says about itself: the Go linker's build information, Node's release string,
// a jar's library list. ELF through libelf (mapped, never read whole); only headers and the one
// section or segment needed are touched, so a 100 MB binary costs a few page faults.
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <functional>

#include <fmt/format.h>

#include "tcpwhy/server_detector.h"

namespace tcpwhy {
namespace {

constexpr std::string_view kBuildInfoMagic = "\xff Go buildinf:";
constexpr size_t kBuildInfoHeader = 32;
// Where a stripped binary's build info may be: the start of its first writable segment.
constexpr size_t kMaxBuildInfoScan = 16 << 20;

class ElfFile {
public:
    explicit ElfFile(const std::string& path, std::string* error) {
        if (elf_version(EV_CURRENT) == EV_NONE) {
            if (error) *error = "libelf initialisation failed";
            return;
        }
        fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd_ < 0) {
            if (error) *error = fmt::format("{}: {}", path, std::strerror(errno));
            return;
        }
        elf_ = elf_begin(fd_, ELF_C_READ_MMAP, nullptr);
        if (!elf_ || elf_kind(elf_) != ELF_K_ELF) {
            if (error) *error = fmt::format("{}: not an ELF file", path);
            return;
        }
        image_ = elf_rawfile(elf_, &image_size_);
    }
    ~ElfFile() {
        if (elf_) elf_end(elf_);
        if (fd_ >= 0) close(fd_);
    }
    ElfFile(const ElfFile&) = delete;
    ElfFile& operator=(const ElfFile&) = delete;

    bool ok() const { return image_ != nullptr; }

    // A section's bytes in the file (nullopt: absent, or without file contents).
    std::optional<std::string_view> section(std::string_view name) const {
        size_t strndx = 0;
        if (elf_getshdrstrndx(elf_, &strndx) != 0) return std::nullopt;
        for (Elf_Scn* scn = elf_nextscn(elf_, nullptr); scn; scn = elf_nextscn(elf_, scn)) {
            GElf_Shdr shdr;
            if (!gelf_getshdr(scn, &shdr)) continue;
            const char* n = elf_strptr(elf_, strndx, shdr.sh_name);
            if (!n || name != n || shdr.sh_type == SHT_NOBITS) continue;
            return file_range(shdr.sh_offset, shdr.sh_size);
        }
        return std::nullopt;
    }

    // The file bytes of the first writable loadable segment, up to limit.
    std::optional<std::string_view> first_writable_segment(size_t limit) const {
        size_t count = 0;
        if (elf_getphdrnum(elf_, &count) != 0) return std::nullopt;
        for (size_t i = 0; i < count; ++i) {
            GElf_Phdr ph;
            if (!gelf_getphdr(elf_, static_cast<int>(i), &ph)) continue;
            if (ph.p_type == PT_LOAD && (ph.p_flags & PF_W)) return file_range(ph.p_offset, std::min<uint64_t>(ph.p_filesz, limit));
        }
        return std::nullopt;
    }

    // Bytes at a virtual address, through the loadable segments.
    std::optional<std::string> read_vaddr(uint64_t vaddr, size_t len) const {
        size_t count = 0;
        if (elf_getphdrnum(elf_, &count) != 0) return std::nullopt;
        for (size_t i = 0; i < count; ++i) {
            GElf_Phdr ph;
            if (!gelf_getphdr(elf_, static_cast<int>(i), &ph) || ph.p_type != PT_LOAD) continue;
            if (vaddr < ph.p_vaddr || vaddr - ph.p_vaddr >= ph.p_filesz) continue;
            uint64_t off = vaddr - ph.p_vaddr;
            if (len > ph.p_filesz - off) return std::nullopt;
            auto range = file_range(ph.p_offset + off, len);
            if (!range) return std::nullopt;
            return std::string(*range);
        }
        return std::nullopt;
    }

private:
    std::optional<std::string_view> file_range(uint64_t offset, uint64_t size) const {
        if (offset > image_size_ || size > image_size_ - offset) return std::nullopt;
        return std::string_view(image_ + offset, size);
    }

    int fd_ = -1;
    Elf* elf_ = nullptr;
    char* image_ = nullptr;
    size_t image_size_ = 0;
};

// Go's unsigned varint.
std::optional<uint64_t> uvarint(std::string_view& in) {
    uint64_t value = 0;
    for (unsigned shift = 0, i = 0; i < in.size() && shift < 64; ++i, shift += 7) {
        auto b = static_cast<unsigned char>(in[i]);
        value |= uint64_t{b & 0x7fu} << shift;
        if (!(b & 0x80)) {
            in.remove_prefix(i + 1);
            return value;
        }
    }
    return std::nullopt;
}

std::optional<std::string> varint_string(std::string_view& in) {
    auto len = uvarint(in);
    if (!len || *len > in.size()) return std::nullopt;
    std::string out(in.substr(0, *len));
    in.remove_prefix(*len);
    return out;
}

uint64_t read_word(std::string_view bytes, size_t size, bool big_endian) {
    uint64_t v = 0;
    for (size_t i = 0; i < size && i < bytes.size(); ++i) {
        auto b = static_cast<unsigned char>(bytes[big_endian ? i : size - 1 - i]);
        v = (v << 8) | b;
    }
    return v;
}

// The runtime stores modinfo between two 16-byte sentinels.
std::string_view strip_sentinels(std::string_view mod) {
    if (mod.size() >= 33 && mod[mod.size() - 17] == '\n') return mod.substr(16, mod.size() - 32);
    return mod;
}

}  // namespace

bool GoBuildInfo::has(std::string_view prefix) const {
    auto match = [&](const GoModule& m) {
        return m.path == prefix || (m.path.starts_with(prefix) && m.path.size() > prefix.size() && m.path[prefix.size()] == '/');
    };
    // Distribution builds (GOPATH mode, as Debian's) carry no module lines: the main package's path says it.
    return match(main) || match(GoModule{path, ""}) || std::any_of(deps.begin(), deps.end(), match);
}

GoBuildInfo parse_go_modinfo(std::string_view text) {
    GoBuildInfo info;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
        auto field = [&](size_t n) {
            std::string_view rest = line;
            for (size_t i = 0; i < n; ++i) {
                size_t tab = rest.find('\t');
                if (tab == std::string_view::npos) return std::string_view();
                rest.remove_prefix(tab + 1);
            }
            return rest.substr(0, rest.find('\t'));
        };
        std::string_view key = line.substr(0, line.find('\t'));
        if (key == "path") info.path = field(1);
        else if (key == "mod") info.main = {std::string(field(1)), std::string(field(2))};
        else if (key == "dep") info.deps.push_back({std::string(field(1)), std::string(field(2))});
        else if (key == "go") info.go_version = field(1);
    }
    return info;
}

std::optional<GoBuildInfo> parse_go_buildinfo(std::string_view data, const ReadAt& read_at) {
    if (data.size() < kBuildInfoHeader || !data.starts_with(kBuildInfoMagic)) return std::nullopt;
    auto ptr_size = static_cast<size_t>(static_cast<unsigned char>(data[14]));
    auto flags = static_cast<unsigned char>(data[15]);
    bool big_endian = flags & 0x1;
    std::string version, mod;
    if (flags & 0x2) {
        // Go 1.18+: two varint-prefixed strings right after the header.
        std::string_view rest = data.substr(kBuildInfoHeader);
        auto v = varint_string(rest);
        auto m = v ? varint_string(rest) : std::nullopt;
        if (!v || !m) return std::nullopt;
        version = std::move(*v);
        mod = std::move(*m);
    } else {
        // Go 1.13-1.17: pointers to two Go string headers {data, len}.
        if ((ptr_size != 4 && ptr_size != 8) || !read_at || data.size() < 16 + 2 * ptr_size) return std::nullopt;
        auto read_string = [&](uint64_t header_addr) -> std::optional<std::string> {
            auto header = read_at(header_addr, 2 * ptr_size);
            if (!header) return std::nullopt;
            uint64_t addr = read_word(*header, ptr_size, big_endian);
            uint64_t len = read_word(std::string_view(*header).substr(ptr_size), ptr_size, big_endian);
            if (len == 0) return std::string();
            if (len > (1 << 20)) return std::nullopt;
            return read_at(addr, len);
        };
        auto v = read_string(read_word(data.substr(16), ptr_size, big_endian));
        auto m = read_string(read_word(data.substr(16 + ptr_size), ptr_size, big_endian));
        if (!v || !m) return std::nullopt;
        version = std::move(*v);
        mod = std::move(*m);
    }
    if (!version.starts_with("go") && !version.starts_with("devel")) return std::nullopt;
    GoBuildInfo info = parse_go_modinfo(strip_sentinels(mod));
    info.go_version = version;
    return info;
}

std::optional<GoBuildInfo> read_go_buildinfo(const std::string& path, std::string* error) {
    ElfFile elf(path, error);
    if (!elf.ok()) return std::nullopt;
    std::optional<std::string_view> data = elf.section(".go.buildinfo");
    if (!data) {
        // Sections stripped: the build info opens the writable data, 16-byte aligned.
        auto segment = elf.first_writable_segment(kMaxBuildInfoScan);
        if (segment) {
            for (size_t off = 0; off + kBuildInfoHeader <= segment->size(); off += 16)
                if (segment->substr(off, kBuildInfoMagic.size()) == kBuildInfoMagic) {
                    data = segment->substr(off);
                    break;
                }
        }
    }
    if (!data) {
        if (error) *error = fmt::format("{}: no Go build info", path);
        return std::nullopt;
    }
    auto info = parse_go_buildinfo(*data, [&elf](uint64_t vaddr, size_t len) { return elf.read_vaddr(vaddr, len); });
    if (!info && error) *error = fmt::format("{}: malformed Go build info", path);
    return info;
}

std::optional<ServerInfo> classify_go(const GoBuildInfo& go) {
    ServerInfo info;
    info.runtime = go.go_version;
    info.module = go.main.path.empty() ? go.path : go.main.path;
    auto version_of = [&](std::string_view prefix) -> std::string {
        if (go.main.path.starts_with(prefix)) return go.main.version == "(devel)" ? "" : go.main.version;
        for (const auto& d : go.deps)
            if (d.path.starts_with(prefix)) return d.version;
        return {};
    };
    if (go.has("github.com/caddyserver/caddy/v2") || go.has("github.com/caddyserver/caddy")) {
        info.kind = ServerKind::caddy;
        info.version = version_of("github.com/caddyserver/caddy");
        info.via = "go build info: github.com/caddyserver/caddy";
    } else if (go.has("github.com/traefik/traefik/v3") || go.has("github.com/traefik/traefik/v2") ||
               go.has("github.com/traefik/traefik") || go.has("github.com/containous/traefik")) {
        info.kind = ServerKind::traefik;
        info.version = version_of("github.com/traefik/traefik");
        info.via = "go build info: github.com/traefik/traefik";
    } else if (go.has("github.com/valyala/fasthttp")) {
        info.kind = ServerKind::fasthttp;
        info.version = version_of("github.com/valyala/fasthttp");
        if (go.has("github.com/gofiber/fiber")) info.framework = "fiber";
        info.via = "go build info: github.com/valyala/fasthttp";
    } else {
        // net/http is the standard library: no module line names it. Frameworks built on it do;
        // a Go binary with none of them is still most likely net/http when it listens for HTTP.
        struct Framework {
            std::string_view module, name;
        };
        constexpr Framework frameworks[] = {
            {"github.com/gin-gonic/gin", "gin"},     {"github.com/labstack/echo/v4", "echo"},
            {"github.com/labstack/echo", "echo"},    {"github.com/go-chi/chi/v5", "chi"},
            {"github.com/go-chi/chi", "chi"},        {"github.com/gorilla/mux", "gorilla/mux"},
            {"google.golang.org/grpc", "grpc-go"},
        };
        info.kind = ServerKind::go_net_http;
        info.via = "go build info: net/http (standard library)";
        for (const auto& f : frameworks)
            if (go.has(f.module)) {
                info.framework = std::string(f.name);
                std::string v = version_of(f.module);
                if (!v.empty()) info.framework += " " + v;
                info.via = fmt::format("go build info: {}", f.module);
                break;
            }
    }
    return info;
}

std::string read_binary_version(const std::string& path, std::string_view marker) {
    ElfFile elf(path, nullptr);
    if (!elf.ok()) return {};
    auto rodata = elf.section(".rodata");
    if (!rodata) return {};
    std::string_view data = *rodata;
    // The first occurrence followed by a number: "nginx/" also starts paths such as "nginx/conf".
    while (!data.empty()) {
        const char* hit = static_cast<const char*>(memmem(data.data(), data.size(), marker.data(), marker.size()));
        if (!hit) return {};
        std::string_view rest(hit + marker.size(), data.data() + data.size() - hit - marker.size());
        size_t end = rest.find_first_not_of("0123456789.");
        std::string version(rest.substr(0, end == std::string_view::npos ? std::min<size_t>(rest.size(), 16) : end));
        while (!version.empty() && version.back() == '.') version.pop_back();
        if (major_minor(version) && version.find('.') != std::string::npos) return version;
        data = rest;
    }
    return {};
}

std::string read_node_version(const std::string& path) { return read_binary_version(path, "/download/release/v"); }

MappedFacts classify_maps(std::string_view maps) {
    MappedFacts facts;
    while (!maps.empty()) {
        size_t nl = maps.find('\n');
        std::string_view line = maps.substr(0, nl);
        maps = nl == std::string_view::npos ? std::string_view() : maps.substr(nl + 1);
        size_t slash = line.find('/');
        if (slash == std::string_view::npos) continue;
        std::string_view path = line.substr(slash);
        std::string_view name = path.substr(path.rfind('/') + 1);
        if (name.starts_with("Microsoft.AspNetCore.Server.Kestrel")) facts.kestrel = true;
        else if (name == "libcoreclr.so") facts.dotnet = true;
        else if (path.find("/aiohttp/") != std::string_view::npos && name.find(".so") != std::string_view::npos)
            facts.aiohttp = true;
        else if (name.starts_with("libnode.so") && facts.libnode.empty()) facts.libnode = std::string(path);
    }
    return facts;
}

std::optional<std::vector<std::string>> read_zip_names(const std::string& path, size_t max_entries, std::string* error) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (error) *error = fmt::format("{}: {}", path, std::strerror(errno));
        return std::nullopt;
    }
    auto fail = [&](std::string why) -> std::optional<std::vector<std::string>> {
        close(fd);
        if (error) *error = fmt::format("{}: {}", path, why);
        return std::nullopt;
    };
    struct stat st{};
    if (fstat(fd, &st) != 0 || st.st_size < 22) return fail("not a zip file");
    auto read_at = [&](uint64_t off, size_t len) -> std::optional<std::string> {
        std::string buf(len, '\0');
        ssize_t n = pread(fd, buf.data(), len, static_cast<off_t>(off));
        if (n != static_cast<ssize_t>(len)) return std::nullopt;
        return buf;
    };
    auto u16 = [](std::string_view b, size_t at) {
        return static_cast<uint32_t>(static_cast<unsigned char>(b[at]) | static_cast<unsigned char>(b[at + 1]) << 8);
    };
    auto u32 = [&](std::string_view b, size_t at) { return u16(b, at) | u16(b, at + 2) << 16; };
    // The end-of-central-directory record is in the last 64 KiB + 22 bytes (its comment is at most 64 KiB).
    uint64_t size = static_cast<uint64_t>(st.st_size);
    uint64_t tail_len = std::min<uint64_t>(size, 65535 + 22);
    auto tail = read_at(size - tail_len, tail_len);
    if (!tail) return fail("unreadable");
    size_t eocd = std::string::npos;
    for (size_t i = tail->size() - 22 + 1; i-- > 0;)
        if (u32(*tail, i) == 0x06054b50) {
            eocd = i;
            break;
        }
    if (eocd == std::string::npos) return fail("not a zip file (no end of central directory)");
    uint64_t cd_size = u32(*tail, eocd + 12), cd_offset = u32(*tail, eocd + 16);
    if (cd_offset == 0xffffffff || cd_size > (64u << 20) || cd_offset + cd_size > size) return fail("zip64 or corrupt central directory");
    auto cd = read_at(cd_offset, cd_size);
    if (!cd) return fail("unreadable central directory");
    std::vector<std::string> names;
    size_t at = 0;
    while (at + 46 <= cd->size() && names.size() < max_entries && u32(*cd, at) == 0x02014b50) {
        size_t name_len = u16(*cd, at + 28), extra = u16(*cd, at + 30), comment = u16(*cd, at + 32);
        if (at + 46 + name_len > cd->size()) break;
        names.emplace_back(cd->substr(at + 46, name_len));
        at += 46 + name_len + extra + comment;
    }
    close(fd);
    return names;
}

}  // namespace tcpwhy
