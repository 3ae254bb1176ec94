#!/usr/bin/env python3
"""The node image, built here and run the way the DaemonSet runs it (issue 18).

Builds the image with scripts/build-image.sh (buildah, no Docker daemon, no registry), checks
what it is (entrypoint, architecture, no shell, tar for `kubectl cp`), then runs it under
podman with the security context and volumes read from deploy/ at test time
(tests/support/deploy_manifest.py: capabilities, read-only root, hostPID, seccomp, the same
mounts), so the test follows the manifest when the manifest changes:

  1. `doctor` in the container: BTF, the cgroup v2 root through the cgroup mount, every hook
     attached with only the manifest's capabilities;
  2. the daemon with the manifest's own arguments: the manifest's probes answer (measured:
     time to the startup probe's first 200), then the keep-alive race in test namespaces on
     the host (tests/support/race.py) is caught from inside the container: the race counter on
     /metrics, `tcpwhy top --once --connect` and `tcpwhy export` through `podman exec` (as
     `kubectl exec` would), the exported trace's report, `tar` streaming it out (as
     `kubectl cp` does), the archive on its hostPath, the read-only root refusing a write;
  3. SIGTERM (`podman stop`): exit 0 and "daemon stopped".

usage: image_test.py TCPWHY_BINARY     (root; exit 77 = skipped, with the reason)
Everything it creates (image, containers, namespaces, processes) is removed at the end.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "support"))
import deploy_manifest  # noqa: E402
import race  # noqa: E402

failures = []


def check(condition, message):
    print(f"{'ok  ' if condition else 'FAIL'} {message}")
    if not condition:
        failures.append(message)
    return condition


def skip(why):
    print(f"SKIPPED: {why}")
    sys.exit(77)


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def metric(text, name, labels=()):
    """Sum of the samples of `name` whose label text holds every one of `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$', line)
        if m and m.group(1) == name and all(label in (m.group(2) or "") for label in labels):
            total += float(m.group(3))
    return total


class Container:
    """A podman container of the image, removed on exit."""

    def __init__(self, name, options, image, args):
        self.name = name
        out = run(["podman", "run", "-d", "--name", name, *options, image, *args])
        if out.returncode != 0:
            raise RuntimeError(f"podman run: {out.stderr.strip()}")
        self.pid = int(run(["podman", "inspect", "--format", "{{.State.Pid}}", name]).stdout.strip())

    def logs(self):
        out = run(["podman", "logs", self.name])
        return out.stdout + out.stderr

    def exec(self, *cmd, timeout=60):
        return run(["podman", "exec", self.name, *cmd], timeout=timeout)

    def http_get(self, port, path):
        """GET from inside the pod's network namespace, as the kubelet's probes reach the pod."""
        out = run(["nsenter", "-t", str(self.pid), "-n", "curl", "-s", "-o", "-", "-w", "\n%{http_code}",
                   "--max-time", "10", f"http://127.0.0.1:{port}{path}"], timeout=30)
        body, _, code = out.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), body

    def remove(self):
        run(["podman", "rm", "-f", "-t", "0", self.name], timeout=60)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: image_test.py TCPWHY_BINARY")
    binary = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:
        skip("the image test needs root (buildah and podman write the system's container storage; BPF)")
    for tool in ("buildah", "podman", "runc", "node", "curl", "nsenter"):
        if not shutil.which(tool):
            skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    if not os.access(binary, os.X_OK):
        skip(f"no {binary}: build first")

    manifest = deploy_manifest.load(os.path.join(REPO, "deploy"))
    tag = f"localhost/tcpwhy:ctest-{os.getpid()}"
    scratch = tempfile.mkdtemp(prefix="tcpwhy-image-")
    containers = []
    started = time.time()
    try:
        # ---- the image ----
        t0 = time.time()
        out = run(["bash", os.path.join(REPO, "scripts", "build-image.sh"), "--binary", binary, "--tag", tag],
                  timeout=600)
        print(out.stdout + out.stderr)
        if not check(out.returncode == 0, f"scripts/build-image.sh builds {tag} ({time.time() - t0:.1f} s)"):
            return
        info = json.loads(run(["podman", "image", "inspect", tag]).stdout)[0]
        size = info["Size"]
        print(f"image size: {size / 2 ** 20:.1f} MiB uncompressed")
        check(size < 80 * 2 ** 20, f"the image is small: {size / 2 ** 20:.1f} MiB (< 80 MiB)")
        config = info["Config"]
        check(config.get("Entrypoint") == ["/usr/local/bin/tcpwhy"], f"entrypoint tcpwhy: {config.get('Entrypoint')}")
        check(config.get("Cmd") == ["daemon"], f"default command `daemon`: {config.get('Cmd')}")
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        check(info.get("Architecture") == arch, f"architecture {info.get('Architecture')} (this machine: {arch})")
        plain = deploy_manifest.podman_base_args() + ["--network", "none"]
        version = run(["podman", "run", "--rm", *plain, tag, "--version"])
        check(version.returncode == 0 and version.stdout.startswith("tcpwhy "), f"runs: {version.stdout.strip()}")
        shell = run(["podman", "run", "--rm", *plain, "--entrypoint", "/bin/sh", tag, "-c", "true"])
        check(shell.returncode != 0, "no shell in the image")
        tar = run(["podman", "run", "--rm", *plain, "--entrypoint", "/usr/bin/tar", tag, "--version"])
        check(tar.returncode == 0, "tar is there for `kubectl cp`")
        packages = run(["podman", "run", "--rm", *plain, "--entrypoint", "/usr/bin/tar", tag, "-C",
                        "/var/lib/dpkg/status.d", "-cf", "-", "."])
        check("Package: libbpf1" in packages.stdout, "the installed packages are recorded for scanners (status.d)")

        # ---- 1. doctor, with the manifest's security context ----
        options = deploy_manifest.podman_run_args(manifest, scratch)
        print("podman run " + " ".join(options))
        doctor = run(["podman", "run", "--rm", "--name", f"tcpwhy-doctor-{os.getpid()}", *options, tag, "doctor"])
        print(doctor.stdout + doctor.stderr)
        check(doctor.returncode == 0, f"doctor exits 0 in the container (exit {doctor.returncode})")
        check("BTF              yes" in doctor.stdout, "doctor: BTF through the /sys/kernel/btf mount")
        check(re.search(r"cgroup v2\s+/sys/fs/cgroup", doctor.stdout) is not None,
              "doctor: the node's cgroup v2 root through the /sys/fs/cgroup mount")
        check("CAP_BPF" in doctor.stdout, "doctor: CAP_BPF held")
        check("result: OK: every hook attached" in doctor.stdout, "doctor: every hook attached")

        # ---- 2. the daemon, as the DaemonSet runs it ----
        if not check(manifest.args[:1] == ["daemon"], f"the manifest runs the daemon: {manifest.args}"):
            return
        port_arg = [a for a in manifest.args if a.startswith("--metrics-addr")]
        metrics_port = int(re.split("[:=]", port_arg[0])[-1]) if port_arg else 9090
        socket_arg = [a.split("=", 1)[1] for a in manifest.args if a.startswith("--socket=")]
        control = socket_arg[0] if socket_arg else "/run/tcpwhy/tcpwhy.sock"
        t0 = time.time()
        daemon = Container(f"tcpwhy-daemon-{os.getpid()}", options, tag, manifest.args)
        containers.append(daemon)
        probe = manifest.probes.get("startupProbe") or manifest.probes.get("readinessProbe")
        check(probe is not None, "the manifest has a startup (or readiness) probe")
        probe = probe or deploy_manifest.Probe("/healthz", metrics_port)
        code = 0
        while time.time() - t0 < 90:
            code, body = daemon.http_get(probe.port, probe.path)
            if code == 200:
                break
            if run(["podman", "inspect", "--format", "{{.State.Running}}", daemon.name]).stdout.strip() != "true":
                break
            time.sleep(0.2)
        startup_s = time.time() - t0
        print(daemon.logs())
        if not check(code == 200, f"startup probe {probe.path}:{probe.port} answers 200 after {startup_s:.1f} s"):
            return
        for name, p in sorted(manifest.probes.items()):
            code, body = daemon.http_get(p.port, p.path)
            check(code == 200 and body.startswith("ok"), f"{name} {p.path}:{p.port}: {code} {body.strip()[:40]}")
        status = open(f"/proc/{daemon.pid}/status").read()
        cap_eff = re.search(r"CapEff:\s+(\S+)", status).group(1)
        print(f"daemon (host pid {daemon.pid}) CapEff {cap_eff}")

        port = 20000 + os.getpid() % 20000
        port_label = f'port="{port}"'
        with race.LbAndPod() as net, net.backend(port, keep_alive_ms=1500, log=os.path.join(scratch, "backend.log")):
            pod_ns = net.inode(net.pod)
            result = net.race(port, connections=3)
            check(result == {"connections": 3, "eof": 3, "reset": 3},
                  f"the race: the backend closed 3 idle connections and reset the next request on each: {result}")
            metrics = ""
            for _ in range(60):
                code, metrics = daemon.http_get(metrics_port, "/metrics")
                if metric(metrics, "tcpwhy_keepalive_races_total", [port_label]) >= 3:
                    break
                time.sleep(0.5)
            races = metric(metrics, "tcpwhy_keepalive_races_total", [port_label, 'lb_range="130.211.0.0/22"'])
            check(races == 3, f"/metrics in the container: tcpwhy_keepalive_races_total{{{port_label}}} == 3 ({races})")
            idle = metric(metrics, "tcpwhy_idle_close_seconds_count", [port_label])
            check(idle >= 3, f"/metrics: the backend's idle closes counted ({idle})")

            top = daemon.exec("tcpwhy", "top", "--once", "--connect", control)
            print(top.stdout[-1500:] + top.stderr)
            check(top.returncode == 0 and "idle_close_race" in top.stdout and str(pod_ns) in top.stdout,
                  f"`podman exec ... tcpwhy top --once --connect {control}` shows the pod's race")

            export = daemon.exec("tcpwhy", "export", "--since", "5m", "-o", "/tmp/race.jsonl", "--socket", control)
            check(export.returncode == 0, f"tcpwhy export in the container: {export.stderr.strip()[-200:]}")
            copied = os.path.join(scratch, "copied")
            os.makedirs(copied)
            with open(os.path.join(copied, "race.tar"), "wb") as f:  # what `kubectl cp` runs in the container
                streamed = subprocess.run(["podman", "exec", daemon.name, "tar", "-cf", "-", "-C", "/tmp",
                                           "race.jsonl"], stdout=f, timeout=60)
            subprocess.run(["tar", "-xf", os.path.join(copied, "race.tar"), "-C", copied])
            trace = os.path.join(copied, "race.jsonl")
            check(streamed.returncode == 0 and os.path.getsize(trace) > 0, "the trace streams out with the image's tar")
            report = run([binary, "report", trace])
            check(report.returncode == 0 and "idle_close_race" in report.stdout and str(port) in report.stdout,
                  "`tcpwhy report` on the exported trace names the race on the test's port")
            # (to LB peers: waiting for the backend to listen may have been refused with a reset too)
            resets = [line for line in open(trace) if '"type":"reset_sent"' in line and '"lb":true' in line and
                      f'"lport":{port}' in line and f'"netns":{pod_ns}' in line]
            if not check(len(resets) == 3, f"the exported trace has the 3 resets the pod sent the LB ({len(resets)})"):
                print("".join(resets))

        archive_mount = next((i for i, m in enumerate(manifest.mounts) if not m.read_only), None)
        if archive_mount is not None:
            host_dir = os.path.join(scratch, f"hostpath-{archive_mount}")
            segments = [os.path.join(d, f) for d, _, fs in os.walk(host_dir) for f in fs if f.endswith(".jsonl.gz")]
            check(len(segments) >= 1, f"the archive is on the {manifest.mounts[archive_mount].host_path} hostPath "
                                      f"({len(segments)} segments)")
        readonly = daemon.exec("tcpwhy", "export", "--since", "1m", "-o", "/usr/race.jsonl", "--socket", control)
        check(readonly.returncode != 0 and "Read-only file system" in readonly.stderr,
              f"the root filesystem is read-only: {readonly.stderr.strip()[-120:]}")

        # ---- 3. SIGTERM ----
        stop = run(["podman", "stop", "-t", "30", daemon.name], timeout=60)
        exit_code = run(["podman", "inspect", "--format", "{{.State.ExitCode}}", daemon.name]).stdout.strip()
        logs = daemon.logs()
        check(stop.returncode == 0 and exit_code == "0", f"podman stop (SIGTERM): exit {exit_code}")
        check("daemon stopped" in logs, "the daemon said it stopped")
        print(f"image test: startup to the first 200 on the probe {startup_s:.1f} s; image {size / 2 ** 20:.1f} MiB")
    finally:
        for c in containers:
            c.remove()
        run(["podman", "rmi", "-f", tag], timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"image test: {len(failures)} failed checks in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
    sys.exit(1 if failures else 0)
