#!/usr/bin/env bash
# Runs tcpwhy's kernel tests (and `tcpwhy doctor`) inside another kernel: Debian's
# linux-image-amd64 (6.1 on Debian 12) booted under qemu with TCG emulation. This proves the
# fentry/kprobe attach paths that the development kernel refuses (fentry: EPERM; no kprobes).
#
#   sudo bash tests/vm/run-kernel-tests.sh [options] [-- kernel_tests arguments]
#
# The guest gets the host's filesystem read-only over 9p (so it runs the binaries built here,
# with the host's libraries), tmpfs for the paths that must be writable, and a writable 9p
# share for its results. Exit status: that of kernel_tests in the guest (0 = pass), 1 when the
# guest did not finish (boot failure, timeout), 2 for bad usage. When qemu cannot run here at all
# (not root, not x86-64, no qemu and no way to install it) it prints "SKIPPED: ..." and exits 0,
# or 77 with --strict-skip.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: run-kernel-tests.sh [options] [-- kernel_tests arguments]

Boots a Debian kernel under qemu (TCG) and runs build/tests/kernel_tests and `tcpwhy doctor`
inside it as root. Arguments after `--` go to kernel_tests (Catch2 test names or tags;
default: every test).

options:
  --kernel-package PKG  Debian kernel image package (default: linux-image-amd64, which
                        resolves to the current linux-image-6.1.0-N-amd64 on Debian 12)
  --kernel-suite SUITE  take the kernel from another Debian suite, e.g. bookworm-backports
                        (6.12 on Debian 12), read through a private apt state in the cache;
                        SKIPPED when that suite cannot be read
  --mirror URL          Debian mirror for --kernel-suite (default: http://deb.debian.org/debian)
  --build DIR           tcpwhy build tree (default: build)
  --timeout S           give up on the guest after S seconds (default: 900)
  --memory MB           guest memory (default: 1024)
  --cpus N              guest CPUs (default: 2)
  --cache DIR           where kernel packages are downloaded and unpacked
                        (default: /var/cache/tcpwhy-vm)
  --keep                keep the run directory (console log, results) after the run
  --command CMD         run CMD (bash, in the build directory) in the guest instead of the
                        tests, e.g. --command './tcpwhy trace -v --duration 1' to debug a load
  --strict-skip         exit 77 instead of 0 when qemu cannot run here
  -h, --help            this text
EOF
}

repo=$(cd "$(dirname "$0")/../.." && pwd)
kernel_package=linux-image-amd64
kernel_suite=
kernel_mirror=http://deb.debian.org/debian
build_dir=$repo/build
timeout_s=900
memory_mb=1024
cpus=2
cache_dir=/var/cache/tcpwhy-vm
keep=false
guest_command=
skip_status=0
test_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --kernel-package|--kernel-suite|--mirror|--build|--timeout|--memory|--cpus|--cache|--command)
            [ $# -ge 2 ] || { echo "vm: $1 needs a value (see --help)" >&2; exit 2; } ;;&
        --kernel-package) kernel_package=$2; shift 2 ;;
        --kernel-suite) kernel_suite=$2; shift 2 ;;
        --mirror) kernel_mirror=$2; shift 2 ;;
        --build) build_dir=$(cd "$2" && pwd); shift 2 ;;
        --timeout) timeout_s=$2; shift 2 ;;
        --memory) memory_mb=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --cache) cache_dir=$2; shift 2 ;;
        --keep) keep=true; shift ;;
        --command) guest_command=$2; shift 2 ;;
        --strict-skip) skip_status=77; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; test_args=("$@"); break ;;
        *) echo "vm: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "vm: $*" >&2; }
skip() { echo "vm: SKIPPED: $*" >&2; exit "$skip_status"; }
for number in "$timeout_s" "$memory_mb" "$cpus"; do
    [[ $number =~ ^[1-9][0-9]*$ ]] || { log "--timeout, --memory and --cpus take a positive number, not '$number'"; exit 2; }
done

[ "$(id -u)" -eq 0 ] || skip "needs root (to install packages and run the kernel tests as root in the guest)"
[ "$(uname -m)" = x86_64 ] || skip "the guest kernel is Debian's amd64 kernel; this host is $(uname -m)"
[ -x "$build_dir/tests/kernel_tests" ] && [ -x "$build_dir/tcpwhy" ] ||
    { log "no build in $build_dir (run: bash scripts/setup.sh)"; exit 2; }

# Host tools, all from Debian: qemu, a static busybox for the guest's initramfs, cpio to pack
# it, kmod to resolve module dependencies against the guest kernel's module tree, and xz/zstd
# for kernels that ship compressed modules.
host_packages=(qemu-system-x86 busybox-static cpio kmod xz-utils zstd)
missing=()
for p in "${host_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
        skip "cannot install ${missing[*]} with apt-get"
fi
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not found"
qemu-system-x86_64 -accel help 2>/dev/null | grep -qx tcg || skip "this qemu has no TCG accelerator"

# The kernel: the package's files unpacked into the cache (never installed on the host: no
# initramfs hooks, /boot untouched), with modules.dep generated for it.
mkdir -p "$cache_dir"
apt_options=()
if [ -n "$kernel_suite" ]; then
    # Another suite of Debian (e.g. bookworm-backports) through a private apt state in the cache:
    # the system's apt sources stay untouched.
    suite_dir=$cache_dir/apt-$kernel_suite
    mkdir -p "$suite_dir/lists/partial" "$suite_dir/cache/archives/partial"
    echo "deb $kernel_mirror $kernel_suite main" >"$suite_dir/sources.list"
    apt_options=(-o "Dir::Etc::SourceList=$suite_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$suite_dir/lists" -o "Dir::Cache=$suite_dir/cache")
    if ! ls "$suite_dir/lists/"*Packages* >/dev/null 2>&1; then
        apt-get "${apt_options[@]}" update -qq >/dev/null 2>&1 ||
            skip "cannot read $kernel_suite from $kernel_mirror (apt-get update)"
    fi
fi
# a metapackage (linux-image-amd64) names the versioned image it depends on
resolve_image() {
    local dep
    dep=$(apt-cache "${apt_options[@]}" depends "$kernel_package" 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    image_package=${dep:-$kernel_package}
    kernel_root=$cache_dir/$image_package
}
resolve_image
if [ ! -f "$kernel_root/.unpacked" ]; then
    # not cached: make sure the package lists name a version the mirror still has
    apt-get "${apt_options[@]}" update -qq >/dev/null 2>&1 || log "apt-get update failed; trying the lists as they are"
    resolve_image
fi
if [ ! -f "$kernel_root/.unpacked" ]; then
    log "downloading $image_package${kernel_suite:+ from $kernel_suite}"
    rm -rf "$kernel_root" "$cache_dir"/"$image_package"_*.deb
    if ! (cd "$cache_dir" && apt-get "${apt_options[@]}" download -qq "$image_package" 2>/dev/null); then
        [ -n "$kernel_suite" ] && skip "cannot download $image_package from $kernel_suite"
        log "cannot download $image_package (apt-get download); is it in this system's apt sources?"
        exit 1
    fi
    mkdir -p "$kernel_root"
    dpkg-deb -x "$cache_dir"/"$image_package"_*.deb "$kernel_root"
    rm -f "$cache_dir"/"$image_package"_*.deb
    touch "$kernel_root/.unpacked"
fi
kver=$(basename "$(ls -d "$kernel_root"/lib/modules/*/ | head -1)")
vmlinuz=$kernel_root/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || { log "no kernel image in $kernel_root/boot"; exit 1; }

[ -f "$kernel_root/lib/modules/$kver/modules.dep" ] || depmod -b "$kernel_root" "$kver"

run_dir=$(mktemp -d /tmp/tcpwhy-vm.XXXXXX)
qemu_pid=
cleanup() {
    [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
    if $keep; then log "run directory kept: $run_dir"; else rm -rf "$run_dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# initramfs: busybox, the modules that mount the host over 9p, and an init that hands over to
# tests/vm/guest-init.sh on the host's filesystem.
initrd_root=$run_dir/initramfs
mkdir -p "$initrd_root"/{bin,dev,proc,sys,host,run,lib/modules}
cp /bin/busybox "$initrd_root/bin/busybox"
for cmd in sh mount umount mkdir insmod chroot poweroff sleep cat echo; do ln -s busybox "$initrd_root/bin/$cmd"; done
: >"$initrd_root/modules.list"
for module in virtio_pci 9pnet_virtio 9p; do
    modprobe -d "$kernel_root" -S "$kver" --show-depends "$module" | awk '$1 == "insmod" {print $2}' |
        while read -r ko; do
            # busybox insmod hands the file to the kernel as is: store modules uncompressed
            name=$(basename "$ko"); name=${name%.xz}; name=${name%.zst}
            [ -f "$initrd_root/lib/modules/$name" ] && continue
            case $ko in
                *.xz) xz -dc "$ko" >"$initrd_root/lib/modules/$name" ;;
                *.zst) zstd -qdc "$ko" >"$initrd_root/lib/modules/$name" ;;
                *) cp "$ko" "$initrd_root/lib/modules/$name" ;;
            esac
            echo "$name" >>"$initrd_root/modules.list"
        done
done
cat >"$initrd_root/init" <<'EOF'
#!/bin/sh
# Mounts the host's / read-only over 9p and runs tests/vm/guest-init.sh from it as a child,
# so that the result is reported and the machine powered off however that script ends.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for ko in $(cat /modules.list); do insmod /lib/modules/$ko || echo "guest: insmod $ko failed"; done
status=1
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro hostfs /host &&
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 rundir /run &&
    mount -t tmpfs -o mode=1777 tmpfs /host/tmp && mkdir /host/tmp/tcpwhy-run &&
    mount -o bind /run /host/tmp/tcpwhy-run && [ -f /run/repo ] && repo=$(cat /run/repo) &&
    # the tree has its own share: a checkout under /tmp would be hidden by the guest's tmpfs
    mkdir -p "/host/tmp$repo" &&
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro repo "/host/tmp$repo" &&
    { case "$repo" in /tmp/*) mkdir -p "/host$repo" && mount -o bind "/host/tmp$repo" "/host$repo" ;; esac; }; then
    chroot /host /bin/bash "$repo/tests/vm/guest-init.sh"
    status=$?
else
    echo "guest: cannot mount the host's filesystem over 9p"
fi
echo "$status" >/run/exit-status
echo "guest: finished with status $status"
poweroff -f
EOF
chmod +x "$initrd_root/init"
(cd "$initrd_root" && find . | cpio -o -H newc --quiet) >"$run_dir/initrd"

# What the guest runs; read by the init above (repo) and guest-init.sh (guest.env) (9p share "rundir" is /run in the initramfs and
# /tmp/tcpwhy-run in the guest's root).
{
    printf 'TCPWHY_REPO=%q\n' "$repo"
    printf 'TCPWHY_BUILD=%q\n' "$build_dir"
    printf 'TCPWHY_KERNEL_ROOT=%q\n' "$kernel_root"
    printf 'TCPWHY_GUEST_COMMAND=%q\n' "$guest_command"
    printf 'TCPWHY_TEST_ARGS=('
    [ ${#test_args[@]} -gt 0 ] && printf '%q ' "${test_args[@]}"
    printf ')\n'
} >"$run_dir/guest.env"
echo "$repo" >"$run_dir/repo"

# One guest boot. softlockup_panic: a CPU stuck in the kernel panics at once, printing its
# backtrace, instead of hanging until --timeout.
boot_guest() {
    log "booting $image_package ($kver) under qemu TCG (-cpu max, ${cpus} CPUs, ${memory_mb} MiB, timeout ${timeout_s}s)"
    start=$(date +%s)
    rm -f "$run_dir/exit-status"
    # The console goes to a file that is followed live; `timeout` bounds the guest and passes a
    # SIGTERM from cleanup on to qemu.
    : >"$run_dir/console.log"
    timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
        -accel tcg -cpu max -smp "$cpus" -m "$memory_mb" \
        -kernel "$vmlinuz" -initrd "$run_dir/initrd" \
        -append "console=ttyS0 panic=-1 softlockup_panic=1 loglevel=4 mitigations=off rdinit=/init" \
        -virtfs local,path=/,mount_tag=hostfs,security_model=none,readonly=on,multidevs=remap \
        -virtfs local,path="$run_dir",mount_tag=rundir,security_model=none \
        -virtfs local,path="$repo",mount_tag=repo,security_model=none,readonly=on,multidevs=remap \
        -display none -monitor none -serial stdio -no-reboot \
        </dev/null >"$run_dir/console.log" 2>"$run_dir/qemu.stderr" &
    qemu_pid=$!
    tail -n +1 -f --pid="$qemu_pid" "$run_dir/console.log" | sed -u 's/^/guest| /'
    qemu_status=0
    wait "$qemu_pid" || qemu_status=$?
    qemu_pid=
    elapsed=$(($(date +%s) - start))
}

boot_guest
# Live kernel text patching (the static keys and trampolines that attaching and detaching BPF
# programs flip) has twice gone wrong under TCG while another vCPU ran the patched code, with
# traffic flowing: a soft lockup (6.1), and an "Oops: int3" at the tracepoint site in
# inet_sk_state_store (6.12), the breakpoint text_poke_bp() plants while it patches. Each was a
# fact about this emulated guest, not a test result, so the guest gets one more boot on exactly
# those signatures. Any other failure is final.
if [ ! -f "$run_dir/exit-status" ] && grep -Eq "soft lockup|Oops: int3" "$run_dir/console.log"; then
    cp "$run_dir/console.log" "$run_dir/console-lockup.log"
    log "the guest crashed in live code patching (backtrace above; kept in $run_dir/console-lockup.log): booting it once more"
    keep=true
    boot_guest
fi
what=${guest_command:+"'$guest_command'"}
what=${what:-kernel tests}

if [ ! -f "$run_dir/exit-status" ]; then
    if [ "$qemu_status" -eq 124 ] || [ "$qemu_status" -eq 137 ]; then
        log "FAIL: the guest did not finish within ${timeout_s}s (--timeout)"
    else
        sed 's/^/qemu: /' "$run_dir/qemu.stderr" >&2
        log "FAIL: the guest stopped without reporting a result (qemu exit status $qemu_status)"
    fi
    keep=true
    exit 1
fi
status=$(cat "$run_dir/exit-status")
if [ "$status" -eq 0 ]; then
    log "PASS: $what in the $kver guest (${elapsed}s)"
else
    log "FAIL: $what in the $kver guest exited $status (${elapsed}s)"
    keep=true
fi
exit "$status"
