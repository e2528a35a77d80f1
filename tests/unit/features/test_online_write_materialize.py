"""materialize: the latest rows per entity in serialized-key order, and the prefetching reader."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ml_tasks.contract import EVENT_TIMESTAMP, FEATURES_LAYER
from ml_tasks.features.materialize import interval_files, latest_rows, prefetched
from ml_tasks.features.online_encoding import OnlineWriteError, encode_entity_keys
from ml_tasks.features.spec import VIEWS_BY_NAME, ViewSpec
from ml_tasks.intervals import Interval
from ml_tasks.storage import DataRoot, Manifest, PartitionError

# ------------------------------------------------ materialize: latest rows per entity, prefetching
Rows = list[dict[str, Any]]


def write_feature_days(
    root: DataRoot, view: ViewSpec, rows_by_day: dict[dt.date, list[dict[str, Any]]]
) -> None:
    schema = view.schema()
    for day, rows in rows_by_day.items():
        full = [{name: row.get(name) for name in schema.names} for row in rows]
        root.write_table(
            root.partition_path(FEATURES_LAYER, view.dataset, day),
            pa.Table.from_pylist(full, schema=schema),
            schema,
            Manifest(dataset=view.dataset, partition=day.isoformat(), step="test", code_version="test"),
        )


def feature_row(view: ViewSpec, key: Any, day: dt.date, trips: int) -> dict[str, Any]:
    end = dt.datetime(day.year, day.month, day.day, 6, tzinfo=dt.UTC) + dt.timedelta(days=1)
    return {view.entity: key, EVENT_TIMESTAMP: end, "trips_1d": trips, "fare_mean_1d": trips / 7}


DAY1 = dt.date(2024, 3, 1)
DAYS3 = [DAY1 + dt.timedelta(days=i) for i in range(3)]


@pytest.mark.parametrize("view_name", ["pickup_area_stats", "company_stats"])
def test_latest_rows_are_the_latest_per_entity_in_serialized_key_order(
    tmp_path: Path, view_name: str
) -> None:
    view = VIEWS_BY_NAME[view_name]
    keys: list[Any] = [3, -2, 256, 1, 77] if view.key_type == pa.int64() else ["b", "", "é", "aa", "Z"]
    rows_by_day = {
        day: [feature_row(view, k, day, 10 * i + j) for j, k in enumerate(keys) if (i + j) % 3 != 2]
        for i, day in enumerate(DAYS3)
    }
    root = DataRoot(str(tmp_path))
    write_feature_days(root, view, rows_by_day)
    expected: dict[Any, dict[str, Any]] = {}
    for day in DAYS3:
        for row in rows_by_day[day]:
            expected[row[view.entity]] = row  # later days replace earlier ones
    files = interval_files(root, view, Interval(DAYS3[0], DAYS3[-1] + dt.timedelta(days=1)))
    kind = "INT64" if view.key_type == pa.int64() else "STRING"
    batches = list(latest_rows(root, view, files, batch_rows=2, key_kind=kind))
    assert [b.num_rows for b in batches] == [2, 2, 1]
    got = pa.Table.from_batches(batches).to_pylist()
    assert {r[view.entity]: (r[EVENT_TIMESTAMP], r["trips_1d"]) for r in got} == {
        k: (r[EVENT_TIMESTAMP], r["trips_1d"]) for k, r in expected.items()
    }
    assert len(got) == len(keys)
    serialized = encode_entity_keys(pa.array([r[view.entity] for r in got], view.key_type), view.entity, kind)
    assert serialized.to_pylist() == sorted(serialized.to_pylist())


@pytest.mark.parametrize("batch_rows", [1, 10])
def test_latest_rows_refuse_two_latest_rows_of_one_entity(tmp_path: Path, batch_rows: int) -> None:
    view = VIEWS_BY_NAME["pickup_area_stats"]
    root = DataRoot(str(tmp_path))
    write_feature_days(
        root,
        view,
        {DAY1: [feature_row(view, 1, DAY1, 1), feature_row(view, 8, DAY1, 2), feature_row(view, 8, DAY1, 3)]},
    )
    files = interval_files(root, view, Interval(DAY1, DAY1 + dt.timedelta(days=1)))
    with pytest.raises(PartitionError, match=r"pickup_community_area=8 .*`ml-tasks build-features`"):
        list(latest_rows(root, view, files, batch_rows, "INT64"))


class RecordingWriter:
    """A writer that records what it is given (prepare: the batch's first key; commit: counts)."""

    name = "recording"
    key_kind: str | None = None

    def __init__(self, fail_prepare_at: int | None = None) -> None:
        self.fail_prepare_at = fail_prepare_at
        self.prepared: list[int] = []
        self.committed: list[int] = []

    def prepare(self, batch: pa.RecordBatch) -> int:
        first = int(batch.column(0)[0].as_py())
        if first == self.fail_prepare_at:
            raise OnlineWriteError(f"cannot encode the batch starting at {first}")
        self.prepared.append(first)
        return first

    def commit(self, prepared: Any) -> tuple[int, int]:
        self.committed.append(int(prepared))
        return 1, 0

    def close(self) -> None:
        pass


def numbered_batches(closed: list[bool]) -> Iterator[pa.RecordBatch]:
    try:
        for start in range(0, 50, 10):
            yield pa.RecordBatch.from_pydict({"k": list(range(start, start + 10))})
    finally:
        closed.append(True)


def test_prefetched_keeps_order_and_counts() -> None:
    closed: list[bool] = []
    writer = RecordingWriter()
    items = list(prefetched(writer, numbered_batches(closed)))
    assert [rows for rows, _ in items] == [10] * 5
    assert [prepared for _, prepared in items] == [0, 10, 20, 30, 40] == writer.prepared
    assert closed == [True]


def test_prefetched_raises_the_prepare_error_and_closes_the_source() -> None:
    closed: list[bool] = []
    writer = RecordingWriter(fail_prepare_at=30)
    seen = []
    with pytest.raises(OnlineWriteError, match="starting at 30"):
        for _, prepared in prefetched(writer, numbered_batches(closed)):
            seen.append(writer.commit(prepared))
    assert writer.committed == [0, 10, 20]
    assert closed == [True]
