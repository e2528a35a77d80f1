"""Every DAG file: imports cleanly, follows the conventions, parses fast, pulls no heavy module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.dags.conftest import DAG_FILES, DAGS, PARSE_FIELDS, run_python

#: modules a DAG file must never import at parse time (ARCHITECTURE.md: seconds each)
HEAVY_MODULES = (
    "pandas",
    "pyarrow",
    "torch",
    "mlflow",
    "feast",
    "great_expectations",
    "evidently",
    "onnx",
    "onnxruntime",
    "duckdb",
    "kubernetes",
    "ml_tasks",
)
PARSE_BUDGET_SECONDS = 2.0

# ONE interpreter for every DAG file: airflow.sdk is imported once (the dag-processor has it loaded
# already), then each file is parsed alone. The project's helper modules (dags/_lib) are dropped from
# sys.modules before each file, so each time includes them, as in the dag-processor's parse of one file.
# "heavy" lists every heavy module loaded so far (strict: one that slipped in fails this file and the next).
PARSE_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk
sdk_seconds = time.perf_counter() - t0
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
results = {{}}
for name in {paths!r}:
    for module in [m for m in sys.modules if m == "_lib" or m.startswith("_lib.")]:
        del sys.modules[module]
    before = set(sys.modules)
    path = Path(name)
    t1 = time.perf_counter()
    bag = BundleDagBag(dag_folder=str(path), bundle_path=path.parent)
    parse_seconds = time.perf_counter() - t1
    new = set(sys.modules) - before
    results[path.name] = {{
        "dags": sorted(bag.dags), "errors": {{k: v[-2000:] for k, v in bag.import_errors.items()}},
        "parse_seconds": parse_seconds, "sdk_import_seconds": sdk_seconds, "new_modules": len(new),
        "heavy": sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}),
    }}
print(json.dumps(results))
"""


@pytest.fixture(scope="session")
def parse_probe() -> dict[str, dict[str, Any]]:
    """Every DAG file parsed in one fresh interpreter: per file, its DAGs, errors, time, heavy modules."""
    code = PARSE_PROBE.format(paths=[str(p) for p in DAG_FILES], heavy=set(HEAVY_MODULES))
    results: dict[str, dict[str, Any]] = run_python(code)
    return results


def test_there_are_dag_files() -> None:
    assert [p.name for p in DAG_FILES], f"no DAG files in {DAGS}"
    assert {"taxi_ingest.py", "taxi_features.py"} <= {p.name for p in DAG_FILES}


def test_dagbag_has_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert sorted(dagbag.dags) == sorted(p.stem for p in DAG_FILES)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_conventions(dagbag: Any, path: Path) -> None:
    dags = [d for d in dagbag.dags.values() if Path(d.fileloc) == path]
    assert len(dags) == 1, f"{path.name}: expected one DAG, found {[d.dag_id for d in dags]}"
    dag = dags[0]
    assert dag.dag_id == path.stem, "dag_id must be the file's stem"
    assert dag.tags, f"{dag.dag_id}: no tags"
    assert dag.doc_md and len(dag.doc_md.strip()) > 100, f"{dag.dag_id}: doc_md missing or trivial"
    assert dag.start_date is not None, f"{dag.dag_id}: no static start_date"
    assert dag.max_active_runs <= 4, (
        f"{dag.dag_id}: max_active_runs {dag.max_active_runs} too high for 2 cores"
    )
    assert dag.tasks, f"{dag.dag_id}: no tasks"
    for task in dag.tasks:
        assert task.retries > 0, f"{dag.dag_id}.{task.task_id}: retries must be > 0"
        assert task.retry_delay.total_seconds() > 0, f"{dag.dag_id}.{task.task_id}: retry_delay must be > 0"
    # the trigger form: every param titled and explained; no test hook in a production form
    for name in dag.params:
        param = dag.params.get_param(name)
        title = param.schema.get("title")
        assert title and len(title) <= 30, f"{dag.dag_id}: param {name} has no (short) title"
        assert len(param.description or "") > 10, f"{dag.dag_id}: param {name} has no description"
        assert "fault" not in name, f"{dag.dag_id}: test hook {name} in the production trigger form"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parse_time_and_no_heavy_imports(
    parse_probe: dict[str, dict[str, Any]], path: Path, record_property: Any
) -> None:
    result = parse_probe[path.name]
    # reaches the terminal summary through the test report, also from an xdist worker
    record_property("dag_parse", {"file": path.name, **{k: result[k] for k in PARSE_FIELDS}})
    assert result["errors"] == {}, result["errors"]
    assert result["dags"] == [path.stem]
    assert result["heavy"] == [], f"{path.name} pulls heavy modules at parse time: {result['heavy']}"
    assert result["parse_seconds"] < PARSE_BUDGET_SECONDS, (
        f"{path.name} parsed in {result['parse_seconds']:.2f} s (budget {PARSE_BUDGET_SECONDS} s)"
    )
