"""extract(): routing rows to day partitions, and the row accounting that proves nothing was lost."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from ml_tasks.extract import extract
from ml_tasks.intervals import Interval, make_interval
from ml_tasks.schema import to_canonical
from ml_tasks.sources.base import SourceBatch
from ml_tasks.storage import DataRoot


class TableSource:
    """A source over an in-memory table (the unit under test is the routing, not a reader)."""

    name = "table"

    def __init__(self, starts: list[str | None], server_side_filter: bool) -> None:
        n = len(starts)
        raw = pa.table(
            {
                "trip_id": [f"t{i}" for i in range(n)],
                "trip_start_timestamp": starts,
                "trip_seconds": ["60"] * n,
                "trip_miles": ["1"] * n,
                "fare": ["10"] * n,
                "tips": ["1"] * n,
                "payment_type": ["Cash"] * n,
                "pickup_community_area": ["8"] * n,
            }
        )
        self.table = to_canonical(raw, "table").table
        self.server_side_filter = server_side_filter
        self.calls: list[Interval] = []

    def read(self, interval: Interval) -> Iterator[SourceBatch]:
        self.calls.append(interval)
        yield SourceBatch(self.table)

    def describe(self, interval: Interval) -> dict[str, Any]:
        return {"source": "table", "interval": str(interval)}


STARTS: list[str | None] = [
    "2024-05-01T00:00:00",
    "2024-05-02T23:45:00",
    "2024-05-04T00:00:00",  # after the interval
    None,  # no timestamp at all
    "2024-05-01T10:00:00",
]


def _ids(root: DataRoot, day: str) -> list[str]:
    table = root.read_partition(root.partition_path("raw", "trips", day))
    return [str(x) for x in table["trip_id"].to_pylist()]


def test_file_like_source_skips_and_counts_other_intervals(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    source = TableSource(STARTS, server_side_filter=False)
    summary = extract(root, source, make_interval("2024-05-01", "2024-05-04"))
    assert [p["rows"] for p in summary["partitions"]] == [2, 1, 0]  # empty day still gets a partition
    assert summary["rows_read"] == 5 and summary["rows_written"] == 3
    # t3 has no timestamp: it belongs to the day of the row before it (t2, 4 May), outside the interval
    assert summary["rows_other_intervals"] == 2
    assert _ids(root, "2024-05-01") == ["t0", "t4"]
    assert _ids(root, "2024-05-02") == ["t1"]
    assert _ids(root, "2024-05-03") == []
    manifest = root.read_manifest(root.partition_path("raw", "trips", "2024-05-01"))
    assert manifest.row_counts == {"rows": 2, "rows_without_timestamp": 0}
    assert len(source.calls) == 1  # one pass over the file for the whole interval
    extract(root, source, make_interval("2024-05-04", "2024-05-05"))
    assert _ids(root, "2024-05-04") == ["t2", "t3"]
    manifest = root.read_manifest(root.partition_path("raw", "trips", "2024-05-04"))
    assert manifest.row_counts == {"rows": 2, "rows_without_timestamp": 1}


def test_server_side_source_is_asked_per_day_and_keeps_its_strays(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    source = TableSource(STARTS, server_side_filter=True)
    summary = extract(root, source, make_interval("2024-05-01", "2024-05-03"))
    assert [c.start for c in source.calls] == [dt.date(2024, 5, 1), dt.date(2024, 5, 2)]
    # each day's request returned all 5 rows: strays stay in the asked day (validation quarantines them)
    assert summary["rows_read"] == 10 and summary["rows_written"] == 10
    assert summary["rows_other_intervals"] == 0
    assert sorted(_ids(root, "2024-05-02")) == ["t0", "t1", "t2", "t3", "t4"]
