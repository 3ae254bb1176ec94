#!/usr/bin/env bash
# Makes the root filesystem of tcpwhy's image from Debian packages, without a base image:
# apt resolves deploy/image/packages.txt and everything it depends on (against an empty
# package database, so the whole closure is fetched, not only what this host lacks); each
# package is unpacked as it is (no maintainer scripts run: nothing in this set needs one at
# run time), into Debian's merged-/usr layout. No shell, no package manager, no apt.
#
#   make-rootfs.sh ROOTFS [DEB_CACHE]
#
# ROOTFS must not exist or be empty. DEB_CACHE (default: a temporary directory) keeps the
# downloaded .deb files between runs. The packages come from this machine's apt sources.
# What is installed is recorded the way distroless images record it, one control stanza per
# package in /var/lib/dpkg/status.d/, which image scanners read.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "make-rootfs: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: make-rootfs.sh ROOTFS [DEB_CACHE]"
rootfs=$1
if [ -e "$rootfs" ] && [ -n "$(ls -A "$rootfs")" ]; then die "$rootfs is not empty: give a new directory"; fi
for tool in apt-get dpkg-deb ldconfig tar; do
  command -v "$tool" >/dev/null || die "$tool not found: run this on Debian (apt, dpkg, libc-bin, tar)"
done
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
cache=${2:-$state/debs}
mkdir -p "$rootfs" "$cache/partial" "$state/dpkg"
: >"$state/dpkg/status"
mapfile -t packages < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/packages.txt")
arch=$(dpkg --print-architecture)

# An empty dpkg database of our own: apt resolves the full closure, and takes its locks in
# $state, not the system's (another apt may be running on this machine).
apt_options=(-o "Dir::State::status=$state/dpkg/status" -o "Dir::Cache::archives=$cache"
             -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o APT::Install-Recommends=false
             -o Debug::NoLocking=true -o "APT::Architecture=$arch")
# What apt would install (simulated): "Inst NAME (VERSION ARCHIVE [ARCH])" per package, with
# " []" after it for some.
if ! apt-get "${apt_options[@]}" install -s -qq -y "${packages[@]}" >"$state/plan" 2>"$state/apt.err"; then
  die "apt cannot resolve ${packages[*]}: $(cat "$state/apt.err") (run apt-get update first)"
fi
# The file apt downloads each to: NAME_VERSION_ARCH.deb, an epoch's colon written %3a.
mapfile -t debs < <(sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([^]]*\)\]).*/\1_\2_\3.deb/p' "$state/plan" | sed 's/:/%3a/g')
[ ${#debs[@]} -gt 0 ] || die "apt resolved no packages from $here/packages.txt: $(head -c 500 "$state/plan")"
# Package lists older than the mirror name files it no longer has: update them once and retry.
if ! apt-get "${apt_options[@]}" install --download-only -qq -y "${packages[@]}" >/dev/null 2>"$state/apt.err"; then
  echo "make-rootfs: download failed ($(head -c 200 "$state/apt.err")); apt-get update and one more try" >&2
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get "${apt_options[@]}" install -s -qq -y "${packages[@]}" >"$state/plan" 2>/dev/null || true
  mapfile -t debs < <(sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([^]]*\)\]).*/\1_\2_\3.deb/p' "$state/plan" | sed 's/:/%3a/g')
  apt-get "${apt_options[@]}" install --download-only -qq -y "${packages[@]}" >/dev/null 2>"$state/apt.err" ||
    die "apt-get could not download the packages: $(cat "$state/apt.err")"
fi

# Debian 12's merged /usr: /bin, /sbin and /lib are links into /usr, as debootstrap makes them.
mkdir -p "$rootfs/usr/bin" "$rootfs/usr/sbin" "$rootfs/usr/lib"
ln -s usr/bin "$rootfs/bin"
ln -s usr/sbin "$rootfs/sbin"
ln -s usr/lib "$rootfs/lib"
if [ "$arch" = amd64 ]; then mkdir -p "$rootfs/usr/lib64" && ln -s usr/lib64 "$rootfs/lib64"; fi

mkdir -p "$rootfs/var/lib/dpkg/status.d"
for deb in "${debs[@]}"; do
  file=$cache/$deb
  [ -f "$file" ] || die "apt did not download $deb"
  # --keep-directory-symlink: a package's ./lib/ lands in usr/lib through the link above.
  dpkg-deb --fsys-tarfile "$file" | tar -x --keep-directory-symlink -C "$rootfs"
  name=$(dpkg-deb -f "$file" Package)
  { echo "Package: $name"; echo "Status: install ok installed"
    dpkg-deb -f "$file" Priority Section Installed-Size Maintainer Architecture Multi-Arch Source Version \
      Replaces Provides Depends Pre-Depends Breaks Conflicts Description Homepage; } \
    >"$rootfs/var/lib/dpkg/status.d/$name"
done

# Documentation, manuals and translations are not needed to run; licences stay.
find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$rootfs/usr/share/man" "$rootfs/usr/share/info" "$rootfs/usr/share/locale" \
       "$rootfs/usr/share/lintian" "$rootfs/usr/share/doc-base" "$rootfs/usr/share/bug" "$rootfs/usr/share/menu"
# glibc's iconv modules (8 MiB): tcpwhy converts no character sets (its text is ASCII and UTF-8).
rm -rf "$rootfs"/usr/lib/*-linux-gnu/gconv

# What a maintainer script would otherwise have made.
mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/root" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev" "$rootfs/run" \
         "$rootfs/var/lib/tcpwhy" "$rootfs/run/tcpwhy" "$rootfs/host"
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root" "$rootfs/run/tcpwhy"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' \
  >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
printf 'include /etc/ld.so.conf.d/*.conf\n' >"$rootfs/etc/ld.so.conf"
ldconfig -r "$rootfs"
echo "make-rootfs: ${#debs[@]} packages into $rootfs ($(du -sh "$rootfs" | cut -f1))"
