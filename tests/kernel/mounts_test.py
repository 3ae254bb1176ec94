#!/usr/bin/env python3
"""The DaemonSet mounts what the daemon reads from the node, and nothing else.

Runs `tcpwhy daemon` as the pod runs it (the DaemonSet's capabilities and args, read from
deploy/ by tests/support/deploy_manifest.py) under strace, makes it name a new network
namespace, stops it, and sorts every path it opened, listed or looked at:

- under a hostPath mount of the manifest: that mount is used;
- from the container itself (its image, /dev, its sysfs, /proc through hostPID, its
  emptyDirs, the test's own archive and socket): fine;
- anything else from the node: a path the pod would not have. A failure.

And every hostPath mount must have been used. Needs root and strace; exit 77 (skipped) otherwise.

usage: mounts_test.py TCPWHY_BINARY SOURCE_DIR
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

binary, source = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests", "support"))
import deploy_manifest  # noqa: E402

if os.geteuid() != 0:
    print("SKIPPED: needs root (loads the BPF programs)")
    sys.exit(77)
def tracees(strace_pid):
    """The processes strace started (setpriv execs the daemon in place): strace's children."""
    try:
        with open(f"/proc/{strace_pid}/task/{strace_pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


for tool in ("strace", "setpriv", "ip"):
    if not shutil.which(tool):
        print(f"SKIPPED: {tool} is not installed (scripts/setup.sh installs it)")
        sys.exit(77)

manifest = deploy_manifest.load(os.path.join(source, "deploy"))
host_mounts = {m.mount_path for m in manifest.mounts}
# What a container has of its own: its image's files, a /dev, a read-only sysfs of the node's
# kernel (namespaced parts aside), /proc (the node's, with hostPID), and its emptyDirs.
image_prefixes = ("/etc", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/dev", "/tmp", "/var/tmp")
sysfs_needing_mounts = ("/sys/fs/cgroup", "/sys/kernel/btf", "/sys/kernel/tracing", "/sys/kernel/debug",
                        "/sys/fs/bpf")


def under(path, prefix):
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


work = tempfile.mkdtemp(prefix="tcpwhy-mounts-")
netns = f"twm{os.getpid() % 100000}"
failures = []
try:
    archive, sock = os.path.join(work, "archive"), os.path.join(work, "tcpwhy.sock")
    args = [a for a in manifest.args[1:]
            if not a.startswith(("--archive=", "--socket=", "--metrics-addr=", "--archive-min-free="))]
    trace_file, log_file = os.path.join(work, "strace.out"), os.path.join(work, "daemon.err")
    setpriv = ["setpriv", "--bounding-set", ",".join(["-all"] + ["+" + c for c in manifest.capabilities]),
               "--inh-caps", "-all", "--ambient-caps", "-all"]
    command = ["strace", "-f", "-qq", "-s", "512", "-o", trace_file,
               "-e", "trace=open,openat,openat2,stat,lstat,newfstatat,statx,access,faccessat,faccessat2,"
                     "readlink,readlinkat,statfs,execve,inotify_add_watch,mkdir,mkdirat,unlink,unlinkat,rename,"
                     "renameat,renameat2,bind,connect",
               *setpriv, binary, "daemon", *args, "--archive", archive, "--socket", sock,
               "--metrics-addr", "127.0.0.1:0", "--archive-min-free", "0"]
    with open(log_file, "w") as log:
        daemon = subprocess.Popen(command, stdout=log, stderr=log)
    deadline = time.time() + 120
    while time.time() < deadline and "metrics http://" not in open(log_file).read():
        if daemon.poll() is not None:
            break
        time.sleep(0.1)
    started = "metrics http://" in open(log_file).read()
    used, from_node = set(), {}
    if started:
        # A namespace the daemon has not seen, with a connection in it: a naming scan runs.
        subprocess.run(["ip", "netns", "add", netns], check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", netns, "python3", "-c",
                        "import socket; l = socket.create_server(('127.0.0.1', 0)); "
                        "c = socket.create_connection(l.getsockname()); s, _ = l.accept(); s.close(); c.close()"],
                       check=True)
        time.sleep(2.5)
    # SIGTERM goes to the daemon itself: strace, signalled, detaches and leaves its tracee
    # running (a daemon per test run stayed attached to the node until someone noticed).
    traced = tracees(daemon.pid)
    for pid in traced or [daemon.pid]:
        os.kill(pid, signal.SIGTERM)
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        for pid in traced:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        daemon.kill()
        daemon.wait()
    left = [pid for pid in traced if os.path.exists(f"/proc/{pid}") and
            open(f"/proc/{pid}/stat").read().split()[2] != "Z"]
    if left:
        print(f"FAIL: the daemon (pid {', '.join(map(str, left))}) still runs after strace ended")
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        sys.exit(1)
    if not started:
        print(open(log_file).read())
        print("FAIL: the daemon did not start")
        sys.exit(1)

    # The archive is pointed into the test's directory: its mount counts as used when the
    # manifest's --archive is on it.
    for a in manifest.args:
        if a.startswith("--archive="):
            used.update(m for m in host_mounts if under(a.split("=", 1)[1], m))
    path_re = re.compile(r'^\d+\s+(\w+)\((?:AT_FDCWD|-?\d+<[^>]*>|-?\d+)?,?\s*"([^"]*)"')
    for line in open(trace_file):
        m = path_re.match(line)
        if not m:
            continue
        call, path = m.groups()
        if call in ("bind", "connect") or not path.startswith("/"):
            continue  # socket addresses; relative paths are under a directory already opened
        path = os.path.normpath(path)
        if under(path, work) or under(path, os.path.dirname(binary)) or path == binary:
            continue  # the test's archive and socket; the binary (the image's, in the pod)
        mount = next((m for m in host_mounts if under(path, m)), None)
        if mount:
            used.add(mount)
            continue
        if under(path, "/proc"):
            continue  # hostPID
        if under(path, "/sys"):
            if any(under(path, p) for p in sysfs_needing_mounts):
                from_node.setdefault(path, call)
            continue
        if under(path, "/run") or under(path, "/var"):
            from_node.setdefault(path, call)  # the node's /run and /var are not the container's
            continue
        if any(under(path, p) for p in image_prefixes):
            continue
        from_node.setdefault(path, call)

    for path, call in sorted(from_node.items()):
        failures.append(f"reads {path} ({call}) from the node, and the DaemonSet does not mount it")
    for mount in sorted(host_mounts - used):
        failures.append(f"the DaemonSet mounts {mount}, and the daemon never reads it")
    print(f"mounts_test: {len(used)} of {len(host_mounts)} hostPath mounts used: {sorted(used)}")
finally:
    subprocess.run(["ip", "netns", "del", netns], stderr=subprocess.DEVNULL)
    shutil.rmtree(work, ignore_errors=True)

for f in failures:
    print(f"FAIL: {f}")
print(f"mounts_test: {'FAILED' if failures else 'OK'} ({len(failures)} problems)")
sys.exit(1 if failures else 0)
