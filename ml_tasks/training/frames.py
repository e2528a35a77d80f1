"""Training-set-shaped tables straight from curated trips or a trips file (no Feast columns).

For tests, benchmarks and offline experiments: the project's own source -> transform -> row-rule path,
rejected rows counted by reject code (docs/training.md).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import EVENT_TIMESTAMP, LABEL, TRIP_KEY
from ml_tasks.features.request import REQUEST_FEATURES, request_time_features
from ml_tasks.features.retrieval import ENTITY_COLUMNS
from ml_tasks.intervals import Interval
from ml_tasks.schema import COMMUNITY_AREAS, CURATED_SCHEMA, PAYMENT_TYPES
from ml_tasks.settings import Settings
from ml_tasks.transform import trips_with_derived_columns

log = logging.getLogger(__name__)

#: schema metadata key of :func:`training_frame_from_csv`'s load report (JSON)
FRAME_REPORT_KEY = b"flywheel.frame_report"
#: the columns of a training set without Feast features, in a training set's order
FRAME_SCHEMA = pa.schema(
    [pa.field(n, t) for n, t in ENTITY_COLUMNS.items()]
    + [pa.field(n, t) for n, t in REQUEST_FEATURES.items()]
)
# Same codes and order as ml_tasks.validation.rules.ROW_CODES (checked by a unit test).
_NOT_NULL = ("trip_key", "trip_start_timestamp", "trip_seconds", "trip_miles", "fare", "tips", "payment_type")
REJECT_CODES: tuple[str, ...] = (
    "unparseable",
    *(f"missing_{c}" for c in _NOT_NULL),
    "fare_out_of_range",
    "tips_negative",
    "trip_seconds_out_of_range",
    "trip_miles_out_of_range",
    "zero_seconds_positive_miles",
    "end_before_start",
    "payment_type_unknown",
    "pickup_community_area_unknown",
    "dropoff_community_area_unknown",
    "outside_partition",
    "duplicate_trip",
)
# the source reads every row whatever the interval; this one only satisfies the Source protocol
_ALL_TIME = Interval(dt.date(1900, 1, 1), dt.date(2200, 1, 1))


@dataclass(frozen=True)
class CuratedTrips:
    """Trips of a file that pass the pipeline's row rules, and the count of those that did not.

    ``rows_read == trips.num_rows + rejected``; ``rejected_by_reason`` counts each code a rejected row
    has (a row may have several, so the values can add up to more than ``rejected``).
    """

    trips: pa.Table
    source: str
    rows_read: int
    rejected: int
    rejected_by_reason: dict[str, int]

    def report(self) -> dict[str, Any]:
        """The load report: source, rows read / kept / rejected and the counts by reject code."""
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.trips.num_rows,
            "rows_rejected": self.rejected,
            "rejected_by_reason": self.rejected_by_reason,
        }


def _mask(values: pa.ChunkedArray | pa.Array) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """A boolean compute result as a numpy mask, null -> False (range rules ignore nulls, as GX does)."""
    filled = pc.fill_null(values, False)
    if isinstance(filled, pa.ChunkedArray):
        filled = filled.combine_chunks()
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.bool_)


def _not_in(values: pa.ChunkedArray, allowed: pa.Array) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Non-null values outside ``allowed`` (a null is not "unknown": the missing_* rules own nulls)."""
    return _mask(pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, allowed))))


def reject_masks(curated: pa.Table, settings: Settings) -> dict[str, np.ndarray[Any, np.dtype[np.bool_]]]:
    """Per reject code, the rows of ``curated`` (in :data:`CURATED_SCHEMA`) the pipeline would quarantine.

    ``outside_partition`` never fires here: a file's rows are not assigned to day partitions, and in the
    pipeline every row with a start time lands in the partition of its own day.
    """
    fare, tips = curated["fare"], curated["tips"]
    seconds, miles = curated["trip_seconds"], curated["trip_miles"]
    masks: dict[str, np.ndarray[Any, np.dtype[np.bool_]]] = {
        "unparseable": _mask(pc.is_valid(curated["_parse_errors"])),
    }
    for column in _NOT_NULL:
        masks[f"missing_{column}"] = _mask(pc.is_null(curated[column]))
    masks["fare_out_of_range"] = _mask(pc.or_(pc.less_equal(fare, 0.0), pc.greater(fare, settings.max_fare)))
    masks["tips_negative"] = _mask(pc.less(tips, 0.0))
    masks["trip_seconds_out_of_range"] = _mask(
        pc.or_(pc.less(seconds, 0), pc.greater(seconds, settings.max_trip_seconds))
    )
    masks["trip_miles_out_of_range"] = _mask(
        pc.or_(pc.less(miles, 0.0), pc.greater(miles, settings.max_trip_miles))
    )
    masks["zero_seconds_positive_miles"] = _mask(pc.and_(pc.equal(seconds, 0), pc.greater(miles, 0.0)))
    masks["end_before_start"] = _mask(pc.less(curated["trip_end_ts_utc"], curated["trip_start_ts_utc"]))
    masks["payment_type_unknown"] = _not_in(curated["payment_type"], pa.array(PAYMENT_TYPES, pa.string()))
    for column in ("pickup_community_area", "dropoff_community_area"):
        masks[f"{column}_unknown"] = _not_in(curated[column], pa.array(COMMUNITY_AREAS, pa.int64()))
    masks["outside_partition"] = np.zeros(curated.num_rows, dtype=np.bool_)
    masks["duplicate_trip"] = _mask(curated["_is_duplicate"])
    return {code: masks[code] for code in REJECT_CODES}


def curated_trips_from_file(
    path: str | Path, mapping: str = "tfx", settings: Settings | None = None
) -> CuratedTrips:
    """Read a trips file (CSV / Parquet / JSON) the way extract -> transform -> validate would.

    Args:
        path: a local path or fsspec URI of one file (or a glob / folder, as the file source accepts).
        mapping: the column layout (``tfx`` for the TFX/TFDV samples, ``portal``, or ``auto``).
        settings: thresholds and time zone (default: ``Settings()``, i.e. the environment).

    Returns:
        the accepted trips in :data:`CURATED_SCHEMA` and the rejected-row counts.
    """
    # local import: the sources package registers every source (a few imports not needed elsewhere here)
    from ml_tasks.sources.file import FileSource

    settings = settings or Settings()
    started = time.perf_counter()
    source = FileSource([str(path)], mapping=mapping)
    batches = [batch.table for batch in source.read(_ALL_TIME)]
    raw = pa.concat_tables(batches) if batches else CURATED_SCHEMA.empty_table()
    curated = trips_with_derived_columns(raw, settings.timezone)
    masks = reject_masks(curated, settings)
    rejected = np.zeros(curated.num_rows, dtype=np.bool_)
    for mask in masks.values():
        rejected |= mask
    kept = curated.filter(pa.array(~rejected))
    result = CuratedTrips(
        trips=kept,
        source=str(path),
        rows_read=curated.num_rows,
        rejected=int(rejected.sum()),
        rejected_by_reason={code: int(m.sum()) for code, m in masks.items() if m.any()},
    )
    log.info(
        "trips from %s: %d rows read, %d kept, %d rejected %s in %.2f s",
        path, result.rows_read, kept.num_rows, result.rejected, result.rejected_by_reason,
        time.perf_counter() - started,
    )  # fmt: skip
    return result


def training_frame_from_trips(trips: pa.Table) -> pa.Table:
    """The training-set columns of curated ``trips``: entity columns, label, request-time features.

    Same definitions, types and row order (event timestamp, trip key) as a Feast training set, without the
    ``<view>__<feature>`` columns.

    Raises:
        ValueError: a column is missing, or a trip has no label / key / start (not a curated trip).
    """
    needed = [
        *(c for c in ENTITY_COLUMNS if c != EVENT_TIMESTAMP),
        "trip_start_ts_utc",
        "trip_start_timestamp",
    ]
    missing = [c for c in needed if c not in trips.column_names]
    if missing:
        raise ValueError(f"training_frame_from_trips: the trips have no column(s) {missing} (curated trips?)")
    for column in (LABEL, TRIP_KEY, "trip_start_ts_utc"):
        nulls = trips[column].null_count
        if nulls:
            raise ValueError(
                f"training_frame_from_trips: {nulls} trip(s) have a null {column}; pass curated trips"
                " (validation quarantines such rows)"
            )
    columns: dict[str, Any] = {
        name: trips["trip_start_ts_utc" if name == EVENT_TIMESTAMP else name].cast(typ)
        for name, typ in ENTITY_COLUMNS.items()
    }
    columns.update(request_time_features(trips))
    frame = pa.table(columns, schema=FRAME_SCHEMA)
    return frame.sort_by([(EVENT_TIMESTAMP, "ascending"), (TRIP_KEY, "ascending")])


def training_frame_from_csv(
    path: str | Path, mapping: str = "tfx", settings: Settings | None = None
) -> pa.Table:
    """A training-set-shaped table from a trips file (see the module docstring).

    The load report (rows read / kept / rejected by reason) is logged and stored in the schema metadata
    under :data:`FRAME_REPORT_KEY`; read it back with :func:`frame_report`.
    """
    loaded = curated_trips_from_file(path, mapping, settings)
    frame = training_frame_from_trips(loaded.trips)
    return frame.replace_schema_metadata({FRAME_REPORT_KEY: json.dumps(loaded.report()).encode()})


def frame_report(frame: pa.Table) -> dict[str, Any]:
    """The load report stored by :func:`training_frame_from_csv` (empty when there is none)."""
    meta = frame.schema.metadata or {}
    raw = meta.get(FRAME_REPORT_KEY)
    return dict(json.loads(raw)) if raw else {}


def rows_between(frame: pa.Table, start: dt.date, end: dt.date) -> pa.Table:
    """The rows whose ``trip_date`` (local calendar day) is in ``[start, end)``."""
    dates = frame["trip_date"]
    keep = pc.and_(
        pc.greater_equal(dates, pa.scalar(start, pa.date32())), pc.less(dates, pa.scalar(end, pa.date32()))
    )
    return frame.filter(keep)
