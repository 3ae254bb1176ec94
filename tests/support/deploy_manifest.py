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
    )
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "hostPath" in volume:
            m.mounts.append(Mount(volume["hostPath"]["path"], mount["mountPath"], bool(mount.get("readOnly", False))))
        elif "emptyDir" in volume:
            m.empty_dirs.append(mount["mountPath"])
    return m


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("deploy_dir")
    parser.add_argument("what", choices=["caps", "setpriv-bounding", "args", "mounts", "json"])
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
    else:
        print(json.dumps(asdict(m), indent=2))


if __name__ == "__main__":
    sys.exit(main())
