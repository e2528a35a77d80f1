#!/usr/bin/env bash
# Build both images from docker/*/Dockerfile with buildah (the stand-in base first when it is missing), as
# a user builds them with Docker, plus what only this host needs: the CA bundle ($PIP_CERT) mounted
# read-only for pip/uv (never copied into a layer) and the local CPU torch wheel folder ($PIP_FIND_LINKS)
# handed to uv as find-links. Writes build/images/<name>.json (size, seconds). Usage: build.sh [ml-tasks|airflow]...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=scripts/images/common.sh
source "$here/common.sh"
need buildah
cd "$repo"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ml-tasks airflow)
out="$repo/build/images"
mkdir -p "$out"

"$here/base.sh"

version=$(sed -nE 's/^version = "([^"]+)"/\1/p' pyproject.toml | head -1)
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
common=(--isolation chroot --network host --build-arg "BASE_IMAGE=$BASE_IMAGE"
        --build-arg "VERSION=$version" --build-arg "REVISION=$revision")
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  common+=(-v "$PIP_CERT:/etc/ssl/certs/ca-certificates.crt:ro")
fi

declare -A tags=([ml-tasks]="$ML_TASKS_IMAGE" [airflow]="$AIRFLOW_IMAGE")
for name in "${targets[@]}"; do
  tag="${tags[$name]:?unknown image $name (ml-tasks or airflow)}"
  extra=()
  if [ "$name" = ml-tasks ] && [ -n "${PIP_FIND_LINKS:-}" ] && [ -d "$PIP_FIND_LINKS" ]; then
    # the local CPU torch wheel instead of PyTorch's index (unreachable here)
    extra=(-v "$PIP_FIND_LINKS:/wheels:ro" --build-arg FIND_LINKS=/wheels --build-arg TORCH_INDEX_URL=)
  fi
  start=$(date +%s)
  echo "images: building $tag from docker/$name/Dockerfile"
  bah bud "${common[@]}" "${extra[@]}" -f "docker/$name/Dockerfile" -t "$tag" . >"$out/$name.log" 2>&1 || {
    tail -30 "$out/$name.log" >&2
    echo "images: $name failed (log: $out/$name.log)" >&2
    exit 1
  }
  seconds=$(( $(date +%s) - start ))
  size=$(image_size "$tag")
  echo "images: $tag built in ${seconds} s, ${size}"
  printf '{"image": "%s", "seconds": %d, "size": "%s"}\n' "$tag" "$seconds" "$size" >"$out/$name.json"
done
# vfs keeps a full copy per image: drop the ones a rebuild left untagged
bah rmi --prune >/dev/null 2>&1 || true
