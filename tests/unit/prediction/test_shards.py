"""Shard assignment, the sorted order, staging paths, and commits of shard records (complete, parsed)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ml_tasks.contract import SHARD_JSON
from ml_tasks.errors import FlywheelError
from ml_tasks.features.retrieval import sorted_order
from ml_tasks.intervals import Interval
from ml_tasks.prediction import shards as s
from ml_tasks.prediction.commit import commit_predictions
from ml_tasks.prediction.schema import POSITION, PredictionError
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot
from tests.unit.prediction._model import MODEL


@pytest.mark.parametrize("rows", [0, 1, 2, 5, 17, 1000])
@pytest.mark.parametrize("shards", [1, 2, 3, 8])
def test_shards_cover_every_row_exactly_once_and_are_balanced(rows: int, shards: int) -> None:
    parts = [s.shard_positions(rows, i, shards) for i in range(shards)]
    merged = np.concatenate(parts)
    assert merged.dtype == np.int64
    np.testing.assert_array_equal(np.sort(merged), np.arange(rows))
    sizes = [len(part) for part in parts]
    assert sum(sizes) == rows and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(("shard", "shards"), [(0, 0), (3, 3), (-1, 2), (5, 2)])
def test_bad_shard_numbers_are_refused(shard: int, shards: int) -> None:
    with pytest.raises(ValueError, match=f"shard {shard} of {shards}"):
        s.check_shard(shard, shards)


def _trips(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    # few distinct instants: many ties broken by trip_key
    seconds = rng.integers(0, 5, n) * 60
    ts = [dt.datetime(2024, 4, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=int(s)) for s in seconds]
    keys = [f"k{int(k):05d}" for k in rng.permutation(n)]
    return pa.table(
        {
            "trip_key": pa.array(keys),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "fare": pa.array(rng.random(n)),
        }
    )


def test_sorted_order_is_by_timestamp_then_trip_key() -> None:
    table = _trips(200)
    ordered = table.take(sorted_order(table))
    pairs = list(zip(ordered["event_timestamp"].to_pylist(), ordered["trip_key"].to_pylist(), strict=True))
    assert pairs == sorted(pairs) and len(set(pairs)) == 200


def test_shards_of_a_day_merge_back_to_the_sorted_day() -> None:
    """What predict_shard + commit do with positions: any shard count gives the same merged rows."""
    table = _trips(101, seed=3)
    order = sorted_order(table)
    expected = table.take(order)
    for shards in (1, 2, 3, 7):
        staged = []
        for shard in range(shards):
            positions = s.shard_positions(table.num_rows, shard, shards)
            rows = table.take(order.take(pa.array(positions)))
            staged.append(rows.append_column(POSITION, pa.array(positions)))
        merged = pa.concat_tables(staged[::-1])  # arrival order must not matter
        merged = merged.take(pa.compute.sort_indices(merged[POSITION])).drop_columns([POSITION])
        assert merged.equals(expected), shards


def test_staging_paths_are_safe_and_per_run(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    interval = Interval(dt.date(2024, 4, 1), dt.date(2024, 4, 3))
    path = s.shard_path(root, "taxi_tips", "scheduled__2024-04-01T00:00:00+00:00", interval, 3, 8)
    assert path == (
        f"{tmp_path}/predictions/taxi_tips/_shards/scheduled__2024-04-01T00_00_00_00_00/"
        "2024-04-01_2024-04-03/shard-0003-of-0008"
    )
    assert s.safe_key("../..") == "_" and s.safe_key("a/b") == "a_b"


def test_commit_without_shards_names_them_and_writes_nothing(tmp_path: Path) -> None:
    settings = Settings(data_root=str(tmp_path))
    interval = Interval(dt.date(2024, 4, 1), dt.date(2024, 4, 2))
    with pytest.raises(PredictionError, match=r"shard\(s\) \[0, 1, 2\] of 3 have no complete output"):
        commit_predictions(settings, interval, "taxi_tips@champion", 3, "run1")
    with pytest.raises(ValueError, match="shards must be >= 1"):
        commit_predictions(settings, interval, "taxi_tips@champion", 0, "run1")
    assert not (tmp_path / "predictions").exists()


def _record(interval: Interval) -> dict[str, object]:
    """A well-formed ``_shard.json`` of shard 0 of 1 (its staged file does not exist)."""
    return {
        "model": MODEL.to_dict(),
        "interval": s.interval_dict(interval),
        "shard": 0,
        "shards": 1,
        "run_key": "run1",
        "views": ["company_stats"],
        "schema": ["trip_key"],
        "days": {
            "2024-04-01": {
                "day_rows": 3,
                "rows": 3,
                "missing": {"company_stats": 0},
                "missing_features": 0,
                "inputs": [],
                "file": {"uri": "file:///x/part-00000.parquet", "sha256": "0" * 64, "rows": 3},
            }
        },
        "rows": 3,
        "seconds": 0.5,
    }


@pytest.mark.parametrize(
    ("corrupt", "fields"),
    [
        (lambda r: r["days"]["2024-04-01"].update(day_rows="many"), ["days.2024-04-01.day_rows"]),
        (lambda r: r.pop("shards") and r["model"].pop("onnx_sha256"), ["model.onnx_sha256", "shards"]),
        (lambda r: r["days"]["2024-04-01"]["file"].pop("sha256"), ["days.2024-04-01.file.sha256"]),
        (None, ["(document)"]),  # not JSON at all (a truncated write)
    ],
)
def test_a_corrupt_shard_record_fails_in_one_line_naming_the_file_and_fields(
    tmp_path: Path, corrupt: Any, fields: list[str]
) -> None:
    settings = Settings(data_root=str(tmp_path))
    interval = Interval(dt.date(2024, 4, 1), dt.date(2024, 4, 2))
    root = DataRoot(str(tmp_path))
    path = Path(s.shard_path(root, "taxi_tips", "run1", interval, 0, 1)) / SHARD_JSON
    path.parent.mkdir(parents=True)
    record = _record(interval)
    # the well-formed record parses (and commits no further: its staged file is missing)
    path.write_text(json.dumps(record))
    assert s.read_shard_record(root, str(path)).model == MODEL
    if corrupt is None:
        path.write_text(json.dumps(record)[:40])
    else:
        corrupt(record)
        path.write_text(json.dumps(record))
    with pytest.raises(s.ShardRecordError) as info:
        commit_predictions(settings, interval, "taxi_tips@champion", 1, "run1")
    message = str(info.value)
    assert isinstance(info.value, FlywheelError) and isinstance(info.value, PredictionError)
    assert "\n" not in message and f"{path}" in message and "is not a valid shard record" in message
    for field in fields:
        assert f"{field}: " in message, message
    assert not (tmp_path / "predictions" / "taxi_tips" / "dt=2024-04-01").exists()
