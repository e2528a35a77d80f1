"""The canonical trip schemas, defined once: raw (extracted), curated (validated), quarantine.

Raw columns follow the City of Chicago "Taxi Trips" portal API names. Every source produces the raw
schema through :func:`to_canonical`, which types values without ever dropping a row: a value that
cannot be parsed becomes null and is recorded in ``_parse_errors`` (validation quarantines the row).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa

from ml_tasks.errors import FlywheelError

Kind = Literal["string", "int", "float", "timestamp", "epoch_seconds"]

# Column name -> (arrow type, parse kind). Timestamps are the portal's floating local (Chicago) time.
RAW_COLUMNS: dict[str, tuple[pa.DataType, Kind]] = {
    "trip_id": (pa.string(), "string"),
    "taxi_id": (pa.string(), "string"),
    "trip_start_timestamp": (pa.timestamp("us"), "timestamp"),
    "trip_end_timestamp": (pa.timestamp("us"), "timestamp"),
    "trip_seconds": (pa.int64(), "int"),
    "trip_miles": (pa.float64(), "float"),
    "pickup_census_tract": (pa.string(), "string"),
    "dropoff_census_tract": (pa.string(), "string"),
    "pickup_community_area": (pa.int64(), "int"),
    "dropoff_community_area": (pa.int64(), "int"),
    "fare": (pa.float64(), "float"),
    "tips": (pa.float64(), "float"),
    "tolls": (pa.float64(), "float"),
    "extras": (pa.float64(), "float"),
    "trip_total": (pa.float64(), "float"),
    "payment_type": (pa.string(), "string"),
    "company": (pa.string(), "string"),
    "pickup_centroid_latitude": (pa.float64(), "float"),
    "pickup_centroid_longitude": (pa.float64(), "float"),
    "dropoff_centroid_latitude": (pa.float64(), "float"),
    "dropoff_centroid_longitude": (pa.float64(), "float"),
}

# Columns a source must provide (possibly with null values); the others may be absent and become null.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "trip_start_timestamp",
    "trip_seconds",
    "trip_miles",
    "fare",
    "tips",
    "payment_type",
    "pickup_community_area",
)

# Lineage / bookkeeping columns carried by every raw row.
META_COLUMNS: dict[str, pa.DataType] = {
    "_source": pa.string(),  # source name + locator (file URI, dataset id, table)
    "_source_row": pa.int64(),  # 0-based position of the row in what the source returned
    "_parse_errors": pa.string(),  # "col=value;col=value" for values that could not be typed, else null
}

RAW_SCHEMA = pa.schema(
    [pa.field(name, typ) for name, (typ, _) in RAW_COLUMNS.items()]
    + [pa.field(name, typ) for name, typ in META_COLUMNS.items()]
)

# Derived columns added by transform (curated = raw + derived).
DERIVED_COLUMNS: dict[str, pa.DataType] = {
    "trip_key": pa.string(),  # trip_id, or a content hash when the source has no trip_id
    "trip_start_ts_utc": pa.timestamp("us", tz="UTC"),
    "trip_end_ts_utc": pa.timestamp("us", tz="UTC"),
    "trip_date": pa.date32(),  # local (Chicago) calendar date of the trip start: the partition key
    "trip_start_hour": pa.int8(),  # local hour 0-23
    "trip_start_day_of_week": pa.int8(),  # ISO: 1 = Monday ... 7 = Sunday
    "trip_start_month": pa.int8(),
    "fare_per_mile": pa.float64(),  # null when miles == 0
    "speed_mph": pa.float64(),  # null when seconds == 0
    "big_tipper": pa.bool_(),  # the label: tips > 0.2 * fare
    "_is_duplicate": pa.bool_(),  # a later copy of a trip_key already seen in the partition
}

CURATED_SCHEMA = pa.schema(list(RAW_SCHEMA) + [pa.field(n, t) for n, t in DERIVED_COLUMNS.items()])
QUARANTINE_SCHEMA = CURATED_SCHEMA.append(pa.field("reject_reason", pa.string()))

PAYMENT_TYPES: tuple[str, ...] = (
    "Cash",
    "Credit Card",
    "Dispute",
    "Mobile",
    "No Charge",
    "Prcard",
    "Pcard",
    "Unknown",
    "Way2ride",
    "Prepaid",
)
COMMUNITY_AREAS: tuple[int, ...] = tuple(range(1, 78))


class SchemaError(FlywheelError, ValueError):
    """A source whose columns cannot be mapped onto the canonical raw schema."""


@dataclass(frozen=True)
class ColumnMapping:
    """How a source's columns map onto the canonical raw columns.

    ``rename`` maps canonical name -> source column name; ``kinds`` overrides the parse kind of a
    canonical column (e.g. ``epoch_seconds`` for unix-second timestamps); ``timestamp_formats`` are
    strptime formats tried in order for string timestamps (ISO 8601 is always tried first).
    """

    rename: Mapping[str, str] = field(default_factory=dict)
    kinds: Mapping[str, Kind] = field(default_factory=dict)
    timestamp_formats: tuple[str, ...] = ("%m/%d/%Y %I:%M:%S %p",)
    null_tokens: tuple[str, ...] = ("", "NA", "N/A", "null", "NULL", "None", "nan", "NaN")


PORTAL_MAPPING = ColumnMapping()
# The TFX/TFDV sample layout: unix seconds (Chicago wall-clock stored as if UTC), no trip_id.
TFX_MAPPING = ColumnMapping(
    rename={
        "pickup_centroid_latitude": "pickup_latitude",
        "pickup_centroid_longitude": "pickup_longitude",
        "dropoff_centroid_latitude": "dropoff_latitude",
        "dropoff_centroid_longitude": "dropoff_longitude",
    },
    kinds={"trip_start_timestamp": "epoch_seconds", "trip_end_timestamp": "epoch_seconds"},
)
MAPPINGS: dict[str, ColumnMapping] = {"portal": PORTAL_MAPPING, "tfx": TFX_MAPPING}


@dataclass(frozen=True)
class Canonicalized:
    """A table in the raw schema plus what was learned while typing it."""

    table: pa.Table
    missing_optional: tuple[str, ...]
    extra_columns: tuple[str, ...]


_DUCK_TYPES: dict[Kind, str] = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "float": "DOUBLE",
    "timestamp": "TIMESTAMP",
    "epoch_seconds": "TIMESTAMP",
}


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def to_canonical(
    table: pa.Table,
    source: str,
    mapping: ColumnMapping = PORTAL_MAPPING,
    row_offset: int = 0,
) -> Canonicalized:
    """Type ``table`` into :data:`RAW_SCHEMA` without dropping rows.

    Args:
        table: the source's rows, with any column types (strings are typical).
        source: the ``_source`` value recorded on every row.
        mapping: how source columns map onto canonical ones.
        row_offset: ``_source_row`` of the first row (for streamed sources).

    Raises:
        SchemaError: a required column is absent.
    """
    present = set(table.column_names)
    source_of = {canon: mapping.rename.get(canon, canon) for canon in RAW_COLUMNS}
    missing_required = [c for c in REQUIRED_COLUMNS if source_of[c] not in present]
    if missing_required:
        names = ", ".join(
            f"{c}" + (f" (as {source_of[c]!r})" if source_of[c] != c else "") for c in missing_required
        )
        raise SchemaError(f"source {source!r} lacks required column(s) {names}; it has: {sorted(present)}")
    missing_optional = tuple(c for c in RAW_COLUMNS if source_of[c] not in present)
    used = {source_of[c] for c in RAW_COLUMNS if source_of[c] in present}
    extra = tuple(sorted(present - used - set(META_COLUMNS)))

    nulls = ", ".join(_sql_str(t) for t in mapping.null_tokens)
    formats = "[" + ", ".join(_sql_str(f) for f in mapping.timestamp_formats) + "]"
    # Three flat stages (clean text -> typed value -> parse error) keep each expression small:
    # inlining them into one another makes DuckDB's planner blow up on wide tables.
    cleaned: list[str] = []
    typed: list[str] = []
    errors: list[str] = []
    for canon, (_, default_kind) in RAW_COLUMNS.items():
        kind = mapping.kinds.get(canon, default_kind)
        src = source_of[canon]
        out = _ident(canon)
        if src not in present:
            typed.append(f"CAST(NULL AS {_DUCK_TYPES[kind]}) AS {out}")
            continue
        txt = _ident("t_" + canon)
        target_type = RAW_COLUMNS[canon][0]
        if kind != "string" and kind != "epoch_seconds" and table.schema.field(src).type == target_type:
            # already typed (Parquet, Postgres, generators): no text round trip
            cleaned.append(f"{_ident(src)} AS {txt}")
            if kind == "float":  # NaN / inf are not values: null them and say so
                typed.append(f"CASE WHEN isfinite({txt}) THEN {txt} END AS {out}")
                typed.append(txt)
                errors.append(
                    f"CASE WHEN {txt} IS NOT NULL AND NOT isfinite({txt})"
                    f" THEN {_sql_str(canon + '=')} || CAST({txt} AS VARCHAR) END"
                )
            else:
                typed.append(f"{txt} AS {out}")
            continue
        cleaned.append(
            f"CASE WHEN TRIM(CAST({_ident(src)} AS VARCHAR)) IN ({nulls}) THEN NULL"
            f" ELSE TRIM(CAST({_ident(src)} AS VARCHAR)) END AS {txt}"
        )
        if kind == "string":
            expr = txt
        elif kind == "int":
            # "42" and "42.0" are integers; "42.5" and "x" are not
            expr = (
                f"CASE WHEN TRY_CAST({txt} AS DOUBLE) = round(TRY_CAST({txt} AS DOUBLE))"
                f" THEN TRY_CAST(TRY_CAST({txt} AS DOUBLE) AS BIGINT) END"
            )
        elif kind == "float":
            expr = f"CASE WHEN isfinite(TRY_CAST({txt} AS DOUBLE)) THEN TRY_CAST({txt} AS DOUBLE) END"
        elif kind == "epoch_seconds":
            expr = (
                f"CASE WHEN isfinite(TRY_CAST({txt} AS DOUBLE)) THEN"
                f" TRY(make_timestamp(CAST(TRY_CAST({txt} AS DOUBLE) * 1000000 AS BIGINT))) END"
            )
        else:  # timestamp: ISO 8601 first, then the mapping's formats
            expr = f"COALESCE(TRY_CAST({txt} AS TIMESTAMP), TRY_STRPTIME({txt}, {formats}))"
        typed.append(f"{expr} AS {out}")
        typed.append(txt)
        errors.append(
            f"CASE WHEN {txt} IS NOT NULL AND {out} IS NULL"
            f" THEN {_sql_str(canon + '=')} || left({txt}, 40) END"
        )
    err_expr = f"NULLIF(concat_ws(';', {', '.join(errors)}), '')" if errors else "NULL"
    columns = ", ".join(_ident(c) for c in RAW_COLUMNS)
    sql = (
        f"WITH c AS (SELECT {', '.join(cleaned) or '1 AS _dummy'},"
        f" __row AS _source_row FROM src),"
        f" t AS (SELECT {', '.join(typed)}, _source_row FROM c)"
        f" SELECT {columns}, {_sql_str(source)} AS _source, _source_row, {err_expr} AS _parse_errors"
        f" FROM t ORDER BY _source_row"
    )
    # no progress bar: it would print on stdout, which carries the CLI's one JSON line
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        rows = pa.array(np.arange(row_offset, row_offset + table.num_rows, dtype=np.int64))
        con.register("src", table.append_column("__row", rows))
        result = con.execute(sql).to_arrow_table()
    finally:
        con.close()
    return Canonicalized(result.cast(RAW_SCHEMA), missing_optional, extra)


def empty_raw() -> pa.Table:
    return RAW_SCHEMA.empty_table()
