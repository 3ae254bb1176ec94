#!/usr/bin/env bash
# tcpwhy's main job, on an embedded incident: a Node.js backend (default keep-alive timeout)
# in network namespace "pod" (10.56.5.6) behind a load balancer in namespace "lb"
# (130.211.0.143, a Google LB source address) that reuses idle connections. tcpwhy traces the
# node, catches the resets, and explains them; then the fix is applied and they disappear.
# Run as root. Creates and always deletes the two namespaces and its processes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (sudo bash scripts/demo.sh): tcpwhy loads BPF programs and the demo makes network namespaces" >&2; exit 2; }

bash scripts/setup.sh
command -v node >/dev/null || { apt-get install -y -qq nodejs >/dev/null; }

for ns in lb pod; do
  if ip netns list | grep -qw "^$ns"; then
    echo "demo: network namespace '$ns' already exists; delete it (ip netns del $ns) or run elsewhere" >&2
    exit 2
  fi
done

work=$(mktemp -d /tmp/tcpwhy-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del lb 2>/dev/null || true
  ip netns del pod 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ip netns add lb
ip netns add pod
ip link add tw-lb netns lb type veth peer name tw-pod netns pod
ip -n lb addr add 130.211.0.143/22 dev tw-lb
ip -n pod addr add 10.56.5.6/16 dev tw-pod
for ns in lb pod; do ip -n $ns link set lo up; done
ip -n lb link set tw-lb up
ip -n pod link set tw-pod up
ip -n lb route add 10.56.0.0/16 dev tw-lb
ip -n pod route add 130.211.0.0/22 dev tw-pod

run_round() {  # $1: label, $2: backend keepAliveTimeout (ms) or empty for Node's default
  local label=$1 timeout=$2 trace="$work/$1.jsonl"
  echo
  echo "=== $label: backend keepAliveTimeout=${timeout:-default (5000 ms)} ==="
  ./build/tcpwhy trace --netns pod --only-lb -o "$trace" --duration 12 &
  local tracer=$!; pids+=("$tracer")
  sleep 1.5
  ip netns exec pod env KEEP_ALIVE_TIMEOUT_MS="$timeout" node demo/backend.js &
  local backend=$!; pids+=("$backend")
  sleep 0.5
  ip netns exec lb node demo/lb-client.js
  wait "$tracer" || true
  kill "$backend" 2>/dev/null || true
  echo
  echo "--- tcpwhy report $trace ---"
  ./build/tcpwhy report "$trace" || true
}

run_round before ""
run_round after 620000
echo
echo "demo: traces kept in $work"
