"""The UI plugin's pure parts: which paths it serves, what a step summary links to, the cockpit's state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flywheel_ui.cockpit import drift_days, newest_partitions
from flywheel_ui.links import MlflowRunLink, ModelVersionLink, OutputsLink, ReportLink
from flywheel_ui.outputs import StepOutputs, step_outputs
from flywheel_ui.paths import PathRefused, relative_to_root, resolve_under


def _partition(root: Path, dataset: str, dt: str, rows: dict[str, int], *files: str) -> Path:
    folder = root / dataset / f"dt={dt}"
    folder.mkdir(parents=True)
    (folder / "_manifest.json").write_text(json.dumps({"dataset": dataset, "row_counts": rows}))
    for name in files:
        (folder / name).write_text("<html>report</html>" if name.endswith(".html") else "{}")
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    _partition(data, "curated/trips", "2024-01-01", {"rows": 10})
    _partition(data, "curated/trips", "2024-01-02", {"rows": 12, "raw": 13})
    _partition(data, "predictions/taxi_tips", "2024-01-02", {"rows": 12})
    for dt, verdict, retrain in (("2024-01-01", "no_drift", False), ("2024-01-02", "drift", True)):
        folder = _partition(data, "monitoring/taxi_tips", dt, {"rows": 12}, "drift_report.html")
        decision = {"verdict": verdict, "retrain": retrain, "drift": {"drift_share": 0.4}, "reasons": ["r"]}
        (folder / "decision.json").write_text(json.dumps(decision))
    (data / "reports" / "validation" / "dt=2024-01-02").mkdir(parents=True)
    (data / "reports" / "validation" / "dt=2024-01-02" / "index.html").write_text("<html>docs</html>")
    (tmp_path / "secret.txt").write_text("outside the root")
    return data.resolve()


# -- paths ---------------------------------------------------------------------------------------------
def test_resolve_under_serves_files_and_folders_inside_the_root(root: Path) -> None:
    assert resolve_under(root, "curated/trips/dt=2024-01-02/_manifest.json").is_file()
    assert resolve_under(root, "curated/trips").is_dir()
    assert resolve_under(root, "curated/trips/") == root / "curated" / "trips"


@pytest.mark.parametrize(
    ("relative", "problem"),
    [
        ("../secret.txt", "'..' is not allowed"),
        ("curated/../../secret.txt", "'..' is not allowed"),
        ("/etc/passwd", "only paths relative"),
        ("\\etc\\passwd", "only paths relative"),
        ("C:/Windows", "only paths relative"),
        ("", "only paths relative"),
        ("curated/nope.parquet", "no such file"),
    ],
)
def test_resolve_under_refuses_escapes_and_missing_paths(root: Path, relative: str, problem: str) -> None:
    with pytest.raises(PathRefused, match=problem):
        resolve_under(root, relative)


def test_resolve_under_refuses_a_symlink_out_of_the_root(root: Path) -> None:
    (root / "curated" / "escape").symlink_to(root.parent / "secret.txt")
    with pytest.raises(PathRefused, match="resolves outside the data root"):
        resolve_under(root, "curated/escape")


def test_relative_to_root(root: Path) -> None:
    assert relative_to_root(root, str(root / "curated" / "trips")) == "curated/trips"
    assert relative_to_root(root, f"file://{root}/curated/trips") == "curated/trips"
    assert relative_to_root(root, str(root.parent / "secret.txt")) is None
    assert relative_to_root(root, str(root)) is None
    assert relative_to_root(root, "s3://bucket/curated") is None
    assert relative_to_root(root, "curated/trips") is None  # relative strings are not paths of a summary


# -- what a summary links to -----------------------------------------------------------------------------
def _summaries(root: Path) -> dict[str, dict[str, Any]]:
    return {
        "monitor": {"partition": str(root / "monitoring/taxi_tips/dt=2024-01-02"), "verdict": "drift"},
        "validate": {
            "partitions": [
                {"dt": "2024-01-02", "report_uri": str(root / "reports/validation/dt=2024-01-02/index.html")}
            ]
        },
        "train": {"run_id": "abc123", "bundle": str(root / "missing-bundle")},
        "register": {"model": "taxi_tips", "version": "3", "run_id": "abc123"},
        "predict": {"model": {"name": "taxi_tips", "version": "2", "run_id": "r2"}, "rows": 5},
        "publish": {
            "partitions": [
                {"uri": str(root / "curated/trips/dt=2024-01-01")},
                {"uri": str(root / "curated/trips/dt=2024-01-02")},
            ]
        },
    }


def test_step_outputs_from_real_summary_shapes(root: Path) -> None:
    s = _summaries(root)
    monitor = step_outputs(s["monitor"], root)
    assert monitor.partitions == ["monitoring/taxi_tips/dt=2024-01-02"]
    assert monitor.reports == ["monitoring/taxi_tips/dt=2024-01-02/drift_report.html"]
    assert step_outputs(s["validate"], root).reports == ["reports/validation/dt=2024-01-02/index.html"]
    train = step_outputs(s["train"], root)
    assert (train.run_id, train.model, train.files) == ("abc123", None, [])  # a path that is gone: no link
    assert step_outputs(s["register"], root).model == ("taxi_tips", "3")
    predict = step_outputs(s["predict"], root)
    assert (predict.run_id, predict.model) == ("r2", ("taxi_tips", "2"))
    assert step_outputs(s["publish"], root).partitions == [
        "curated/trips/dt=2024-01-01",
        "curated/trips/dt=2024-01-02",
    ]
    assert step_outputs([["--start", "2024-01-01"]], root) == StepOutputs()  # a plan task's list
    assert step_outputs(s["monitor"], None).partitions == []  # object-store data root: nothing to serve


def test_links_point_at_mlflow_and_the_report_server(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYWHEEL_MLFLOW_UI_URL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/mlflow.db")
    s = _summaries(root)
    train, register = step_outputs(s["train"], root), step_outputs(s["register"], root)
    args = ("taxi_training", "manual__2024-01-01T00:00:00+00:00", "train", -1)
    assert MlflowRunLink().url(train, *args) == ""  # a SQLite store has no UI to link to
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000/")
    assert MlflowRunLink().url(train, *args) == "http://127.0.0.1:5000/#/runs/abc123"
    assert ModelVersionLink().url(register, *args) == "http://127.0.0.1:5000/#/models/taxi_tips/versions/3"
    monkeypatch.setenv("FLYWHEEL_MLFLOW_UI_URL", "https://mlflow.example.org")
    assert ModelVersionLink().url(register, *args).startswith("https://mlflow.example.org/#/models/")
    assert ModelVersionLink().url(train, *args) == ""

    monitor, publish = step_outputs(s["monitor"], root), step_outputs(s["publish"], root)
    report = ReportLink().url(monitor, "taxi_monitoring", "r1", "monitor", 0)
    assert report == "/flywheel/files/monitoring/taxi_tips/dt%3D2024-01-02/drift_report.html"
    assert ReportLink().url(publish, *args) == ""  # no report: no link
    outputs = OutputsLink().url(publish, *args)
    assert outputs == "/flywheel/outputs/taxi_training/manual__2024-01-01T00%3A00%3A00%2B00%3A00/train"
    assert OutputsLink().url(monitor, "taxi_monitoring", "r1", "monitor", 3).endswith("?map_index=3")


def test_links_only_for_step_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    class Task:
        task_type = "PythonOperator"

    assert ReportLink().get_link(Task(), ti_key=None) == ""  # no XCom read for other operators


# -- the cockpit -----------------------------------------------------------------------------------------
def test_newest_partition_per_dataset(root: Path) -> None:
    rows = {r["dataset"]: r for r in newest_partitions(root)}
    assert set(rows) == {"curated/trips", "predictions/taxi_tips", "monitoring/taxi_tips"}
    assert rows["curated/trips"] == {
        "dataset": "curated/trips",
        "dt": "2024-01-02",
        "partitions": 2,
        "row_counts": {"rows": 12, "raw": 13},
        "path": "curated/trips/dt=2024-01-02",
    }


def test_drift_days_newest_first_with_reports(root: Path) -> None:
    days = drift_days(root)
    assert [(d["dt"], d["verdict"], d["retrain"]) for d in days] == [
        ("2024-01-02", "drift", True),
        ("2024-01-01", "no_drift", False),
    ]
    assert days[0]["drift_share"] == 0.4
    assert days[0]["report"] == "monitoring/taxi_tips/dt=2024-01-02/drift_report.html"
    assert drift_days(root, limit=1) == days[:1]
