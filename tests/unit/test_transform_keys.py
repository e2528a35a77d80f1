"""transform: row keys (content hash), duplicates and deterministic order."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

from ml_tasks.transform import HASHED_COLUMNS
from tests.unit._transform import derive
from tests.unit.validation.trip_rows import trip


def by_row(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["_source_row"]: r for r in rows}


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
