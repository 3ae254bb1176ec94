#!/usr/bin/env python3
"""A small HTTPS server that answers like the Kubernetes API for tcpwhy's --kube-api tests.

It serves a recorded pod list (GET /api/v1/pods?fieldSelector=spec.nodeName=NODE) and a
recorded watch stream (the same URL with watch=1), only to a client presenting the
expected bearer token. It writes the port it listens on to PORT_FILE.

usage: kube_apiserver.py CERT KEY TOKEN NODE LIST_JSON WATCH_JSONL PORT_FILE [MODE]

MODE (default normal) makes the watch misbehave the ways a real one can:
  watch-500     every watch fails at once with HTTP 500
  watch-silent  the watch sends its headers and one event, then nothing, holding the connection
  watch-huge    the watch sends an endless line without a newline

Every request is logged on stderr ("apiserver: GET ...").
"""
import http.server
import json
import ssl
import sys
import time
import urllib.parse

cert, key, token, node, list_path, watch_path, port_file = sys.argv[1:8]
mode = sys.argv[8] if len(sys.argv) > 8 else "normal"
requests_log = []


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("apiserver: " + (fmt % args) + "\n")

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if self.headers.get("Authorization") != "Bearer " + token:
            return self.reply(401, {"kind": "Status", "code": 401, "message": "Unauthorized"})
        if url.path != "/api/v1/pods" or query.get("fieldSelector") != ["spec.nodeName=" + node]:
            return self.reply(400, {"kind": "Status", "code": 400, "message": "expected a node-scoped pod list"})
        if query.get("watch") != ["1"]:
            with open(list_path) as f:
                return self.reply(200, json.load(f))
        if mode == "watch-500":
            return self.reply(500, {"kind": "Status", "code": 500, "message": "etcd is having a bad day"})
        # The watch: recorded events, one JSON object per line, then the server ends it
        # (as timeoutSeconds would) after a pause.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if mode == "watch-huge":
            piece = b"x" * 65536
            try:
                for _ in range(1024):  # 64 MiB at most, then give up
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:
                pass
            return
        if mode == "watch-silent":
            with open(watch_path) as f:
                chunk = (f.readline().strip() + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            time.sleep(30)
            return
        since = int(query.get("resourceVersion", ["0"])[0] or 0)
        with open(watch_path) as f:
            for line in f:
                event = json.loads(line)
                if int(event["object"]["metadata"].get("resourceVersion", "0")) <= since:
                    continue
                chunk = (json.dumps(event) + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(0.05)
        time.sleep(1.0)
        self.wfile.write(b"0\r\n\r\n")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
