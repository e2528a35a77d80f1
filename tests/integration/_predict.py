"""Shared helpers of the batch-prediction tests: the scored interval, settings, partition paths and bytes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from tests.integration._pipeline import MODEL, PipelineRoot

BATCH_ROWS = 700  # several record batches per day


def copy_root(pipeline_root: PipelineRoot, target: Path) -> PipelineRoot:
    """A copy of the shared pipeline root at ``target`` (tests that change a root work on their own)."""
    copy = pipeline_root.copy_to(target)
    return copy


@pytest.fixture(autouse=True)
def own_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI, which ``tracking.tracking_uri`` then prefers:
    without this, a second data root in this process would talk to the first root's MLflow store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def settings_of(root: PipelineRoot, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"predict_batch_rows": BATCH_ROWS, **overrides}
    return Settings(data_root=str(root.data_root), **values)


def partition_dir(root: PipelineRoot, when: dt.date) -> Path:
    return root.data_root / "predictions" / MODEL / f"dt={when.isoformat()}"


def snapshot(root: PipelineRoot, interval: Interval) -> dict[str, bytes]:
    """The bytes of every file of the interval's predictions partitions."""
    out = {}
    for when in interval.days():
        for path in sorted(partition_dir(root, when).iterdir()):
            out[f"{when}/{path.name}"] = path.read_bytes()
    return out
