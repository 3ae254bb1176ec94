# Shared by incident.sh and causes.sh (sourced, not run): the two network namespaces joined by
# tw-delay-line with Google LB source addresses on the LB side, the LB's nginx, and the pid files
# everything started is stopped by. The caller sets WORK, LB_NS, POD_NS, LB_DEV, POD_DEV,
# DELAY_LINE, DELAY_MS, NGINX_LISTEN and defines die().

stop_pidfile() {  # stop the process in pid file $1 (ours: we wrote it), wait for it to go
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  rm -f "$file"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

# LB_NS holds 130.211.0.143/22 and 35.191.0.10/16, POD_NS 10.56.5.6/16; tw-delay-line carries
# DELAY_MS each way between them (this kernel has no netem).
netns_pair_up() {
  [ -x "$DELAY_LINE" ] || die "no $DELAY_LINE: build first (cmake --build build)"
  command -v nginx >/dev/null || die "nginx is not installed (apt-get install nginx-light)"
  mkdir -p "$WORK"
  ip netns add "$LB_NS"
  ip netns add "$POD_NS"
  for ns in "$LB_NS" "$POD_NS"; do ip -n "$ns" link set lo up; done
  "$DELAY_LINE" "$LB_NS" "$LB_DEV" "$POD_NS" "$POD_DEV" "$DELAY_MS" >"$WORK/delay.out" 2>&1 &
  echo $! >"$WORK/delay.pid"
  for _ in $(seq 100); do grep -q ready "$WORK/delay.out" 2>/dev/null && break; sleep 0.05; done
  grep -q ready "$WORK/delay.out" || die "tw-delay-line did not start: $(cat "$WORK/delay.out")"
  ip -n "$LB_NS" addr add 130.211.0.143/22 dev "$LB_DEV"
  ip -n "$LB_NS" addr add 35.191.0.10/16 dev "$LB_DEV"
  ip -n "$POD_NS" addr add 10.56.5.6/16 dev "$POD_DEV"
  ip -n "$LB_NS" link set "$LB_DEV" up
  ip -n "$POD_NS" link set "$POD_DEV" up
  ip -n "$LB_NS" route add 10.56.0.0/16 dev "$LB_DEV"
  ip -n "$POD_NS" route add 130.211.0.0/22 dev "$POD_DEV"
  ip -n "$POD_NS" route add 35.191.0.0/16 dev "$POD_DEV"
}

# nginx from $WORK/nginx/nginx.conf in LB_NS; returns once NGINX_LISTEN accepts.
lb_nginx_start() {
  ip netns exec "$LB_NS" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >>"$WORK/nginx/stderr.log" 2>&1 &
  echo $! >"$WORK/nginx.pid.master"
  for _ in $(seq 100); do
    ip netns exec "$LB_NS" bash -c "exec 3<>/dev/tcp/${NGINX_LISTEN%:*}/${NGINX_LISTEN#*:}" 2>/dev/null && return 0
    sleep 0.05
  done
  die "nginx did not start: $(cat "$WORK/nginx/error.log" "$WORK/nginx/stderr.log" 2>/dev/null)"
}

# nginx, the delay line and the namespaces (after the caller stopped its own processes).
netns_pair_down() {
  stop_pidfile "$WORK/nginx.pid.master"
  stop_pidfile "$WORK/delay.pid"
  ip netns del "$LB_NS" 2>/dev/null || true
  ip netns del "$POD_NS" 2>/dev/null || true
}
