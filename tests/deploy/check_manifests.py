#!/usr/bin/env python3
"""deploy/ must parse and carry what the DaemonSet needs (issue 6), and deploy/monitoring what
Prometheus and Grafana need (issue 18), checked with a real YAML parser. When kubectl is installed, its built-in kustomize renders both variants
offline too (a client-side `--dry-run` needs an API server for discovery, so it is not run).

usage: check_manifests.py DEPLOY_DIR
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

failures = []
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def check(condition, message):
    if not condition:
        failures.append(message)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def hostpath_mounts(pod_spec, container):
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    out = {}
    for m in container.get("volumeMounts", []):
        v = volumes.get(m["name"])
        check(v is not None, f"volumeMount {m['name']} has no volume")
        if v and "hostPath" in v:
            out[v["hostPath"]["path"]] = m
    return out


def check_daemonset(ds, expect_api):
    check(ds["apiVersion"] == "apps/v1", "DaemonSet apiVersion apps/v1")
    spec = ds["spec"]
    selector = spec["selector"]["matchLabels"]
    labels = spec["template"]["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in selector.items()), "selector matches the pod labels")
    pod = spec["template"]["spec"]
    check(pod.get("hostPID") is True, "hostPID: true")
    check(any(t.get("operator") == "Exists" and "key" not in t for t in pod.get("tolerations", [])),
          "a toleration that tolerates every taint (operator: Exists)")
    containers = pod["containers"]
    check(len(containers) == 1, "one container")
    c = containers[0]
    args = c.get("args", [])
    check(args[:1] == ["daemon"], "runs `tcpwhy daemon`")
    check(("--kube-api" in args) == expect_api, "--kube-api exactly when the API enrichment (and its RBAC) is on")
    metrics_arg = [a for a in args if a.startswith("--metrics-addr")]
    check(len(metrics_arg) == 1, "--metrics-addr given")
    port = int(re.split("[:=]", metrics_arg[0])[-1]) if metrics_arg else None
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    for probe in ("livenessProbe", "readinessProbe"):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == "/healthz", f"{probe} on /healthz")
        probe_port = ports.get(get.get("port"), get.get("port"))
        check(probe_port == port, f"{probe} port {probe_port} is the --metrics-addr port {port}")
    for probe in ("startupProbe",):
        get = c.get(probe, {}).get("httpGet", {})
        check(get.get("path") == "/healthz", f"{probe} on /healthz")
        check(ports.get(get.get("port"), get.get("port")) == port, f"{probe} on the --metrics-addr port")
    res = c.get("resources", {})
    check({"cpu", "memory"} <= set(res.get("requests", {})), "cpu and memory requests")
    check("memory" in res.get("limits", {}), "a memory limit")
    check("cpu" not in res.get("limits", {}), "no CPU limit (throttling the reader drops events in the kernel)")
    check(bool(pod.get("priorityClassName")), "a priorityClassName")
    # The image runs where a vmlinux.h is committed for the architecture (bpf/vmlinux/<arch>/).
    selector = pod.get("nodeSelector", {})
    kernel_arch = {"x86": "amd64", "arm64": "arm64", "arm": "arm", "s390": "s390x", "powerpc": "ppc64le"}
    built = {kernel_arch.get(d, d) for d in os.listdir(os.path.join(REPO, "bpf", "vmlinux"))}
    check(selector.get("kubernetes.io/os") == "linux", "nodeSelector kubernetes.io/os: linux")
    check(selector.get("kubernetes.io/arch") in built,
          f"nodeSelector kubernetes.io/arch {selector.get('kubernetes.io/arch')} is one the image is built for {sorted(built)}")

    sc = c.get("securityContext", {})
    caps = set(sc.get("capabilities", {}).get("add", []))
    if not sc.get("privileged"):
        check({"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN"} <= caps,
              f"not privileged, so BPF, PERFMON, NET_ADMIN, SYS_ADMIN are added (have {sorted(caps)})")
        check("ALL" in sc.get("capabilities", {}).get("drop", []), "every other capability dropped")
    # The API server refuses this combination.
    check(not (sc.get("allowPrivilegeEscalation") is False and (sc.get("privileged") or "SYS_ADMIN" in caps)),
          "allowPrivilegeEscalation: false cannot go with privileged or SYS_ADMIN")

    # What the code reads from the node, each at the same path in the container, and nothing
    # else (tests/kernel/mounts_test.py checks the same against what the daemon really opens).
    mounts = hostpath_mounts(pod, c)
    expected = {"/sys/kernel/btf": True, "/sys/fs/cgroup": True, "/run/netns": True, "/var/log/pods": True,
                "/var/log/containers": True, "/boot": True, "/var/lib/tcpwhy": False}
    check(set(mounts) == set(expected), f"hostPath mounts are exactly {sorted(expected)} (have {sorted(mounts)})")
    for path, read_only in expected.items():
        if path not in mounts:
            continue
        check(mounts[path]["mountPath"] == path, f"hostPath {path} mounted at the same path")
        if read_only:
            check(mounts[path].get("readOnly") is True, f"hostPath {path} mounted read-only")
    if "/run/netns" in mounts:
        check(mounts["/run/netns"].get("mountPropagation") == "HostToContainer",
              "/run/netns with HostToContainer propagation (namespaces added later appear)")
    check(not any(a.startswith("--host-root") for a in args), "no --host-root: the node's paths are mounted in place")
    check(not any(a.startswith("--archive-min-free") for a in args),
          "--archive-min-free left at its default (a share of the disk above the kubelet's eviction threshold)")
    seccomp = (sc.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile") or {}).get("type")
    check(seccomp == "RuntimeDefault", f"the runtime's default seccomp profile (have {seccomp})")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        empty_dir = volumes.get(m["name"], {}).get("emptyDir")
        if empty_dir is None or empty_dir.get("medium") == "Memory":
            continue
        limit = empty_dir.get("sizeLimit", "")
        check(re.fullmatch(r"\d+(Ki|Mi)", limit or "") is not None,
              f"emptyDir {m['mountPath']} is small ({limit or 'no sizeLimit'}): export streams to stdout instead")
    archive_arg = [a for a in args if a.startswith("--archive=")]
    check(archive_arg and any(archive_arg[0].split("=", 1)[1].startswith(m["mountPath"])
                              for p, m in mounts.items() if p == "/var/lib/tcpwhy"),
          "--archive is on the archive hostPath")
    socket_arg = [a for a in args if a.startswith("--socket=")]
    check(socket_arg and any(socket_arg[0].split("=", 1)[1].startswith(m["mountPath"] + "/")
                             for m in c.get("volumeMounts", [])), "--socket is on a mounted volume")

    if expect_api:
        check(pod.get("serviceAccountName") == "tcpwhy", "API overlay: serviceAccountName tcpwhy")
        check(pod.get("automountServiceAccountToken") is True, "API overlay: token mounted")
    else:
        check(pod.get("automountServiceAccountToken") is False, "base: no API token")
        check("serviceAccountName" not in pod, "base: no ServiceAccount")


def check_network_policy(docs, ds):
    policies = by_kind(docs, "NetworkPolicy")
    check(len(policies) == 1, "a NetworkPolicy for the metrics port")
    labels = ds["spec"]["template"]["metadata"]["labels"]
    for policy in policies:
        spec = policy["spec"]
        selector = spec["podSelector"].get("matchLabels", {})
        check(selector and all(labels.get(k) == v for k, v in selector.items()), "the policy selects the tcpwhy pods")
        check("Ingress" in spec.get("policyTypes", []), "the policy restricts ingress")
        for rule in spec.get("ingress", []):
            check(rule.get("from"), "every ingress rule names who may connect (no open rule)")
            ports = [p.get("port") for p in rule.get("ports", [])]
            check(ports == [9090], f"ingress only to the metrics port (have {ports})")


def check_rbac(docs):
    check(len(by_kind(docs, "ServiceAccount")) == 1, "API overlay: a ServiceAccount")
    roles = by_kind(docs, "ClusterRole")
    check(len(roles) == 1, "API overlay: one ClusterRole")
    for role in roles:
        for rule in role["rules"]:
            check(set(rule["verbs"]) <= {"get", "list", "watch"}, f"read-only verbs: {rule['verbs']}")
            check("secrets" not in rule["resources"], "no secrets")
    bindings = by_kind(docs, "ClusterRoleBinding")
    check(len(bindings) == 1 and bindings[0]["subjects"][0]["name"] == "tcpwhy", "bound to the ServiceAccount")


def check_dockerfile(path):
    text = open(path).read()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    check(len(froms) >= 2, "Dockerfile is multi-stage")
    check(all(f.startswith("debian:") or f == "scratch" for f in froms), f"Debian base images only: {froms}")
    check(froms[-1] == "scratch", "the runtime stage starts from scratch (its root is made of Debian packages)")
    check("COPY --from=build" in text, "the runtime stage copies the binary from the build stage")
    # The root filesystem comes from the script scripts/build-image.sh runs too: one package list.
    check("deploy/image/make-rootfs.sh" in text or "/image/make-rootfs.sh" in text,
          "the Dockerfile makes its root with deploy/image/make-rootfs.sh, as scripts/build-image.sh does")
    for banned in ("pip install", "curl ", "wget ", "go install", "npm "):
        check(banned not in text, f"Debian packages only: no `{banned.strip()}`")


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def exported_metrics():
    """Metric names the daemon writes (string literals "tcpwhy_..." in src/daemon/), with a
    histogram's series."""
    names, histograms = set(), set()
    for directory, _, files in os.walk(os.path.join(REPO, "src", "daemon")):
        for name in files:
            if name.endswith((".cpp", ".h")):
                with open(os.path.join(directory, name)) as f:
                    text = f.read()
                names |= set(re.findall(r'"(tcpwhy_[a-z_]+)"', text))
                histograms |= set(re.findall(r'"(tcpwhy_[a-z_]+)",\s*"histogram"', text))
    for name in histograms:
        names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def check_monitoring(deploy, daemonset):
    """deploy/monitoring: the scrapes select the DaemonSet's pods and port, the three copies of the
    rules agree, and the rules and the dashboard use only metrics the daemon exports."""
    mon = os.path.join(deploy, "monitoring")
    out = subprocess.run([sys.executable, os.path.join(mon, "generate.py"), "--check"], capture_output=True, text=True)
    check(out.returncode == 0, f"monitoring: PrometheusRule and ClusterRules match rules/tcpwhy.rules.yaml: {out.stderr.strip()}")
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    ns = daemonset["metadata"]["namespace"]
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in container.get("ports", [])}

    op = {d["kind"]: d for f in ("service.yaml", "servicemonitor.yaml", "prometheusrule.yaml")
          for d in load(os.path.join(mon, "prometheus-operator", f))}
    svc, sm = op.get("Service"), op.get("ServiceMonitor")
    check(svc and labels_match(svc["spec"]["selector"], pod_labels), "Service selects the DaemonSet's pods")
    check(svc and svc["spec"].get("clusterIP") == "None", "Service is headless (one endpoint per node)")
    check(svc and svc["metadata"]["namespace"] == ns, "Service in the DaemonSet's namespace")
    check(svc and all(p["targetPort"] in port_names for p in svc["spec"]["ports"]), "Service targets the metrics port")
    check(sm and labels_match(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]), "ServiceMonitor selects the Service")
    check(sm and ns in sm["spec"]["namespaceSelector"]["matchNames"], "ServiceMonitor looks in the DaemonSet's namespace")
    for ep in (sm or {}).get("spec", {}).get("endpoints", []):
        check(ep["port"] in {p["name"] for p in svc["spec"]["ports"]}, f"ServiceMonitor endpoint port {ep['port']} is the Service's")
        drops = [r for r in ep.get("relabelings", []) if r.get("action") == "labeldrop"]
        check(ep.get("honorLabels") is True or any(re.fullmatch(r["regex"], "namespace") and re.fullmatch(r["regex"], "pod")
                                                   for r in drops),
              "ServiceMonitor keeps the metrics' own namespace and pod labels (labeldrop or honorLabels)")
    gmp = {d["kind"]: d for f in ("podmonitoring.yaml", "rules.yaml") for d in load(os.path.join(mon, "gmp", f))}
    cpm = gmp.get("ClusterPodMonitoring")
    check(cpm and labels_match(cpm["spec"]["selector"]["matchLabels"], pod_labels), "ClusterPodMonitoring selects the pods")
    check(cpm and all(ep["port"] in port_names for ep in cpm["spec"]["endpoints"]), "ClusterPodMonitoring scrapes the metrics port")
    check(cpm and not {"namespace", "pod"} & set(cpm["spec"].get("targetLabels", {}).get("metadata", ["namespace"])),
          "ClusterPodMonitoring adds no namespace/pod target label (they would rename the backend's)")
    check("ClusterRules" in gmp, "GMP rules are ClusterRules (Rules would scope queries to one namespace)")

    with open(os.path.join(mon, "rules", "tcpwhy.rules.yaml")) as f:
        groups = yaml.safe_load(f)["groups"]
    rules = [r for g in groups for r in g["rules"]]
    known = exported_metrics() | {r["record"] for r in rules if "record" in r} | {"up"}
    for r in rules:
        used = set(re.findall(r"\b(tcpwhy[_:][a-z0-9_:]+|up)\b", r["expr"]))
        check(used <= known, f"rule {r.get('alert') or r.get('record')}: metrics the daemon exports ({sorted(used - known)})")
        if "alert" in r:
            # a severity, or a template that can only give one (TcpwhyFinding's is the finding kind's)
            severity = r.get("labels", {}).get("severity", "")
            outcomes = re.sub(r"\{\{.*?\}\}", " ", severity).split()
            check(bool(outcomes) and set(outcomes) <= {"info", "warning", "critical"}, f"{r['alert']}: a severity")
            check({"summary", "description"} <= set(r.get("annotations", {})), f"{r['alert']}: summary and description")
    with open(os.path.join(mon, "grafana", "tcpwhy.json")) as f:
        dashboard = json.load(f)
    check(dashboard.get("uid") == "tcpwhy", "dashboard: a fixed uid")
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    check(len(exprs) >= 10, f"dashboard: panels with queries ({len(exprs)})")
    for e in exprs:
        used = set(re.findall(r"\b(tcpwhy[_:][a-z0-9_:]+|up)\b", e))
        check(used and used <= known, f"dashboard query uses metrics the daemon exports: {sorted(used - known)} in {e[:60]}")
    return [os.path.join(mon, "prometheus-operator"), os.path.join(mon, "gmp")]


def kustomize(directory):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print(f"check_manifests: kubectl not installed: {directory} checked from its files only")
        return None
    out = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True)
    check(out.returncode == 0, f"kubectl kustomize {directory}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d] if out.returncode == 0 else None


def main():
    deploy = sys.argv[1]
    base_dir = os.path.join(deploy, "base")
    overlay_dir = os.path.join(deploy, "overlays", "api-enrichment")

    def from_files(directory, seen=None):
        docs = []
        kustomization = load(os.path.join(directory, "kustomization.yaml"))[0]
        for resource in kustomization.get("resources", []):
            path = os.path.join(directory, resource)
            docs += from_files(path) if os.path.isdir(path) else load(path)
        for patch in kustomization.get("patches", []):
            if "patch" in patch:
                # An inline JSON 6902 patch; the overlay only appends to lists ("add" at ".../-").
                for op in yaml.safe_load(patch["patch"]):
                    check(op["op"] == "add" and op["path"].endswith("/-"), f"{directory}: supported patch {op}")
                    for d in docs:
                        if d["kind"] == patch["target"]["kind"] and d["metadata"]["name"] == patch["target"]["name"]:
                            node = d
                            for key in op["path"].strip("/").split("/")[:-1]:
                                node = node[int(key)] if isinstance(node, list) else node[key]
                            node.append(op["value"])
                continue
            patch_doc = load(os.path.join(directory, patch["path"]))[0]
            for d in docs:
                if d["kind"] == patch_doc["kind"] and d["metadata"]["name"] == patch_doc["metadata"]["name"]:
                    d["spec"]["template"]["spec"].update(patch_doc["spec"]["template"]["spec"])
        return docs

    base = from_files(base_dir)
    overlay = from_files(overlay_dir)
    for name, docs, api in (("base", base, False), ("api-enrichment", overlay, True)):
        daemonsets = by_kind(docs, "DaemonSet")
        check(len(daemonsets) == 1, f"{name}: one DaemonSet")
        for ds in daemonsets:
            check_daemonset(ds, api)
            check_network_policy(docs, ds)
        check(len(by_kind(docs, "Namespace")) == 1, f"{name}: the namespace")
    check(not by_kind(base, "ServiceAccount") and not by_kind(base, "ClusterRole"), "base: no RBAC")
    check_rbac(overlay)
    check_dockerfile(os.path.join(deploy, "Dockerfile"))
    monitoring_dirs = check_monitoring(deploy, by_kind(base, "DaemonSet")[0])

    for directory, api in ((base_dir, False), (overlay_dir, True)):
        rendered = kustomize(directory)
        if rendered is not None:
            for ds in by_kind(rendered, "DaemonSet"):
                check_daemonset(ds, api)
            if api:
                check_rbac(rendered)
    for directory in monitoring_dirs:
        rendered = kustomize(directory)
        if rendered is not None:
            check(len(rendered) >= 2, f"kubectl kustomize {directory} renders its resources")
    # The image pinned to a registry by digest with kustomize `images:`, as docs/daemon.md says.
    if shutil.which("kubectl"):
        with tempfile.TemporaryDirectory() as tmp:
            digest = "sha256:" + "0123456789abcdef" * 4
            with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
                yaml.safe_dump({"resources": [os.path.relpath(base_dir, tmp)],
                                "images": [{"name": "tcpwhy", "newName": "registry.example.com/ops/tcpwhy",
                                            "digest": digest}]}, f)
            rendered = kustomize(tmp)
            images = [c["image"] for ds in by_kind(rendered or [], "DaemonSet")
                      for c in ds["spec"]["template"]["spec"]["containers"]]
            check(images == [f"registry.example.com/ops/tcpwhy@{digest}"],
                  f"kustomize images: pins the DaemonSet's image by digest ({images})")

    for f in failures:
        print(f"FAIL: {f}")
    print(f"check_manifests: {'FAILED' if failures else 'OK'} ({len(failures)} problems)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
