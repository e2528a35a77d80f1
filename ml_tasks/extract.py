"""Extract: pull one data interval from a source into raw partitions, one per local day."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import RAW
from ml_tasks.intervals import Interval
from ml_tasks.schema import RAW_SCHEMA
from ml_tasks.sources.base import Source, SourceError
from ml_tasks.storage import DataRoot, Manifest

log = logging.getLogger(__name__)


def _route(
    table: pa.Table, days: pa.Array, interval: Interval, keep_outside: bool
) -> tuple[dict[dt.date, pa.Table], int]:
    """Split rows by ``days`` (each row's local day; null: no day).

    Rows of other days, and rows without a day, go to the interval's first day when ``keep_outside``
    (the source was asked only for this one-day window, so they are its fault and validation
    quarantines them); otherwise rows of other days are skipped and counted.

    Returns:
        per-day tables, rows of other intervals skipped.
    """
    start = pa.scalar(interval.start, pa.date32())
    end = pa.scalar(interval.end, pa.date32())
    inside = pc.fill_null(pc.and_(pc.greater_equal(days, start), pc.less(days, end)), False)
    out: dict[dt.date, pa.Table] = {}
    if len(days) and pc.all(inside).as_py():
        span = pc.min_max(days).as_py()
        if span["min"] == span["max"]:  # one day, all inside: the common case of a per-day source
            return {span["min"]: table}, 0  # no copy
    if pc.any(inside).as_py():
        for day in pc.unique(pc.filter(days, inside)).to_pylist():
            out[day] = table.filter(pc.and_(inside, pc.equal(days, pa.scalar(day, pa.date32()))))
    n_outside = len(days) - (pc.sum(inside).as_py() or 0)
    if keep_outside and n_outside:  # after the first day's own rows
        extra = table.filter(pc.invert(inside))
        first = interval.start
        out[first] = pa.concat_tables([out[first], extra]) if first in out else extra
        n_outside = 0
    return out, n_outside


class _FileDays:
    """The day of each row of file-like sources, whatever interval is read (``docs/ingest.md``).

    A row without a usable start timestamp belongs to the day of the nearest row BEFORE it in the same
    file that has one (rows at the start of a file: the first such row after them). It is then
    extracted, and quarantined, only by the run whose interval holds that day: once, however the file's
    days are split into runs. A file with no usable timestamp at all cannot be placed: an error.
    """

    def __init__(self) -> None:
        self._last: dict[str, dt.date] = {}  # per source file: the day of its latest dated row
        self._held: dict[str, list[pa.Table]] = defaultdict(list)  # leading rows still without a day

    def place(self, table: pa.Table) -> list[tuple[pa.Table, pa.Array]]:
        """``table``'s rows (with those held from earlier batches) and their days, per source file."""
        placed = []
        names = table["_source"]
        for name in pc.unique(names).to_pylist():
            part = table if pc.all(pc.equal(names, name)).as_py() else table.filter(pc.equal(names, name))
            key = str(name)
            if self._held.get(key):
                part = pa.concat_tables([*self._held.pop(key), part])
            days = pc.cast(part["trip_start_timestamp"], pa.date32())
            if key in self._last:
                days = pc.fill_null(pc.fill_null_forward(days), pa.scalar(self._last[key], pa.date32()))
            else:
                days = pc.fill_null_backward(pc.fill_null_forward(days))
            if days.null_count == len(days):  # no dated row yet: wait for one
                self._held[key].append(part)
                continue
            self._last[key] = days[len(days) - 1].as_py()
            placed.append((part, days))
        return placed

    def check_placed(self) -> None:
        for name, tables in self._held.items():
            rows = sum(t.num_rows for t in tables)
            raise SourceError(
                f"{name}: none of its {rows} rows has a usable trip_start_timestamp, so no day can be"
                " told for them; nothing was extracted (check the file's layout, --option mapping,"
                " delimiter and encoding)"
            )


def extract(root: DataRoot, source: Source, interval: Interval) -> dict[str, Any]:
    """Write ``raw/trips/dt=D`` for every day D of ``interval`` (empty days get empty partitions).

    Returns:
        the step summary: partitions with row counts, rows read / written / skipped.
    """
    started = time.perf_counter()
    buffers: dict[dt.date, list[pa.Table]] = defaultdict(list)
    counts: dict[dt.date, dict[str, int]] = defaultdict(lambda: {"rows_without_timestamp": 0})
    notes: dict[dt.date, dict[str, Any]] = defaultdict(dict)
    rows_read = 0
    rows_other_intervals = 0
    windows = [interval.single(d) for d in interval.days()] if source.server_side_filter else [interval]
    file_days = None if source.server_side_filter else _FileDays()
    partitions: list[dict[str, Any]] = []

    def write_day(day: dt.date, tables: list[pa.Table]) -> dict[str, Any]:
        table = pa.concat_tables(tables) if tables else RAW_SCHEMA.empty_table()
        path = root.partition_path(*RAW, day)
        described = interval.single(day) if source.server_side_filter else interval
        root.write_table(
            path,
            table,
            RAW_SCHEMA,
            Manifest(
                dataset=f"{RAW[0]}/{RAW[1]}",
                partition=day.isoformat(),
                step="extract",
                inputs=[source.describe(described)],
                row_counts={"rows": table.num_rows, **counts.get(day, {"rows_without_timestamp": 0})},
                params={"source": source.name, **notes.get(day, {})},
            ),
        )
        return {"dt": day.isoformat(), "uri": root.uri(path), "rows": table.num_rows}

    for window in windows:
        for batch in source.read(window):
            rows_read += batch.table.num_rows
            if file_days is None:
                pieces = [(batch.table, pc.cast(batch.table["trip_start_timestamp"], pa.date32()))]
            else:
                pieces = file_days.place(batch.table)
            for table, days in pieces:
                routed, n_outside = _route(table, days, window, keep_outside=source.server_side_filter)
                rows_other_intervals += n_outside
                for day, part in routed.items():
                    buffers[day].append(part)
                    counts[day]["rows_without_timestamp"] += (
                        part.num_rows - pc.count(part["trip_start_timestamp"]).as_py()
                    )
                    note = notes[day]
                    note["missing_optional_columns"] = sorted(batch.missing_optional)
                    note["extra_columns_ignored"] = sorted(batch.extra_columns)
                    note.update(batch.notes)
        log.info("extract %s %s: %d rows read so far", source.name, window, rows_read)
        if file_days is None:  # a one-day window is complete: write it now, hold one day at a time
            (day,) = window.days()
            partitions.append(write_day(day, buffers.pop(day, [])))
    if file_days is not None:
        file_days.check_placed()
        partitions = [write_day(day, buffers.pop(day, [])) for day in interval.days()]
    rows_written = sum(int(p["rows"]) for p in partitions)
    seconds = time.perf_counter() - started
    log.info(
        "extract %s %s: read %d rows, wrote %d rows in %d partitions, skipped %d of other intervals, %.2f s",
        source.name, interval, rows_read, rows_written, len(partitions), rows_other_intervals, seconds,
    )  # fmt: skip
    if rows_read != rows_written + rows_other_intervals:  # pragma: no cover - an invariant, not an input
        raise AssertionError(f"row accounting broken: {rows_read} != {rows_written} + {rows_other_intervals}")
    return {
        "step": "extract",
        "source": source.name,
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "partitions": partitions,
        "rows_read": rows_read,
        "rows_written": rows_written,
        "rows_other_intervals": rows_other_intervals,
        "seconds": round(seconds, 3),
    }
