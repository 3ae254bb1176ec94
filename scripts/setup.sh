#!/usr/bin/env bash
# Installs tcpwhy's build and test dependencies (Debian packages only) and builds it into build/.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev
  libcli11-dev libfmt-dev libspdlog-dev catch2 nlohmann-json3-dev libncurses-dev
  libcurl4-openssl-dev python3 openssl
  iproute2 procps
  util-linux mount  # tests/kernel/cluster_test: unshare and nsenter for the stand-in nodes and pods
  qemu-system-x86 busybox-static cpio kmod xz-utils zstd  # tests/vm: the 6.1 and 6.12 guests
  nginx-light nodejs curl chromium  # tests/e2e, demo: the LB, the backend, the HTML report check
  python3-yaml tmux  # tests/deploy (manifests), tests/kernel/top_test (the terminal)
  strace  # tests/kernel/mounts_test.py: what the daemon opens on the node
  libclang-rt-dev  # libFuzzer and the sanitizer runtimes (tests/fuzz, build-asan)
  wrk bpftrace  # bench/overhead.py, bench/ingest.py: the load, a peer tool
  libsimdjson-dev  # bench/replay_bench: simdjson's On-Demand reader measured beside tcpwhy's own
  buildah podman runc  # tests/image: the node image, built and run without a Docker daemon
  prometheus  # tests/monitoring: a real Prometheus scraping the daemon, and promtool for the rules
  gunicorn python3-uvicorn python3-aiohttp golang-go apache2 caddy  # server detection: real servers behind nginx, Go builds, Go binaries
)
if [ "$(id -u)" -eq 0 ]; then
  missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "setup: not root; assuming the packages are installed (${packages[*]})" >&2
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
echo "setup: built build/tcpwhy"
