#include "bpf/tracer.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "bpf/fd.h"
#include "tcpwhy.skel.h"
#include "tcpwhy/decode.h"

namespace tcpwhy {
namespace {

struct SkeletonDeleter {
    void operator()(tcpwhy_bpf* skel) const { tcpwhy_bpf__destroy(skel); }
};
struct RingDeleter {
    void operator()(ring_buffer* rb) const { ring_buffer__free(rb); }
};
struct LinkDeleter {
    void operator()(bpf_link* link) const { bpf_link__destroy(link); }
};
using SkeletonPtr = std::unique_ptr<tcpwhy_bpf, SkeletonDeleter>;
using RingPtr = std::unique_ptr<ring_buffer, RingDeleter>;
using LinkPtr = std::unique_ptr<bpf_link, LinkDeleter>;

enum class ClosePath { fentry, kprobe, set_state };

std::string errno_text(int err) { return strerror(err < 0 ? -err : err); }

}  // namespace

void require_tracing_support(const KernelFeatures& f) {
    if (!f.btf)
        throw TracerError("kernel has no BTF (/sys/kernel/btf/vmlinux missing)",
                          "run on a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.8)");
    if (!f.can_trace())
        throw TracerError("missing privileges to load BPF programs (need CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)",
                          "run as root (sudo tcpwhy ...) or grant CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN");
}

struct Tracer::Impl {
    SkeletonPtr skel;
    LinkPtr cgroup_link;
    Fd cgroup_fd;
    RingPtr ring;
    ResetReasonNames reasons;
    const Sink* sink = nullptr;  // valid only inside poll()
    size_t consumed = 0;
    uint64_t wakeups = 0;
    int ncpus = 1;

    static int on_sample(void* ctx, void* data, size_t size) {
        auto* self = static_cast<Impl*>(ctx);
        if (size < sizeof(tcpwhy_event)) return 0;
        tcpwhy_event raw;
        std::memcpy(&raw, data, sizeof(raw));
        ++self->consumed;
        if (self->sink) {
            Event event = decode_event(raw, self->reasons);
            (*self->sink)(event);
        }
        return 0;
    }

    uint64_t sum_percpu(int map_fd, uint32_t key) const {
        std::vector<uint64_t> values(ncpus);
        if (bpf_map_lookup_elem(map_fd, &key, values.data())) return 0;
        uint64_t total = 0;
        for (auto v : values) total += v;
        return total;
    }
};

namespace {

// One attempt at loading with a given close path. Returns nullptr (and why) when
// that path's attach fails, so the caller can fall back to the next one.
std::unique_ptr<Tracer::Impl> try_load(const TracerOptions& options, const KernelFeatures& f,
                                       ClosePath close_path, std::vector<HookStatus>& hooks, std::string& why_not) {
    auto impl = std::make_unique<Tracer::Impl>();
    impl->skel.reset(tcpwhy_bpf__open());
    if (!impl->skel) throw TracerError(fmt::format("cannot open BPF object: {}", errno_text(errno)), "run tcpwhy doctor");
    auto* skel = impl->skel.get();

    skel->rodata->close_from_tcp_close = close_path != ClosePath::set_state;
    skel->rodata->wakeup_bytes = options.wakeup_bytes;
    skel->rodata->all_state_changes = options.all_state_changes;
    bpf_map__set_max_entries(skel->maps.events, static_cast<uint32_t>(options.ring_bytes));
    bpf_program__set_autoload(skel->progs.fentry_tcp_close, close_path == ClosePath::fentry);
    bpf_program__set_autoload(skel->progs.kprobe_tcp_close, close_path == ClosePath::kprobe);
    bpf_program__set_autoload(skel->progs.handle_setsockopt, f.cgroup2_path.has_value());

    if (int err = tcpwhy_bpf__load(skel)) {
        if (close_path != ClosePath::set_state) {
            why_not = fmt::format("load failed: {}", errno_text(err));
            return nullptr;
        }
        throw TracerError(fmt::format("the kernel refused tcpwhy's BPF programs: {}", errno_text(err)),
                          "run `tcpwhy doctor` and `tcpwhy trace -v` to see the verifier log");
    }

    auto attach = [&](bpf_program* prog, bpf_link** link, const char* what) {
        *link = bpf_program__attach(prog);
        if (!*link)
            throw TracerError(fmt::format("cannot attach {}: {}", what, errno_text(errno)), "run tcpwhy doctor");
    };
    attach(skel->progs.handle_set_state, &skel->links.handle_set_state, "tp_btf/inet_sock_set_state");
    attach(skel->progs.handle_send_reset, &skel->links.handle_send_reset, "tp_btf/tcp_send_reset");
    attach(skel->progs.handle_receive_reset, &skel->links.handle_receive_reset, "tp_btf/tcp_receive_reset");
    if (close_path == ClosePath::fentry) {
        skel->links.fentry_tcp_close = bpf_program__attach(skel->progs.fentry_tcp_close);
        if (!skel->links.fentry_tcp_close) {
            why_not = fmt::format("attach failed: {}", errno_text(errno));
            return nullptr;
        }
    } else if (close_path == ClosePath::kprobe) {
        skel->links.kprobe_tcp_close = bpf_program__attach(skel->progs.kprobe_tcp_close);
        if (!skel->links.kprobe_tcp_close) {
            why_not = fmt::format("attach failed: {}", errno_text(errno));
            return nullptr;
        }
    }

    HookStatus setsockopt{"setsockopt", "", {}};
    if (f.cgroup2_path) {
        impl->cgroup_fd = Fd(open(f.cgroup2_path->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (impl->cgroup_fd) {
            impl->cgroup_link.reset(bpf_program__attach_cgroup(skel->progs.handle_setsockopt, impl->cgroup_fd.get()));
            if (impl->cgroup_link)
                setsockopt.attached = "cgroup/setsockopt on " + *f.cgroup2_path;
            else
                setsockopt.passed_over.push_back(
                    fmt::format("cgroup/setsockopt on {}: {}", *f.cgroup2_path, errno_text(errno)));
        } else {
            setsockopt.passed_over.push_back(fmt::format("cannot open {}: {}", *f.cgroup2_path, errno_text(errno)));
        }
    } else {
        setsockopt.passed_over.push_back("cgroup/setsockopt: no cgroup v2 mount (mount -t cgroup2 none /sys/fs/cgroup)");
    }
    hooks.push_back(std::move(setsockopt));
    return impl;
}

}  // namespace

std::unique_ptr<Tracer> Tracer::start(const TracerOptions& options) {
    return start(options, probe_kernel_features());
}

std::unique_ptr<Tracer> Tracer::start(const TracerOptions& options, KernelFeatures f) {
    require_tracing_support(f);

    HookStatus close{"close", "", {}};
    std::vector<ClosePath> paths;
    if (options.allow_fentry && f.fentry) paths.push_back(ClosePath::fentry);
    else close.passed_over.push_back("fentry/tcp_close: " + (options.allow_fentry ? f.fentry_why_not : "disabled"));
    if (options.allow_kprobe && f.kprobe) paths.push_back(ClosePath::kprobe);
    else close.passed_over.push_back("kprobe/tcp_close: " + (options.allow_kprobe ? f.kprobe_why_not : "disabled"));
    paths.push_back(ClosePath::set_state);

    std::unique_ptr<Impl> impl;
    std::vector<HookStatus> extra;
    for (ClosePath path : paths) {
        std::string why_not;
        extra.clear();
        impl = try_load(options, f, path, extra, why_not);
        const char* name = path == ClosePath::fentry   ? "fentry/tcp_close"
                           : path == ClosePath::kprobe ? "kprobe/tcp_close"
                                                       : "tp_btf/inet_sock_set_state (local close transitions)";
        if (impl) {
            close.attached = name;
            break;
        }
        close.passed_over.push_back(fmt::format("{}: {}", name, why_not));
    }

    std::vector<HookStatus> hooks;
    hooks.push_back({"state", "tp_btf/inet_sock_set_state", {}});
    hooks.push_back(std::move(close));
    hooks.push_back({"reset_sent", "tp_btf/tcp_send_reset", {}});
    hooks.push_back({"reset_recv", "tp_btf/tcp_receive_reset", {}});
    for (auto& h : extra) hooks.push_back(std::move(h));

    impl->ncpus = libbpf_num_possible_cpus();
    if (impl->ncpus < 1) impl->ncpus = 1;
    impl->reasons = f.reset_reason_names;
    impl->ring.reset(ring_buffer__new(bpf_map__fd(impl->skel->maps.events), &Impl::on_sample, impl.get(), nullptr));
    if (!impl->ring)
        throw TracerError(fmt::format("cannot open the event ring buffer: {}", errno_text(errno)), "run tcpwhy doctor");
    return std::unique_ptr<Tracer>(new Tracer(std::move(impl), std::move(f), std::move(hooks)));
}

Tracer::Tracer(std::unique_ptr<Impl> impl, KernelFeatures features, std::vector<HookStatus> hooks)
    : impl_(std::move(impl)), features_(std::move(features)), hooks_(std::move(hooks)) {}

Tracer::~Tracer() {
    // Ring first (it reads the map), then the cgroup link, then programs and maps.
    impl_->ring.reset();
    impl_->cgroup_link.reset();
    impl_->skel.reset();
}

size_t Tracer::poll(int timeout_ms, const Sink& sink) {
    impl_->sink = &sink;
    impl_->consumed = 0;
    // Woken early only when the kernel forces a wake-up past the fill threshold.
    int rc = ring_buffer__poll(impl_->ring.get(), timeout_ms);
    if (rc > 0) ++impl_->wakeups;  // records before the timeout: the kernel woke us
    if (rc >= 0 || rc == -EINTR) ring_buffer__consume(impl_->ring.get());
    impl_->sink = nullptr;
    return impl_->consumed;
}

KernelCounters Tracer::counters() const {
    KernelCounters c;
    int emitted_fd = bpf_map__fd(impl_->skel->maps.emitted);
    for (uint32_t i = 0; i < c.emitted.size(); ++i) c.emitted[i] = impl_->sum_percpu(emitted_fd, i);
    int drops_fd = bpf_map__fd(impl_->skel->maps.drops);
    c.dropped_ringbuf_full = impl_->sum_percpu(drops_fd, TCPWHY_DROP_RINGBUF_FULL);
    c.dropped_storage = impl_->sum_percpu(drops_fd, TCPWHY_DROP_STORAGE_FAILED);
    return c;
}

uint64_t Tracer::wakeups() const { return impl_->wakeups; }

std::string Tracer::attach_summary() const {
    for (const auto& h : hooks_)
        if (h.hook == "close") return h.attached.substr(0, h.attached.find('/'));
    return "tp_btf";
}

}  // namespace tcpwhy
