#!/usr/bin/env bash
# Build a local stand-in for python:3.11-slim-bookworm when no registry can be reached (CI here has no
# Docker Hub): a Debian bookworm minbase root with Python 3.11 from Debian's own packages, committed as ONE
# layer under the name the Dockerfiles' `ARG BASE_IMAGE` defaults to, so the Dockerfiles stay unchanged.
# Skips when an image of that name is already in local storage. Needs root, buildah and debootstrap.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/images/common.sh
source "$here/common.sh"

if bah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  echo "base: $BASE_IMAGE already present"
  exit 0
fi
need debootstrap
mirror="${FLYWHEEL_DEBIAN_MIRROR:-$(apt_mirror)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "base: debootstrap bookworm from $mirror (the stand-in for $BASE_IMAGE)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  exit 1
}
# the official image's layout: `python` and `python3` on PATH under /usr/local/bin; no apt lists or caches
ln -sf /usr/bin/python3 "$work/rootfs/usr/local/bin/python3"
ln -sf /usr/bin/python3 "$work/rootfs/usr/local/bin/python"
rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"* "$work/rootfs/var/log/"*
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
ctr=$(bah from scratch)
bah add "$ctr" "$work/rootfs.tar" / >/dev/null
bah config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
  --cmd python3 --label org.opencontainers.image.description="local stand-in for $BASE_IMAGE (debootstrap)" \
  "$ctr"
bah commit --rm "$ctr" "$BASE_IMAGE" >/dev/null
echo "base: $BASE_IMAGE built in $(( $(date +%s) - start )) s ($(image_size "$BASE_IMAGE"))"
