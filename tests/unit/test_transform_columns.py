"""transform: the derived columns (calendar, time zones and DST, ratios, label)."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.unit._transform import CHICAGO, derive
from tests.unit.validation.trip_rows import DAY, trip

UTC = dt.UTC


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
