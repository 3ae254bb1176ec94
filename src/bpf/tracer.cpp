#include "tcpwhy/bpf/tracer.h"
#include "tcpwhy/bpf/existing_sockets.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <arpa/inet.h>
#include <fcntl.h>

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <unordered_map>

#include <fmt/format.h>

#include "tcpwhy/fd.h"
#include "tcpwhy/abi.h"  // the types the skeleton names
#include "tcpwhy.skel.h"
#include "tcpwhy/decode.h"
#include "tcpwhy/log.h"

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

enum class Path { fentry, kprobe, tracepoint };

// One hook's attach paths, best first, and which one the current attempt uses.
struct HookPlan {
    std::string hook;
    std::vector<Path> candidates;
    std::vector<std::string> names;  // "fentry/tcp_close", ... per candidate
    size_t chosen = 0;
    std::vector<std::string> passed_over;

    Path path() const { return candidates[chosen]; }
    const std::string& name() const { return names[chosen]; }
    bool can_fall_back() const { return chosen + 1 < candidates.size(); }
    void fall_back(const std::string& why) {
        passed_over.push_back(fmt::format("{}: {}", name(), why));
        ++chosen;
    }
};

struct Plans {
    HookPlan close, reset_active, reset_reply;
    std::vector<HookPlan*> all() { return {&close, &reset_active, &reset_reply}; }
    // The hooks for rollouts, crashes and full accept queues: tracepoints that not every kernel has.
    // Off after a load that failed with them, so tracing itself never depends on them.
    bool optional_hooks = true;
    std::string optional_why_not;
};

// Whether each optional program can load on this kernel, and if not why (for doctor).
struct OptionalPlan {
    bool retransmit_synack = false, kfree_skb = false, signal_generate = false;
    std::string retransmit_why_not, kfree_why_not, signal_why_not;
};

OptionalPlan plan_optional(const KernelFeatures& f) {
    OptionalPlan p;
    p.retransmit_synack = f.tracepoint_args("tcp_retransmit_synack") == 2;
    if (!p.retransmit_synack) p.retransmit_why_not = "tp_btf/tcp_retransmit_synack: not in kernel BTF";
    p.signal_generate = f.tracepoint_args("signal_generate") == 5;
    if (!p.signal_generate) p.signal_why_not = "tp_btf/signal_generate: not in kernel BTF with 5 arguments";
    if (!f.listen_overflow_drop_reason)
        p.kfree_why_not = "tp_btf/kfree_skb: this kernel's enum skb_drop_reason has no TCP_LISTEN_OVERFLOW (6.15+)";
    else if (f.tracepoint_args("kfree_skb") < 4)
        p.kfree_why_not = "tp_btf/kfree_skb: the tracepoint does not pass the receiving socket (6.12+)";
    else
        p.kfree_skb = true;
    return p;
}

std::string errno_text(int err) { return strerror(err < 0 ? -err : err); }

}  // namespace

void require_tracing_support(const KernelFeatures& f) {
    if (!f.btf)
        throw TracerError("kernel has no BTF (/sys/kernel/btf/vmlinux missing)",
                          "run on a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.8)");
    if (!f.can_trace())
        throw TracerError("missing privileges to load BPF programs (need CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)",
                          "run as root (sudo tcpwhy ...) or grant CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN");
    // Before anything loads: nothing to detach, and no libbpf noise about a program the
    // verifier was always going to refuse.
    if (std::string missing = f.below_minimum(); !missing.empty())
        throw TracerError(fmt::format("kernel {} is too old for tcpwhy: {}; tcpwhy needs Linux 5.12 or newer", f.release,
                                      missing),
                          "run on a newer kernel (Debian 12's 6.1, Ubuntu 22.04's 5.15, or a backports kernel)");
}

struct Tracer::Impl {
    SkeletonPtr skel;
    LinkPtr cgroup_link;
    Fd cgroup_fd;
    RingPtr ring;
    ResetReasonMap reasons;
    const Sink* sink = nullptr;  // valid only inside poll()
    size_t consumed = 0;
    uint64_t malformed = 0;
    uint64_t wakeups = 0;
    int ncpus = 1;
    // The live samples' listing, made now while every capability is held (the daemon drops
    // most after start); null where the kernel cannot (bpf_sock_from_file: 5.11): the samples
    // then walk the namespaces, as the start does.
    std::unique_ptr<HeldSockets> held_sockets;

    static int on_sample(void* ctx, void* data, size_t size) {
        auto* self = static_cast<Impl*>(ctx);
        if (size < sizeof(tcpwhy_event)) {
            ++self->malformed;  // cannot happen with the programs built alongside: counted, not hidden
            return 0;
        }
        tcpwhy_event raw;
        std::memcpy(&raw, data, sizeof(raw));
        ++self->consumed;
        if (self->sink) {
            Event event = decode_event(raw, self->reasons);
            (*self->sink)(event);
        }
        return 0;
    }

    // The tally map's totals as last handed on, per backend key: the next read sends the difference.
    bool tally = false;
    std::unordered_map<uint64_t, tcpwhy_tally_value> tally_sent;
    uint64_t next_tally_ns = 0;
    uint64_t tally_events = 0;

    static uint64_t key_bits(const tcpwhy_tally_key& k) {
        uint64_t bits;
        static_assert(sizeof(bits) == sizeof(k));
        std::memcpy(&bits, &k, sizeof(bits));
        return bits;
    }

    static void add_counts(tcpwhy_tally_value& total, const tcpwhy_tally_value& v) {
        total.opened += v.opened;
        total.closed_local_first += v.closed_local_first;
        total.closed_remote_first += v.closed_remote_first;
        total.local_idle_ms += v.local_idle_ms;
        total.bytes_rx += v.bytes_rx;
        total.bytes_tx += v.bytes_tx;
        if (v.pid && v.owner_ts_ns >= total.owner_ts_ns) {
            total.owner_ts_ns = v.owner_ts_ns;
            total.pid = v.pid;
            total.cgroup_id = v.cgroup_id;
            std::memcpy(total.comm, v.comm, sizeof(total.comm));
        }
        if (v.opts_seen && !total.opts_seen) {
            total.opts = v.opts;
            total.opts_seen = 1;
        }
    }

    // Sums every backend's per-CPU counters, from the direct slots and the hash map alike, and
    // hands on what grew since the last read, as one `tally` event per backend. The owner is the
    // one the newest CPU wrote; the options the first seen. Once a second.
    void read_tallies(uint64_t now_ns) {
        std::unordered_map<uint64_t, std::pair<tcpwhy_tally_key, tcpwhy_tally_value>> totals;
        auto add = [&](const tcpwhy_tally_key& key, const tcpwhy_tally_value& v) {
            auto& [k, total] = totals[key_bits(key)];
            k = key;
            add_counts(total, v);
        };
        int direct_fd = bpf_map__fd(skel->maps.tally_direct);
        std::vector<tcpwhy_tally_slot> slots(static_cast<size_t>(ncpus));
        for (uint32_t i = 0; i < TCPWHY_TALLY_DIRECT_SLOTS; ++i) {
            if (bpf_map_lookup_elem(direct_fd, &i, slots.data())) continue;
            for (const auto& slot : slots)
                if (slot.key.netns) add(slot.key, slot.value);
        }
        int fd = bpf_map__fd(skel->maps.tally);
        std::vector<tcpwhy_tally_value> per_cpu(static_cast<size_t>(ncpus));
        tcpwhy_tally_key key{}, next{};
        const void* prev = nullptr;
        while (bpf_map_get_next_key(fd, prev, &next) == 0) {
            key = next;
            prev = &key;
            if (bpf_map_lookup_elem(fd, &key, per_cpu.data())) continue;
            for (const auto& v : per_cpu) add(key, v);
        }
        for (const auto& [bits, entry] : totals) {
            const auto& [k, total] = entry;
            tcpwhy_tally_value& sent = tally_sent[bits];
            tcpwhy_tally_value delta = total;
            delta.opened -= sent.opened;
            delta.closed_local_first -= sent.closed_local_first;
            delta.closed_remote_first -= sent.closed_remote_first;
            delta.local_idle_ms -= sent.local_idle_ms;
            delta.bytes_rx -= sent.bytes_rx;
            delta.bytes_tx -= sent.bytes_tx;
            sent = total;
            if (!delta.opened && !delta.closed_local_first && !delta.closed_remote_first) continue;
            ++tally_events;
            if (sink) {
                Event event = decode_tally(k, delta, now_ns);
                (*sink)(event);
            }
        }
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

// The LB ranges the programs compare inline (lb/tally.bpf.h) when there are few of them; more go
// to the lb_ranges trie, filled after load. The masks keep network byte order, as the addresses.
void set_inline_lb_ranges(tcpwhy_bpf& skel, const CidrSet& lb_ranges) {
    const auto& ranges = lb_ranges.ranges();
    skel.rodata->lb_in_trie = ranges.size() > TCPWHY_LB_INLINE_MAX;
    if (skel.rodata->lb_in_trie) return;
    skel.rodata->lb_inline_count = static_cast<uint32_t>(ranges.size());
    for (size_t i = 0; i < ranges.size(); ++i) {
        const Cidr& range = ranges[i];
        auto& slot = skel.rodata->lb_inline[i];
        slot.family = range.network.family;
        const int words = range.network.family == 4 ? 1 : 4;
        for (int w = 0; w < words; ++w) {
            const int bits = std::clamp(range.prefix - 32 * w, 0, 32);
            const uint32_t host_mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
            uint32_t net = 0;
            std::memcpy(&net, range.network.bytes.data() + 4 * w, 4);
            slot.mask[w] = htonl(host_mask);
            slot.net[w] = net & slot.mask[w];
        }
    }
}

// One attempt at loading and attaching with the paths the plans currently choose. Returns
// nullptr when a fentry/kprobe program fails (the hook to blame in *failed, or nullptr when the
// load failed as a whole), so the caller can fall back; throws when the tracepoint paths fail.
std::unique_ptr<Tracer::Impl> try_load(const TracerOptions& options, const KernelFeatures& f, Plans& plans,
                                       std::vector<HookStatus>& hooks, HookPlan** failed, std::string& why_not) {
    auto impl = std::make_unique<Tracer::Impl>();
    // Without /boot/config-* or /proc/config.gz libbpf refuses the object (CONFIG_HZ is a
    // kconfig extern) unless it is given a value: the common HZ, as doctor reports.
    LIBBPF_OPTS(bpf_object_open_opts, open_opts, .kconfig = f.kernel_config ? nullptr : "CONFIG_HZ=250\n");
    impl->skel.reset(tcpwhy_bpf__open_opts(&open_opts));
    if (!impl->skel) throw TracerError(fmt::format("cannot open BPF object: {}", errno_text(errno)), "run tcpwhy doctor");
    auto* skel = impl->skel.get();
    // The object is embedded at build time; a stale skeleton (a build tree that did not rebuild
    // the BPF side after abi.h changed) would decode every event wrong.
    if (skel->rodata->bpf_abi_version != TCPWHY_ABI_VERSION)
        throw TracerError(fmt::format("the embedded BPF object speaks event ABI {}, this tcpwhy reads {}",
                                      skel->rodata->bpf_abi_version, TCPWHY_ABI_VERSION),
                          "rebuild tcpwhy from a clean build directory");
    auto* progs = &skel->progs;
    const Path close = plans.close.path(), active = plans.reset_active.path(), reply = plans.reset_reply.path();
    const bool with_v6_fentry = f.function("tcp_v6_send_reset").in_btf;
    const bool with_v6_kprobe = f.function("tcp_v6_send_reset").in_kallsyms;

    skel->rodata->close_from_tcp_close = close != Path::tracepoint;
    skel->rodata->reset_active_from_tp = active == Path::tracepoint;
    skel->rodata->reset_reply_from_tp = reply == Path::tracepoint;
    skel->rodata->active_reset_has_reason = f.function("tcp_send_active_reset").btf_params >= 3;
    skel->rodata->reply_reset_has_reason =
        f.function("tcp_v4_send_reset").btf_params >= 3 && (!with_v6_fentry || f.function("tcp_v6_send_reset").btf_params >= 3);
    skel->rodata->wakeup_bytes = options.wakeup_bytes;
    skel->rodata->all_state_changes = options.all_state_changes;
    skel->rodata->tally_ordinary = options.tally && !options.all_state_changes;
    skel->rodata->ordinary_idle_max_ms = options.ordinary_idle_max_ms;
    skel->rodata->lb_any_non_loopback = options.lb_any_non_loopback_peer;
    skel->rodata->drain_window_ns = options.drain_window_ns;
    set_inline_lb_ranges(*skel, options.lb_ranges);
    impl->tally = skel->rodata->tally_ordinary;
    bpf_map__set_max_entries(skel->maps.events, static_cast<uint32_t>(options.ring_bytes));
    bpf_program__set_autoload(progs->fentry_tcp_close, close == Path::fentry);
    bpf_program__set_autoload(progs->kprobe_tcp_close, close == Path::kprobe);
    bpf_program__set_autoload(progs->handle_send_reset, active == Path::tracepoint || reply == Path::tracepoint);
    bpf_program__set_autoload(progs->fentry_active_reset, active == Path::fentry);
    bpf_program__set_autoload(progs->kprobe_active_reset, active == Path::kprobe);
    bpf_program__set_autoload(progs->fentry_v4_send_reset, reply == Path::fentry);
    bpf_program__set_autoload(progs->fentry_v6_send_reset, reply == Path::fentry && with_v6_fentry);
    bpf_program__set_autoload(progs->kprobe_v4_send_reset, reply == Path::kprobe);
    bpf_program__set_autoload(progs->kprobe_v6_send_reset, reply == Path::kprobe && with_v6_kprobe);
    bpf_program__set_autoload(progs->handle_setsockopt, f.cgroup2_path.has_value());
    const OptionalPlan optional = plan_optional(f);
    bpf_program__set_autoload(progs->handle_retransmit_synack, plans.optional_hooks && optional.retransmit_synack);
    bpf_program__set_autoload(progs->handle_kfree_skb, plans.optional_hooks && optional.kfree_skb);
    bpf_program__set_autoload(progs->handle_signal_generate, plans.optional_hooks && optional.signal_generate);
    skel->rodata->listen_overflow_drop_reason = f.listen_overflow_drop_reason.value_or(0);

    if (int err = tcpwhy_bpf__load(skel)) {
        if (plans.optional_hooks && (optional.retransmit_synack || optional.kfree_skb || optional.signal_generate)) {
            // the optional programs go first: the next attempt tells whether they were to blame
            plans.optional_hooks = false;
            plans.optional_why_not = fmt::format("the programs loaded only without them ({})", errno_text(err));
            *failed = nullptr;
            why_not = "retry without the optional hooks";
            return nullptr;
        }
        if (close != Path::tracepoint || active != Path::tracepoint || reply != Path::tracepoint) {
            *failed = nullptr;
            why_not = fmt::format("load failed: {}", errno_text(err));
            return nullptr;
        }
        throw TracerError(fmt::format("the kernel refused tcpwhy's BPF programs: {}", errno_text(err)),
                          "run `tcpwhy doctor` and `tcpwhy trace -v` to see the verifier log");
    }

    // The load balancer's ranges, before any program runs.
    for (const Cidr& range : options.lb_ranges.ranges()) {
        tcpwhy_lb_key key{};
        key.family = range.network.family;
        key.prefixlen = 8 + static_cast<uint32_t>(range.prefix);
        std::memcpy(key.addr, range.network.bytes.data(), range.network.family == 4 ? 4 : 16);
        uint8_t one = 1;
        if (bpf_map_update_elem(bpf_map__fd(skel->maps.lb_ranges), &key, &one, BPF_ANY))
            throw TracerError(fmt::format("cannot load the LB range {} into the kernel: {}", range.to_string(),
                                          errno_text(errno)),
                              "give fewer --lb-ranges (at most 1024)");
    }

    auto attach = [&](bpf_program* prog, bpf_link** link, const char* what) {
        *link = bpf_program__attach(prog);
        if (!*link)
            throw TracerError(fmt::format("cannot attach {}: {}", what, errno_text(errno)), "run tcpwhy doctor");
    };
    // Every loaded program of a fentry/kprobe hook must attach, else the hook falls back.
    auto attach_hook = [&](HookPlan& plan, std::initializer_list<std::pair<bpf_program*, bpf_link**>> links) {
        for (auto [prog, link] : links) {
            if (!bpf_program__autoload(prog)) continue;
            *link = bpf_program__attach(prog);
            if (!*link) {
                why_not = fmt::format("attach failed: {}", errno_text(errno));
                *failed = &plan;
                return false;
            }
        }
        return true;
    };
    auto* links = &skel->links;
    attach(progs->handle_set_state, &links->handle_set_state, "tp_btf/inet_sock_set_state");
    if (bpf_program__autoload(progs->handle_send_reset))
        attach(progs->handle_send_reset, &links->handle_send_reset, "tp_btf/tcp_send_reset");
    attach(progs->handle_receive_reset, &links->handle_receive_reset, "tp_btf/tcp_receive_reset");
    if (!attach_hook(plans.close, {{progs->fentry_tcp_close, &links->fentry_tcp_close},
                                   {progs->kprobe_tcp_close, &links->kprobe_tcp_close}}) ||
        !attach_hook(plans.reset_active, {{progs->fentry_active_reset, &links->fentry_active_reset},
                                          {progs->kprobe_active_reset, &links->kprobe_active_reset}}) ||
        !attach_hook(plans.reset_reply, {{progs->fentry_v4_send_reset, &links->fentry_v4_send_reset},
                                         {progs->fentry_v6_send_reset, &links->fentry_v6_send_reset},
                                         {progs->kprobe_v4_send_reset, &links->kprobe_v4_send_reset},
                                         {progs->kprobe_v6_send_reset, &links->kprobe_v6_send_reset}}))
        return nullptr;

    hooks.push_back({"exit", "flag and exit code on closes made in do_exit() (PF_EXITING, exit_code, signal->oom_mm)",
                     {}, ""});
    // The optional hooks: each one attaches or says why not; tracing goes on without it.
    auto attach_optional = [&](bpf_program* prog, bpf_link** link, const char* name, std::vector<std::string>& why) {
        if (!bpf_program__autoload(prog)) return false;
        *link = bpf_program__attach(prog);
        if (*link) return true;
        why.push_back(fmt::format("{}: attach failed: {}", name, errno_text(errno)));
        return false;
    };
    HookStatus signal{"signal", "", {}, ""};
    if (!optional.signal_why_not.empty()) signal.passed_over.push_back(optional.signal_why_not);
    if (!plans.optional_hooks) signal.passed_over.push_back("tp_btf/signal_generate: " + plans.optional_why_not);
    if (attach_optional(progs->handle_signal_generate, &links->handle_signal_generate, "tp_btf/signal_generate",
                        signal.passed_over))
        signal.attached = "tp_btf/signal_generate (SIGTERM, SIGINT, SIGQUIT, SIGKILL to processes that listen)";
    hooks.push_back(std::move(signal));
    HookStatus overflow{"overflow", "", {}, ""};
    std::vector<std::string> overflow_paths;
    if (!optional.kfree_why_not.empty()) overflow.passed_over.push_back(optional.kfree_why_not);
    if (!optional.retransmit_why_not.empty()) overflow.passed_over.push_back(optional.retransmit_why_not);
    if (!plans.optional_hooks) overflow.passed_over.push_back("optional tracepoints: " + plans.optional_why_not);
    if (attach_optional(progs->handle_kfree_skb, &links->handle_kfree_skb, "tp_btf/kfree_skb", overflow.passed_over))
        overflow_paths.push_back("tp_btf/kfree_skb (TCP_LISTEN_OVERFLOW)");
    if (attach_optional(progs->handle_retransmit_synack, &links->handle_retransmit_synack,
                        "tp_btf/tcp_retransmit_synack", overflow.passed_over))
        overflow_paths.push_back("tp_btf/tcp_retransmit_synack (queue full)");
    for (const auto& path : overflow_paths) overflow.attached += (overflow.attached.empty() ? "" : " + ") + path;
    if (!overflow.attached.empty() && !bpf_program__autoload(progs->handle_kfree_skb))
        overflow.limitation = "SYNs dropped at a full accept queue are not seen one by one (no drop reason in this "
                              "kernel): only handshakes whose final ACK was dropped, from the SYN-ACKs sent again";
    hooks.push_back(std::move(overflow));

    HookStatus setsockopt{"setsockopt", "", {}, ""};
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

namespace {

// fentry, then kprobe, then the tracepoint: the first two need every function in `functions`.
HookPlan plan_hook(const TracerOptions& options, const KernelFeatures& f, std::string hook,
                   const std::vector<std::string>& functions, const std::string& tracepoint_name) {
    HookPlan plan{std::move(hook), {}, {}, 0, {}};
    std::string targets;
    for (const auto& fn : functions) targets += (targets.empty() ? "" : "+") + fn;
    const std::string fentry_name = "fentry/" + targets, kprobe_name = "kprobe/" + targets;
    const std::string& first = functions.front();

    if (!options.allow_fentry)
        plan.passed_over.push_back(fentry_name + ": disabled");
    else if (!f.fentry)
        plan.passed_over.push_back(fentry_name + ": " + f.fentry_why_not);
    else if (!f.function(first).in_btf)
        plan.passed_over.push_back(fentry_name + ": " + first + " not in kernel BTF");
    else
        plan.candidates.push_back(Path::fentry), plan.names.push_back(fentry_name);

    if (!options.allow_kprobe)
        plan.passed_over.push_back(kprobe_name + ": disabled");
    else if (!f.kprobe)
        plan.passed_over.push_back(kprobe_name + ": " + f.kprobe_why_not);
    else if (!f.function(first).in_kallsyms)
        plan.passed_over.push_back(kprobe_name + ": " + first + " not in /proc/kallsyms");
    else
        plan.candidates.push_back(Path::kprobe), plan.names.push_back(kprobe_name);

    plan.candidates.push_back(Path::tracepoint);
    plan.names.push_back(tracepoint_name);
    return plan;
}

// From 6.10 the tracepoint sees every reset, with the kernel's reason: one program serves both
// reset hooks and fentry/kprobe would only duplicate it.
void prefer_complete_tracepoint(HookPlan& plan) {
    plan.candidates = {Path::tracepoint};
    plan.names = {"tp_btf/tcp_send_reset"};
    plan.passed_over = {"fentry/kprobe: not needed: tp_btf/tcp_send_reset sees every reset and names its reason "
                        "on this kernel"};
}

HookStatus status_of(const HookPlan& plan, std::string limitation = "") {
    if (plan.path() == Path::kprobe && limitation.empty())
        limitation = "kprobes see the socket as a plain address (a probe read per field): their close and reset events carry no socket options";
    return {plan.hook, plan.name(), plan.passed_over, std::move(limitation)};
}

}  // namespace

std::unique_ptr<Tracer> Tracer::start(const TracerOptions& options, KernelFeatures f) {
    require_tracing_support(f);

    Plans plans{plan_hook(options, f, "close", {"tcp_close"}, "tp_btf/inet_sock_set_state (local close transitions)"),
                plan_hook(options, f, "reset_active", {"tcp_send_active_reset"}, "tp_btf/tcp_send_reset"),
                plan_hook(options, f, "reset_reply", {"tcp_v4_send_reset", "tcp_v6_send_reset"},
                          "tp_btf/tcp_send_reset")};
    if (f.reset_tracepoint_complete()) {
        prefer_complete_tracepoint(plans.reset_active);
        prefer_complete_tracepoint(plans.reset_reply);
    }

    std::unique_ptr<Impl> impl;
    std::vector<HookStatus> extra;
    while (!impl) {
        std::string why_not;
        HookPlan* failed = nullptr;
        extra.clear();
        impl = try_load(options, f, plans, extra, &failed, why_not);
        if (impl) break;
        // the hook whose program failed steps down; when the load failed as a whole, every
        // hook off the tracepoints does (the next attempt tells which one was to blame)
        if (!failed && why_not == "retry without the optional hooks") continue;
        std::vector<HookPlan*> to_fall_back = failed ? std::vector<HookPlan*>{failed} : plans.all();
        bool stepped = false;
        for (HookPlan* plan : to_fall_back) {
            if (plan->path() == Path::tracepoint || !plan->can_fall_back()) continue;
            plan->fall_back(why_not);
            stepped = true;
        }
        if (!stepped)
            throw TracerError(fmt::format("tcpwhy's BPF programs did not attach: {}", why_not),
                              "run `tcpwhy doctor` and `tcpwhy trace -v` to see the verifier log");
    }

    std::vector<HookStatus> hooks;
    hooks.push_back({"state", "tp_btf/inet_sock_set_state", {}, ""});
    hooks.push_back(status_of(plans.close));
    hooks.push_back(status_of(plans.reset_active));
    hooks.push_back(status_of(plans.reset_reply,
                              plans.reset_reply.path() == Path::tracepoint && !f.reset_tracepoint_complete()
                                  ? "before 6.10 the tracepoint misses resets sent for timewait sockets and for "
                                    "segments without a socket"
                                  : ""));
    hooks.push_back({"reset_recv", "tp_btf/tcp_receive_reset", {}, ""});
    for (auto& h : extra) hooks.push_back(std::move(h));

    impl->ncpus = libbpf_num_possible_cpus();
    if (impl->ncpus < 1) impl->ncpus = 1;
    impl->reasons = reset_reason_map(f.reset_reason_names);
    impl->ring.reset(ring_buffer__new(bpf_map__fd(impl->skel->maps.events), &Impl::on_sample, impl.get(), nullptr));
    if (!impl->ring)
        throw TracerError(fmt::format("cannot open the event ring buffer: {}", errno_text(errno)), "run tcpwhy doctor");
    try {
        impl->held_sockets = std::make_unique<HeldSockets>();
    } catch (const std::exception& e) {
        log::debug(fmt::format("live idle samples walk the namespaces: {}", e.what()));
    }
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
    if (impl_->tally) {
        // once a second, and on the last poll (timeout 0: what is left)
        timespec ts{};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t now = static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
        if (timeout_ms == 0 || now >= impl_->next_tally_ns) {
            impl_->next_tally_ns = now + 1'000'000'000ull;
            size_t before = impl_->tally_events;
            impl_->read_tallies(now);
            impl_->consumed += impl_->tally_events - before;
        }
    }
    impl_->sink = nullptr;
    return impl_->consumed;
}

KernelCounters Tracer::counters() const {
    KernelCounters c;
    int emitted_fd = bpf_map__fd(impl_->skel->maps.emitted);
    for (uint32_t i = 0; i < c.emitted.size(); ++i) c.emitted[i] = impl_->sum_percpu(emitted_fd, i);
    int drops_fd = bpf_map__fd(impl_->skel->maps.drops);
    c.dropped_ringbuf_full = impl_->sum_percpu(drops_fd, TCPWHY_DROP_RINGBUF_FULL);
    c.malformed_records = impl_->malformed;
    c.emitted[TCPWHY_EV_TALLY] = impl_->tally_events;  // made here, from the tally map
    c.tally_full = impl_->sum_percpu(bpf_map__fd(impl_->skel->maps.tally_full), 0);
    return c;
}

uint64_t Tracer::wakeups() const { return impl_->wakeups; }

ExistingSockets Tracer::list_existing(bool with_owners) {
    // The live samples read the held sockets where the kernel has their iterator; both listings
    // then seed the listener mirror alike (below).
    ExistingSockets existing = !with_owners && impl_->held_sockets ? impl_->held_sockets->list()
                                                                   : list_existing_sockets(with_owners);
    // A server that listened before tracing began never ran listen(2) under the state program,
    // so the signal program would not know it listens: its owner, found in /proc, is noted the
    // same way, so that its SIGTERM at the next rollout is seen.
    if (with_owners) {
        timespec now{};
        clock_gettime(CLOCK_MONOTONIC, &now);  // bpf_ktime_get_ns()'s clock
        uint64_t at = static_cast<uint64_t>(now.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(now.tv_nsec);
        for (const auto& e : existing.events) {
            if (e.new_state != TcpState::listen || e.pid == 0) continue;
            uint32_t tgid = e.pid;
            bpf_map__update_elem(impl_->skel->maps.listener_owners, &tgid, sizeof(tgid), &at, sizeof(at), BPF_ANY);
        }
    }
    if (impl_->tally) {
        // Listeners from before the start; NOEXIST: one the state program counted already stays as it is.
        int fd = bpf_map__fd(impl_->skel->maps.listeners);
        std::unordered_map<uint64_t, int32_t> listening;  // (netns << 16 | port) -> listeners (SO_REUSEPORT: several)
        for (const Event& e : existing.events)
            if (e.new_state == TcpState::listen) ++listening[(uint64_t{e.netns} << 16) | e.lport];
        for (auto [bits, n] : listening) {
            tcpwhy_listener_key key{static_cast<uint32_t>(bits >> 16), static_cast<uint16_t>(bits & 0xffff), 0};
            bpf_map_update_elem(fd, &key, &n, BPF_NOEXIST);
        }
        // The CPUs' answers from the mirror (lib/tally.bpf.h, listener_role) are stale now.
        __atomic_fetch_add(&impl_->skel->bss->listeners_gen, 1, __ATOMIC_SEQ_CST);
    }
    return existing;
}

bool Tracer::tallies() const { return impl_->tally; }

std::string Tracer::attach_summary() const {
    auto kind = [this](const std::string& hook) -> std::string {
        for (const auto& h : hooks_)
            if (h.hook == hook) return h.attached.substr(0, h.attached.find('/'));
        return "tp_btf";
    };
    std::string active = kind("reset_active"), reply = kind("reset_reply");
    std::string resets = active == reply ? active : fmt::format("{} (active), {} (replies)", active, reply);
    return fmt::format("{}; resets via {}", kind("close"), resets);
}

}  // namespace tcpwhy
