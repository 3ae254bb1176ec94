#!/usr/bin/env python3
"""The keep-alive idle-close race, for tests written in Python: network namespaces "lb"
(130.211.0.143/22 and 35.191.0.10/16, Google's LB source ranges) and "pod" (10.56.5.6/16)
joined by a veth pair, routes only between them (the same layout as tests/kernel/harness.h);
the Node.js backend of the demo (demo/backend.js) in "pod" with a short keep-alive timeout;
and a client in "lb" that, like the load balancer, sends its next request on a connection the
backend has just closed for idleness, so the backend's kernel answers it with a RST.

    with LbAndPod() as net:
        with net.backend(port, keep_alive_ms=1500):
            result = net.race(port, connections=3)   # {"connections", "eof", "reset"}

Needs root, iproute2 and node. Everything it creates (namespaces, the veth pair, the backend
process) is removed when the `with` blocks end, however they end."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LB_ADDR = "130.211.0.143"
POD_ADDR = "10.56.5.6"

# Runs in the lb namespace: N keep-alive connections, one request each; waits for the
# backend's idle close (EOF); then sends the next request on every one of them, as an LB that
# still holds them in its pool does, and counts the connections the backend reset.
# Prints {"connections", "eof", "reset"} as JSON.
_CLIENT = r"""
import json, socket, sys, time
addr, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
request = b"GET / HTTP/1.1\r\nHost: pod\r\nConnection: keep-alive\r\n\r\n"
conns = []
for _ in range(n):
    s = socket.create_connection((addr, port), timeout=timeout)
    s.sendall(request)
    s.recv(4096)
    conns.append(s)
eof = reset = 0
for s in conns:
    try:
        if s.recv(4096) == b"":  # the backend closed it for idleness
            eof += 1
    except OSError:
        pass
for s in conns:
    try:
        s.sendall(request)
    except OSError:
        pass
# The RST moves the socket from CLOSE_WAIT (the backend's FIN seen) to CLOSE; recv() goes on
# returning b"" either way, so the state (tcpi_state, the first byte of TCP_INFO) tells.
TCP_CLOSE = 7
deadline = time.time() + timeout
for s in conns:
    while time.time() < deadline:
        if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_CLOSE:
            reset += 1
            break
        time.sleep(0.01)
    s.close()
print(json.dumps({"connections": n, "eof": eof, "reset": reset}))
"""


def _run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class LbAndPod:
    def __init__(self, tag=None):
        tag = tag or str(os.getpid() % 100000)
        self.lb, self.pod = f"tw{tag}-lb", f"tw{tag}-pod"
        self._veth = (f"vl{tag}", f"vp{tag}")
        self._backend = None

    def __enter__(self):
        self._delete()
        try:
            for ns in (self.lb, self.pod):
                _run("ip", "netns", "add", ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            vl, vp = self._veth
            _run("ip", "link", "add", vl, "netns", self.lb, "type", "veth", "peer", "name", vp, "netns", self.pod)
            _run("ip", "-n", self.lb, "addr", "add", f"{LB_ADDR}/22", "dev", vl)
            _run("ip", "-n", self.lb, "addr", "add", "35.191.0.10/16", "dev", vl)
            _run("ip", "-n", self.pod, "addr", "add", f"{POD_ADDR}/16", "dev", vp)
            _run("ip", "-n", self.lb, "link", "set", vl, "up")
            _run("ip", "-n", self.pod, "link", "set", vp, "up")
            _run("ip", "-n", self.lb, "route", "add", "10.56.0.0/16", "dev", vl)
            _run("ip", "-n", self.pod, "route", "add", "130.211.0.0/22", "dev", vp)
            _run("ip", "-n", self.pod, "route", "add", "35.191.0.0/16", "dev", vp)
        except BaseException:
            self._delete()
            raise
        return self

    def __exit__(self, *exc):
        self._delete()

    def _delete(self):
        for ns in (self.lb, self.pod):
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def inode(self, ns):
        return os.stat(f"/run/netns/{ns}").st_ino

    def backend(self, port, keep_alive_ms=1500, log=None):
        """demo/backend.js in the pod namespace (a context manager): Node.js closes a keep-alive
        connection idle for keep_alive_ms plus its internal second."""
        return _Backend(self.pod, port, keep_alive_ms, log)

    def race(self, port, connections=3, timeout_s=20):
        out = subprocess.run(["ip", "netns", "exec", self.lb, sys.executable, "-c", _CLIENT, POD_ADDR, str(port),
                              str(connections), str(timeout_s)], capture_output=True, text=True, timeout=timeout_s * 3)
        if out.returncode != 0:
            raise RuntimeError(f"race client failed: {out.stderr.strip()}")
        return json.loads(out.stdout)


class _Backend:
    def __init__(self, ns, port, keep_alive_ms, log):
        self.ns, self.port, self.keep_alive_ms = ns, port, keep_alive_ms
        self._own_dir = None if log else tempfile.mkdtemp(prefix="tcpwhy-backend-")
        self.log = log or os.path.join(self._own_dir, "backend.log")
        self.proc = None

    def __enter__(self):
        env = dict(os.environ, PORT=str(self.port), KEEP_ALIVE_TIMEOUT_MS=str(self.keep_alive_ms))
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "node", os.path.join(REPO, "demo", "backend.js")],
                                         env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # Its own word that it listens, not a probe connection: a tracer would see that too.
        deadline = time.time() + 20
        while "listening" not in open(self.log).read():
            if self.proc.poll() is not None or time.time() > deadline:
                self.__exit__()
                raise RuntimeError(f"the backend did not start: {open(self.log).read().strip()}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._own_dir:
            shutil.rmtree(self._own_dir, ignore_errors=True)
