from __future__ import annotations

import datetime as dt

import pytest

from ml_tasks.intervals import Interval, IntervalError, make_interval, parse_boundary


def test_dates_and_airflow_datetimes() -> None:
    assert parse_boundary("2024-05-01") == dt.date(2024, 5, 1)
    # Chicago midnight rendered by Airflow in UTC (CDT = UTC-5)
    assert parse_boundary("2024-05-01T05:00:00+00:00") == dt.date(2024, 5, 1)
    assert parse_boundary("2024-01-01T06:00:00Z") == dt.date(2024, 1, 1)  # CST = UTC-6


def test_non_midnight_boundary_is_rejected_clearly() -> None:
    with pytest.raises(IntervalError, match="local midnight"):
        parse_boundary("2024-05-01T00:00:00+00:00")


def test_garbage_and_empty_intervals() -> None:
    with pytest.raises(IntervalError, match="neither a date nor an ISO datetime"):
        parse_boundary("yesterday")
    with pytest.raises(IntervalError, match="must be after"):
        make_interval("2024-05-02", "2024-05-01")


def test_days() -> None:
    interval = make_interval("2024-02-28", "2024-03-02")
    assert list(interval.days()) == [dt.date(2024, 2, 28), dt.date(2024, 2, 29), dt.date(2024, 3, 1)]
    assert make_interval("2024-05-01") == Interval(dt.date(2024, 5, 1), dt.date(2024, 5, 2))
