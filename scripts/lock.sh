#!/usr/bin/env bash
# Re-resolve requirements.lock from pyproject.toml (Python 3.11, all extras).
# torch's local label (+cpu, from a local find-links wheel) is dropped so the lock stays portable.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp)
# Start from the current lock: uv keeps its pins (preferences) and resolves only what changed.
grep -v "^torch==" requirements.lock > "$tmp"  # torch: let the find-links CPU wheel win
# uv does not read pip's find-links: the local CPU torch wheel (and no CUDA packages) when it is set.
export UV_FIND_LINKS="${UV_FIND_LINKS:-${PIP_FIND_LINKS:-}}"
.venv/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 --no-header -o "$tmp" >/dev/null
{
  echo "# Flywheel lock: the full resolved set for Python 3.11 (regenerate with \`make lock\`)."
  echo "# torch is pinned without a local label: the CPU wheel from \$PIP_FIND_LINKS is taken where present."
  sed -E 's/^(torch==[0-9.]+)\+[a-z0-9]+/\1/' "$tmp"
} > requirements.lock
rm -f "$tmp"
echo "requirements.lock: $(grep -cE '^[a-zA-Z]' requirements.lock) packages"
