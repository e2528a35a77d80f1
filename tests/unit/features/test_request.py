"""Request-time features: one function for training and prediction, equal to what transform stores.

``request_time_features`` reads the trip's floating (local wall-clock) start and its raw seconds, miles
and fare. The values below are written out by hand; the last tests check that the columns transform
stores in curated trips, and the ones the training set recomputes, are exactly this function's output.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ml_tasks.features.request import REQUEST_FEATURES, REQUEST_INPUTS, request_time_features
from ml_tasks.features.retrieval import entity_frame
from ml_tasks.intervals import Interval
from ml_tasks.schema import CURATED_SCHEMA, RAW_SCHEMA
from ml_tasks.sources.synthetic import SyntheticSource
from ml_tasks.storage import DataRoot, Manifest
from ml_tasks.transform import trips_with_derived_columns

CHICAGO = "America/Chicago"
INPUT_SCHEMA = pa.schema([RAW_SCHEMA.field(name) for name in REQUEST_INPUTS])

# (start, seconds, miles, fare) -> (hour, ISO day of week, month, fare per mile, speed mph), by hand
CASES: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = [
    # an ordinary Wednesday morning: 4 miles in 20 minutes, $10
    ((dt.datetime(2024, 5, 1, 8, 0), 1200, 4.0, 10.0), (8, 3, 5, 2.5, 12.0)),
    # Monday 00:00 on New Year's day; 1 mile in 6 minutes
    ((dt.datetime(2024, 1, 1, 0, 0), 360, 1.0, 5.25), (0, 1, 1, 5.25, 10.0)),
    # Sunday (ISO 7) 23:59:59, last second of a month and of the year
    ((dt.datetime(2023, 12, 31, 23, 59, 59), 1800, 3.0, 12.0), (23, 7, 12, 4.0, 6.0)),
    # spring-forward gap: 02:30 does not exist in Chicago, the wall clock still reads hour 2
    ((dt.datetime(2024, 3, 10, 2, 30), 900, 2.5, 10.0), (2, 7, 3, 4.0, 10.0)),
    # autumn ambiguous hour: 01:30 happens twice, the wall clock reads hour 1 both times
    ((dt.datetime(2024, 11, 3, 1, 30), 720, 2.0, 9.0), (1, 7, 11, 4.5, 10.0)),
    # miles 0: no fare per mile; speed is a real 0 mph (it moved nowhere in 10 minutes)
    ((dt.datetime(2024, 5, 2, 12, 15), 600, 0.0, 7.5), (12, 4, 5, None, 0.0)),
    # seconds 0: no speed; fare per mile is still known
    ((dt.datetime(2024, 5, 2, 13, 0), 0, 2.0, 3.25), (13, 4, 5, 1.625, None)),
    # miles and seconds unknown: both derived values unknown
    ((dt.datetime(2024, 5, 3, 9, 45), None, None, 8.0), (9, 5, 5, None, None)),
    # fare unknown: fare per mile unknown, speed known
    ((dt.datetime(2024, 5, 3, 10, 0), 3600, 30.0, None), (10, 5, 5, None, 30.0)),
    # negative miles (an odometer glitch, quarantined later): not a fare per mile
    ((dt.datetime(2024, 5, 4, 17, 0), 600, -1.0, 6.0), (17, 6, 5, None, -6.0)),
    # fare 0 with miles: a real 0 $/mile
    ((dt.datetime(2024, 5, 4, 18, 0), 600, 2.0, 0.0), (18, 6, 5, 0.0, 12.0)),
    # start unknown: calendar features unknown, the others computed
    ((None, 600, 2.0, 10.0), (None, None, None, 5.0, 12.0)),
]


def inputs(rows: list[tuple[Any, ...]]) -> pa.Table:
    return pa.Table.from_pylist(
        [dict(zip(REQUEST_INPUTS, r, strict=True)) for r in rows], schema=INPUT_SCHEMA
    )


def test_hand_rows_give_the_hand_computed_values_and_types() -> None:
    features = request_time_features(inputs([given for given, _ in CASES]))
    assert list(features) == list(REQUEST_FEATURES)
    for name, typ in REQUEST_FEATURES.items():
        assert features[name].type == typ, name
        assert len(features[name]) == len(CASES)
    for i, (given, expected) in enumerate(CASES):
        got = tuple(features[name][i].as_py() for name in REQUEST_FEATURES)
        assert got == expected, f"row {i} {given}: {got} != {expected}"


def test_nulls_stay_nulls_not_nan_or_infinity() -> None:
    features = request_time_features(inputs([given for given, _ in CASES]))
    for name in ("fare_per_mile", "speed_mph"):
        values = features[name].to_pylist()
        assert not any(v is not None and not math.isfinite(v) for v in values), (name, values)
    # unknown fare per mile: miles 0, null or negative, fare null; unknown speed: seconds 0 or null
    assert features["fare_per_mile"].null_count == 4
    assert features["speed_mph"].null_count == 2
    assert features["trip_start_hour"].null_count == 1


def test_empty_table_gives_empty_typed_columns() -> None:
    features = request_time_features(INPUT_SCHEMA.empty_table())
    assert {n: (len(a), a.type) for n, a in features.items()} == {
        n: (0, t) for n, t in REQUEST_FEATURES.items()
    }


def test_missing_input_column_is_named() -> None:
    table = inputs([CASES[0][0]]).drop_columns(["trip_miles"])
    with pytest.raises(ValueError, match=r"trip_miles"):
        request_time_features(table)


def raw_rows(given: list[tuple[Any, ...]]) -> pa.Table:
    """Raw trips (canonical schema) carrying the given request inputs, one trip per case."""
    rows = []
    for i, (start, seconds, miles, fare) in enumerate(given):
        rows.append(
            {
                "trip_id": f"req-{i:03d}",
                "trip_start_timestamp": start,
                "trip_end_timestamp": start + dt.timedelta(seconds=seconds or 0) if start else None,
                "trip_seconds": seconds,
                "trip_miles": miles,
                "fare": fare,
                "tips": 1.0,
                "payment_type": "Cash",
                "pickup_community_area": 8,
                "company": "Flash Cab",
                "_source": "unit-test",
                "_source_row": i,
            }
        )
    return pa.Table.from_pylist(rows, schema=RAW_SCHEMA)


def assert_same_request_columns(table: pa.Table, features: dict[str, pa.ChunkedArray], where: str) -> None:
    for name, typ in REQUEST_FEATURES.items():
        stored = table[name]
        assert stored.type == typ, (where, name)
        # exact equality, nulls in the same places (pyarrow equals treats null == null)
        assert stored.equals(features[name]), f"{where}: {name} differs"


def test_transform_stores_exactly_the_request_features_of_each_trip() -> None:
    raw = raw_rows([given for given, _ in CASES])
    curated = trips_with_derived_columns(raw, CHICAGO)
    assert curated.num_rows == len(CASES)
    assert_same_request_columns(curated, request_time_features(curated), "transform")
    # per trip (transform reorders rows): the stored values are the hand-computed ones
    by_id = {r["trip_id"]: r for r in curated.to_pylist()}
    for i, (_, expected) in enumerate(CASES):
        row = by_id[f"req-{i:03d}"]
        assert tuple(row[n] for n in REQUEST_FEATURES) == expected, i


def test_transform_and_request_features_agree_on_a_synthetic_day() -> None:
    """Thousands of realistic trips (zero miles, zero seconds, dirty rows): same columns, same bits."""
    source = SyntheticSource(trips_per_day=3000, dirty_rate=0.05)
    day = dt.date(2024, 11, 3)  # the autumn DST day: ambiguous 01:xx trips exist
    raw = pa.concat_tables([b.table for b in source.read(Interval(day, day + dt.timedelta(days=1)))])
    curated = trips_with_derived_columns(raw, CHICAGO)
    assert curated.num_rows == raw.num_rows > 2500
    assert_same_request_columns(curated, request_time_features(curated), "transform (synthetic)")
    assert curated["fare_per_mile"].null_count > 0  # the zero-mile trips exercise the null path
    assert curated["speed_mph"].null_count > 0


def test_training_entity_frame_recomputes_the_stored_values(tmp_path: Path) -> None:
    """What the training set gives the model equals what curated stores (no training/serving skew)."""
    root = DataRoot(str(tmp_path / "data"))
    day = dt.date(2024, 5, 1)
    given: list[tuple[Any, ...]] = [
        (dt.datetime(2024, 5, 1, h, 15), 60 * (h + 1), h * 0.5, 3.25 + h) for h in range(24)
    ]
    given += [(dt.datetime(2024, 5, 1, 6, 0), 0, 0.0, 5.0), (dt.datetime(2024, 5, 1, 7, 0), None, None, 5.0)]
    curated = trips_with_derived_columns(raw_rows(given), CHICAGO)
    path = root.partition_path("curated", "trips", day)
    root.write_table(
        path,
        curated,
        CURATED_SCHEMA,
        Manifest(
            dataset="curated/trips", partition=day.isoformat(), step="publish", row_counts={"curated": 26}
        ),
    )
    frame = entity_frame(root, day)
    assert frame.num_rows == curated.num_rows == 26
    # entity_frame keeps curated row order: compare row for row
    assert frame["trip_key"].equals(curated["trip_key"])
    assert_same_request_columns(frame, {n: curated[n] for n in REQUEST_FEATURES}, "entity_frame")
