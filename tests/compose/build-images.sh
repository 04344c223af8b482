#!/usr/bin/env bash
# Builds the image of the docker-compose cluster without any registry: a root
# file system FROM scratch holding the release binaries (supervisor, agent,
# depmgr, supctl; debug info stripped), the shared libraries `ldd` names for
# them plus the dynamic loader, and a static busybox with its applets in /bin
# (/bin/sh is busybox: the shell of the modules and of the health checks).
# The root is imported with `docker import`; nothing is pulled.
#
# Usage: tests/compose/build-images.sh        (from anywhere)
#   SUPCLUSTER_IMAGE  image name           (default supcluster:local)
#   SUP_BIN_DIR       take the binaries from here and do not run cargo
#   BUSYBOX           busybox to copy      (default /bin/busybox; .ci/setup
#                                           installs busybox-static)
# Progress goes to stderr; the last line on stdout is the image name.
# An unchanged root (same content digest) leaves the existing image alone.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
image="${SUPCLUSTER_IMAGE:-supcluster:local}"
busybox="${BUSYBOX:-/bin/busybox}"
bins=(supervisor agent depmgr supctl)

log() { echo "build-images: $*" >&2; }
die() { echo "build-images: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
[ -x "$busybox" ] || die "$busybox is missing (run .ci/setup, or apt-get install busybox-static)"

if [ -n "${SUP_BIN_DIR:-}" ]; then
  bin_dir="$SUP_BIN_DIR"
else
  log "cargo build --release --workspace --bins"
  (cd "$repo" && cargo build --release --workspace --bins --quiet) >&2
  target="$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  [ -n "$target" ] || die "cannot tell cargo's target directory"
  bin_dir="$target/release"
fi
for b in "${bins[@]}"; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing"
done

stage="$(mktemp -d "${TMPDIR:-/tmp}/supcluster-root.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
root="$stage/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/data" "$root/root" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"

# The shared libraries (and the loader) of one binary, as `ldd` names them,
# copied to the same paths in the root.
copy_libs() {
  local lib
  { ldd "$1" 2>/dev/null || true; } | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | while read -r lib; do
    if [ ! -e "$root$lib" ]; then
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    fi
  done
}

for b in "${bins[@]}"; do
  if command -v strip >/dev/null; then
    strip --strip-debug -o "$root/bin/$b" "$bin_dir/$b"
  else
    cp "$bin_dir/$b" "$root/bin/$b"
  fi
  chmod 0755 "$root/bin/$b"
  copy_libs "$bin_dir/$b"
done

cp -L "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
copy_libs "$busybox" # nothing for a static busybox
for applet in $("$busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
[ -e "$root/bin/sh" ] || die "busybox has no sh applet"

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

# A reproducible tarball, so that its digest names the content.
tarball="$stage/rootfs.tar"
tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$tarball" .
digest="$(sha256sum "$tarball" | cut -c1-64)"

old_id="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
old_digest="$(docker image inspect -f '{{index .Config.Labels "supcluster.rootfs"}}' "$image" 2>/dev/null || true)"
if [ -n "$old_id" ] && [ "$old_digest" = "$digest" ]; then
  log "$image is up to date (rootfs sha256 $digest)"
else
  log "importing $(du -h "$tarball" | cut -f1) root as $image"
  docker import \
    --change 'ENV PATH=/bin' \
    --change 'WORKDIR /' \
    --change "LABEL supcluster.rootfs=$digest" \
    --message "supcluster root (rootfs sha256 $digest)" \
    "$tarball" "$image" >/dev/null
  # The previous version is now untagged; remove it unless a container uses it.
  if [ -n "$old_id" ]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
  fi
fi
echo "$image"
