#!/usr/bin/env python3
"""The DaemonSet's security context, mounts and arguments, read from deploy/ itself, so a test
that runs tcpwhy "the way the pod runs" cannot drift from what is shipped.

As a module: `load(deploy_dir, overlay=None)` returns a Manifest.
As a command (for shell and C++ tests):

  deploy_manifest.py DEPLOY_DIR caps              # bpf,perfmon,net_admin,...   (lower case, no CAP_)
  deploy_manifest.py DEPLOY_DIR setpriv-bounding  # -all,+bpf,+perfmon,...      (setpriv --bounding-set)
  deploy_manifest.py DEPLOY_DIR args              # the container's args, one per line
  deploy_manifest.py DEPLOY_DIR mounts            # HOSTPATH<TAB>MOUNTPATH<TAB>ro|rw, hostPath volumes only
  deploy_manifest.py DEPLOY_DIR json              # everything above as one JSON object
  deploy_manifest.py DEPLOY_DIR podman-args SCRATCH
                                                  # `podman run` options for the pod's security context and
                                                  # mounts, one per line (podman_run_args below)

  --overlay NAME   read deploy/overlays/NAME's DaemonSet patch on top (its args replace the base's)
"""
import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field

import yaml


@dataclass
class Mount:
    host_path: str
    mount_path: str
    read_only: bool
    type: str = ""  # the hostPath type: Directory, DirectoryOrCreate, ... ("" = no check)


@dataclass
class EmptyDir:
    mount_path: str
    medium: str = ""  # "Memory" for tmpfs
    size_limit: str = None


@dataclass
class Probe:
    path: str
    port: int  # resolved from a named container port


@dataclass
class Manifest:
    capabilities: list = field(default_factory=list)  # lower case, without CAP_: ["bpf", "perfmon", ...]
    drop_all: bool = False
    privileged: bool = False
    run_as_user: int = None
    read_only_root: bool = False
    host_pid: bool = False
    host_network: bool = False
    seccomp: str = None  # "Unconfined", "RuntimeDefault", ...
    args: list = field(default_factory=list)
    mounts: list = field(default_factory=list)  # hostPath volumes only
    empty_dirs: list = field(default_factory=list)  # mount paths of emptyDir volumes
    image: str = None
    apparmor: str = None  # "Unconfined", "RuntimeDefault", ...
    empty_dir_mounts: list = field(default_factory=list)  # EmptyDir, with medium and size
    probes: dict = field(default_factory=dict)  # "startupProbe"/"livenessProbe"/"readinessProbe" -> Probe
    env: dict = field(default_factory=dict)  # literal values; fieldRef values as "fieldRef:PATH"
    memory_limit: str = None  # resources.limits.memory, as written ("256Mi")


def _docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _daemonset(directory):
    for name in sorted(os.listdir(directory)):
        if name.endswith((".yaml", ".yml")):
            for d in _docs(os.path.join(directory, name)):
                if d.get("kind") == "DaemonSet":
                    return d
    return None


def _overlay_args(directory):
    """Arguments an overlay's JSON patches append to the container (op: add, .../args/-)."""
    with open(os.path.join(directory, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    added = []
    for patch in kustomization.get("patches", []):
        if "patch" not in patch:
            continue
        for op in yaml.safe_load(patch["patch"]) or []:
            if op.get("op") == "add" and op.get("path", "").endswith("/containers/0/args/-"):
                added.append(op["value"])
    return added


def load(deploy_dir, overlay=None):
    base = _daemonset(os.path.join(deploy_dir, "base"))
    if base is None:
        raise SystemExit(f"deploy_manifest: no DaemonSet in {deploy_dir}/base")
    pod = base["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = list(container.get("args", []))
    if overlay:
        args += _overlay_args(os.path.join(deploy_dir, "overlays", overlay))
    sc = container.get("securityContext", {})
    caps = sc.get("capabilities", {})
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    m = Manifest(
        capabilities=[c.lower() for c in caps.get("add", [])],
        drop_all="ALL" in caps.get("drop", []),
        privileged=bool(sc.get("privileged", False)),
        run_as_user=sc.get("runAsUser"),
        read_only_root=bool(sc.get("readOnlyRootFilesystem", False)),
        host_pid=bool(pod.get("hostPID", False)),
        host_network=bool(pod.get("hostNetwork", False)),
        seccomp=(sc.get("seccompProfile") or pod.get("securityContext", {}).get("seccompProfile") or {}).get("type"),
        args=args,
        image=container.get("image"),
        apparmor=(sc.get("appArmorProfile") or pod.get("securityContext", {}).get("appArmorProfile") or {}).get("type"),
    )
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "hostPath" in volume:
            m.mounts.append(Mount(volume["hostPath"]["path"], mount["mountPath"], bool(mount.get("readOnly", False)),
                                  volume["hostPath"].get("type", "")))
        elif "emptyDir" in volume:
            m.empty_dirs.append(mount["mountPath"])
            empty = volume["emptyDir"] or {}
            m.empty_dir_mounts.append(EmptyDir(mount["mountPath"], empty.get("medium", ""), empty.get("sizeLimit")))
    m.memory_limit = container.get("resources", {}).get("limits", {}).get("memory")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = (container.get(name) or {}).get("httpGet")
        if get:
            m.probes[name] = Probe(get.get("path", "/"), ports.get(get["port"], get["port"]))
    for e in container.get("env", []):
        if "value" in e:
            m.env[e["name"]] = e["value"]
        elif "fieldRef" in e.get("valueFrom", {}):
            m.env[e["name"]] = "fieldRef:" + e["valueFrom"]["fieldRef"]["fieldPath"]
    return m


def _limit(resource):
    with open("/proc/self/limits") as f:
        for line in f:
            if line.startswith(resource):
                soft, hard = line[len(resource):].split()[:2]
                return soft, hard
    raise SystemExit(f"deploy_manifest: no {resource} in /proc/self/limits")


def podman_base_args():
    """What every `podman run` here needs: the runc runtime (crun refuses hybrid cgroup layouts)
    and open-files and process limits no higher than this process's own (a root without
    CAP_SYS_RESOURCE cannot raise them, and podman's defaults would)."""
    args = ["--runtime", "runc"]
    for resource, flag, cap in (("Max open files", "nofile", None), ("Max processes", "nproc", 32768)):
        # podman itself runs with at most 32768 processes (measured: runc is refused any more).
        soft, hard = (int(v) if v != "unlimited" else 1 << 62 for v in _limit(resource))
        value = min(soft, hard, cap or hard)
        args += ["--ulimit", f"{flag}={value}:{value}"]
    return args


def podman_run_args(m, scratch, node_name="test-node"):
    """`podman run` options that give a container the pod's security context and volumes.

    - capabilities, privileged, runAsUser, readOnlyRootFilesystem (without podman's extra
      tmpfs mounts, which Kubernetes does not add), hostPID, seccomp and AppArmor as written;
    - hostPath volumes bound read-only or not as the manifest says. Two exceptions, so a test
      never writes to the host's own directories: a writable hostPath gets a fresh directory
      under SCRATCH, and a read-only one the host lacks gets an empty one when its type lets
      the kubelet create it (DirectoryOrCreate); a missing `Directory` is an error, as it is
      for the kubelet;
    - emptyDir volumes: a tmpfs for medium Memory, a fresh directory under SCRATCH otherwise;
    - no network (hostNetwork false): the pod has its own network namespace, and a test
      leaves the host's network configuration alone;
    - the memory limit (resources.limits.memory), which the kernel enforces on the container's
      memory cgroup as the kubelet has it enforced;
    - podman_base_args() (runtime and limits).
    Returns the list of options; the caller adds the image and its arguments."""
    args = podman_base_args()
    if m.privileged:
        args.append("--privileged")
    else:
        if m.drop_all:
            args += ["--cap-drop", "ALL"]
        if m.capabilities:
            args += ["--cap-add", ",".join(c.upper() for c in m.capabilities)]
    if m.run_as_user is not None:
        args += ["--user", str(m.run_as_user)]
    if m.read_only_root:
        args += ["--read-only", "--read-only-tmpfs=false"]
    if m.host_pid:
        args += ["--pid", "host"]
    args += ["--network", "host" if m.host_network else "none"]
    if m.memory_limit:
        units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3}
        number = m.memory_limit.rstrip("KMGi")
        unit = m.memory_limit[len(number):]
        args += ["--memory", str(int(float(number) * units.get(unit, 1)))]
    if m.seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif m.seccomp not in (None, "RuntimeDefault"):
        raise SystemExit(f"deploy_manifest: seccompProfile {m.seccomp} has no podman equivalent here")
    if m.apparmor == "Unconfined":
        args += ["--security-opt", "apparmor=unconfined"]
    for i, mount in enumerate(m.mounts):
        source = mount.host_path
        if not mount.read_only:
            source = os.path.join(scratch, f"hostpath-{i}")
            os.makedirs(source, exist_ok=True)
        elif not os.path.exists(source):
            if mount.type == "Directory":
                raise SystemExit(f"deploy_manifest: hostPath {source} (type Directory) does not exist on this "
                                 f"machine: the pod would not start either")
            source = os.path.join(scratch, f"hostpath-{i}")
            os.makedirs(source, exist_ok=True)
        args += ["-v", f"{source}:{mount.mount_path}:{'ro' if mount.read_only else 'rw'}"]
    for i, empty in enumerate(m.empty_dir_mounts):
        if empty.medium == "Memory":
            size = f",size={empty.size_limit.replace('i', '').lower()}" if empty.size_limit else ""
            args += ["--tmpfs", f"{empty.mount_path}:rw{size}"]
        else:
            source = os.path.join(scratch, f"emptydir-{i}")
            os.makedirs(source, exist_ok=True)
            args += ["-v", f"{source}:{empty.mount_path}:rw"]
    for name, value in sorted(m.env.items()):
        if value == "fieldRef:spec.nodeName":
            value = node_name
        elif value.startswith("fieldRef:"):
            continue
        args += ["--env", f"{name}={value}"]
    return args


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("deploy_dir")
    parser.add_argument("what", choices=["caps", "setpriv-bounding", "args", "mounts", "json", "podman-args"])
    parser.add_argument("scratch", nargs="?", help="podman-args: where fresh directories for writable volumes go")
    parser.add_argument("--overlay")
    options = parser.parse_args()
    m = load(options.deploy_dir, options.overlay)
    if options.what == "caps":
        print(",".join(m.capabilities))
    elif options.what == "setpriv-bounding":
        print(",".join(["-all"] + ["+" + c for c in m.capabilities]))
    elif options.what == "args":
        print("\n".join(m.args))
    elif options.what == "mounts":
        for mount in m.mounts:
            print(f"{mount.host_path}\t{mount.mount_path}\t{'ro' if mount.read_only else 'rw'}")
    elif options.what == "podman-args":
        if not options.scratch:
            parser.error("podman-args needs SCRATCH, a directory for the writable volumes")
        print("\n".join(podman_run_args(m, options.scratch)))
    else:
        print(json.dumps(asdict(m), indent=2))


if __name__ == "__main__":
    sys.exit(main())
