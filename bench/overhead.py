#!/usr/bin/env python3
"""bench/overhead: what watching TCP costs a busy server, tcpwhy against the classic tools.

nginx (its own prefix and config, one worker, 127.0.0.1) serves a 3-byte reply; wrk loads it
with `Connection: close` (every request a new connection: the most state changes per request)
and with keep-alive. Each round runs a tool's pair back to back, without and with the tool
attached, alternating which goes first; the ratio is median req/s with / median req/s without.
Every measured run follows the same rest (--settle), the tool's or not: a run right after
another ran about 1.3 % faster than one after a pause, and the control measured that bias
against the tool (0.987 in 30 pairs) until both runs rested alike (1.003 in 20).

Tools (each writing what it would print to /dev/null):
  tcpwhy    `tcpwhy trace --json` (every default feature on: correlator, LB ranges, close hook)
  bpftrace  a bpftrace script printing every inet_sock_set_state (a perf-buffer record each)
  perfbuf   bench/perfbuf_peer: a libbpf tool with one perf-buffer record and wake-up per event
  tcpwhy-daemon  `tcpwhy daemon` as a node runs it: archive (gzip segments), metrics, Unix socket
  (-nice0: at the caller's priority; -other: the --other-build's binary)
  nothing   no tool: the A/A control. Its pairs are two runs without anything attached, so
            their spread is what this machine can resolve in this run

With --pin (the default on 2 CPUs or more) nginx runs on CPU 0 and wrk on CPU 1, so neither
moves between CPUs from run to run; the tool is left where the scheduler puts it.

Per tool, from the runs with it attached: events per request, wake-ups per event (the tool's
voluntary context switches, so timer wake-ups count too), userspace CPU per 1k events, and
then in one extra run with kernel.bpf_stats_enabled=1 the kernel ns per run of each program.

Run as root from the repository: bench/overhead.py [--pairs 5] [--seconds 8]
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""

BPFTRACE_SCRIPT = r"""
tracepoint:sock:inet_sock_set_state /args->protocol == IPPROTO_TCP/ {
  printf("%llu %d %s %d %d %d->%d\n", nsecs, pid, comm, args->sport, args->dport, args->oldstate, args->newstate);
}
"""


class Tool:
    """A tracer started before a measured run and stopped after it, with its figures."""

    def __init__(self, name, argv, ready_pattern):
        self.name, self.argv = name, argv
        self.ready = re.compile(ready_pattern) if ready_pattern else None  # None: once it holds programs
        self.proc = None
        self.stderr_path = None

    def start(self, scratch):
        self.stderr_path = os.path.join(scratch, f"{self.name}.stderr")
        err = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        err.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"overhead: {self.name} exited: {open(self.stderr_path).read()[-2000:]}")
            ready = (self.ready.search(open(self.stderr_path).read()) if self.ready
                     else prog_stats(self.proc.pid))
            if ready:
                return
            time.sleep(0.1)
        self.kill()
        raise SystemExit(f"overhead: {self.name} did not attach within 60 s")

    def kill(self):
        """Leaves nothing attached behind, whatever went wrong."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def usage(self):
        """(CPU seconds, voluntary context switches) of the tool's process so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICKS
        with open(f"/proc/{self.proc.pid}/status") as f:
            switches = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", f.read(), re.M).group(1))
        return cpu, switches

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return open(self.stderr_path).read()

    def events(self, stderr):
        """Events the tool received (its own count), and events it reported lost."""
        if self.name.startswith("tcpwhy"):
            received = int(re.search(r"tcpwhy: (\d+) events", stderr).group(1))
            lost = int(re.search(r"dropped (\d+) events", stderr).group(1))
            return received, lost
        if self.name == "perfbuf":
            m = re.search(r"perfbuf_peer: (\d+) events, (\d+) lost", stderr)
            return int(m.group(1)), int(m.group(2))
        lost = sum(int(n) for n in re.findall(r"Lost (\d+) events", stderr))
        return None, lost  # bpftrace does not count what it printed; counted from bpf_stats


class NoTool(Tool):
    """The A/A control: nothing is started; its pairs are two runs that differ in nothing."""

    def __init__(self):
        super().__init__("nothing", [], None)

    def start(self, scratch):
        pass

    def kill(self):
        pass

    def usage(self):
        return 0.0, 0

    def stop(self):
        return ""

    def events(self, stderr):
        return 0, 0


class DaemonTool(Tool):
    """`tcpwhy daemon` with its own archive, metrics port and socket; its counts come from /metrics."""

    def __init__(self, name, binary, scratch, metrics_port, extra=()):
        self.metrics_addr = f"127.0.0.1:{metrics_port}"
        argv = [binary, "daemon", "--archive", os.path.join(scratch, f"{name}-archive"), "--metrics-addr",
                self.metrics_addr, "--socket", os.path.join(scratch, f"{name}.sock"), *extra]
        super().__init__(name, argv, r"daemon tracing TCP on")
        self.metrics = ""

    def stop(self):
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://{self.metrics_addr}/metrics", timeout=10) as r:
                self.metrics = r.read().decode()
        except OSError as e:
            self.metrics = ""
            print(f"  {self.name}: /metrics unreadable: {e}", flush=True)
        return super().stop()

    def events(self, stderr):
        received = sum(float(v) for v in re.findall(r'^tcpwhy_events_total\{type="[a-z_]+"\} ([\d.e+]+)$',
                                                    self.metrics, re.M))
        lost = sum(float(v) for v in re.findall(r'^tcpwhy_events_dropped_total\{where="(?:ringbuf_full|malformed)"\} '
                                                 r'([\d.e+]+)$', self.metrics, re.M))
        return int(received), int(lost)


WRK_PIN = []  # ["taskset", "-c", "1"] with --pin


def run_wrk(port, seconds, connections, keepalive):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    if not keepalive:
        argv[1:1] = ["-H", "Connection: close"]
    argv = WRK_PIN + argv
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    return rps, requests, errors.group(1) if errors else ""


def prog_stats(pid):
    """run_time_ns and run_cnt of each BPF program the process holds, by program name.
    From /proc/PID/fdinfo (this bpftool shows no pids); names from bpftool."""
    progs = {}
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        except OSError:
            continue
        progs[int(info["prog_id"])] = (int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0)))
    if not progs:
        return {}
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True).stdout
    names = {p["id"]: p.get("name", str(p["id"])) for p in json.loads(out)}
    stats = {}
    for prog_id, (t, c) in progs.items():
        name = names.get(prog_id, str(prog_id))
        t0, c0 = stats.get(name, (0, 0))
        stats[name] = (t0 + t, c0 + c)
    return stats


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def measure(tool, scratch, args, port, keepalive, pairs):
    """Alternating pairs: (req/s without, req/s with), and the tool's figures from the runs with it."""
    without, with_tool, figures = [], [], []
    for i in range(pairs):
        order = ["without", "with"] if i % 2 == 0 else ["with", "without"]
        for which in order:
            if which == "without":
                time.sleep(args.settle)
                rps, _, errors = run_wrk(port, args.seconds, args.connections, keepalive)
                without.append(rps)
                continue
            tool.start(scratch)
            time.sleep(args.settle)
            cpu0, sw0 = tool.usage()
            rps, requests, errors = run_wrk(port, args.seconds, args.connections, keepalive)
            cpu1, sw1 = tool.usage()
            stderr = tool.stop()
            events, lost = tool.events(stderr)
            wakeups = None
            if tool.name.startswith("tcpwhy"):
                woken = re.search(r"woken by the kernel (\d+) times", stderr)  # absent before this benchmark
                wakeups = int(woken.group(1)) if woken else None
            with_tool.append(rps)
            figures.append(dict(requests=requests, events=events, lost=lost, cpu=cpu1 - cpu0,
                                switches=sw1 - sw0, ring_wakeups=wakeups, errors=errors))
        print(f"  {tool.name:9} pair {i + 1}: without {without[-1]:9.0f} req/s, with {with_tool[-1]:9.0f} req/s"
              f"  ({with_tool[-1] / without[-1]:.3f})", flush=True)
    return without, with_tool, figures


def kernel_cost(tool, scratch, args, port):
    """ns per program run, from one run with bpf_stats on (it costs a clock read per run itself)."""
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    try:
        tool.start(scratch)
        time.sleep(args.settle)
        before = prog_stats(tool.proc.pid)
        _, requests, _ = run_wrk(port, args.seconds, args.connections, False)
        after = prog_stats(tool.proc.pid)
        tool.stop()
    finally:
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"], check=True)
    cost = {}
    for name, (t, c) in after.items():
        t0, c0 = before.get(name, (0, 0))
        if c - c0 > 0:
            cost[name] = ((t - t0) / (c - c0), (c - c0) / requests)
    return cost


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5, help="pairs per tool and workload (default 5)")
    parser.add_argument("--peer-pairs", type=int, help="pairs for the peers (bpftrace, perfbuf), whose loss needs "
                        "no precision: many tcpwhy pairs with the peers still in the run (default: --pairs)")
    parser.add_argument("--seconds", type=int, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds of rest before every measured run, with the tool and without alike, so "
                        "neither run of a pair follows the other hot (default 1)")
    parser.add_argument("--cost-runs", type=int, default=3, help="bpf_stats runs per tool (default 3)")
    parser.add_argument("--tools", default="tcpwhy,bpftrace,perfbuf", help="comma-separated (default: all three)")
    parser.add_argument("--keepalive-tools", default="tcpwhy", help="tools measured with keep-alive too")
    parser.add_argument("--build", default=os.path.join(REPO, "build"), help="build directory")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
                        help="nginx on CPU 0, wrk on CPU 1 (default on 2 CPUs or more)")
    parser.add_argument("--other-build", help="another tcpwhy build to measure as the tool tcpwhy-other "
                        "(e.g. an older commit's), side by side with this one")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("overhead: run as root (it loads BPF programs)")
    for binary in ("nginx", "wrk", "bpftrace", "bpftool"):
        if not shutil.which(binary) and not os.path.exists(f"/usr/sbin/{binary}"):
            raise SystemExit(f"overhead: {binary} not found (bash scripts/setup.sh installs it)")

    # The peers attach classic tracepoints, which need tracefs; tcpwhy does not.
    mounted_tracefs = False
    if not os.path.exists("/sys/kernel/tracing/events"):
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], check=True)
        mounted_tracefs = True
    scratch = tempfile.mkdtemp(prefix="tcpwhy-overhead-")
    script = os.path.join(scratch, "states.bt")
    with open(script, "w") as f:
        f.write(BPFTRACE_SCRIPT)
    tools = {
        "tcpwhy": Tool("tcpwhy", [os.path.join(args.build, "tcpwhy"), "trace", "--json"], r"tracing TCP on"),
        "bpftrace": Tool("bpftrace", ["bpftrace", script], None),
        "perfbuf": Tool("perfbuf", [os.path.join(args.build, "bench", "perfbuf_peer")], r"attached"),
        # diagnostics: tcpwhy at the caller's CPU priority, and with every event filtered out in
        # userspace (ring, decode and naming only: no correlator, no JSON)
        "tcpwhy-nice0": Tool("tcpwhy-nice0", [os.path.join(args.build, "tcpwhy"), "trace", "--json", "--nice", "0"],
                             r"tracing TCP on"),
        "tcpwhy-filtered": Tool("tcpwhy-filtered",
                                [os.path.join(args.build, "tcpwhy"), "trace", "--json", "--nice", "0", "--port", "1"],
                                r"tracing TCP on"),
    }
    tools["nothing"] = NoTool()
    tcpwhy_bin = os.path.join(args.build, "tcpwhy")
    tools["tcpwhy-daemon"] = DaemonTool("tcpwhy-daemon", tcpwhy_bin, scratch, args.port + 1)
    tools["tcpwhy-daemon-nice0"] = DaemonTool("tcpwhy-daemon-nice0", tcpwhy_bin, scratch, args.port + 2, ["--nice", "0"])
    if args.other_build:
        other_bin = os.path.join(args.other_build, "tcpwhy")
        tools["tcpwhy-other"] = Tool("tcpwhy-other", [other_bin, "trace", "--json"], r"tracing TCP on")
        tools["tcpwhy-other-nice0"] = Tool("tcpwhy-other-nice0", [other_bin, "trace", "--json", "--nice", "0"],
                                           r"tracing TCP on")
        tools["tcpwhy-daemon-other"] = DaemonTool("tcpwhy-daemon-other", other_bin, scratch, args.port + 3)
        tools["tcpwhy-daemon-other-nice0"] = DaemonTool("tcpwhy-daemon-other-nice0", other_bin, scratch, args.port + 4,
                                                        ["--nice", "0"])
    for option, names in (("--tools", args.tools), ("--keepalive-tools", args.keepalive_tools)):
        unknown = [n for n in names.split(",") if n and n != "none" and n not in tools]
        if unknown:
            shutil.rmtree(scratch, ignore_errors=True)
            if mounted_tracefs:
                subprocess.run(["umount", "/sys/kernel/tracing"])
            print(f"overhead: {option}: unknown tool {', '.join(unknown)} (known: {', '.join(tools)}; "
                  f"'none' or '' for no tool)", file=sys.stderr)
            sys.exit(2)
    with open(os.path.join(scratch, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(prefix=scratch, port=args.port))
    if args.pin:
        WRK_PIN[:] = ["taskset", "-c", "1"]
    nginx = subprocess.Popen((["taskset", "-c", "0"] if args.pin else []) +
                             ["nginx", "-p", scratch, "-c", os.path.join(scratch, "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        if nginx.poll() is not None:
            raise SystemExit(f"overhead: nginx did not start: {open(os.path.join(scratch, 'error.log')).read()}")
        run_wrk(args.port, 2, args.connections, False)  # warm up
        pinned = "; nginx on CPU 0, wrk on CPU 1" if args.pin else "; not pinned"
        print(f"overhead: nginx (1 worker) on 127.0.0.1:{args.port}; wrk -t1 -c{args.connections}{pinned}, "
              f"{args.seconds} s runs, {args.pairs} alternating pairs per tool; {os.cpu_count()} CPUs; "
              f"load average before: {os.getloadavg()[0]:.2f}")
        rows = []
        for workload, keepalive in (("Connection: close", False), ("keep-alive", True)):
            names = args.tools if not keepalive else args.keepalive_tools
            print(f"\n{workload}:")
            for name in [n for n in names.split(",") if n and n != "none"]:
                pairs = args.peer_pairs if args.peer_pairs is not None and name in ("bpftrace", "perfbuf") else args.pairs
                without, with_tool, figures = measure(tools[name], scratch, args, args.port, keepalive, pairs)
                rows.append((workload, name, without, with_tool, figures))
        print(f"\nkernel cost (median of {args.cost_runs} Connection: close runs, kernel.bpf_stats_enabled=1):")
        costs = {}
        for name in [n for n in args.tools.split(",") if n and n not in ("none", "nothing")]:
            # the median of --cost-runs runs: one run on a shared VM can be off by half
            runs = [kernel_cost(tools[name], scratch, args, args.port) for _ in range(args.cost_runs)]
            costs[name] = {prog: (median([r[prog][0] for r in runs if prog in r]),
                                  median([r[prog][1] for r in runs if prog in r]))
                           for prog in set().union(*runs)}
            for prog, (ns, runs_per_req) in sorted(costs[name].items()):
                each = " ".join(f"{r[prog][0]:.0f}" for r in runs if prog in r)
                print(f"  {name:9} {prog:24} {ns:7.0f} ns per run (runs: {each}), {runs_per_req:5.2f} runs per request")
            if costs[name]:
                per_request = sum(ns * runs_per_req for ns, runs_per_req in costs[name].values())
                print(f"  {name:9} {'every program':24} {per_request:7.0f} ns per request")

        print(f"\nsummary (load average after: {os.getloadavg()[0]:.2f})")
        print(f"{'workload':18} {'tool':12} {'req/s without':>13} {'req/s with':>11} {'ratio':>6} {'pair ratios':>13} "
              f"{'events/req':>10} {'lost':>5} {'wakeups/event':>13} {'CPU ms/1k ev':>12} {'core/10k ev/s':>13} "
              f"{'CPU ms/1k req':>13}")
        for workload, name, without, with_tool, figures in rows:
            if not without:  # --pairs 0: kernel cost only
                continue
            ratios = sorted(w / wo for w, wo in zip(with_tool, without))
            events = sum(f["events"] or 0 for f in figures)
            requests = sum(f["requests"] for f in figures)
            if name == "bpftrace" or not events:
                # bpftrace counts nothing itself: its program runs, one printf each, from bpf_stats
                per_req = sum(r for _, r in costs.get(name, {}).values())
                events = per_req * requests
            lost = sum(f["lost"] for f in figures)
            cpu = sum(f["cpu"] for f in figures)
            switches = sum(f["switches"] for f in figures)
            if name.startswith("tcpwhy"):
                ring = [f["ring_wakeups"] for f in figures if f["ring_wakeups"] is not None]
                wake = f"{sum(ring) / max(events, 1):.4f}/" if ring else "?/"
                wake += f"{switches / max(events, 1):.4f}"
            else:
                wake = f"{switches / max(events, 1):.4f}"
            print(f"{workload:18} {name:12} {median(without):13.0f} {median(with_tool):11.0f} "
                  f"{median(with_tool) / median(without):6.3f} {ratios[0]:6.3f}-{ratios[-1]:.3f} "
                  f"{events / max(requests, 1):10.2f} {lost:5d} {wake:>13} {1000 * 1000 * cpu / max(events, 1):12.3f} "
                  f"{cpu * 10000 / max(events, 1):13.4f} {1000 * 1000 * cpu / max(requests, 1):13.3f}")
        print("\nmedian of the pair ratios, with the 95 % interval of that median (order statistics, no assumption "
              "about the spread):")
        for workload, name, without, with_tool, figures in rows:
            if len(without) < 6:
                continue
            ratios = sorted(w / wo for w, wo in zip(with_tool, without))
            n = len(ratios)
            half = 0.98 * n ** 0.5  # 1.96 * sqrt(n) / 2
            lo, hi = max(0, int(n / 2 - half)), min(n - 1, int(n / 2 + half + 0.5))
            print(f"  {workload:18} {name:12} {median(ratios):.3f}  [{ratios[lo]:.3f}, {ratios[hi]:.3f}]  ({n} pairs)")
        print("tcpwhy wakeups/event: ring wake-ups by the kernel / all voluntary context switches (25 ms poll timer too)")
        print("events/req: records (events and tallies) per request; CPU ms/1k req: the tool's userspace CPU per 1000 "
              "requests (each a connection with Connection: close)")
    finally:
        for tool in tools.values():
            tool.kill()
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()
        shutil.rmtree(scratch, ignore_errors=True)
        if mounted_tracefs:
            subprocess.run(["umount", "/sys/kernel/tracing"])


if __name__ == "__main__":
    main()
