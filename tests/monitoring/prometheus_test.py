#!/usr/bin/env python3
"""Debian's real Prometheus scrapes a real `tcpwhy daemon` during the keep-alive race (issue 18).

The daemon runs on this machine; the race runs in test namespaces (tests/support/race.py:
Node.js backend in "pod", an LB client at 130.211.0.143 in "lb"); Prometheus scrapes the
daemon every second with deploy/monitoring/rules/tcpwhy.rules.yaml loaded. Through
Prometheus' HTTP API it checks:

  - the race counter: tcpwhy_keepalive_races_total for the test's port is exactly the races
    the client saw reset;
  - the idle-close histogram: every close by the backend in the bucket its keep-alive timeout
    puts it in, none below, and histogram_quantile() inside that bucket;
  - the alert: TcpwhyKeepaliveRace's own expression (read from the rules file) returns the
    backend with the race count, the alert is firing with the backend's labels, and no other
    finding alert names the test's port;
  - every rule evaluates without error against the real series; every query of the Grafana
    dashboard (deploy/monitoring/grafana/tcpwhy.json) parses and runs, and the race panels
    return data;
  - the daemon stopped: up == 0 and TcpwhyDaemonDown pending.
Also `promtool check config` on deploy/monitoring/prometheus/scrape-config.yaml.

usage: prometheus_test.py TCPWHY_BINARY     (root; exit 77 = skipped, with the reason)
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MONITORING = os.path.join(REPO, "deploy", "monitoring")
sys.path.insert(0, os.path.join(REPO, "tests", "support"))
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, config, data, log):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
                                          f"--web.listen-address=127.0.0.1:{self.port}"],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"prometheus did not become ready: {open(log).read()[-2000:]}")
            time.sleep(0.2)

    def api(self, path, **params):
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            return json.load(e)

    def query(self, expr):
        """The instant vector of expr: [(labels, value)]; raises on a query error."""
        answer = self.api("query", query=expr)
        if answer.get("status") != "success":
            raise RuntimeError(f"query {expr!r}: {answer.get('error')}")
        result = answer["data"]["result"]
        if answer["data"]["resultType"] == "scalar":
            return [({}, float(result[1]))]
        return [(r["metric"], float(r["value"][1])) for r in result]

    def value(self, expr):
        rows = self.query(expr)
        return rows[0][1] if rows else None

    def wait(self, expr, predicate, timeout_s=30):
        deadline = time.time() + timeout_s
        while True:
            v = self.value(expr)
            if (v is not None and predicate(v)) or time.time() > deadline:
                return v
            time.sleep(0.5)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Daemon:
    def __init__(self, binary, scratch):
        self.err = os.path.join(scratch, "daemon.err")
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen([binary, "daemon", "--archive", os.path.join(scratch, "archive"),
                                          "--archive-min-free", "0", "--socket", "off",
                                          "--metrics-addr", "127.0.0.1:0"],
                                         stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while True:
            m = re.search(r"metrics http://(\S+)/metrics", open(self.err).read())
            if m:
                self.addr = m.group(1)
                return
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"tcpwhy daemon did not start: {open(self.err).read()}")
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def dashboard_queries(path, rate_interval="10s", time_range="2m"):
    """(panel title, expr) for every target of the dashboard, its variables set to "all"."""
    with open(path) as f:
        dashboard = json.load(f)
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in (("$__rate_interval", rate_interval), ("$__range", time_range), ("$node", ".*"),
                               ("$namespace", ".*"), ("$pod", ".*"), ("$peer", ".*")):
                expr = expr.replace(var, value)
            check("$" not in expr.replace("$labels", ""), f"dashboard: every variable of {panel['title']!r} is known")
            out.append((panel["title"], expr))
    return out


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: prometheus_test.py TCPWHY_BINARY")
    binary = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0:
        skip("the Prometheus test needs root (the daemon loads BPF programs; the race needs network namespaces)")
    for tool in ("prometheus", "promtool", "node"):
        if not shutil.which(tool):
            skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    if not os.access(binary, os.X_OK):
        skip(f"no {binary}: build first")

    started = time.time()
    scratch = tempfile.mkdtemp(prefix="tcpwhy-prometheus-")
    rules_file = os.path.join(MONITORING, "rules", "tcpwhy.rules.yaml")
    with open(rules_file) as f:
        all_rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in all_rules if "alert" in r}

    # The plain Prometheus configuration shipped in deploy/ is valid. Debian's Prometheus is built
    # without Kubernetes discovery: there the job is checked with its discovery swapped for a static
    # target (its relabelling, honor_labels and the rules file are still checked).
    with open(os.path.join(MONITORING, "prometheus", "scrape-config.yaml")) as f:
        shipped = yaml.safe_load(f)
    shutil.copy(rules_file, scratch)
    variants = [("as shipped", shipped)]
    swapped = json.loads(json.dumps(shipped))
    for job in swapped["scrape_configs"]:
        job.pop("kubernetes_sd_configs", None)
        job["static_configs"] = [{"targets": ["127.0.0.1:9090"]}]
    variants.append(("with a static target instead of kubernetes_sd_configs", swapped))
    for what, variant in variants:
        path = os.path.join(scratch, "scrape-config.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(variant, f)
        out = subprocess.run(["promtool", "check", "config", path], capture_output=True, text=True)
        if what == "as shipped" and "kubernetes_sd_configs not found" in out.stdout + out.stderr:
            print("note: this promtool has no Kubernetes service discovery (Debian's build); checking the job "
                  "with a static target")
            continue
        check(out.returncode == 0, f"promtool check config deploy/monitoring/prometheus/scrape-config.yaml {what}: "
                                   f"{(out.stdout + out.stderr).strip().splitlines()[-1:]}")
        break

    daemon = prometheus = None
    # A service port below the ephemeral range (32768-60999): with tallies the LB side's connections
    # are first seen at the backend's FIN, and a connection first seen at its end whose local port
    # is not a known listener is keyed by the higher of its two ports as the service (the
    # correlator's guess). Above the range an ephemeral port can be the lower one (flaky, 1 in 3).
    port = 20000 + os.getpid() % 12000
    P = f'port="{port}"'
    try:
        daemon = Daemon(binary, scratch)
        # Scrapes every second; the target is named like a node, as the cluster configurations do.
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules_file],
            "scrape_configs": [{
                "job_name": "tcpwhy", "honor_labels": True,
                "static_configs": [{"targets": [daemon.addr], "labels": {"node": "test-node"}}],
                "relabel_configs": [{"target_label": "instance", "replacement": "test-node"}],
            }],
        }
        with open(os.path.join(scratch, "prometheus.yml"), "w") as f:
            yaml.safe_dump(config, f)
        prometheus = Prometheus(os.path.join(scratch, "prometheus.yml"), os.path.join(scratch, "data"),
                                os.path.join(scratch, "prometheus.log"))
        check(prometheus.wait('up{job="tcpwhy"}', lambda v: v == 1) == 1, "Prometheus scrapes the daemon (up == 1)")

        with race.LbAndPod() as net, net.backend(port, keep_alive_ms=1500):
            result = net.race(port, connections=3)
            check(result == {"connections": 3, "eof": 3, "reset": 3},
                  f"the race: 3 idle closes by the backend, 3 requests reset: {result}")
            races = prometheus.wait(f'sum(tcpwhy_keepalive_races_total{{{P}}})', lambda v: v >= 3)
            # The LB side's resets count once the abort window (100 ms) says they are not our own
            # abort's echo: later than the race. A fixed wait here failed 2 runs in 22 while the
            # daemon settled them only at its once-a-second tick.
            seen_races = time.monotonic()
            prometheus.wait(f'sum(tcpwhy_findings{{{P},kind="peer_reset"}})', lambda v: v >= 1, timeout_s=10)
            print(f"the LB side's peer_reset finding was scraped {time.monotonic() - seen_races:.1f} s after the races")
            # one more scrape, so that nothing arriving late is missed by the checks below
            time.sleep(2)
            pod_label = f'pod="{net.pod}"'

            # the race counter
            races = prometheus.value(f'sum(tcpwhy_keepalive_races_total{{{P},lb_range="130.211.0.0/22"}})')
            check(races == 3, f"tcpwhy_keepalive_races_total{{{P},lb_range=\"130.211.0.0/22\"}} == 3 ({races})")
            named = prometheus.value(f'sum(tcpwhy_keepalive_races_total{{{P},{pod_label}}})')
            check(named == 3, f"... labelled with the backend's name, {pod_label} ({named})")
            classified = prometheus.value(f'sum(tcpwhy_resets_total{{{P},class="idle_close_race",peer="lb"}})')
            check(classified == 3, f"tcpwhy_resets_total{{class=\"idle_close_race\",peer=\"lb\"}} == 3 ({classified})")

            # the idle-close histogram: Node closes 1.5 s + its internal second after the response
            buckets = {labels["le"]: v for labels, v in
                       prometheus.query(f'sum by (le) (tcpwhy_idle_close_seconds_bucket{{{P}}})')}
            print(f"idle-close buckets for port {port}: {buckets}")
            check(buckets.get("2") == 0 and buckets.get("5") == 3 and buckets.get("+Inf") == 3,
                  f"tcpwhy_idle_close_seconds: the 3 closes in (2 s, 5 s], none sooner")
            count = prometheus.value(f'sum(tcpwhy_idle_close_seconds_count{{{P}}})')
            check(count == 3, f"tcpwhy_idle_close_seconds_count == 3 ({count})")
            p50 = prometheus.value(f'histogram_quantile(0.5, sum by (le) (tcpwhy_idle_close_seconds_bucket{{{P}}}))')
            check(p50 is not None and 2 < p50 <= 5, f"histogram_quantile(0.5) in (2, 5] s ({p50})")
            mean = prometheus.value(f'sum(tcpwhy_idle_close_seconds_sum{{{P}}}) / sum(tcpwhy_idle_close_seconds_count{{{P}}})')
            check(mean is not None and 2 <= mean <= 3.1, f"mean idle before close ~2.5 s ({mean})")

            # the alert's own expression, from the rules file
            rows = prometheus.query(alerts["TcpwhyKeepaliveRace"]["expr"])
            ours = [(labels, v) for labels, v in rows if labels.get("port") == str(port)]
            check(len(ours) == 1 and ours[0][1] == 3 and ours[0][0].get("pod") == net.pod,
                  f"TcpwhyKeepaliveRace's expression: {{pod={net.pod}, port={port}}} = 3 ({ours})")
            firing = []
            deadline = time.time() + 20
            while time.time() < deadline:
                firing = [a for a in prometheus.api("alerts")["data"]["alerts"]
                          if a["labels"].get("port") == str(port) and a["state"] == "firing"]
                names = {(a["labels"]["alertname"], a["labels"].get("kind")) for a in firing}
                # the race (every alert is in one group, so the others have been evaluated by then)
                if ("TcpwhyKeepaliveRace", None) in names:
                    break
                time.sleep(0.5)
            race_alert = [a for a in firing if a["labels"]["alertname"] == "TcpwhyKeepaliveRace"]
            check(len(race_alert) == 1 and race_alert[0]["labels"].get("severity") == "warning"
                  and race_alert[0]["labels"].get("pod") == net.pod,
                  f"TcpwhyKeepaliveRace is firing for the backend ({[a['labels'] for a in race_alert]})")
            if race_alert:
                print(f"  summary: {race_alert[0]['annotations']['summary']}")
                check(race_alert[0]["annotations"]["description"].startswith("3 requests"),
                      "its description counts the 3 requests")
            # The LB's side of the same connections received the resets: peer_reset, a notice kind, in the
            # lb namespace (keyed by the service port it called). A few of them page nobody.
            other = [a["labels"] for a in firing if a["labels"]["alertname"].startswith("TcpwhyFinding")]
            check(not other, f"no other cause is alerted, and the LB side's peer resets are no page ({other})")
            series = prometheus.query(f'tcpwhy_findings{{{P}}}')
            findings = {labels["kind"]: v for labels, v in series}
            severity = {labels["kind"]: labels.get("severity") for labels, _ in series}
            print(f"findings for port {port}: {findings}")
            check(findings.get("idle_close_race") == 3 and severity.get("idle_close_race") == "critical",
                  f"tcpwhy_findings{{kind=\"idle_close_race\", severity=\"critical\"}} == 3 ({severity})")
            check(findings.get("peer_reset", 0) >= 1 and severity.get("peer_reset") == "notice",
                  f"tcpwhy_findings{{kind=\"peer_reset\", severity=\"notice\"}}: the LB side's ({findings})")
            if "peer_reset" not in findings:
                # seen 2 times in 22 runs (session 8): say where the LB side's resets went instead
                print(f"  every finding series: {prometheus.query('tcpwhy_findings')}")
            # the generic alert's own expression, from the rules file, over the real series: the race's kind
            # and the notice kind are not in it
            rows = prometheus.query(alerts["TcpwhyFinding"]["expr"])
            check(not [labels for labels, _ in rows if labels.get("port") == str(port)],
                  f"TcpwhyFinding's expression leaves the race and the peer resets out ({rows})")

            # every rule evaluates against the real series
            rules = [r for g in prometheus.api("rules")["data"]["groups"] for r in g["rules"]]
            bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
            check(len(rules) == len(all_rules) and not bad,
                  f"all {len(rules)} rules of {len(all_rules)} loaded evaluate without error ({bad})")

            # the dashboard's queries
            queries = dashboard_queries(os.path.join(MONITORING, "grafana", "tcpwhy.json"))
            errors, empty = [], []
            for title, expr in queries:
                try:
                    if not prometheus.query(expr):
                        empty.append(title)
                except RuntimeError as e:
                    errors.append(f"{title}: {e}")
            check(not errors, f"all {len(queries)} dashboard queries run ({errors})")
            must_have = {"Races in the time range", "Keep-alive races per backend", "Idle time before the backend's close (p50, p90)",
                         "Idle time before the backend's close (all selected backends)", "Resets by class",
                         "Resets sent, by the kernel's reason", "Findings", "Daemons up", "Events per second, per node",
                         "Live connections, per node", "Versions and attach paths"}
            check(not (must_have & set(empty)), f"the race, reset, finding and daemon panels have data "
                                                f"(empty: {sorted(set(empty))})")
            races_in_range = prometheus.value(queries[0][1])
            check(races_in_range is not None and races_in_range >= 3,
                  f"dashboard: 'Races in the time range' counts the races ({races_in_range})")

        # the daemon stops reporting
        check(daemon.stop() == 0, "the daemon stops on SIGTERM")
        down = prometheus.wait('up{job="tcpwhy"}', lambda v: v == 0, timeout_s=15)
        check(down == 0, f"up == 0 once the daemon is gone ({down})")
        expr_rows = prometheus.query(alerts["TcpwhyDaemonDown"]["expr"])
        check(len(expr_rows) == 1 and expr_rows[0][0].get("instance") == "test-node",
              f"TcpwhyDaemonDown's expression names the node ({[r[0] for r in expr_rows]})")
        pending = []
        deadline = time.time() + 10
        while time.time() < deadline and not pending:
            pending = [a for a in prometheus.api("alerts")["data"]["alerts"]
                       if a["labels"]["alertname"] == "TcpwhyDaemonDown" and a["state"] == "pending"]
            time.sleep(0.5)
        check(len(pending) == 1, "TcpwhyDaemonDown is pending (it fires after 5 minutes)")
    finally:
        if prometheus:
            prometheus.stop()
        if daemon:
            daemon.stop()
        if failures:
            for name in ("daemon.err", "prometheus.log"):
                path = os.path.join(scratch, name)
                if os.path.exists(path):
                    print(f"--- {name} (last lines)\n" + "".join(open(path).readlines()[-30:]))
            # the daemon's archive holds every event it correlated: kept for whoever reads this failure
            if os.path.isdir(os.path.join(scratch, "archive")):
                kept = f"/tmp/tcpwhy-prometheus-failed-{os.getpid()}"
                shutil.copytree(os.path.join(scratch, "archive"), kept, dirs_exist_ok=True)
                print(f"--- the daemon's archive is kept in {kept}")
        shutil.rmtree(scratch, ignore_errors=True)
        print(f"prometheus test: {len(failures)} failed checks in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
    sys.exit(1 if failures else 0)
