"""Shared helpers of the file-source tests: the CSV header, good lines, writing and reading."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from ml_tasks.intervals import Interval
from ml_tasks.schema import RAW_SCHEMA
from ml_tasks.sources.base import SourceBatch
from ml_tasks.sources.file import FileSource

ANY = Interval(dt.date(2014, 1, 1), dt.date(2014, 1, 2))  # a file source is not filtered by interval
HEADER = [
    "trip_id", "trip_start_timestamp", "trip_seconds", "trip_miles", "fare", "tips", "payment_type",
    "pickup_community_area", "company",
]  # fmt: skip


def good_line(i: int) -> str:
    start = dt.datetime(2014, 1, 1) + dt.timedelta(minutes=15 * i)
    return f"t{i:04d},{start:%Y-%m-%dT%H:%M:%S},{60 + i},{i / 10:.1f},{5 + i}.25,1.5,Cash,{1 + i % 77},Co {i}"


def write(path: Path, lines: list[str] | bytes, header: list[str] = HEADER) -> Path:
    data = lines if isinstance(lines, bytes) else ("\n".join([",".join(header), *lines]) + "\n").encode()
    path.write_bytes(data)
    return path


def read_all(source: FileSource) -> tuple[pa.Table, list[SourceBatch]]:
    batches = list(source.read(ANY))
    return pa.concat_tables([RAW_SCHEMA.empty_table()] + [b.table for b in batches]), batches
