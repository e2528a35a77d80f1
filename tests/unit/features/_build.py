"""Shared helpers of the feature-build tests: curated partitions written by hand, built files read back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from ml_tasks.contract import FEATURES_LAYER
from ml_tasks.features.spec import VIEWS
from ml_tasks.intervals import Interval
from ml_tasks.schema import CURATED_SCHEMA
from ml_tasks.storage import DataRoot, Manifest
from ml_tasks.transform import trips_with_derived_columns

CHICAGO = "America/Chicago"


D = dt.date


def write_curated(root: DataRoot, day: dt.date, raw: pa.Table, tz: str = CHICAGO) -> None:
    """``curated/trips/dt=day`` as publish leaves it: derived columns, CURATED_SCHEMA, a manifest."""
    curated = trips_with_derived_columns(raw, tz)
    root.write_table(
        root.partition_path("curated", "trips", day),
        curated,
        CURATED_SCHEMA,
        Manifest(
            dataset="curated/trips",
            partition=day.isoformat(),
            step="publish",
            row_counts={"raw": curated.num_rows, "curated": curated.num_rows, "quarantined": 0},
        ),
    )


def days_between(first: dt.date, end: dt.date) -> Iterable[dt.date]:
    return Interval(first, end).days()


def partition_files(root: DataRoot, days: Iterable[dt.date]) -> dict[str, bytes]:
    """Every file (parquet + manifest) of every view's partition of ``days``, by relative path."""
    files = {}
    wanted = list(days)
    for view in VIEWS:
        for day in wanted:
            base = Path(root.partition_path(FEATURES_LAYER, view.dataset, day))
            for path in sorted(base.iterdir()):
                files[f"{view.name}/{day}/{path.name}"] = path.read_bytes()
    return files
