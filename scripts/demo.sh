#!/usr/bin/env bash
# tcpwhy's main job, on an embedded incident: a Node.js backend (default keep-alive timeout)
# in network namespace "pod" (10.56.5.6) behind nginx playing the cloud load balancer in
# namespace "lb" (130.211.0.143 and 35.191.0.10, Google LB source addresses; keep-alive
# pools, 600 s idle, no retries), 50 ms of network between them. Clients whose idle gaps
# straddle the backend's ~6 s idle close get 502s from nginx. tcpwhy watches the node,
# catches the resets live, explains them (text and HTML report); then the fix is applied
# and they disappear. The environment is tests/e2e/incident.sh, the one the e2e test runs.
# Run as root. Creates and always deletes the two namespaces and its processes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (sudo bash scripts/demo.sh): tcpwhy loads BPF programs and the demo makes network namespaces" >&2; exit 2; }

bash scripts/setup.sh

for ns in lb pod; do
  if ip netns list | grep -qw "^$ns"; then
    echo "demo: network namespace '$ns' already exists; delete it (ip netns del $ns) or run elsewhere" >&2
    exit 2
  fi
done

out=$(mktemp -d /tmp/tcpwhy-demo.XXXXXX)
export WORK=$out/incident LB_NS=lb POD_NS=pod
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  bash tests/e2e/incident.sh down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash tests/e2e/incident.sh up
tcpwhy=./build/tcpwhy
# top's --pod matches a pod name or a netns inode; the inode works with or without naming
pod_netns=$(stat -c %i /run/netns/pod)
rounds_before=3 rounds_after=2 lanes=32

# ---- LIVE VIEW: what the user watches while the load runs -----------------------------
# `tcpwhy top` when this build has it (full screen on a terminal, a snapshot every few
# seconds otherwise); before that, the live lines of `tcpwhy trace`: the resets as they
# happen and the verdict as soon as it is reached.
live_view_start() {  # $1: how long the load runs (s)
  local seconds=$1
  if "$tcpwhy" top --help 2>/dev/null | grep -q -- --once; then
    if [ -t 1 ]; then
      timeout --foreground -s INT "$seconds" "$tcpwhy" top --lb gcp --pod "$pod_netns" &
    else
      # each snapshot covers the 6 s it traced: a round of the load
      (end=$((SECONDS + seconds)); while [ $SECONDS -lt $end ]; do "$tcpwhy" top --once --interval 6 --lb gcp --pod "$pod_netns" || true; done) &
    fi
  else
    "$tcpwhy" trace --netns pod --duration "$seconds" \
      > >(grep --line-buffered -E "^TIME|reset_sent|finding \[|update \[") 2>/dev/null &
  fi
  pids+=($!)
}
# ----------------------------------------------------------------------------------------

run_round() {  # $1: label, $2: backend keepAliveTimeout (ms) or empty for Node's default, $3: rounds
  local label=$1 timeout=$2 rounds=$3 trace="$out/$1.jsonl" load_s
  load_s=$(( (rounds * max_gap_ms) / 1000 + 4 ))
  echo
  echo "=== $label: backend keepAliveTimeout=${timeout:-default (5000 ms; Node closes idle connections ~1 s later)} ==="
  bash tests/e2e/incident.sh backend "$timeout"
  "$tcpwhy" trace --netns pod --json -o "$trace" --duration $((load_s + 2)) >/dev/null 2>"$out/$label.trace.log" &
  local recorder=$!; pids+=("$recorder")
  live_view_start "$load_s"
  local live=${pids[-1]}
  sleep 1
  local before_502s
  before_502s=$(grep -c ' 502 ' "$WORK/nginx/access.log" 2>/dev/null || true)
  # in the background and waited for, so that Ctrl-C cleans up at once
  bash tests/e2e/incident.sh drive "$rounds" "$lanes" "$min_gap_ms" "$max_gap_ms" >"$out/$label.load.log" &
  wait $!
  wait "$live" 2>/dev/null || true
  if ! wait "$recorder"; then
    echo "demo: tcpwhy trace failed:" >&2
    cat "$out/$label.trace.log" >&2
    exit 1
  fi
  grep -E "^tcpwhy: (dropped|[0-9]+ events)" "$out/$label.trace.log" || true
  local now_502s
  now_502s=$(grep -c ' 502 ' "$WORK/nginx/access.log" || true)
  echo
  echo "nginx: $(tail -1 "$out/$label.load.log" | sed 's/^lb-load: //'); $((now_502s - ${before_502s:-0})) answered with 502"
  echo
  echo "--- tcpwhy report $trace ---"
  "$tcpwhy" report --html "$out/$label.html" "$trace" || true
}

# The clients' idle gaps straddle the backend's idle close, measured first (Node versions
# differ: Node 20 closes ~1 s after keepAliveTimeout), and stay the same after the fix.
bash tests/e2e/incident.sh backend ""
close_ms=$(bash tests/e2e/incident.sh measure-close)
read -r min_gap_ms max_gap_ms < <(bash tests/e2e/incident.sh gaps "$close_ms")
echo "demo: the backend closes idle keep-alive connections after ${close_ms} ms; the clients wait ${min_gap_ms}-${max_gap_ms} ms between requests"

run_round before "" "$rounds_before"
run_round after 620000 "$rounds_after"
echo
echo "demo: HTML reports: $out/before.html and $out/after.html (open them in a browser; they work offline)"
echo "demo: traces, nginx's logs and the backend's log are in $out"
