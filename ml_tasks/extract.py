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
from ml_tasks.sources.base import Source
from ml_tasks.storage import DataRoot, Manifest

log = logging.getLogger(__name__)


def _route(
    table: pa.Table, interval: Interval, keep_outside: bool
) -> tuple[dict[dt.date, pa.Table], int, int]:
    """Split rows by local trip day.

    Rows without a usable start timestamp go to the interval's first day (validation quarantines
    them); rows of other days go there too when ``keep_outside`` (the source was asked only for this
    interval, so they are its fault), otherwise they are skipped and counted.

    Returns:
        per-day tables, rows without a timestamp, rows of other intervals skipped.
    """
    days = pc.cast(table["trip_start_timestamp"], pa.date32())
    start = pa.scalar(interval.start, pa.date32())
    end = pa.scalar(interval.end, pa.date32())
    inside = pc.and_(pc.greater_equal(days, start), pc.less(days, end))
    no_ts = pc.is_null(days)
    unplaced = pc.or_(no_ts, pc.invert(inside)) if keep_outside else no_ts
    n_no_ts = pc.sum(no_ts).as_py() or 0
    n_outside = 0 if keep_outside else (pc.sum(pc.fill_null(pc.invert(inside), False)).as_py() or 0)
    out: dict[dt.date, pa.Table] = {}
    inside_filled = pc.fill_null(inside, False)
    if pc.any(inside_filled).as_py():
        for day in pc.unique(pc.filter(days, inside_filled)).to_pylist():
            out[day] = table.filter(pc.and_(inside_filled, pc.equal(days, pa.scalar(day, pa.date32()))))
    extra = table.filter(pc.fill_null(unplaced, True))
    if extra.num_rows:
        first = interval.start
        out[first] = pa.concat_tables([out[first], extra]) if first in out else extra
    return out, n_no_ts, n_outside


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
    for window in windows:
        for batch in source.read(window):
            rows_read += batch.table.num_rows
            routed, n_no_ts, n_outside = _route(batch.table, window, keep_outside=source.server_side_filter)
            rows_other_intervals += n_outside
            counts[window.start]["rows_without_timestamp"] += n_no_ts
            for day, part in routed.items():
                buffers[day].append(part)
                note = notes[day]
                note["missing_optional_columns"] = sorted(batch.missing_optional)
                note["extra_columns_ignored"] = sorted(batch.extra_columns)
                note.update(batch.notes)
        log.info("extract %s %s: %d rows read so far", source.name, window, rows_read)

    partitions = []
    rows_written = 0
    for day in interval.days():
        table = pa.concat_tables(buffers.pop(day)) if day in buffers else RAW_SCHEMA.empty_table()
        path = root.partition_path(*RAW, day)
        day_window = interval.single(day)
        root.write_table(
            path,
            table,
            RAW_SCHEMA,
            Manifest(
                dataset=f"{RAW[0]}/{RAW[1]}",
                partition=day.isoformat(),
                step="extract",
                inputs=[source.describe(day_window if source.server_side_filter else interval)],
                row_counts={"rows": table.num_rows, **counts.get(day, {"rows_without_timestamp": 0})},
                params={"source": source.name, **notes.get(day, {})},
            ),
        )
        rows_written += table.num_rows
        partitions.append({"dt": day.isoformat(), "uri": root.uri(path), "rows": table.num_rows})
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
