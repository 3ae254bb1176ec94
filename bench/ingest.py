#!/usr/bin/env python3
"""bench/ingest: how much the live pipeline takes in, what it holds per connection, and a flood.

  rate   wrk `Connection: close` on nginx (loopback) with `tcpwhy trace --json > /dev/null`: events per
         second received, and the kernel's own counts (submitted, dropped), which must agree.
  hold   N connections opened on loopback and kept open: kernel memory per socket for tcpwhy
         (unreclaimable slab and the memcg-accounted kmalloc caches where BPF maps that grow with
         sockets would allocate, with tcpwhy minus without), the memory of tcpwhy's BPF maps, and
         tcpwhy's own RSS per live connection (the correlator's table). Both ends are traced
         sockets, so 2N of each.
  flood  the highest connection rate for --flood-seconds (default 60) with tcpwhy attached, as it
         runs and with --all-states (every state change sent: the most the ring carries): its RSS
         each 5 s (must stay bounded); then --all-states with a 1 MiB ring and a consumer that stalls
         for a third of the run (so the kernel must drop), checking that what came through the ring
         is what the kernel submitted and that every event it could not submit was counted.
  daemon the DaemonSet's container (--image, run under podman with deploy/'s security context, mounts
         and arguments) idle, then under the same flood: its memory cgroup's usage (RSS, page cache,
         kernel memory: what a memory limit counts) every 5 s and its peak, its CPU in cores, and its
         events/s; then --connections held open at once (the correlator at its cap past 262 144). The
         figures the DaemonSet's resources are set from (bench/README.md).

Run as root from the repository: bench/ingest.py [--connections 100000] [--flood-seconds 60]
  bench/ingest.py --only daemon --image localhost/tcpwhy:0.1.0    (scripts/build-image.sh first)
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import NGINX_CONF, run_wrk  # noqa: E402  (same server and load as bench/overhead)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def meminfo_kib(field):
    with open("/proc/meminfo") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def accounted_slab_bytes():
    """Bytes in use in the memcg-accounted kmalloc caches, where the kernel puts BPF socket storage
    (its element and, per socket, the bpf_local_storage that holds the elements). Unlike SUnreclaim,
    which counts whole slab pages and keeps freed objects' pages, this counts live objects."""
    total = 0
    with open("/proc/slabinfo") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0].startswith("kmalloc-cg-"):
                total += int(fields[1]) * int(fields[3])
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


class Trace:
    """`tcpwhy trace --json` with stdout to /dev/null (or to a pipe we read when we choose)."""

    def __init__(self, build, scratch, extra=(), stdout=subprocess.DEVNULL):
        self.err_path = os.path.join(scratch, "trace.stderr")
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([os.path.join(build, "tcpwhy"), "trace", "--json", *extra], stdout=stdout,
                                         stderr=err, start_new_session=True)
        deadline = time.time() + 30
        while "tracing TCP on" not in open(self.err_path).read():
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"ingest: tcpwhy trace did not start: {open(self.err_path).read()}")
            time.sleep(0.1)
        time.sleep(0.5)
        Trace.running.append(self)

    running = []  # killed on the way out whatever happens: nothing stays attached

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def rss_kib(self):
        return rss_kib(self.proc.pid)

    def bpf_map_bytes(self):
        """Sum of the `memlock` of every BPF map the process holds (the kernel's own accounting)."""
        total, count = 0, 0
        fdinfo = f"/proc/{self.proc.pid}/fdinfo"
        for fd in os.listdir(fdinfo):
            try:
                text = open(os.path.join(fdinfo, fd)).read()
            except OSError:
                continue
            if "map_type:" in text:
                count += 1
                total += int(re.search(r"memlock:\s+(\d+)", text).group(1))
        return total, count

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=60)
        err = open(self.err_path).read()
        num = lambda pattern: int(re.search(pattern, err).group(1))  # noqa: E731
        return dict(received=num(r"tcpwhy: (\d+) events"), dropped=num(r"dropped (\d+) events"),
                    submitted=num(r"submitted (\d+) events"), wakeups=num(r"woken by the kernel (\d+) times"),
                    # the records that came through the ring (not the start's sockets, not the tallies)
                    from_kernel=num(r"submitted \d+ events; (\d+) received"))


def start_nginx(scratch, port):
    with open(os.path.join(scratch, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(prefix=scratch, port=port))
    nginx = subprocess.Popen(["nginx", "-p", scratch, "-c", os.path.join(scratch, "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    if nginx.poll() is not None:
        raise SystemExit("ingest: nginx did not start")
    return nginx


def rate(args, scratch):
    print(f"\nrate: wrk -c{args.wrk_connections} Connection: close for {args.seconds} s, tcpwhy trace --json > /dev/null")
    trace = Trace(args.build, scratch)
    rps, requests, errors = run_wrk(args.port, args.seconds, args.wrk_connections, False)
    time.sleep(0.5)
    counts = trace.stop()
    print(f"  {rps:.0f} req/s; {counts['received'] / args.seconds:.0f} events/s received, "
          f"{counts['submitted']} submitted, {counts['received']} received, {counts['dropped']} dropped; "
          f"{counts['received'] / max(requests, 1):.2f} events per request")


class HeldConnections:
    """n loopback connections held open by worker processes (this container may not raise
    RLIMIT_NOFILE past 20000: no CAP_SYS_RESOURCE), each with its own listener."""

    PER_WORKER = 9000  # 18000 descriptors

    def __init__(self, n, base_port):
        self.workers = []
        for i in range((n + self.PER_WORKER - 1) // self.PER_WORKER):
            count = min(self.PER_WORKER, n - i * self.PER_WORKER)
            ready_r, ready_w = os.pipe()
            go_r, go_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                os.close(go_w)
                self._worker(count, base_port + i, ready_w, go_r)
            os.close(ready_w)
            os.close(go_r)
            self.workers.append((pid, ready_r, go_w))
        for _, ready_r, _ in self.workers:
            if os.read(ready_r, 1) != b"1":
                raise SystemExit("ingest: a worker could not open its connections")

    @staticmethod
    def _worker(count, port, ready_w, go_r):
        status = 1
        try:
            ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("127.0.0.1", port))
            ls.listen(4096)
            pairs = []
            for _ in range(count):
                c = socket.create_connection(ls.getsockname())
                s, _ = ls.accept()
                pairs.append((c, s))
            os.write(ready_w, b"1")
            os.read(go_r, 1)
            linger0 = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # RST: no TIME_WAIT left behind
            for c, s in pairs:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
                c.close()
                s.close()
            ls.close()
            status = 0
        except Exception as e:  # reported through the ready pipe: the parent sees no "1"
            print(f"ingest: worker on port {port}: {e}", file=sys.stderr)
        finally:
            os._exit(status)

    def close(self):
        for _, _, go_w in self.workers:
            os.write(go_w, b"1")
        for pid, ready_r, go_w in self.workers:
            os.waitpid(pid, 0)
            os.close(ready_r)
            os.close(go_w)


def settle():
    time.sleep(3)  # sockets and their storage are freed after an RCU grace period


def hold(args, scratch):
    n = args.connections
    print(f"\nhold: {n} loopback connections ({2 * n} sockets, both traced), open together")
    deltas = {"without": [], "with": []}
    storage = {"without": [], "with": []}
    rss = None
    for which in ("without", "with", "without"):
        trace = Trace(args.build, scratch) if which == "with" else None
        settle()
        slab0 = meminfo_kib("SUnreclaim")
        accounted0 = accounted_slab_bytes()
        rss0 = trace.rss_kib() if trace else 0
        maps0 = trace.bpf_map_bytes() if trace else None
        t0 = time.time()
        held = HeldConnections(n, args.hold_port)
        opened_s = time.time() - t0
        time.sleep(2)  # let tcpwhy take in the events
        slab1 = meminfo_kib("SUnreclaim")
        storage[which].append(accounted_slab_bytes() - accounted0)
        if trace:
            rss = (rss0, trace.rss_kib())
            maps = (maps0, trace.bpf_map_bytes())
        deltas[which].append(slab1 - slab0)
        held.close()
        counts = trace.stop() if trace else None
        print(f"  {which:7} tcpwhy: unreclaimable slab +{(slab1 - slab0) / 1024:.1f} MiB "
              f"({(slab1 - slab0) * 1024 / (2 * n):.0f} B per socket), kmalloc-cg-* "
              f"+{storage[which][-1] / 2 ** 20:.1f} MiB ({storage[which][-1] / (2 * n):.0f} B per socket); "
              f"opened in {opened_s:.1f} s"
              + (f"; tcpwhy RSS {rss[0] / 1024:.1f} -> {rss[1] / 1024:.1f} MiB, {counts['dropped']} dropped"
                 if trace else ""))
    without = sum(deltas["without"]) / len(deltas["without"])
    kernel_per_socket = (deltas["with"][0] - without) * 1024 / (2 * n)
    user_per_conn = (rss[1] - rss[0]) * 1024 / (2 * n)
    storage_without = sum(storage["without"]) / len(storage["without"])
    storage_per_socket = (storage["with"][0] - storage_without) / (2 * n)
    others = [line for line in subprocess.run(["pgrep", "-a", "tcpwhy"], capture_output=True, text=True).stdout.splitlines()]
    print(f"  kernel: {storage_per_socket:.0f} B per socket with tcpwhy attached (kmalloc-cg-* objects, "
          f"with - mean of without); {kernel_per_socket:.0f} B from SUnreclaim (pages: coarser)")
    (before, nmaps), (after, _) = maps
    print(f"  tcpwhy's BPF maps ({nmaps}, kernel memlock accounting): {before / 2 ** 20:.2f} MiB before, "
          f"{after / 2 ** 20:.2f} MiB with {2 * n} sockets open: {(after - before) / (2 * n):.0f} B per socket")
    if others:
        print(f"  note: other tracers were attached meanwhile ({len(others)}: {'; '.join(others)}): "
              f"whatever they keep per socket is in both columns")
    print(f"  tcpwhy: {user_per_conn:.0f} B per live connection (RSS growth / {2 * n} connections in the correlator)")


def flood_once(args, scratch, label, extra):
    secs = args.flood_seconds
    print(f"\nflood{label}: wrk -c{args.wrk_connections} Connection: close for {secs} s, "
          f"tcpwhy trace --json {' '.join(extra)}> /dev/null")
    trace = Trace(args.build, scratch, extra=extra)
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.wait(5):
            samples.append(trace.rss_kib())

    sampler = threading.Thread(target=sample)
    sampler.start()
    rps, requests, errors = run_wrk(args.port, secs, args.wrk_connections, False)
    stop.set()
    sampler.join()
    time.sleep(0.5)
    alive = trace.proc.poll() is None
    counts = trace.stop()
    print(f"  {rps:.0f} req/s ({requests} requests{', errors ' + errors if errors else ''}); tcpwhy alive to the end: "
          f"{alive}; RSS every 5 s (MiB): {' '.join(f'{s / 1024:.1f}' for s in samples)}")
    print(f"  kernel submitted {counts['submitted']}, dropped {counts['dropped']}; received {counts['received']} "
          f"({counts['received'] / secs:.0f} events/s); received from the ring == submitted: {counts['from_kernel'] == counts['submitted']}")


def flood(args, scratch):
    secs = args.flood_seconds
    # as tcpwhy runs (ordinary connections tallied), then with every state change sent one by one:
    # the most the ring and the pipeline must carry
    flood_once(args, scratch, "", [])
    flood_once(args, scratch, " (every state change)", ["--all-states"])

    print(f"\nflood with drops: --all-states, --ring-mb 1 and a consumer stalled for the first {secs // 3} s of {secs} s")
    reader_r, reader_w = os.pipe()
    trace = Trace(args.build, scratch, extra=["--all-states", "--ring-mb", "1"], stdout=reader_w)
    os.close(reader_w)
    drained = [0]
    kinds = {}

    def drain_later():
        time.sleep(secs // 3)  # tcpwhy blocks writing to the full pipe: the ring fills, the kernel drops
        partial = b""
        while True:
            chunk = os.read(reader_r, 1 << 16)
            if not chunk:
                break
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            # event lines only: --json also writes the names it resolves (`workload` and `server` lines)
            for line in lines:
                kind = re.search(rb'"type":"(\w+)"', line)
                kind = kind.group(1).decode() if kind else "?"
                if kind not in ("workload", "server"):
                    drained[0] += 1
                    kinds[kind] = kinds.get(kind, 0) + 1

    drainer = threading.Thread(target=drain_later)
    drainer.start()
    rps, requests, errors = run_wrk(args.port, secs, args.wrk_connections, False)
    time.sleep(1)
    counts = trace.stop()
    drainer.join()
    os.close(reader_r)
    print(f"  {rps:.0f} req/s; kernel submitted {counts['submitted']}, dropped {counts['dropped']}; received "
          f"{counts['received']}, event lines written {drained[0]}; received from the ring == submitted: "
          f"{counts['from_kernel'] == counts['submitted']}; lines == received: {drained[0] == counts['received']}")
    print(f"  event lines by type: {', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}")


class ContainerCgroup:
    """The memory and CPU accounting of a container's cgroup (v1 memory/cpuacct, or v2)."""

    def __init__(self, pid):
        paths = {}
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    paths[c] = path
        mounts = {}
        with open("/proc/mounts") as f:
            for line in f:
                _, where, fstype, options = line.split()[:4]
                if fstype == "cgroup2":
                    mounts.setdefault("", where)
                elif fstype == "cgroup":
                    for c in options.split(","):
                        mounts.setdefault(c, where)
        if "memory" in paths and "memory" in mounts:  # cgroup v1
            self.memory = mounts["memory"] + paths["memory"]
            self.cpu = mounts.get("cpuacct", mounts.get("cpu")) + paths.get("cpuacct", paths.get("cpu", ""))
            self.v2 = False
        else:
            self.memory = self.cpu = mounts[""] + paths[""]
            self.v2 = True

    def _read(self, name, where=None):
        with open(os.path.join(where or self.memory, name)) as f:
            return f.read()

    def usage(self):
        return int(self._read("memory.current" if self.v2 else "memory.usage_in_bytes"))

    def peak(self):
        try:
            return int(self._read("memory.peak" if self.v2 else "memory.max_usage_in_bytes"))
        except OSError:
            return None

    def stat(self):
        values = dict(line.split() for line in self._read("memory.stat").splitlines())
        if self.v2:
            return {"rss": int(values["anon"]), "cache": int(values["file"]),
                    "kernel": int(values.get("kernel", values.get("slab", 0)))}
        kmem = 0
        try:
            kmem = int(self._read("memory.kmem.usage_in_bytes"))
        except OSError:
            pass
        return {"rss": int(values["rss"]), "cache": int(values["cache"]), "kernel": kmem}

    def limit_events(self):
        """(times usage reached the limit, OOM kills) in this cgroup."""
        if self.v2:
            events = dict(line.split() for line in self._read("memory.events").splitlines())
            return int(events.get("max", 0)), int(events.get("oom_kill", 0))
        control = dict(line.split() for line in self._read("memory.oom_control").splitlines())
        return int(self._read("memory.failcnt")), int(control.get("oom_kill", 0))

    def cpu_seconds(self):
        if self.v2:
            usage = dict(line.split() for line in self._read("cpu.stat", self.cpu).splitlines())
            return int(usage["usage_usec"]) / 1e6
        return int(self._read("cpuacct.usage", self.cpu)) / 1e9


def daemon(args, scratch):
    """The DaemonSet's container under the flood: what its resources must allow."""
    if not args.image:
        raise SystemExit("ingest: --only daemon needs --image (build it with scripts/build-image.sh)")
    sys.path.insert(0, os.path.join(REPO, "tests", "support"))
    import deploy_manifest  # noqa: E402

    manifest = deploy_manifest.load(os.path.join(REPO, "deploy"))
    options = deploy_manifest.podman_run_args(manifest, os.path.join(scratch, "volumes"))
    name = f"tcpwhy-bench-{os.getpid()}"
    port_arg = [a for a in manifest.args if a.startswith("--metrics-addr")]
    metrics_port = int(re.split("[:=]", port_arg[0])[-1]) if port_arg else 9090
    secs = args.flood_seconds
    print(f"\ndaemon: {args.image} under podman as deploy/ runs it ({' '.join(manifest.args)}); idle 20 s, then "
          f"wrk -c{args.wrk_connections} Connection: close for {secs} s")
    subprocess.run(["podman", "run", "-d", "--name", name, *options, args.image, *manifest.args], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        pid = int(subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", name], capture_output=True,
                                 text=True, check=True).stdout)
        cgroup = ContainerCgroup(pid)

        def events():
            out = subprocess.run(["nsenter", "-t", str(pid), "-n", "curl", "-sf", "--max-time", "10",
                                  f"http://127.0.0.1:{metrics_port}/metrics"], capture_output=True, text=True).stdout
            return sum(float(line.rsplit(" ", 1)[1]) for line in out.splitlines()
                       if line.startswith("tcpwhy_events_total{")), out

        deadline = time.time() + 60
        while not events()[1]:
            if time.time() > deadline:
                raise SystemExit("ingest: the daemon's /metrics did not answer: "
                                 + subprocess.run(["podman", "logs", name], capture_output=True, text=True).stderr)
            time.sleep(0.2)
        mib = lambda b: f"{b / 2 ** 20:.1f}"  # noqa: E731
        time.sleep(20)
        cpu0, t0, ev0 = cgroup.cpu_seconds(), time.time(), events()[0]
        time.sleep(10)
        idle_cores = (cgroup.cpu_seconds() - cpu0) / (time.time() - t0)
        st = cgroup.stat()
        print(f"  idle (10 s): {idle_cores:.3f} cores, {(events()[0] - ev0) / 10:.0f} events/s; memory cgroup "
              f"{mib(cgroup.usage())} MiB (rss {mib(st['rss'])}, page cache {mib(st['cache'])}, kernel {mib(st['kernel'])}), "
              f"daemon VmRSS {mib(rss_kib(pid) * 1024)} MiB")
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.wait(5):
                s = cgroup.stat()
                samples.append((cgroup.usage(), s["rss"], s["cache"], s["kernel"], rss_kib(pid) * 1024))

        sampler = threading.Thread(target=sample)
        sampler.start()
        cpu0, t0, ev0 = cgroup.cpu_seconds(), time.time(), events()[0]
        rps, requests, errors = run_wrk(args.port, secs, args.wrk_connections, False)
        stop.set()
        sampler.join()
        cores = (cgroup.cpu_seconds() - cpu0) / (time.time() - t0)
        rate_ev = (events()[0] - ev0) / (time.time() - t0)
        _, text = events()
        dropped = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("tcpwhy_events_dropped_total{"))
        print(f"  flood: {rps:.0f} req/s ({requests} requests{', errors ' + errors if errors else ''}); "
              f"{rate_ev:.0f} events/s; {cores:.3f} cores ({cores / max(rate_ev, 1) * 1e6:.1f} us of CPU per event); "
              f"events dropped {dropped:.0f}")
        print("  every 5 s, MiB: cgroup usage / rss / page cache / kernel / daemon VmRSS")
        for u, r, c, k, v in samples:
            print(f"    {mib(u):>7} {mib(r):>7} {mib(c):>7} {mib(k):>7} {mib(v):>7}")
        peak = cgroup.peak()
        with open(f"/proc/{pid}/status") as f:
            hwm = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024
        print(f"  peak: memory cgroup {mib(peak) if peak else '?'} MiB (max of samples {mib(max(s[0] for s in samples))}), "
              f"rss {mib(max(s[1] for s in samples))} MiB, daemon VmHWM {mib(hwm)} MiB")

        # The correlator at its cap: --connections held open at once (past 262 144 it evicts).
        n = args.connections
        held = HeldConnections(n, args.hold_port)
        time.sleep(5)
        st = cgroup.stat()
        usage = cgroup.usage()
        held.close()
        time.sleep(2)
        with open(f"/proc/{pid}/status") as f:
            hwm = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024
        _, text = events()
        dropped = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("tcpwhy_events_dropped_total{"))
        print(f"  hold: {n} loopback connections open at once ({2 * n} sockets): memory cgroup {mib(usage)} MiB "
              f"(rss {mib(st['rss'])}, page cache {mib(st['cache'])}, kernel {mib(st['kernel'])}); daemon VmHWM "
              f"{mib(hwm)} MiB; memory cgroup peak over the whole run {mib(cgroup.peak() or 0)} MiB; events dropped {dropped:.0f}")
        at_limit, oom_kills = cgroup.limit_events()
        print(f"  memory limit {manifest.memory_limit or 'none'}: reached {at_limit} times (page cache reclaimed), "
              f"OOM kills {oom_kills}; container still running: "
              f"{subprocess.run(['podman', 'inspect', '--format', '{{.State.Running}}', name], capture_output=True, text=True).stdout.strip()}")
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "5", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=100000, help="connections held open (default 100000)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of the rate run (default 10)")
    parser.add_argument("--flood-seconds", type=int, default=60)
    parser.add_argument("--wrk-connections", type=int, default=64)
    parser.add_argument("--port", type=int, default=18081)
    parser.add_argument("--hold-port", type=int, default=19000, help="first of the listener ports for hold")
    parser.add_argument("--only", default="rate,hold,flood", help="comma-separated parts to run")
    parser.add_argument("--build", default=os.path.join(REPO, "build"))
    parser.add_argument("--image", help="daemon: the image to run (e.g. localhost/tcpwhy:0.1.0)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("ingest: run as root (it loads BPF programs)")
    scratch = tempfile.mkdtemp(prefix="tcpwhy-ingest-")
    nginx = start_nginx(scratch, args.port)
    try:
        print(f"ingest: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
        parts = args.only.split(",")
        if "rate" in parts:
            rate(args, scratch)
        if "hold" in parts:
            hold(args, scratch)
        if "flood" in parts:
            flood(args, scratch)
        if "daemon" in parts:
            daemon(args, scratch)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    finally:
        for trace in Trace.running:
            trace.kill()
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(timeout=10)
        subprocess.run(["rm", "-rf", scratch])


if __name__ == "__main__":
    main()
