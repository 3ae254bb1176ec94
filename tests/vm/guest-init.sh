#!/bin/bash
# Runs inside the qemu guest (tests/vm/run-kernel-tests.sh), as root, chrooted into the host's
# filesystem (read-only over 9p; /tmp is already a tmpfs and /tmp/tcpwhy-run the writable result
# share). Makes the mounts a normal system has, then runs `tcpwhy doctor` and the kernel tests.
# Its exit status is the kernel tests' one.
set -u
results=/tmp/tcpwhy-run
# shellcheck source=/dev/null  # written by run-kernel-tests.sh for this run
. "$results/guest.env"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp LANG=C.UTF-8

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# writable paths: `ip netns` binds namespaces under /run/netns
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
# The guest kernel's modules come from the unpacked package (the host has no
# /lib/modules/$(uname -r)). The tests need veth (and loop).
modprobe -d "$TCPWHY_KERNEL_ROOT" veth || echo "guest: cannot load veth: the kernel tests' namespaces will fail"
# loop devices: the archive floor test mounts a sparse filesystem image
for module in loop ext4; do
    modprobe -d "$TCPWHY_KERNEL_ROOT" "$module" 2>/dev/null || echo "guest: no $module module (built in, or the archive floor test skips)"
done
ip link set lo up
hostname tcpwhy-guest 2>/dev/null

# the kernel's config, where libbpf looks for it (CONFIG_HZ)
mount -t tmpfs tmpfs /boot && cp "$TCPWHY_KERNEL_ROOT/boot/config-$(uname -r)" /boot/

echo "guest: kernel $(uname -r), BTF $([ -f /sys/kernel/btf/vmlinux ] && echo yes || echo no)"
cd "$TCPWHY_BUILD" || exit 1

if [ -n "$TCPWHY_GUEST_COMMAND" ]; then
    echo "guest: $TCPWHY_GUEST_COMMAND"
    bash -c "$TCPWHY_GUEST_COMMAND"
    exit $?
fi

echo "guest: tcpwhy doctor"
./tcpwhy doctor 2>&1 | tee "$results/doctor.txt"

echo "guest: kernel_tests ${TCPWHY_TEST_ARGS[*]}"
start=$(date +%s)
./tests/kernel_tests --durations yes "${TCPWHY_TEST_ARGS[@]}" 2>&1 | tee "$results/kernel_tests.txt"
status=${PIPESTATUS[0]}
echo "guest: kernel_tests exited $status after $(($(date +%s) - start))s"
exit "$status"
