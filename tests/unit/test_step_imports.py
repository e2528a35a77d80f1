"""What a step imports: light steps pull no heavy library; Feast comes without typeguard's work and torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml_tasks.jsonout import read_summary

REPO = Path(__file__).resolve().parents[2]
#: seconds each to import (ARCHITECTURE.md): a step that does not use one must not import it
HEAVY = ("feast", "great_expectations", "evidently", "torch", "mlflow", "onnxruntime", "onnx")


def run_python(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in the repo with its own data root; it must succeed."""
    env = {**os.environ, "FLYWHEEL_DATA_ROOT": str(tmp_path / "data")}
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def imported_modules(argv: list[str], tmp_path: Path) -> tuple[set[str], dict[str, object]]:
    """Every module ``python -X importtime ARGV`` imported, and the step's JSON summary."""
    proc = run_python(["-X", "importtime", *argv], tmp_path)
    names = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "cumulative" not in line
    }
    return names, read_summary(proc.stdout)


def heavy(names: set[str]) -> list[str]:
    return sorted({n.partition(".")[0] for n in names} & set(HEAVY))


def test_features_pending_imports_no_heavy_library(tmp_path: Path) -> None:
    names, summary = imported_modules(["-m", "ml_tasks.cli", "features-pending"], tmp_path)
    assert summary["step"] == "features-pending"
    # an empty data root: nothing curated, nothing to build
    assert (summary["curated_days"], summary["missing"], summary["stale"]) == (0, [], [])
    assert "ml_tasks.features.pending" in names  # the probe sees the step's own imports
    assert heavy(names) == []


def test_cli_help_imports_no_heavy_library_nor_pyarrow(tmp_path: Path) -> None:
    code = "from ml_tasks.cli import app; import json, sys; print(json.dumps({'n': len(sys.modules)}))"
    names, summary = imported_modules(["-c", code], tmp_path)
    assert int(str(summary["n"])) > 0
    assert "ml_tasks.cli.features" in names
    assert heavy(names) == []
    assert sorted(n for n in names if n.partition(".")[0] in ("pyarrow", "duckdb", "pandas")) == []


@pytest.mark.timeout(300)
def test_import_feast_skips_typeguard_and_torch_for_feast_only(tmp_path: Path) -> None:
    code = """
import json, sys
from ml_tasks.features.feast_import import import_feast
feast = import_feast()
from feast.feature_view import FeatureView
torch_hidden = "torch" not in sys.modules
import torch  # visible again after Feast is imported
from typeguard import TypeCheckError, typechecked

@typechecked
def double(x: int) -> int:
    return 2 * x

try:
    double("a")
    others_checked = False
except TypeCheckError:
    others_checked = True
print(json.dumps({
    "torch_hidden": torch_hidden, "torch": torch.__name__, "others_checked": others_checked,
    "feast_instrumented": "TypeCheckMemo" in FeatureView.__init__.__code__.co_names,
}))
"""
    script = tmp_path / "probe.py"  # typeguard instruments from source: a file, not -c
    script.write_text(code)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=REPO, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {
        "torch_hidden": True,
        "torch": "torch",
        "others_checked": True,
        "feast_instrumented": False,
    }


@pytest.mark.timeout(300)
def test_declarations_pass_feasts_own_type_checks(tmp_path: Path) -> None:
    # the steps import Feast without typeguard (import_feast); here Feast is imported plainly, so its
    # @typechecked classes check every argument of the declarations in feature_repo/
    code = """
import json
import feast
from feast.feature_view import FeatureView
from ml_tasks.features.store import feature_repo_path, load_declarations, store_variables
from ml_tasks.settings import Settings
settings = Settings()
contents = load_declarations(feature_repo_path(settings), "flywheel", store_variables(settings))
print(json.dumps({
    "instrumented": "TypeCheckMemo" in FeatureView.__init__.__code__.co_names,
    "views": sorted(v.name for v in contents.feature_views),
}))
"""
    proc = run_python(["-c", code], tmp_path)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"instrumented": True, "views": ["company_stats", "pickup_area_stats"]}


def test_validate_of_an_empty_day_imports_no_great_expectations(tmp_path: Path) -> None:
    # a day with zero trips: validate judges it on its row count, with no GX run and no GX import
    day = ["--start", "2024-05-01"]
    extract = ["-m", "ml_tasks.cli", "extract", *day, "--source", "synthetic", "--trips-per-day", "0"]
    run_python(extract, tmp_path)
    run_python(["-m", "ml_tasks.cli", "transform", *day], tmp_path)
    names, summary = imported_modules(["-m", "ml_tasks.cli", "validate", *day, "--allow-empty"], tmp_path)
    assert summary["step"] == "validate"
    assert (summary["rows_in"], summary["accepted"], summary["quarantined"]) == (0, 0, 0)
    assert summary["verdict"] == "passed"
    partitions = summary["partitions"]
    assert isinstance(partitions, list)
    assert [p["dt"] for p in partitions] == ["2024-05-01"]
    assert {"ml_tasks.validation.step", "ml_tasks.validation.judge", "ml_tasks.validation.rules"} <= names
    assert "ml_tasks.validation.suite" not in names
    assert heavy(names) == []
    accounting = json.loads((tmp_path / "data/reports/validation/dt=2024-05-01/accounting.json").read_text())
    assert [r["expectation"] for r in accounting["row_rules"]][:2] == [
        "expect_column_values_to_be_null",
        "expect_column_values_to_not_be_null",
    ]
