"""transform: raw/trips/dt=D -> staging/trips/dt=D (derived columns, keys, duplicates, order)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ml_tasks import transform as transform_module
from ml_tasks.intervals import Interval
from ml_tasks.schema import CURATED_SCHEMA, RAW_SCHEMA, SchemaError
from ml_tasks.storage import DataRoot, Manifest, PartitionError
from ml_tasks.transform import HASHED_COLUMNS, staged_slices, transform, trips_with_derived_columns
from tests.unit.validation.trip_rows import (
    DAY,
    ONE_DAY,
    partition_bytes,
    raw_table,
    read,
    settings,
    trip,
    trips,
    write_raw,
)

UTC = dt.UTC
CHICAGO = "America/Chicago"


def derive(rows: list[dict[str, Any]], tz: str = CHICAGO) -> list[dict[str, Any]]:
    table = trips_with_derived_columns(raw_table(rows), tz)
    assert table.schema == CURATED_SCHEMA
    assert table.num_rows == len(rows)
    return table.to_pylist()


def by_row(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["_source_row"]: r for r in rows}


def test_derived_columns_of_an_ordinary_trip() -> None:
    (row,) = derive([trip(0, fare=10.0, tips=2.5, trip_miles=4.0, trip_seconds=1200)])
    # 2024-05-01 08:00 Chicago daylight time = 13:00 UTC
    assert row["trip_start_ts_utc"] == dt.datetime(2024, 5, 1, 13, 0, tzinfo=UTC)
    assert row["trip_end_ts_utc"] == dt.datetime(2024, 5, 1, 13, 10, tzinfo=UTC)
    assert row["trip_date"] == dt.date(2024, 5, 1)
    assert row["trip_start_hour"] == 8
    assert row["trip_start_day_of_week"] == 3  # ISO: Wednesday
    assert row["trip_start_month"] == 5
    assert row["fare_per_mile"] == pytest.approx(2.5)
    assert row["speed_mph"] == pytest.approx(12.0)  # 4 miles in 20 minutes
    assert row["big_tipper"] is True  # 2.5 > 0.2 * 10
    assert row["trip_key"] == row["trip_id"] == "trip-2024-05-01-00000"
    assert row["_is_duplicate"] is False


def test_iso_day_of_week_monday_is_1_and_sunday_is_7() -> None:
    rows = derive([trip(0, DAY), trip(1, dt.date(2024, 5, 6)), trip(2, dt.date(2024, 5, 5))])
    days = {r["trip_date"]: r["trip_start_day_of_week"] for r in rows}
    assert days == {dt.date(2024, 5, 1): 3, dt.date(2024, 5, 6): 1, dt.date(2024, 5, 5): 7}


def test_timestamps_are_localised_to_the_configured_zone() -> None:
    (row,) = derive([trip(0)], tz="UTC")
    assert row["trip_start_ts_utc"] == dt.datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    (row,) = derive([trip(0, dt.date(2024, 1, 15))], tz=CHICAGO)  # standard time: UTC-6
    assert row["trip_start_ts_utc"] == dt.datetime(2024, 1, 15, 14, 0, tzinfo=UTC)


def test_spring_forward_gap_shifts_forward_and_keeps_the_wall_clock_calendar() -> None:
    day = dt.date(2024, 3, 10)  # 02:00-02:59 does not exist in Chicago
    rows = derive(
        [
            trip(0, day, trip_start_timestamp=dt.datetime(2024, 3, 10, 1, 59)),
            trip(1, day, trip_start_timestamp=dt.datetime(2024, 3, 10, 2, 0)),
            trip(2, day, trip_start_timestamp=dt.datetime(2024, 3, 10, 2, 30)),
            trip(3, day, trip_start_timestamp=dt.datetime(2024, 3, 10, 3, 0)),
        ]
    )
    got = {r["_source_row"]: (r["trip_start_ts_utc"], r["trip_start_hour"], r["trip_date"]) for r in rows}
    assert got[0] == (dt.datetime(2024, 3, 10, 7, 59, tzinfo=UTC), 1, day)  # CST, UTC-6
    # nonexistent wall-clock times move to the first instant after the gap: 03:00 CDT = 08:00 UTC
    assert got[1] == (dt.datetime(2024, 3, 10, 8, 0, tzinfo=UTC), 2, day)
    assert got[2] == (dt.datetime(2024, 3, 10, 8, 0, tzinfo=UTC), 2, day)
    assert got[3] == (dt.datetime(2024, 3, 10, 8, 0, tzinfo=UTC), 3, day)


def test_autumn_ambiguous_hour_takes_the_earliest_instant() -> None:
    day = dt.date(2024, 11, 3)  # 01:00-01:59 happens twice in Chicago
    rows = derive(
        [
            trip(0, day, trip_start_timestamp=dt.datetime(2024, 11, 3, 0, 59)),
            trip(1, day, trip_start_timestamp=dt.datetime(2024, 11, 3, 1, 30)),
            trip(2, day, trip_start_timestamp=dt.datetime(2024, 11, 3, 2, 0)),
        ]
    )
    got = {r["_source_row"]: (r["trip_start_ts_utc"], r["trip_start_hour"]) for r in rows}
    assert got[0] == (dt.datetime(2024, 11, 3, 5, 59, tzinfo=UTC), 0)  # CDT, UTC-5
    assert got[1] == (dt.datetime(2024, 11, 3, 6, 30, tzinfo=UTC), 1)  # first pass, still CDT
    assert got[2] == (dt.datetime(2024, 11, 3, 8, 0, tzinfo=UTC), 2)  # CST, UTC-6


@pytest.mark.parametrize(
    ("miles", "seconds", "fare_per_mile", "speed_mph"),
    [
        (0.0, 600, None, 0.0),  # zero miles: no fare per mile; speed is a real 0
        (-1.0, 600, None, -6.0),  # negative miles (validation rejects the row) still no division
        (None, 600, None, None),
        (3.0, 0, 3.3333333333333335, None),  # zero seconds: no speed
        (3.0, None, 3.3333333333333335, None),
        (3.0, -60, 3.3333333333333335, None),
        (0.5, 1800, 20.0, 1.0),
    ],
)
def test_ratios_are_null_instead_of_dividing_by_zero(
    miles: float | None, seconds: int | None, fare_per_mile: float | None, speed_mph: float | None
) -> None:
    (row,) = derive([trip(0, fare=10.0, trip_miles=miles, trip_seconds=seconds)])
    assert row["fare_per_mile"] == (pytest.approx(fare_per_mile) if fare_per_mile is not None else None)
    assert row["speed_mph"] == (pytest.approx(speed_mph) if speed_mph is not None else None)


@pytest.mark.parametrize(
    ("fare", "tips", "expected"),
    [
        (10.0, 2.01, True),
        (10.0, 2.0, False),  # strictly greater than 20 %
        (10.0, 0.0, False),
        (10.0, None, None),  # unknown tip: unknown label, not "no"
        (None, 5.0, None),
        (0.0, 0.5, True),
    ],
)
def test_big_tipper_label(fare: float | None, tips: float | None, expected: bool | None) -> None:
    (row,) = derive([trip(0, fare=fare, tips=tips)])
    assert row["big_tipper"] is expected


def _documented_encoding(row: dict[str, Any]) -> str:
    """The content-hash text of transform.HASHED_COLUMNS: null "~", strings "len:text", timestamps as
    epoch microseconds, numbers as their shortest round-trip text, joined with "|"."""
    parts = []
    for name in HASHED_COLUMNS:
        value = row.get(name)
        if value is None:
            parts.append("~")
        elif isinstance(value, str):
            parts.append(f"{len(value)}:{value}")
        elif isinstance(value, dt.datetime):
            parts.append(str((value - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)))
        else:
            parts.append(repr(value))
    return "|".join(parts)


def test_missing_trip_id_gets_a_stable_content_hash_key() -> None:
    rows = derive([trip(0, trip_id=None), trip(1, trip_id=None), trip(2)])
    keys = {r["_source_row"]: r["trip_key"] for r in rows}
    assert re.fullmatch(r"h_[0-9a-f]{40}", keys[0])
    assert re.fullmatch(r"h_[0-9a-f]{40}", keys[1])
    assert keys[0] != keys[1]  # different content, different key
    assert keys[2] == "trip-2024-05-01-00002"
    # pinned to the documented encoding, recomputed here independently: the key is an entity id
    # downstream (features, predictions) and must not drift between runs or releases
    assert (
        keys[0]
        == "h_" + hashlib.sha256(_documented_encoding(trip(0, trip_id=None)).encode()).hexdigest()[:40]
    )
    again = by_row(derive([trip(1, trip_id=None), trip(0, trip_id=None)]))
    assert again[0]["trip_key"] == keys[0]
    assert again[1]["trip_key"] == keys[1]


def test_content_hash_ignores_lineage_but_sees_every_value_and_parse_error() -> None:
    base = by_row(derive([trip(0, trip_id=None)]))[0]["trip_key"]
    moved = by_row(derive([trip(0, trip_id=None, _source="other-file", _source_row=0)]))[0]["trip_key"]
    assert moved == base  # lineage columns are not content
    for change in (
        {"company": None},
        {"company": "Flash Cab "},
        {"tips": 1.0000001},
        {"_parse_errors": "fare=x"},
    ):
        changed = by_row(derive([trip(0, trip_id=None, **change)]))[0]["trip_key"]
        assert changed != base, change
    # strings are length-prefixed: moving text between adjacent columns changes the key
    a = by_row(derive([trip(0, trip_id=None, pickup_census_tract="12", dropoff_census_tract="3")]))[0]
    b = by_row(derive([trip(0, trip_id=None, pickup_census_tract="1", dropoff_census_tract="23")]))[0]
    assert a["trip_key"] != b["trip_key"]


def test_identical_rows_without_trip_id_are_duplicates() -> None:
    twin = trip(0, trip_id=None)
    rows = by_row(derive([twin, {**twin, "_source_row": 1}, trip(2, trip_id=None)]))
    assert rows[0]["trip_key"] == rows[1]["trip_key"]
    assert [rows[i]["_is_duplicate"] for i in (0, 1, 2)] == [False, True, False]


def test_first_copy_returned_by_the_source_is_kept_whatever_its_timestamp() -> None:
    # the later copy (by _source_row) starts earlier: sort order must not decide which one is kept
    first = trip(5, trip_id="dup", trip_start_timestamp=dt.datetime(2024, 5, 1, 11, 0))
    second = trip(9, trip_id="dup", trip_start_timestamp=dt.datetime(2024, 5, 1, 9, 0), fare=99.0)
    third = trip(12, trip_id="dup", trip_start_timestamp=dt.datetime(2024, 5, 1, 10, 0))
    rows = by_row(derive([second, third, first, trip(1)]))
    assert rows[5]["_is_duplicate"] is False
    assert rows[9]["_is_duplicate"] is True
    assert rows[12]["_is_duplicate"] is True
    assert rows[1]["_is_duplicate"] is False


def test_rows_are_sorted_deterministically_with_null_timestamps_last() -> None:
    rows = [
        trip(0, trip_start_timestamp=dt.datetime(2024, 5, 1, 9, 0), trip_id="b"),
        trip(1, trip_start_timestamp=None, trip_id="z"),
        trip(2, trip_start_timestamp=dt.datetime(2024, 5, 1, 9, 0), trip_id="a"),
        trip(3, trip_start_timestamp=dt.datetime(2024, 5, 1, 7, 0), trip_id="c"),
    ]
    out = derive(rows)
    assert [r["trip_key"] for r in out] == ["c", "a", "b", "z"]
    assert out[-1]["trip_date"] is None and out[-1]["trip_start_hour"] is None
    assert out[-1]["trip_start_ts_utc"] is None
    # the input order does not matter
    assert derive(list(reversed(rows))) == out


def test_rows_sharing_a_source_position_are_ordered_by_every_column() -> None:
    # (_source, _source_row) is not unique here: every other column breaks the ties (the slow path)
    rows = [
        trip(0, trip_id="x", fare=12.0),
        trip(0, trip_id="x", fare=11.0),
        trip(0, trip_id="y", fare=13.0),
        trip(1, trip_id="y", fare=10.0),
    ]
    out = derive(rows)
    assert derive(list(reversed(rows))) == out
    assert [(r["trip_key"], r["fare"], r["_is_duplicate"]) for r in out] == [
        ("x", 11.0, False), ("x", 12.0, True), ("y", 13.0, False), ("y", 10.0, True)
    ]  # fmt: skip


def test_transform_step_writes_staging_with_manifest_and_summary(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    rows = [
        *trips(5),
        trip(5, trip_id="trip-2024-05-01-00001"),
        trip(6, trip_id=None),
        trip(7, trip_start_timestamp=None),
    ]
    raw_path = write_raw(root, rows)
    summary = transform(root, ONE_DAY, settings(tmp_path))
    staged = read(root, "staging", "trips")
    assert staged.schema == CURATED_SCHEMA
    assert staged.num_rows == 8
    assert sum(staged["_is_duplicate"].to_pylist()) == 1
    manifest = root.read_manifest(root.partition_path("staging", "trips", DAY))
    assert manifest.step == "transform"
    assert manifest.row_counts == {"rows": 8, "duplicates": 1, "hashed_keys": 1, "rows_without_start": 1}
    raw_manifest = root.read_manifest(raw_path)
    assert manifest.inputs[0]["uri"] == root.uri(raw_path)
    assert manifest.inputs[0]["files"] == {"part-00000.parquet": raw_manifest.outputs[0]["sha256"]}
    assert manifest.params == {"timezone": CHICAGO, "ambiguous": "earliest", "nonexistent": "latest"}
    assert summary["step"] == "transform"
    assert summary["interval"] == {"start": "2024-05-01", "end": "2024-05-02"}
    assert summary["partitions"] == [
        {"dt": "2024-05-01", "uri": root.uri(root.partition_path("staging", "trips", DAY)), "rows": 8,
         "duplicates": 1, "hashed_keys": 1, "rows_without_start": 1}
    ]  # fmt: skip
    json.dumps(summary)  # the CLI prints it


def test_transform_is_byte_identical_across_runs_and_input_orders(tmp_path: Path) -> None:
    rows = [*trips(20), trip(20, trip_id=None), trip(21, trip_id="trip-2024-05-01-00003")]
    first = DataRoot(str(tmp_path / "a"))
    write_raw(first, rows)
    transform(first, ONE_DAY, settings(tmp_path / "a"))
    once = partition_bytes(first, "staging", "trips")
    transform(first, ONE_DAY, settings(tmp_path / "a"))
    assert partition_bytes(first, "staging", "trips") == once
    # same rows stored in another order (a source paging differently): same staging bytes
    second = DataRoot(str(tmp_path / "a"))
    write_raw(second, list(reversed(rows)))
    transform(second, ONE_DAY, settings(tmp_path / "a"))
    again = partition_bytes(second, "staging", "trips")
    assert again["part-00000.parquet"] == once["part-00000.parquet"]


def test_empty_raw_partition_gives_an_empty_staging_partition(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    write_raw(root, [])
    summary = transform(root, ONE_DAY, settings(tmp_path))
    staged = read(root, "staging", "trips")
    assert staged.num_rows == 0
    assert staged.schema == CURATED_SCHEMA
    assert summary["partitions"][0]["rows"] == 0


def test_every_day_of_the_interval_is_transformed(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    days = [DAY + dt.timedelta(days=i) for i in range(3)]
    for i, day in enumerate(days):
        write_raw(root, trips(i + 1, day), day)
    summary = transform(root, Interval(days[0], days[-1] + dt.timedelta(days=1)), settings(tmp_path))
    assert [(p["dt"], p["rows"]) for p in summary["partitions"]] == [
        ("2024-05-01", 1), ("2024-05-02", 2), ("2024-05-03", 3)
    ]  # fmt: skip
    assert summary["rows"] == 6
    assert read(root, "staging", "trips", days[2]).num_rows == 3


def test_missing_raw_partition_is_a_clear_error(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    with pytest.raises(PartitionError, match=r"raw/trips/dt=2024-05-01 is missing or incomplete"):
        transform(root, ONE_DAY, settings(tmp_path))
    assert not root.exists(root.partition_path("staging", "trips", DAY))


def test_raw_partition_in_another_schema_is_refused_by_name(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    table = raw_table(trips(3))
    table = table.set_column(table.schema.get_field_index("fare"), "fare", table["fare"].cast(pa.string()))
    table = table.drop_columns(["company"])
    path = root.partition_path("raw", "trips", DAY)
    with root.write_partition(path) as writer:
        writer.write(table)
        writer.manifest = Manifest(dataset="raw/trips", partition="2024-05-01", step="extract",
                                   outputs=writer.outputs(), row_counts={"rows": 3})  # fmt: skip
    with pytest.raises(SchemaError) as err:
        transform(root, ONE_DAY, settings(tmp_path))
    message = str(err.value)
    assert "raw/trips/dt=2024-05-01" in message
    assert "missing ['company']" in message
    assert "fare (string instead of double)" in message


def test_transform_never_mutates_its_input() -> None:
    table = raw_table([trip(1, trip_id=None), trip(0)])
    before = table.to_pylist()
    trips_with_derived_columns(table, CHICAGO)
    assert table.to_pylist() == before
    assert table.schema == RAW_SCHEMA


def test_staged_slices_are_the_staging_table_cut_in_order() -> None:
    rows = [
        *trips(20),
        trip(20, trip_id=None),
        {**trip(3), "_source_row": 99},
        trip(21, trip_start_timestamp=None),
    ]
    raw = raw_table(list(reversed(rows)))
    whole = trips_with_derived_columns(raw, CHICAGO)
    slices = list(staged_slices(raw, CHICAGO, slice_rows=5))
    assert [s.num_rows for s in slices] == [5, 5, 5, 5, 3]
    assert pa.concat_tables(slices).equals(whole)
    assert sum(s["_is_duplicate"].to_pylist().count(True) for s in slices) == 1
    assert [s.num_rows for s in staged_slices(raw_table([]), CHICAGO, slice_rows=5)] == [0]


def test_transform_writes_the_same_rows_and_counts_whatever_the_slice_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        *trips(20),
        trip(20, trip_id=None),
        {**trip(3), "_source_row": 99},
        trip(21, trip_start_timestamp=None),
    ]
    staged, counts = [], []
    for slice_rows in (1_000, 4):
        root = DataRoot(str(tmp_path / str(slice_rows)))
        write_raw(root, rows)
        monkeypatch.setattr(transform_module, "SLICE_ROWS", slice_rows)
        transform(root, ONE_DAY, settings(tmp_path / str(slice_rows)))
        staged.append(read(root, "staging", "trips"))
        counts.append(root.read_manifest(root.partition_path("staging", "trips", DAY)).row_counts)
    assert staged[1].num_rows == 23 and staged[1].equals(staged[0])
    assert counts[0] == counts[1] == {"rows": 23, "duplicates": 1, "hashed_keys": 1, "rows_without_start": 1}


def test_dictionary_encoded_raw_strings_give_the_same_keys_and_rows() -> None:
    """transform reads repetitive strings dictionary-encoded (memory): hashes and order must not change."""
    rows = [
        *trips(6),
        trip(6, trip_id=None, company="A"),
        trip(7, trip_id=None, company="B"),
        trip(8, trip_id=None),
    ]
    raw = raw_table(rows)
    encoded = raw
    for name in transform_module.DICTIONARY_COLUMNS:
        i = raw.schema.get_field_index(name)
        encoded = encoded.set_column(i, name, raw[name].dictionary_encode())
    assert pa.types.is_dictionary(encoded.schema.field("taxi_id").type)
    plain = trips_with_derived_columns(raw, CHICAGO)
    assert trips_with_derived_columns(encoded, CHICAGO).equals(plain)
    assert len({k for k in plain["trip_key"].to_pylist() if k.startswith("h_")}) == 3
