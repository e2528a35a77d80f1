"""Hand-built trips for the transform / validate / publish tests: raw partitions written with DataRoot.

Every test builds its rows in the canonical raw schema and writes them as a real raw partition (a
parquet file + manifest), so the steps run exactly as they do after ``ml-tasks extract``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa

from ml_tasks.intervals import Interval
from ml_tasks.schema import RAW_SCHEMA
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest

DAY = dt.date(2024, 5, 1)  # a Wednesday, daylight time (UTC-5)
ONE_DAY = Interval(DAY, DAY + dt.timedelta(days=1))


def trip(i: int, day: dt.date = DAY, **overrides: Any) -> dict[str, Any]:
    """A valid trip on ``day`` (08:00 + i minutes, 10 minutes, 2 miles, fare 10, tip 1, cash)."""
    start = dt.datetime.combine(day, dt.time(8, 0)) + dt.timedelta(minutes=i)
    row: dict[str, Any] = {
        "trip_id": f"trip-{day.isoformat()}-{i:05d}",
        "taxi_id": f"taxi-{i % 7}",
        "trip_start_timestamp": start,
        "trip_end_timestamp": start + dt.timedelta(minutes=10),
        "trip_seconds": 600,
        "trip_miles": 2.0,
        "pickup_community_area": 8,
        "dropoff_community_area": 32,
        "fare": 10.0,
        "tips": 1.0,
        "tolls": 0.0,
        "extras": 0.0,
        "trip_total": 11.0,
        "payment_type": "Cash",
        "company": "Flash Cab",
        "_source": "unit-test",
        "_source_row": i,
    }
    row.update(overrides)
    return row


def trips(n: int, day: dt.date = DAY, start: int = 0) -> list[dict[str, Any]]:
    return [trip(i, day) for i in range(start, start + n)]


def raw_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RAW_SCHEMA)


def write_raw(root: DataRoot, rows: list[dict[str, Any]], day: dt.date = DAY) -> str:
    """Write ``rows`` as ``raw/trips/dt=day`` (what extract would have written)."""
    table = raw_table(rows)
    path = root.partition_path("raw", "trips", day)
    with root.write_partition(path) as writer:
        writer.write(table, schema=RAW_SCHEMA)
        writer.write_empty(RAW_SCHEMA)
        writer.manifest = Manifest(
            dataset="raw/trips",
            partition=day.isoformat(),
            step="extract",
            inputs=[{"source": "unit-test"}],
            outputs=writer.outputs(),
            row_counts={"rows": table.num_rows},
        )
    return path


def settings(root: Path | str, **overrides: Any) -> Settings:
    return Settings(data_root=str(root), **overrides)


def read(root: DataRoot, layer: str, dataset: str, day: dt.date = DAY) -> pa.Table:
    return root.read_partition(root.partition_path(layer, dataset, day))


def partition_bytes(root: DataRoot, layer: str, dataset: str, day: dt.date = DAY) -> dict[str, bytes]:
    """Every file of a partition, by name (to compare runs byte for byte)."""
    base = Path(root.partition_path(layer, dataset, day))
    return {p.name: p.read_bytes() for p in sorted(base.iterdir())}
