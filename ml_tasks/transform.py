"""Transform: raw/trips/dt=D -> staging/trips/dt=D, typed rows plus derived columns, nothing judged.

Every raw row comes out exactly once; bad rows are only marked (nulls, ``_is_duplicate``) for validation.
Timestamps are localised explicitly (DST: earliest / shift forward); see ``docs/ingest.md``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import LABEL, RAW, STAGING, TRIP_KEY
from ml_tasks.features.request import request_time_features
from ml_tasks.intervals import Interval
from ml_tasks.schema import CURATED_SCHEMA, RAW_COLUMNS, RAW_SCHEMA, SchemaError
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, input_record

log = logging.getLogger(__name__)

AMBIGUOUS = "earliest"  # autumn DST hour: first (daylight-time) instant
NONEXISTENT = "latest"  # spring DST gap: first valid instant after it (pandas' "shift_forward")
HASH_KEY_PREFIX = "h_"  # portal trip ids are 40 hex digits: "h_" can never collide with one
HASH_KEY_HEX = 40
# Columns hashed into trip_key when a row has no trip_id: every canonical value plus the parse errors
# (two rows that differ only in an unparseable value are different rows), never lineage (_source*).
HASHED_COLUMNS: tuple[str, ...] = (*RAW_COLUMNS, "_parse_errors")
ROW_INDEX = "__row_index"  # position in the raw table, carried through the sort


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _hash_term(name: str, typ: pa.DataType) -> str:
    """An unambiguous text encoding of one value for the content hash.

    Strings are length-prefixed (no separator can be forged), timestamps are epoch microseconds and
    numbers use DuckDB's shortest round-trip text; null is ``~``, which no encoded value equals.
    """
    col = _ident(name)
    if pa.types.is_timestamp(typ):
        text = f"CAST(epoch_us({col}) AS VARCHAR)"
    elif pa.types.is_string(typ):
        text = f"CAST(length({col}) AS VARCHAR) || ':' || {col}"
    else:
        text = f"CAST({col} AS VARCHAR)"
    return f"COALESCE({text}, '~')"


def _order_by(columns: list[str]) -> str:
    # explicit null order: DuckDB's default is a setting
    return ", ".join(f"{_ident(c)} ASC NULLS LAST" for c in columns)


def _source_positions_unique(db: duckdb.DuckDBPyConnection) -> bool:
    """Whether (``_source``, ``_source_row``) tells every row of ``raw`` apart (nulls count as equal)."""
    found = db.execute(
        "SELECT count(*) FROM (SELECT 1 FROM raw GROUP BY _source, _source_row HAVING count(*) > 1)"
    ).fetchone()
    return bool(found and found[0] == 0)


def _keys_and_order(raw: pa.Table, con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """Add ``trip_key`` and ``_is_duplicate``; return rows in the deterministic staging order.

    ``con``: a DuckDB connection to reuse (a new one costs ~14 ms, as much as a small day's query).

    The copy of a trip_key that is kept is the first one the source returned (``_source``,
    ``_source_row``): later copies get ``_is_duplicate = true``. Only rows without a trip_id are
    hashed (hashing every row would triple the cost of this step).

    DuckDB sorts only the keys and a row index; Arrow gathers the rows (sorting the whole rows in
    DuckDB cost 3x more, ``docs/ingest.md``).
    """
    types = {f.name: f.type for f in RAW_SCHEMA}
    # one concat() call: a chain of || operators builds every intermediate string and is 4x slower
    content = "concat(" + ", '|', ".join(_hash_term(c, types[c]) for c in HASHED_COLUMNS) + ")"
    own = con is None
    db = duckdb.connect() if con is None else con
    indexed = raw.append_column(ROW_INDEX, pa.array(np.arange(raw.num_rows, dtype=np.int64)))
    try:
        db.register("raw", indexed)
        # Every other column breaks ties, so the order is total and the bytes never depend on DuckDB's
        # parallel sort; rows equal in every column are interchangeable. When (_source, _source_row)
        # is unique, as every source makes it, those ties never happen: the short keys give the same
        # order and sort several times faster than all 24 columns.
        rest = [] if _source_positions_unique(db) else [
            c for c in RAW_SCHEMA.names
            if c not in ("trip_start_timestamp", "trip_id", "_source", "_source_row")
        ]  # fmt: skip
        first_copy = _order_by(["_source", "_source_row", "trip_start_timestamp", "trip_id", *rest])
        staging_order = _order_by(["trip_start_timestamp", "trip_key", "_source_row", "_source", *rest])
        sql = f"""
            WITH k AS (
                SELECT *, COALESCE(trip_id, '{HASH_KEY_PREFIX}' || left(sha256({content}), {HASH_KEY_HEX}))
                    AS trip_key
                FROM raw
            )
            SELECT {ROW_INDEX}, trip_key,
                row_number() OVER (PARTITION BY trip_key ORDER BY {first_copy}) > 1 AS _is_duplicate
            FROM k
            ORDER BY {staging_order}
        """
        keys = db.execute(sql).to_arrow_table()
    finally:
        db.unregister("raw")
        if own:
            db.close()
    ordered = raw.take(keys[ROW_INDEX])
    return ordered.append_column(TRIP_KEY, keys[TRIP_KEY]).append_column(
        "_is_duplicate", keys["_is_duplicate"]
    )


def _localise(floating: pa.ChunkedArray, timezone: str) -> pa.ChunkedArray:
    """Floating wall-clock timestamps of ``timezone`` as UTC instants (see the module docstring)."""
    local = pc.assume_timezone(floating, timezone=timezone, ambiguous=AMBIGUOUS, nonexistent=NONEXISTENT)
    return local.cast(pa.timestamp("us", tz="UTC"))


def trips_with_derived_columns(
    raw: pa.Table, timezone: str, con: duckdb.DuckDBPyConnection | None = None
) -> pa.Table:
    """The staging table: ``raw`` (in :data:`RAW_SCHEMA`) plus the derived columns, sorted.

    Args:
        raw: one day partition of raw trips.
        timezone: IANA zone of the floating timestamps (``settings.timezone``).
        con: a DuckDB connection to reuse across partitions (a private one otherwise).

    Returns:
        a new table in :data:`CURATED_SCHEMA` with exactly the rows of ``raw``, ordered by
        (trip_start_timestamp nulls last, trip_key, _source_row, _source, then every other column).
    """
    keyed = _keys_and_order(raw.select(RAW_SCHEMA.names).cast(RAW_SCHEMA), con)
    start = keyed["trip_start_timestamp"]
    fare = keyed["fare"]
    tips = keyed["tips"]
    derived: dict[str, Any] = {
        "trip_start_ts_utc": _localise(start, timezone),
        "trip_end_ts_utc": _localise(keyed["trip_end_timestamp"], timezone),
        "trip_date": pc.cast(start, pa.date32()),
        # hour, weekday, month, fare per mile, speed: the one definition shared with training/prediction
        **request_time_features(keyed),
        # comparison with a null operand is null: the label is unknown, not false
        LABEL: pc.greater(tips, pc.multiply(fare, 0.2)),
    }
    columns = {name: keyed[name] for name in RAW_SCHEMA.names}
    columns.update(derived)
    columns[TRIP_KEY] = keyed[TRIP_KEY]
    columns["_is_duplicate"] = keyed["_is_duplicate"]
    return pa.table({name: columns[name] for name in CURATED_SCHEMA.names}).cast(CURATED_SCHEMA)


def _check_raw_schema(schema: pa.Schema, uri: str) -> None:
    """Refuse a raw partition whose column names or types differ from RAW_SCHEMA (order may differ)."""
    found = {f.name: f.type for f in schema}
    missing = [n for n in RAW_SCHEMA.names if n not in found]
    mistyped = [
        f"{f.name} ({found[f.name]} instead of {f.type})"
        for f in RAW_SCHEMA
        if f.name in found and not found[f.name].equals(f.type)
    ]
    extra = sorted(set(found) - set(RAW_SCHEMA.names))
    if missing or mistyped or extra:
        raise SchemaError(
            f"raw partition {uri} is not in the canonical raw schema: missing {missing or 'none'},"
            f" mistyped {mistyped or 'none'}, unexpected {extra or 'none'} (re-run extract for this day)"
        )


def transform(root: DataRoot, interval: Interval, settings: Settings) -> dict[str, Any]:
    """Write ``staging/trips/dt=D`` from ``raw/trips/dt=D`` for every day D of ``interval``.

    Returns:
        the step summary: per-partition URIs and counts (rows, duplicates marked, hashed keys).

    Raises:
        PartitionError: a raw partition is missing or incomplete.
        SchemaError: a raw partition is not in the canonical raw schema.
    """
    started = time.perf_counter()
    partitions = []
    # one connection for the whole interval: connecting cost as much as transforming a 10-row day
    con = duckdb.connect()
    try:
        for day in interval.days():
            partitions.append(_transform_day(root, day, settings, con))
    finally:
        con.close()
    rows_total = sum(p["rows"] for p in partitions)
    seconds = time.perf_counter() - started
    return {
        "step": "transform",
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "partitions": partitions,
        "rows": rows_total,
        "seconds": round(seconds, 3),
    }


def _transform_day(
    root: DataRoot, day: dt.date, settings: Settings, con: duckdb.DuckDBPyConnection
) -> dict[str, Any]:
    """Write ``staging/trips/dt=day``; return its summary entry."""
    t0 = time.perf_counter()
    source = root.partition_path(*RAW, day)
    inputs = [input_record(root, source)]  # also refuses a missing/incomplete partition
    raw = root.read_partition(source)
    if raw.num_columns == 0:  # a partition without files: nothing was extracted
        raw = RAW_SCHEMA.empty_table()
    _check_raw_schema(raw.schema, root.uri(source))
    staged = trips_with_derived_columns(raw, settings.timezone, con)
    if staged.num_rows != raw.num_rows:  # pragma: no cover - an invariant, not an input
        raise AssertionError(
            f"transform changed the row count of {source}: {raw.num_rows} -> {staged.num_rows}"
        )
    counts = {
        "rows": staged.num_rows,
        "duplicates": int(pc.sum(staged["_is_duplicate"]).as_py() or 0),
        "hashed_keys": int(pc.sum(pc.is_null(staged["trip_id"])).as_py() or 0),
        "rows_without_start": int(staged["trip_start_timestamp"].null_count),
    }
    target = root.partition_path(*STAGING, day)
    root.write_table(
        target,
        staged,
        CURATED_SCHEMA,
        Manifest(
            dataset=f"{STAGING[0]}/{STAGING[1]}",
            partition=day.isoformat(),
            step="transform",
            inputs=inputs,
            row_counts=counts,
            params={"timezone": settings.timezone, "ambiguous": AMBIGUOUS, "nonexistent": NONEXISTENT},
        ),
    )
    seconds = time.perf_counter() - t0
    log.info(
        "transform %s: %d rows (%d duplicates marked, %d hashed keys) in %.2f s",
        day, counts["rows"], counts["duplicates"], counts["hashed_keys"], seconds,
    )  # fmt: skip
    return {"dt": day.isoformat(), "uri": root.uri(target), **counts}
