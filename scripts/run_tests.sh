#!/usr/bin/env bash
# The whole suite: unit, dags, integration (real GX, HTTP server, PostgreSQL), e2e (real Airflow scheduler).
# pytest exits 5 when it collects no test: that is a failure here too, as it is for any other exit code.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
.venv/bin/pytest tests --durations=15 "$@"
status=$?
echo "pytest finished with exit ${status} in $(( $(date +%s) - start )) s"
if [ "$status" -eq 5 ]; then
  echo "no tests were collected: failing" >&2
fi
exit "$status"
