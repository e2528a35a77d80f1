"""DAG test fixtures: the repo's DAG files parsed as the dag-processor parses them.

Airflow reads its configuration when first imported, so the environment is set here, before any test
module imports airflow: a throw-away AIRFLOW_HOME (nothing is written to ~/airflow), the repo's dags
folder, no examples.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dags._kube_env import KUBECONFIG, kube_env

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
PLUGINS = REPO / "plugins"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))

_HOME = tempfile.mkdtemp(prefix="flywheel-dagtests-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
AIRFLOW_ENV = {
    "AIRFLOW_HOME": _HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
}
os.environ.update(AIRFLOW_ENV)
# the helper package (dags/_lib) is importable the way the dag-processor makes it: dags/ on sys.path
if str(DAGS) not in sys.path:
    sys.path.append(str(DAGS))
# and the plugin's package (flywheel_ui) the way Airflow makes it: the plugins folder on sys.path
if str(PLUGINS) not in sys.path:
    sys.path.append(str(PLUGINS))

#: what each parse test records (``record_property("dag_parse", ...)``) for the terminal summary
PARSE_FIELDS = ("parse_seconds", "sdk_import_seconds", "new_modules")


@pytest.fixture(scope="session")
def dagbag() -> Any:
    """Every DAG file in dags/, loaded like the dag-processor does (bundle path on sys.path)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)


@pytest.fixture
def clean_runner_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No FLYWHEEL_RUNNER from the outer environment leaks into a test."""
    monkeypatch.delenv("FLYWHEEL_RUNNER", raising=False)
    yield


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 300) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (the repo venv) and return the JSON it prints last."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **AIRFLOW_ENV, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON on stdout:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return dict(json.loads(lines[-1]))


# -- the kubernetes runner's tests (test_kubernetes_runner*.py) -------------------------------------------
@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(KUBECONFIG)
    return path


@pytest.fixture(scope="module")
def kube_runner_env(kubeconfig: Path) -> Iterator[dict[str, str]]:
    """The kubernetes runner's environment for the whole module (DAGs read it at parse time)."""
    values = kube_env(kubeconfig)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in values.items():
            mp.setenv(name, value)
        yield values
