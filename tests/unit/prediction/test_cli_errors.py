"""Expected errors of the prediction commands end as ONE ``ml-tasks: error:`` line and exit 1 (in-process)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from ml_tasks.contract import SHARD_JSON
from ml_tasks.intervals import Interval
from ml_tasks.models.loading import ModelLoadError
from ml_tasks.prediction import commit, resolve
from ml_tasks.prediction.shards import shard_path
from ml_tasks.storage import DataRoot
from tests.conftest import fails_with_one_line
from tests.unit.prediction._model import MODEL


@pytest.mark.parametrize(
    "error",
    [
        resolve.NoModelError("no champion yet: run taxi_training first"),
        ModelLoadError("models:/taxi_tips/3: the ONNX file x cannot be loaded:\n[ONNXRuntimeError] bad file"),
    ],
)
def test_model_errors_are_one_line(
    data_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def refuse(*_: object) -> None:
        raise error

    monkeypatch.setattr(resolve, "resolve_model", refuse)  # resolve-model, predict --shard
    monkeypatch.setattr(commit, "resolve_loaded", refuse)  # predict (predict_interval)
    sharded = ["--shard", "0", "--shards", "2", "--run-key", "r1"]
    for argv in (
        ["resolve-model"],
        ["predict", "--start", "2024-04-01"],
        ["predict", "--start", "2024-04-01", *sharded],
    ):
        line = fails_with_one_line([*argv, "--data-root", str(data_root)], capsys)
        assert line == f"ml-tasks: error: {' | '.join(str(error).splitlines())}"


def test_a_corrupt_shard_record_is_one_line_naming_the_file(
    data_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resolve, "resolve_model", lambda *_: MODEL)  # no registry needed
    interval = Interval(dt.date(2024, 4, 1), dt.date(2024, 4, 2))
    path = Path(shard_path(DataRoot(str(data_root)), MODEL.name, "r1", interval, 0, 1)) / SHARD_JSON
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"model": MODEL.to_dict(), "shard": "first"}))
    argv = ["predict-commit", "--start", "2024-04-01", "--run-key", "r1", "--data-root", str(data_root)]
    line = fails_with_one_line(argv, capsys)
    assert str(path) in line and "shard: Input should be a valid integer" in line
    assert "interval: Field required" in line
