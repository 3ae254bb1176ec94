#!/usr/bin/env bash
# Sets up (packages, build) and runs every test: unit tests, then the kernel tests (root:
# real BPF programs, real sockets in network namespaces the tests create and delete).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "test: not root: kernel tests will report SKIPPED; run as root to run them" >&2
fi
ctest --test-dir build --output-on-failure --timeout 300

# The same kernel tests on Debian 12's own kernel (6.1) and on its backports kernel (6.12),
# booted under qemu (1.5-2.5 minutes each): there fentry and kprobes work, so the paths this
# machine's kernel refuses are tested too, before and after the 6.10 reset tracepoint changes.
if [ "$(id -u)" -eq 0 ]; then
  bash tests/vm/run-kernel-tests.sh
  bash tests/vm/run-kernel-tests.sh --kernel-suite bookworm-backports
fi
