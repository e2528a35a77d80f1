"""Shared helpers of the transform tests: run the derived-column function on plain rows."""

from __future__ import annotations

from typing import Any

from ml_tasks.schema import CURATED_SCHEMA
from ml_tasks.transform import trips_with_derived_columns
from tests.unit.validation.trip_rows import raw_table

CHICAGO = "America/Chicago"


def derive(rows: list[dict[str, Any]], tz: str = CHICAGO) -> list[dict[str, Any]]:
    table = trips_with_derived_columns(raw_table(rows), tz)
    assert table.schema == CURATED_SCHEMA
    assert table.num_rows == len(rows)
    return table.to_pylist()
