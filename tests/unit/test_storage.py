"""Atomic partitions: whole or nothing, replaced on re-run, refused when incomplete."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from ml_tasks.contract import MANIFEST
from ml_tasks.storage import ContractFileError, DataRoot, Manifest, PartitionError


def _write(root: DataRoot, path: str, values: list[int]) -> None:
    with root.write_partition(path) as w:
        w.write(pa.table({"x": values}))
        w.manifest = Manifest(
            "t/x", "2024-05-01", "test", outputs=w.outputs(), row_counts={"rows": len(values)}
        )


def test_write_read_and_replace(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    path = root.partition_path("raw", "trips", dt.date(2024, 5, 1))
    assert path.endswith("raw/trips/dt=2024-05-01")
    _write(root, path, [1, 2, 3])
    assert root.read_partition(path)["x"].to_pylist() == [1, 2, 3]
    _write(root, path, [4])
    assert root.read_partition(path)["x"].to_pylist() == [4]  # replaced whole, not appended
    assert root.list_partitions("raw", "trips") == ["2024-05-01"]
    assert [p.name for p in (tmp_path / "raw" / "trips").iterdir()] == ["dt=2024-05-01"]  # no leftovers
    manifest = root.read_manifest(path)
    assert manifest.row_counts == {"rows": 1}
    assert manifest.outputs[0]["uri"].endswith("dt=2024-05-01/part-00000.parquet")


def test_same_input_same_bytes(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    path = root.partition_path("raw", "trips", "2024-05-01")
    _write(root, path, [1, 2, 3])
    first = {p.name: p.read_bytes() for p in Path(path).iterdir()}
    _write(root, path, [1, 2, 3])
    assert {p.name: p.read_bytes() for p in Path(path).iterdir()} == first


def test_failure_leaves_the_old_partition_untouched(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    path = root.partition_path("raw", "trips", "2024-05-01")
    _write(root, path, [1])
    with pytest.raises(RuntimeError, match="boom"), root.write_partition(path) as w:
        w.write(pa.table({"x": [9, 9]}))
        raise RuntimeError("boom")
    assert root.read_partition(path)["x"].to_pylist() == [1]
    assert [p.name for p in (tmp_path / "raw" / "trips").iterdir()] == ["dt=2024-05-01"]


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    path = root.partition_path("raw", "trips", "2024-05-01")
    with pytest.raises(PartitionError, match="no manifest was set"), root.write_partition(path) as w:
        w.write(pa.table({"x": [1]}))
    half = Path(path)
    half.mkdir(parents=True)
    (half / "part-00000.parquet").write_bytes(b"junk")
    with pytest.raises(PartitionError, match=f"missing or incomplete \\(no {MANIFEST}\\)"):
        root.read_partition(path)
    assert root.list_partitions("raw", "trips") == []


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('{"dataset": "t/x", "partition": "2024-05-01"}', "field 'step': Field required"),
        (
            '{"dataset": "t/x", "partition": "p", "step": "s", "row_counts": {"rows": "many"}}',
            "'row_counts.rows'",
        ),
        ("{truncated", "Invalid JSON"),
    ],
)
def test_a_corrupt_manifest_names_the_partition_and_the_field(tmp_path: Path, text: str, detail: str) -> None:
    root = DataRoot(str(tmp_path))
    path = root.partition_path("raw", "trips", "2024-05-01")
    _write(root, path, [1])
    (Path(path) / MANIFEST).write_text(text)
    with pytest.raises(ContractFileError) as info:
        root.read_partition(path)
    message = str(info.value)
    assert message.startswith(f"{MANIFEST} of {path} is corrupt: ")
    assert detail in message and "\n" not in message
