#!/usr/bin/env python3
"""deploy/ must parse and carry what the DaemonSet needs (issue 6), checked with a real
YAML parser. When kubectl is installed, its built-in kustomize renders both variants
offline too (a client-side `--dry-run` needs an API server for discovery, so it is not run).

usage: check_manifests.py DEPLOY_DIR
"""
import os
import re
import shutil
import subprocess
import sys

import yaml

failures = []


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
    res = c.get("resources", {})
    check({"cpu", "memory"} <= set(res.get("requests", {})), "cpu and memory requests")
    check("memory" in res.get("limits", {}), "a memory limit")

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
    check(all(f.startswith("debian:") for f in froms), f"Debian base images only: {froms}")
    check("COPY --from=build" in text, "the runtime stage copies the binary from the build stage")
    for banned in ("pip install", "curl ", "wget ", "go install", "npm "):
        check(banned not in text, f"Debian packages only: no `{banned.strip()}`")


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

    for directory, api in ((base_dir, False), (overlay_dir, True)):
        rendered = kustomize(directory)
        if rendered is not None:
            for ds in by_kind(rendered, "DaemonSet"):
                check_daemonset(ds, api)
            if api:
                check_rbac(rendered)

    for f in failures:
        print(f"FAIL: {f}")
    print(f"check_manifests: {'FAILED' if failures else 'OK'} ({len(failures)} problems)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
