#!/usr/bin/env bash
# Runs in a guest booted on a kernel below tcpwhy's minimum (Debian 11's 5.10, whose tracing
# programs cannot call bpf_get_socket_cookie):
#   bash tests/vm/run-kernel-tests.sh --kernel-suite bullseye --command "bash $PWD/tests/vm/below-minimum.sh"
# `doctor`, `trace` and `daemon` must each name what is missing and the minimum, exit 1,
# print no libbpf noise and leave nothing loaded. Run from the build directory (the guest's cwd).
set -u
failures=0
fail() { echo "below-minimum: FAIL: $*"; failures=$((failures + 1)); }

expect_refusal() {
    local name=$1 max_lines=$2
    shift 2
    local out rc
    out=$(timeout 120 "$@" 2>&1)
    rc=$?
    echo "below-minimum: $name exited $rc:"
    echo "$out" | sed 's/^/    /'
    [ "$rc" -eq 1 ] || fail "$name: exit $rc, not 1"
    echo "$out" | grep -q "tcpwhy needs Linux 5.12 or newer" || fail "$name: does not name the minimum"
    echo "$out" | grep -q "bpf_get_socket_cookie" || fail "$name: does not name what is missing"
    echo "$out" | grep -q "^libbpf:" && fail "$name: libbpf noise (it tried to load)"
    [ "$(echo "$out" | wc -l)" -le "$max_lines" ] || fail "$name: more than $max_lines lines"
    local left
    left=$(bpftool prog show 2>/dev/null | grep -cE "handle_|tcpwhy|kprobe_|fentry_")
    [ "$left" -eq 0 ] || fail "$name: $left programs still loaded"
    [ -z "$(bpftool link show 2>/dev/null)" ] || fail "$name: links still attached"
}

echo "below-minimum: kernel $(uname -r)"
# doctor: its report, then the verdict (the problem and the fix)
./tcpwhy doctor >/tmp/doctor.out 2>&1
doctor_rc=$?
sed 's/^/    /' /tmp/doctor.out
[ "$doctor_rc" -eq 1 ] || fail "doctor: exit $doctor_rc, not 1"
grep -q "minimum *NO: tracing programs cannot call bpf_get_socket_cookie (Linux 5.12)" /tmp/doctor.out ||
    fail "doctor: no 'minimum NO' row"
grep -q "^libbpf:" /tmp/doctor.out && fail "doctor: libbpf noise (it tried to load)"
expect_refusal "doctor" 60 ./tcpwhy doctor
expect_refusal "trace" 2 ./tcpwhy trace --duration 5
expect_refusal "daemon" 2 ./tcpwhy daemon --archive none --socket off --metrics-addr off

echo "below-minimum: $([ $failures -eq 0 ] && echo OK || echo FAILED) ($failures problems)"
[ "$failures" -eq 0 ]
