"""Lineage on a real chain built by the real CLI (tests/integration/_pipeline.py): synthetic trips ->
extract/transform/validate/publish -> features -> training set -> train/export/check/register/promote ->
predict; ``ml-tasks lineage`` of the model version and of a predictions partition goes down to the raw
partitions, and every hash it reports is the one computed here from the files."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ml_tasks.lineage import render_text
from tests.conftest import run_cli
from tests.integration._pipeline import TRAIN_DAYS, PipelineRoot, day

pytestmark = [pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def scored(pipeline_root: PipelineRoot, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A private copy of the pipeline root with one scored day (the shared root stays unscored)."""
    copy = pipeline_root.copy_to(tmp_path_factory.mktemp("lineage") / "data")
    target = copy.unscored_days[0]
    summary = run_cli(
        "predict",
        "--start",
        target.isoformat(),
        "--end",
        (target + dt.timedelta(days=1)).isoformat(),
        "--model",
        "taxi_tips@champion",
        env=copy.env,
    )
    assert summary["rows"] > 500, summary
    return {"root": copy, "day": target, "predict": summary}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_partitions_against_files(result: dict[str, Any], data_root: Path) -> int:
    """Every partition node's file hashes equal the files on disk (computed here); returns how many."""
    checked = 0
    for node in result["nodes"].values():
        if node["kind"] in ("model_version", "mlflow_run"):
            continue
        assert node["exists"] and node["manifest"] and node["status"] == "verified", node
        folder = data_root / node["id"]
        assert node["files"] == {name: _sha256(folder / name) for name in node["files"]}, node["id"]
        assert node["files"], node["id"]
        checked += 1
    return checked


def test_model_version_traces_to_raw_partitions_with_verified_hashes(scored: dict[str, Any]) -> None:
    root: PipelineRoot = scored["root"]
    result = run_cli("lineage", f"taxi_tips/{root.version}", "--json", env=root.env)
    model_id = f"models:/taxi_tips/{root.version}"
    assert result["root"] == model_id and result["summary"]["ok"] is True, result["summary"]
    model = result["nodes"][model_id]
    assert "champion" in model["facts"]["aliases"]
    assert model["facts"]["runs"]["train"] == root.steps["train"]["run_id"]
    run = result["nodes"][f"runs:/{root.steps['train']['run_id']}"]
    assert (run["facts"]["dag_id"], run["facts"]["dag_run_id"], run["facts"]["task_id"]) == (
        "fixture",
        "fixture_run",
        "train",
    )
    assert run["facts"]["code_version"] == "test" and run["facts"]["status"] == "FINISHED"
    assert run["facts"]["experiment"] == "flywheel-taxi-tips" and run["facts"]["start_time"]
    # the training set: its sha256 recomputed from its files equals the model's tag and the step's summary
    ts_id = "/".join(Path(root.training_set["uri"]).parts[-3:])  # training_sets/<service>/<start>_<end>
    assert run["children"] == [ts_id]
    ts = result["nodes"][ts_id]
    part = root.data_root / ts_id / "part-00000.parquet"
    assert ts["facts"]["sha256"] == hashlib.sha256(_sha256(part).encode()).hexdigest()
    assert ts["facts"]["sha256"] == root.training_set["sha256"] == ts["facts"]["sha256_recorded"]
    assert ts["facts"]["sha256_verdict"] == "verified" and ts["facts"]["rows"] == root.training_set["rows"]
    # down to the raw partitions of the training days, each once
    train_days = [day(i).isoformat() for i in range(TRAIN_DAYS)]
    assert result["summary"]["raw_partitions"] == [f"raw/trips/dt={d}" for d in train_days]
    by_kind = result["summary"]["by_kind"]
    assert (
        by_kind["curated"] == TRAIN_DAYS
        and by_kind["raw"] == TRAIN_DAYS
        and by_kind["features"] == 2 * TRAIN_DAYS
    )
    for d in train_days:
        raw = result["nodes"][f"raw/trips/dt={d}"]
        assert raw["facts"]["source"] == "synthetic" and raw["facts"]["sources"][0]["source"] == "synthetic"
        curated = result["nodes"][f"curated/trips/dt={d}"]
        assert curated["children"] == [f"raw/trips/dt={d}"]
        assert curated["facts"]["rows"] + curated["facts"]["quarantined"] == raw["facts"]["rows"]
    # the training set + 2 feature views, curated and raw per training day
    assert _check_partitions_against_files(result, root.data_root) == 1 + 4 * TRAIN_DAYS


def test_predictions_partition_prints_the_whole_chain(scored: dict[str, Any]) -> None:
    root: PipelineRoot = scored["root"]
    target = f"predictions/taxi_tips/dt={scored['day'].isoformat()}"
    result = run_cli("lineage", target, "--json", env=root.env)
    assert result["root"] == target and result["summary"]["ok"] is True, result["summary"]
    pred = result["nodes"][target]
    assert pred["facts"]["rows"] == scored["predict"]["rows"]
    assert pred["facts"]["model"]["version"] == root.version
    model_id = f"models:/taxi_tips/{root.version}"
    assert pred["children"][0] == model_id
    assert {c["what"]: c["ok"] for c in result["nodes"][model_id]["checks"]} == {
        f"onnx_sha256 of {target}": True,
        f"feature_service of {target}": True,
    }
    # the prediction's own inputs (its day's trips and the features of the days before) reach more raw days
    # than the training set: every day up to the scored one, each raw partition once
    scored_offset = (scored["day"] - day(0)).days
    assert result["summary"]["raw_partitions"] == [f"raw/trips/dt={day(i)}" for i in range(scored_offset + 1)]
    assert f"curated/trips/dt={scored['day']}" in pred["children"]
    kinds = result["summary"]["by_kind"]
    assert {k: kinds[k] for k in ("predictions", "model_version", "mlflow_run", "training_set")} == {
        "predictions": 1,
        "model_version": 1,
        "mlflow_run": 1,
        "training_set": 1,
    }
    assert kinds["curated"] == kinds["raw"] == scored_offset + 1
    assert _check_partitions_against_files(result, root.data_root) == 2 + kinds["features"] + 2 * kinds["raw"]

    # the text form: one summary line, then a tree naming every node once
    proc = subprocess.run(
        [sys.executable, "-m", "ml_tasks.cli", "lineage", str(root.data_root / target)],
        capture_output=True,
        text=True,
        env={**os.environ, **root.env},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"lineage of {root.data_root / target}: {result['summary']['nodes']} nodes")
    assert lines[0].endswith("all links verified")
    assert lines[1].startswith(f"{target}  rows {scored['predict']['rows']}")
    # the training days' partitions are folded into one line per dataset, the later days stand alone
    train = f"dt={day(0)}..{day(TRAIN_DAYS - 1)} ({TRAIN_DAYS})"
    for dataset in ("raw/trips", "curated/trips", "features/company_stats", "features/pickup_area_stats"):
        folded = [line for line in lines if f"{dataset} {train}  rows" in line]
        assert len(folded) == 1 and folded[0].endswith(f"[{TRAIN_DAYS} verified]"), (dataset, lines)
    for i in range(TRAIN_DAYS, scored_offset + 1):
        assert sum(1 for line in lines if f"raw/trips/dt={day(i)}  rows" in line) == 1, (i, lines)
    assert len(lines) <= 30, proc.stdout  # 25 here; folding keeps it from growing with the window
    # expanded, every node has its own line, exactly once
    expanded = render_text(result, expand=True).splitlines()
    for node_id in result["nodes"]:
        label = node_id if not node_id.startswith("runs:/") else f"run {node_id.removeprefix('runs:/')}"
        label = f"model {node_id}" if node_id.startswith("models:/") else label
        found = [line for line in expanded if line.lstrip("│ ├└─").startswith(label + " ")]
        assert len(found) == 1, (node_id, found)
    assert "MISMATCH" not in proc.stdout and "MISSING" not in proc.stdout
    json.dumps(result)


def test_unknown_targets_fail_with_a_clear_message(scored: dict[str, Any]) -> None:
    root: PipelineRoot = scored["root"]
    missing = run_cli("lineage", "predictions/taxi_tips/dt=1999-01-01", env=root.env, check=False)
    assert missing["returncode"] != 0
    assert (
        "ml-tasks: error: lineage target 'predictions/taxi_tips/dt=1999-01-01' does not exist"
        in missing["stderr"]
    )
    version = run_cli("lineage", "taxi_tips/999", env=root.env, check=False)
    assert version["returncode"] != 0 and "taxi_tips/999 not found in the registry" in version["stderr"]
