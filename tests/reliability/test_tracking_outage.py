"""The MLflow tracking server goes away in the middle of ``train``: one clear error line, no half-written
bundle, no ghost run once the retry (server back, same store) has run (docs/reliability.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml_tasks.contract import EXPERIMENT
from ml_tasks.models import tracking
from ml_tasks.models.tracking import RunKey
from ml_tasks.settings import Settings
from tests.conftest import run_cli
from tests.integration._servers.mlflow import MlflowServer
from tests.reliability._kill import fails_while_down

KEY = RunKey("reliability", "outage__1", "train")
BUNDLE = ["model.json", "model.pt", "preprocessing.json", "reference_sample.parquet", "reference_stats.json"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path / "mlflow-server").start()
    try:
        yield server
    finally:
        server.stop()


def _runs(server: MlflowServer, data_root: str) -> dict[str, dict[str, str]]:
    """Every run of the experiment on the server: id -> status, lifecycle stage, parent, flywheel task."""
    from mlflow.entities import ViewType

    settings = Settings(data_root=data_root)
    mlf = tracking.client(settings)
    exp = tracking.experiment_id(mlf, EXPERIMENT, settings)
    return {
        r.info.run_id: {
            "status": r.info.status,
            "stage": r.info.lifecycle_stage,
            "parent": r.data.tags.get("mlflow.parentRunId", ""),
            "task": r.data.tags.get("flywheel.task_id", ""),
        }
        for r in mlf.search_runs([exp], run_view_type=ViewType.ALL)
    }


def _bundle(root: Path) -> dict[str, bytes]:
    folder = root / "models" / "taxi_tips" / "candidates" / KEY.dag_id / KEY.dag_run_id
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


@pytest.mark.parametrize(
    ("point", "written"),
    [("run-created:2", False), ("bundle-saved", True)],
    ids=["trial-run-created", "bundle-saved"],
)
def test_train_fails_clearly_and_its_retry_leaves_one_finished_run(
    pipeline_root: Any,
    server: MlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
    written: bool,
) -> None:
    root = pipeline_root.copy_to(tmp_path / "data")
    env = {
        **root.env,
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # fail in seconds, not after MLflow's 4 minutes of retries
        "FLYWHEEL_TRAIN_THREADS": "1",
    }
    argv = ["train", "--training-set", root.training_set["uri"], "--trials", "1", "--max-epochs", "1",
            "--dag-id", KEY.dag_id, "--dag-run-id", KEY.dag_run_id, "--task-id", KEY.task_id]  # fmt: skip

    fails_while_down(point, argv, env, server, "train")
    first = _bundle(root.data_root)
    # the bundle is whole (model.json, written last, marks it complete) or absent; no temporary file
    assert sorted(first) == (BUNDLE if written else [])

    server.start()  # same port, same store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    before = _runs(server, env["FLYWHEEL_DATA_ROOT"])
    # nothing could mark the interrupted runs: the task run, and the trial when it had just started, RUNNING
    ghosts = {rid for rid, r in before.items() if r["status"] == "RUNNING"}
    train_runs = [rid for rid in ghosts if before[rid]["task"] == "train"]
    assert len(train_runs) == 1
    expected = {train_runs[0]} | (
        set() if written else {r for r in before if before[r]["parent"] == train_runs[0]}
    )
    assert ghosts == expected and len(ghosts) == (1 if written else 2)

    summary = run_cli(*argv, env=env)

    after = _runs(server, env["FLYWHEEL_DATA_ROOT"])
    alive = {rid: r for rid, r in after.items() if r["stage"] == "active"}
    trials = [rid for rid, r in alive.items() if r["parent"] == summary["run_id"]]
    assert set(alive) == {summary["run_id"], *trials} and len(trials) == 1
    assert {r["status"] for r in alive.values()} == {"FINISHED"}
    assert all(after[rid]["stage"] == "deleted" for rid in ghosts)  # no ghost: the retry deleted them
    mlf = tracking.client(Settings(data_root=env["FLYWHEEL_DATA_ROOT"]))
    artifacts = sorted(a.path for a in mlf.list_artifacts(summary["run_id"], "bundle"))
    assert artifacts == [f"bundle/{name}" for name in BUNDLE]
    again = _bundle(root.data_root)
    assert sorted(again) == BUNDLE
    assert json.loads(again["model.json"])["mlflow_run_id"] == summary["run_id"]
    if written:  # training is seeded, on one thread: the retry rewrites the interrupted try's bytes
        assert {n: again[n] for n in BUNDLE[1:]} == {n: first[n] for n in BUNDLE[1:]}
