#!/usr/bin/env python3
"""`tcpwhy report` on several large trace segments: progress on a terminal, nothing when piped.

The real binary runs twice on the same gzip segments: once with stderr on a pseudo-terminal
(Python's pty module), once with stderr on a pipe. On the terminal the meter must show bytes read
of the total, which segment of how many, events/s and the time left, and erase itself before the
report ends; on the pipe stderr must not carry a byte of it. The report on stdout must be the
same both times. To see "time left" (shown once a second has passed) without a trace that takes
a second to read, the test stops the process (SIGSTOP) as soon as the first frame is drawn and
lets it go on 1.2 s later: wall time passes, the work does not.
"""
import fcntl
import gzip
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time

SEGMENTS = 3
CONNECTIONS_PER_SEGMENT = 40_000  # 4 events each: 480k events in all


def write_segments(directory):
    header = ('{"v":1,"type":"header","tool":"tcpwhy","hostname":"node-a","kernel":"6.1.0","clock":"CLOCK_MONOTONIC",'
              '"mono_start_ns":1000000000,"wall_start_ns":1795465615888588983}\n')
    paths = []
    ts = 1_000_000_000
    cookie = 1
    for segment in range(SEGMENTS):
        path = os.path.join(directory, f"segment-{segment:010}.jsonl.gz")
        lines = [header]
        for _ in range(CONNECTIONS_PER_SEGMENT):
            tuple_ = (f'"cookie":{cookie},"netns":4026531840,"laddr":"10.56.5.6","lport":8080,'
                      f'"raddr":"130.211.{cookie % 4}.{cookie % 250 + 1}","rport":{20000 + cookie % 40000},"lb":true')
            for old, new in (("LISTEN", "SYN_RECV"), ("SYN_RECV", "ESTABLISHED"), ("ESTABLISHED", "FIN_WAIT1"),
                             ("FIN_WAIT1", "CLOSE")):
                ts += 1000
                lines.append(f'{{"v":1,"ts_ns":{ts},"type":"state",{tuple_},"old_state":"{old}","new_state":"{new}"}}\n')
            cookie += 1
        with gzip.open(path, "wt", compresslevel=1) as out:
            out.write("".join(lines))
        paths.append(path)
    return paths


def run_on_terminal(command, env):
    """stderr on a pty, stdout on a pipe. Returns (exit code, what the terminal got, stdout)."""
    leader, follower = pty.openpty()
    # An 80-column terminal, as most are: every frame must fit it.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    screen = b""
    stdout = b""
    stopped = False
    streams = [leader, process.stdout.fileno()]
    while streams:
        ready, _, _ = select.select(streams, [], [], 30)
        if not ready:
            process.kill()
            raise SystemExit("FAIL: tcpwhy report made no progress in 30 s")
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty's last writer is gone
                chunk = b""
            if not chunk:
                streams.remove(fd)
                continue
            if fd == leader:
                screen += chunk
                if not stopped and b"report: " in screen:
                    stopped = True
                    process.send_signal(signal.SIGSTOP)
                    time.sleep(1.2)
                    process.send_signal(signal.SIGCONT)
            else:
                stdout += chunk
    os.close(leader)
    return process.wait(), screen, stdout


def main():
    binary = sys.argv[1]
    failures = []

    def check(condition, what):
        print(("ok   " if condition else "FAIL ") + what)
        if not condition:
            failures.append(what)

    with tempfile.TemporaryDirectory(prefix="tcpwhy-progress-") as directory:
        segments = write_segments(directory)
        total = sum(os.path.getsize(p) for p in segments)
        command = [binary, "report", *segments]
        env = dict(os.environ, TCPWHY_PROGRESS_DELAY_MS="0")

        code, screen, terminal_stdout = run_on_terminal(command, env)
        text = screen.decode("utf-8", "replace")
        frames = [f for f in text.split("\r") if f.strip()]
        print(f"terminal: exit {code}, {len(frames)} frames; the last: {frames[-1] if frames else None!r}")
        check(code == 0, "report exits 0 with its stderr on a terminal")
        check(any(f.startswith("report: ") and " of " in f and "%)" in f for f in frames),
              "a frame shows bytes read of the total")
        # Frames come at most four times a second, so which segments get one depends on speed:
        # the first always does (drawn as it opens), and the numbers only go forward.
        shown = [int(f.split(", file ")[1].split(" of ")[0]) for f in frames if ", file " in f]
        check(shown[:1] == [1] and shown == sorted(shown) and all(f", file {n} of {SEGMENTS}" in " ".join(frames)
                                                                  for n in shown),
              f"frames name the segment being read, of {SEGMENTS}, in order (seen: {shown})")
        check(any("events/s" in f for f in frames), "a frame shows events/s")
        check(any(" left" in f for f in frames), "a frame shows the time left")
        # Every frame fits the line it redraws; the meter erases its line when the work ends,
        # so what follows on the terminal starts on a clean line.
        erase = text.rstrip("\n").rsplit("\r", 2)
        check(len(erase) == 3 and erase[1].strip() == "" and erase[1] != "",
              "the last thing on the terminal erases the meter's line")
        check(all(len(f) <= 79 for f in frames), "every frame fits an 80-column terminal")
        check("\x1b" not in text, "no escape sequences (any terminal, TERM=dumb too)")
        check(str(total) not in text, "sizes are in readable units")

        piped = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=120)
        print(f"piped: exit {piped.returncode}, stderr {piped.stderr[:200]!r}")
        check(piped.returncode == 0, "report exits 0 piped")
        check(b"\r" not in piped.stderr and b"report: " not in piped.stderr,
              "piped: nothing of the meter on stderr")
        check(len(piped.stdout) > 0 and piped.stdout == terminal_stdout,
              "the report on stdout is the same with and without the meter")

    if failures:
        print(f"{len(failures)} checks failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
