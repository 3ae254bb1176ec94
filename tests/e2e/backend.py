#!/usr/bin/env python3
"""A Python HTTP backend (the standard library's http.server) that behaves the ways backends
behind a load balancer go wrong, for tests/e2e/causes.sh:

  GET  /            answers at once ("ok PORT")
  GET  /slow?ms=N   answers after N ms (the LB may give up first)
  GET  /hog         allocates memory until the OOM killer takes the process (in a memory cgroup)
  POST /upload      answers with a large body without reading the request's, then closes: the
                    kernel resets the connection and throws away the response still in flight

  --port N            listen on 0.0.0.0:N
  --backlog N         the listen() backlog (http.server's default is 5)
  --single            one request at a time (no threads): a slow server accepts slowly
  --handle-ms N       every request takes N ms
  --idle-timeout S    close a keep-alive connection idle S seconds (default: 600)
  --http10            one request per connection (HTTP/1.0, http.server's own default)
  --drain-s S         on SIGTERM: stop listening at once, answer what is in flight with
                      `Connection: close` for S seconds, then exit 0 (what many servers do;
                      without a preStop delay the LB is still sending)

Prints "listening PORT" once it listens. Logs nothing per request."""
import argparse
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

args = None
stopping = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def reply(self, body, close=False):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if close or stopping.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if args.handle_ms:
            time.sleep(args.handle_ms / 1000)
        if url.path == "/slow":
            time.sleep(int(parse_qs(url.query).get("ms", ["1000"])[0]) / 1000)
        elif url.path == "/hog":
            hog = []
            while True:
                hog.append(b"x" * (1 << 20))
        self.reply(f"ok {args.port}\n".encode())

    def do_POST(self):
        # The request body stays unread: close() then resets the connection, and what of the
        # response the peer has not acknowledged yet is lost.
        body = b"r" * (4 << 20)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body[: 1 << 20])
        self.wfile.flush()
        self.close_connection = True
        # close(2) now, with the body unread (socket.close() would wait for http.server's files)
        os.close(self.connection.detach())


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--backlog", type=int, default=128)
    p.add_argument("--single", action="store_true")
    p.add_argument("--handle-ms", type=int, default=0)
    p.add_argument("--idle-timeout", type=float, default=600)
    p.add_argument("--drain-s", type=float, default=0)
    p.add_argument("--http10", action="store_true")
    args = p.parse_args()
    if args.http10:
        Handler.protocol_version = "HTTP/1.0"

    Handler.timeout = args.idle_timeout
    base = HTTPServer if args.single else ThreadingHTTPServer

    class Server(base):
        request_queue_size = args.backlog
        daemon_threads = True
        allow_reuse_address = True

    server = Server(("0.0.0.0", args.port), Handler)

    def on_sigterm(*_):
        stopping.set()
        # stop accepting: the listener closes now; the connections in flight are answered
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    print(f"listening {args.port}", flush=True)
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    time.sleep(args.drain_s)
    sys.exit(0)


if __name__ == "__main__":
    main()
