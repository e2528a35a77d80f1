#!/usr/bin/env bash
# The whole suite: unit, dags, integration (real GX, HTTP server, PostgreSQL), e2e (real Airflow scheduler).
# Two xdist workers; --dist loadgroup keeps every e2e test on one worker (tests/conftest.py puts them in
# the xdist group "e2e": the Airflow platform is per session, so per worker; one at a time on 2 cores).
# pytest exits 5 when it collects no test: that is a failure here too, as it is for any other exit code.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
# Deploy stages (tests/deploy, docs/deploy.md): the pinned chart tools, then both images when buildah can run
# here (root). Once a stage has run, its tests must not skip (FLYWHEEL_REQUIRE_*). FLYWHEEL_SKIP_IMAGES=1
# skips the image builds (their tests then skip too).
scripts/tools/fetch.sh || exit 1
export FLYWHEEL_REQUIRE_TOOLS=1
echo "deploy stage: chart tools ready in $(( $(date +%s) - start )) s"
if [ "${FLYWHEEL_SKIP_IMAGES:-0}" != 1 ] && command -v buildah >/dev/null && [ "$(id -u)" -eq 0 ]; then
  images_start=$(date +%s)
  scripts/images/build.sh || exit 1
  export FLYWHEEL_REQUIRE_IMAGES=1
  echo "deploy stage: images built in $(( $(date +%s) - images_start )) s"
fi
# the browser test must not skip where chromium is installed (.ci/run installs it)
if command -v chromium >/dev/null; then
  export FLYWHEEL_REQUIRE_BROWSER=1
fi
.venv/bin/pytest tests -n "${FLYWHEEL_TEST_WORKERS:-2}" --dist loadgroup --durations=15 "$@"
status=$?
echo "pytest finished with exit ${status} in $(( $(date +%s) - start )) s"
if [ "$status" -eq 5 ]; then
  echo "no tests were collected: failing" >&2
fi
exit "$status"
