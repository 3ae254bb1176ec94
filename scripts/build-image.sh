#!/usr/bin/env bash
# Builds tcpwhy's node image without a Docker daemon and without an image registry: the root
# filesystem from Debian packages (deploy/image/make-rootfs.sh, the same step deploy/Dockerfile
# runs), tcpwhy from the build tree, put together with buildah (`from scratch`, `copy`,
# `commit`). The image lands in this machine's container storage, where podman runs it.
#
#   sudo bash scripts/build-image.sh [--binary PATH] [--tag NAME] [--save FILE] [--push REF]
#
#   --binary PATH  the tcpwhy to ship (default: build/tcpwhy, built with `cmake --build build --target tcpwhy`)
#   --tag NAME     image name (default localhost/tcpwhy:VERSION, VERSION from CMakeLists.txt)
#   --save FILE    also write the image as an OCI archive named as deploy/base names it
#                  (tcpwhy:VERSION), to import on nodes without a registry:
#                  `ctr -n k8s.io images import FILE` (containerd), then kubectl apply -k deploy/base
#   --push REF     also push to a registry (docker://REGISTRY/tcpwhy:TAG) and print the digest
#                  and the `kustomize edit set image` line that pins it
#
# Prints the image's size. Debian's buildah, podman and runc: apt-get install buildah podman runc.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "build-image: $*" >&2; exit 2; }

version=$(sed -n 's/^project(tcpwhy VERSION \([0-9.]*\).*/\1/p' "$repo/CMakeLists.txt")
binary=$repo/build/tcpwhy
tag=localhost/tcpwhy:$version
save="" push=""
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --tag) tag=${2:?--tag needs a name}; shift 2 ;;
    --save) save=${2:?--save needs a file}; shift 2 ;;
    --push) push=${2:?--push needs a reference like docker://REGISTRY/tcpwhy:$version}; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (buildah writes the system's container storage): sudo bash $0"
command -v buildah >/dev/null || die "buildah is not installed: apt-get install buildah podman runc"
[ -n "$binary" ] && [ -x "$binary" ] ||
  die "no tcpwhy at ${binary:-build/tcpwhy}: build it first (cmake --build build --target tcpwhy) or give --binary PATH"
arch=$(dpkg --print-architecture)
[ -f "$repo/bpf/vmlinux/$(uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')/vmlinux.h" ] ||
  echo "build-image: WARNING no committed vmlinux.h for $(uname -m): is the binary really for $arch?" >&2

cache=$repo/build/image-debs  # the .deb files, kept between builds
work=$(mktemp -d)
container=""
cleanup() {
  [ -n "$container" ] && buildah rm "$container" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

bash "$repo/deploy/image/make-rootfs.sh" "$work/rootfs" "$cache"
mkdir -p "$work/rootfs/usr/local/bin"
# As in the Dockerfile: no debug sections (the build keeps them for the tests and perf).
strip --strip-debug -o "$work/rootfs/usr/local/bin/tcpwhy" "$binary"

created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
previous=$(buildah inspect --type image --format '{{.FromImageID}}' "$tag" 2>/dev/null || true)
container=$(buildah from --quiet scratch)
buildah copy --quiet "$container" "$work/rootfs/" / >/dev/null
buildah config --os linux --arch "$arch" --user 0:0 --workingdir / \
  --entrypoint '["/usr/local/bin/tcpwhy"]' --cmd daemon \
  --label org.opencontainers.image.title=tcpwhy \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.created=$created" \
  --label "org.opencontainers.image.description=Why did that TCP connection end the way it did? eBPF TCP lifecycle tracer, one per node" \
  --label org.opencontainers.image.base.name=scratch \
  "$container"
id=$(buildah commit --quiet --rm "$container" "$tag")
container=""
# The image this tag named before, now untagged: removed unless a container still uses it.
if [ -n "$previous" ] && [ "$previous" != "$id" ]; then buildah rmi "$previous" >/dev/null 2>&1 || true; fi
size=$(podman image inspect --format '{{.Size}}' "$tag" 2>/dev/null || buildah inspect --format '{{.ImageSize}}' "$tag" 2>/dev/null || echo 0)
echo "build-image: $tag (${id:0:12}, $arch): $((size / 1024 / 1024)) MiB ($size bytes) uncompressed"

if [ -n "$save" ]; then
  rm -f "$save"
  # The DaemonSet's `image: tcpwhy:VERSION` is docker.io/library/tcpwhy:VERSION to containerd.
  name=$(sed -n 's/^ *image: *\([^ ]*\).*/\1/p' "$repo/deploy/base/daemonset.yaml" | head -1)
  case $name in */*) ;; *) name=docker.io/library/$name ;; esac
  buildah push --quiet "$tag" "oci-archive:$save:$name" >/dev/null
  echo "build-image: saved $save as $name ($(du -h "$save" | cut -f1))"
fi
if [ -n "$push" ]; then
  buildah push --quiet --digestfile "$work/digest" "$tag" "$push"
  echo "build-image: pushed $push, manifest digest $(cat "$work/digest")"
  case $push in
    docker://*)
      ref=${push#docker://}
      echo "build-image: pin it: (cd deploy/base && kustomize edit set image tcpwhy=${ref%:*}@$(cat "$work/digest"))" ;;
  esac
fi
