"""Transform: raw/trips/dt=D -> staging/trips/dt=D, typed rows plus derived columns, nothing judged.

Every raw row comes out exactly once; bad rows are only marked (nulls, ``_is_duplicate``) for validation.
Timestamps are localised explicitly (DST: earliest / shift forward); see ``docs/ingest.md``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
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
SLICE_ROWS = 65_536  # staged rows gathered, derived and written at a time (memory: docs/ingest.md)
# Raw string columns read dictionary-encoded (few distinct values: 115 MB -> a few MB for taxi_id per 1M
# rows); they are decoded slice by slice.
DICTIONARY_COLUMNS: tuple[str, ...] = (
    "taxi_id", "pickup_census_tract", "dropoff_census_tract", "payment_type", "company", "_source",
)  # fmt: skip


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


def _staging_keys(raw: pa.Table, con: duckdb.DuckDBPyConnection | None = None) -> pa.Table:
    """``ROW_INDEX``, ``trip_key`` and ``_is_duplicate`` of every row of ``raw``, in the staging order.

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
        return db.execute(sql).to_arrow_table()
    finally:
        db.unregister("raw")
        if own:
            db.close()


def _gather(batches: list[pa.RecordBatch], offsets: npt.NDArray[np.int64], keys: pa.Table) -> pa.Table:
    """The raw rows at ``keys[ROW_INDEX]``, in that order, with ``trip_key`` and ``_is_duplicate``.

    ``batches``: the raw table's chunks, ``offsets`` their first row positions. Each chunk gives its
    rows by its own ``take`` and one small ``take`` restores the order: ``Table.take`` on a chunked
    table concatenates every chunk of the day first (2x the memory and 4x the time here).
    """
    wanted = keys[ROW_INDEX].to_numpy()
    order = np.argsort(wanted, kind="stable")
    ascending = wanted[order]
    cuts = np.searchsorted(ascending, offsets)
    parts = [
        batch.take(pa.array(ascending[lo:hi] - start))
        for batch, start, lo, hi in zip(batches, offsets[:-1], cuts[:-1], cuts[1:], strict=True)
    ]
    taken = pa.Table.from_batches(parts, schema=batches[0].schema)
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    ordered = taken.take(pa.array(restore)).cast(RAW_SCHEMA)  # decodes dictionary columns
    return ordered.append_column(TRIP_KEY, keys[TRIP_KEY]).append_column(
        "_is_duplicate", keys["_is_duplicate"]
    )


def _localise(floating: pa.ChunkedArray, timezone: str) -> pa.ChunkedArray:
    """Floating wall-clock timestamps of ``timezone`` as UTC instants (see the module docstring)."""
    local = pc.assume_timezone(floating, timezone=timezone, ambiguous=AMBIGUOUS, nonexistent=NONEXISTENT)
    return local.cast(pa.timestamp("us", tz="UTC"))


def _with_derived_columns(keyed: pa.Table, timezone: str) -> pa.Table:
    """Raw columns + ``trip_key`` + ``_is_duplicate`` (rows already in order) -> :data:`CURATED_SCHEMA`."""
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
    return pa.concat_tables(staged_slices(raw, timezone, con, slice_rows=max(raw.num_rows, 1)))


def staged_slices(
    raw: pa.Table, timezone: str, con: duckdb.DuckDBPyConnection | None = None, slice_rows: int = SLICE_ROWS
) -> Iterator[pa.Table]:
    """:func:`trips_with_derived_columns` as consecutive slices of at most ``slice_rows`` rows.

    Only the keys of the whole day are sorted; the rows are gathered, derived and handed on one
    slice at a time, so the day is held once (as read), not three times (``docs/ingest.md``).
    At least one (possibly empty) slice is yielded.
    """
    raw = raw.select(RAW_SCHEMA.names).cast(_working_schema(raw.schema))
    keys = _staging_keys(raw, con)
    batches = raw.to_batches() or [pa.RecordBatch.from_pylist([], schema=RAW_SCHEMA)]
    offsets = np.cumsum([0] + [b.num_rows for b in batches], dtype=np.int64)
    for lo in range(0, max(raw.num_rows, 1), slice_rows):
        yield _with_derived_columns(_gather(batches, offsets, keys.slice(lo, slice_rows)), timezone)


def _working_schema(found: pa.Schema) -> pa.Schema:
    """:data:`RAW_SCHEMA`, except string columns that are dictionary-encoded in ``found`` stay so.

    DuckDB reads a dictionary column as the same VARCHAR values: keys and hashes do not change.
    """
    fields = []
    for want in RAW_SCHEMA:
        have = found.field(want.name).type
        keep = pa.types.is_dictionary(have) and have.value_type.equals(want.type)
        fields.append(want.with_type(have) if keep else want)
    return pa.schema(fields)


def _check_raw_schema(schema: pa.Schema, uri: str) -> None:
    """Refuse a raw partition whose column names or types differ from RAW_SCHEMA (order may differ)."""
    found = {f.name: f.type.value_type if pa.types.is_dictionary(f.type) else f.type for f in schema}
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
    raw = root.read_partition(source, dictionary=DICTIONARY_COLUMNS)
    if raw.num_columns == 0:  # a partition without files: nothing was extracted
        raw = RAW_SCHEMA.empty_table()
    _check_raw_schema(raw.schema, root.uri(source))
    counts = {
        "rows": raw.num_rows,
        "duplicates": 0,
        "hashed_keys": int(raw["trip_id"].null_count),
        "rows_without_start": int(raw["trip_start_timestamp"].null_count),
    }
    target = root.partition_path(*STAGING, day)
    slices = staged_slices(raw, settings.timezone, con, SLICE_ROWS)
    del raw  # the generator holds the day from here on (once, not twice)
    with root.write_partition(target) as writer:
        for staged in slices:
            counts["duplicates"] += int(pc.sum(staged["_is_duplicate"]).as_py() or 0)
            writer.write(staged, schema=CURATED_SCHEMA)
        writer.write_empty(CURATED_SCHEMA)
        if writer.rows != counts["rows"]:  # pragma: no cover - an invariant, not an input
            raise AssertionError(
                f"transform changed the row count of {source}: {counts['rows']} -> {writer.rows}"
            )
        writer.manifest = Manifest(
            dataset=f"{STAGING[0]}/{STAGING[1]}",
            partition=day.isoformat(),
            step="transform",
            inputs=inputs,
            outputs=writer.outputs(),
            row_counts=counts,
            params={"timezone": settings.timezone, "ambiguous": AMBIGUOUS, "nonexistent": NONEXISTENT},
        )
    seconds = time.perf_counter() - t0
    log.info(
        "transform %s: %d rows (%d duplicates marked, %d hashed keys) in %.2f s",
        day, counts["rows"], counts["duplicates"], counts["hashed_keys"], seconds,
    )  # fmt: skip
    return {"dt": day.isoformat(), "uri": root.uri(target), **counts}
