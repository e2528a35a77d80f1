"""Time-based split of a training table: oldest rows train, the next validate, the newest test.

Rows that start at the same instant never straddle a boundary (see docs/training.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import EVENT_TIMESTAMP, TRIP_KEY
from ml_tasks.errors import FlywheelError


class SplitError(FlywheelError, ValueError):
    """The table cannot be split (or trained on): bad fractions, missing columns, too few rows or classes."""


@dataclass(frozen=True)
class Split:
    """Train / validation / test tables, disjoint in time, in (event_timestamp, trip_key) order."""

    train: pa.Table
    validation: pa.Table
    test: pa.Table

    def describe(self) -> dict[str, Any]:
        """Rows and time range of each part (for logs, MLflow params and the model card)."""
        out: dict[str, Any] = {}
        for name in ("train", "validation", "test"):
            part: pa.Table = getattr(self, name)
            ts = part[EVENT_TIMESTAMP]
            low, high = (pc.min(ts).as_py(), pc.max(ts).as_py()) if part.num_rows else (None, None)
            out[name] = {
                "rows": part.num_rows,
                "start": low.isoformat() if low else None,
                "end": high.isoformat() if high else None,
            }
        return out


def _cut(ts: npt.NDArray[np.int64], index: int) -> int:
    """Move ``index`` back to the first row of its timestamp, so equal timestamps stay on one side."""
    if index <= 0 or index >= len(ts):
        return max(0, min(index, len(ts)))
    return int(np.searchsorted(ts, ts[index], side="left"))


def split_by_time(table: pa.Table, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """Split ``table`` by event time: oldest ``1 - val - test`` train, then validation, newest test.

    Raises:
        SplitError: fractions out of range, a missing column, or a part that would be empty (test may be
            empty only when ``test_fraction`` is 0).
    """
    if not 0.0 < val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise SplitError(
            f"split fractions must satisfy 0 < val < 1, 0 <= test < 1, val + test < 1;"
            f" got val={val_fraction}, test={test_fraction}"
        )
    for column in (EVENT_TIMESTAMP, TRIP_KEY):
        if column not in table.column_names:
            raise SplitError(f"split_by_time: the table has no column {column!r}")
    if table[EVENT_TIMESTAMP].null_count:
        raise SplitError(
            f"split_by_time: {table[EVENT_TIMESTAMP].null_count} row(s) have no {EVENT_TIMESTAMP}"
        )
    ordered = table.sort_by([(EVENT_TIMESTAMP, "ascending"), (TRIP_KEY, "ascending")])
    n = ordered.num_rows
    ts = ordered[EVENT_TIMESTAMP].cast(pa.int64()).to_numpy()
    train_end = _cut(ts, round(n * (1.0 - val_fraction - test_fraction)))
    val_end = _cut(ts, round(n * (1.0 - test_fraction))) if test_fraction > 0 else n
    split = Split(
        ordered.slice(0, train_end), ordered.slice(train_end, val_end - train_end), ordered.slice(val_end)
    )
    empty = [name for name in ("train", "validation") if getattr(split, name).num_rows == 0]
    if test_fraction > 0 and split.test.num_rows == 0:
        empty.append("test")
    if empty:
        raise SplitError(
            f"split_by_time: the {', '.join(empty)} part(s) would be empty ({n} rows,"
            f" val={val_fraction}, test={test_fraction}); the window needs more distinct trip start times"
        )
    return split
