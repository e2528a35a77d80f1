"""Expected errors of the training commands end as ONE ``ml-tasks: error:`` line and exit 1 (no traceback).

The DAG helper reads the line after ``ml-tasks: error:``; a traceback would hide the reason in the task log.
The commands run in-process through ``cli.main`` (the same code path as the console script).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import fails_with_one_line
from tests.unit.models.test_network import synthetic_frame


def test_export_onnx_of_a_missing_bundle_is_one_line(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "no-such-bundle"
    line = fails_with_one_line(
        ["export-onnx", "--bundle", str(bundle), "--eval-set", str(tmp_path / "eval")], capsys
    )
    assert str(bundle) in line and "model.json" in line


def test_export_onnx_of_an_incomplete_bundle_is_one_line(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.json").write_text("{}")
    line = fails_with_one_line(
        ["export-onnx", "--bundle", str(bundle), "--eval-set", str(tmp_path / "eval")], capsys
    )
    assert line.startswith(f"ml-tasks: error: bundle {bundle}")


def test_train_on_a_missing_training_set_is_one_line(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = fails_with_one_line(["train", "--training-set", str(tmp_path / "missing")], capsys)
    assert line.endswith("missing: no _manifest.json (missing or incomplete snapshot)")


def test_train_worker_on_an_unusable_column_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = synthetic_frame(400, seed=1)
    payment = table.schema.get_field_index("payment_type")
    data = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(payment, "payment_type", pa.array([1.5] * table.num_rows)), data)
    line = fails_with_one_line(
        ["train-worker", "--training-set", str(data), "--out", str(tmp_path / "b"), "--device", "cpu"], capsys
    )  # PreprocessError
    assert "categorical input 'payment_type' must be a string or integer column" in line


def test_train_worker_on_one_class_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = synthetic_frame(400, seed=1)
    label = table.schema.get_field_index("big_tipper")
    data = tmp_path / "one-class.parquet"
    pq.write_table(table.set_column(label, "big_tipper", pa.array([False] * table.num_rows)), data)
    line = fails_with_one_line(
        ["train-worker", "--training-set", str(data), "--out", str(tmp_path / "b"), "--device", "cpu"], capsys
    )  # SplitError
    assert "the train split has only one class" in line


def test_train_worker_on_a_missing_device_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = tmp_path / "training.parquet"
    pq.write_table(synthetic_frame(400, seed=1), data)
    line = fails_with_one_line(
        ["train-worker", "--training-set", str(data), "--out", str(tmp_path / "b"), "--device", "cuda"],
        capsys,
    )  # DeviceError
    assert "CUDA is not available" in line
