"""to_canonical: typing any source table into the raw schema without losing a row."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from ml_tasks.schema import RAW_SCHEMA, TFX_MAPPING, SchemaError, to_canonical


def _table(**cols: list[object]) -> pa.Table:
    base: dict[str, list[object]] = {
        "trip_start_timestamp": ["2024-05-01T08:15:00.000"],
        "trip_seconds": ["600"],
        "trip_miles": ["2.5"],
        "fare": ["12.25"],
        "tips": ["3"],
        "payment_type": ["Credit Card"],
        "pickup_community_area": ["8"],
    }
    n = max(len(v) for v in cols.values()) if cols else 1
    data = {k: (v * n if len(v) == 1 else v) for k, v in base.items()}
    data.update(cols)
    return pa.table(data)


def test_types_values_and_keeps_every_row() -> None:
    out = to_canonical(_table(), "test").table
    assert out.schema == RAW_SCHEMA
    row = out.to_pylist()[0]
    assert row["trip_start_timestamp"] == dt.datetime(2024, 5, 1, 8, 15)
    assert row["trip_seconds"] == 600
    assert row["fare"] == 12.25
    assert row["pickup_community_area"] == 8
    assert row["_parse_errors"] is None
    assert row["_source"] == "test"
    assert row["trip_id"] is None  # optional column absent -> null


def test_unparseable_values_become_null_with_a_recorded_error() -> None:
    table = _table(
        trip_start_timestamp=["2024-05-01T08:15:00", "not a time", "05/01/2024 01:30:00 PM", None],
        trip_seconds=["60", "1.5", "x", "42.0"],
        fare=["1", "2", "inf", "NA"],
    )
    out = to_canonical(table, "t", row_offset=10).table
    assert out.num_rows == 4
    rows = out.to_pylist()
    assert [r["_source_row"] for r in rows] == [10, 11, 12, 13]
    assert rows[0]["_parse_errors"] is None
    assert rows[1]["_parse_errors"] == "trip_start_timestamp=not a time;trip_seconds=1.5"
    assert rows[2]["trip_start_timestamp"] == dt.datetime(2024, 5, 1, 13, 30)  # portal CSV export format
    assert rows[2]["_parse_errors"] == "trip_seconds=x;fare=inf"
    # an explicit null token is a null, not an error
    assert rows[3]["fare"] is None and rows[3]["trip_seconds"] == 42
    assert rows[3]["_parse_errors"] is None


def test_missing_required_column_names_it() -> None:
    table = _table().drop_columns(["fare"])
    with pytest.raises(SchemaError, match=r"lacks required column\(s\) fare"):
        to_canonical(table, "file:///x.csv")


def test_extra_columns_are_reported_not_kept() -> None:
    result = to_canonical(_table(surprise=["1"]), "t")
    assert result.extra_columns == ("surprise",)
    assert "surprise" not in result.table.column_names


def test_tfx_layout_unix_seconds_are_chicago_wall_clock() -> None:
    table = pa.table(
        {
            "trip_start_timestamp": [1400269500],
            "trip_seconds": [0],
            "trip_miles": [0.0],
            "fare": [12.45],
            "tips": [0.0],
            "payment_type": ["Credit Card"],
            "pickup_community_area": [None],
            "pickup_latitude": [41.9],
        }
    )
    row = to_canonical(table, "tfx", TFX_MAPPING).table.to_pylist()[0]
    # 1400269500 = 2014-05-16 19:45:00 read as if UTC: the sample stores wall-clock time that way
    assert row["trip_start_timestamp"] == dt.datetime(2014, 5, 16, 19, 45)
    assert row["pickup_centroid_latitude"] == 41.9


def test_already_typed_columns_pass_through_but_non_finite_floats_are_errors() -> None:
    table = pa.table(
        {
            "trip_start_timestamp": pa.array([dt.datetime(2024, 5, 1, 8), None], pa.timestamp("us")),
            "trip_seconds": pa.array([60, 70], pa.int64()),
            "trip_miles": pa.array([1.5, float("nan")], pa.float64()),
            "fare": pa.array([10.0, float("inf")], pa.float64()),
            "tips": pa.array([1.0, 0.0], pa.float64()),
            "payment_type": ["Cash", "NA"],
            "pickup_community_area": pa.array([8, None], pa.int64()),
        }
    )
    rows = to_canonical(table, "parquet").table.to_pylist()
    assert rows[0]["trip_start_timestamp"] == dt.datetime(2024, 5, 1, 8)
    assert rows[0]["trip_miles"] == 1.5 and rows[0]["_parse_errors"] is None
    assert rows[1]["trip_miles"] is None and rows[1]["fare"] is None
    assert rows[1]["_parse_errors"] == "trip_miles=nan;fare=inf"
    assert rows[1]["payment_type"] is None  # null tokens still apply to strings
