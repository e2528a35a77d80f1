"""taxi_features' interval planning (``_lib.plan_intervals``): events, params, days left behind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from tests.dags._taxi_features import argv, extra


# -- interval planning --------------------------------------------------------------------------------------
def test_events_out_of_order_duplicate_overlapping_adjacent_and_gaps() -> None:
    from _lib import plan_intervals

    events = [
        extra("2024-01-05", "2024-01-06", "backfill__05"),
        extra("2024-01-02", "2024-01-03", "backfill__02"),
        extra("2024-01-10", "2024-01-11", "manual__10"),  # after a gap
        extra("2024-01-03", "2024-01-04", "backfill__03"),  # adjacent to 02
        extra("2024-01-02", "2024-01-03", "backfill__02-rerun"),  # duplicate
        extra("2024-01-04", "2024-01-06", "manual__04-05"),  # overlaps 05, joins 03
        extra("2024-01-20", "2024-01-22", "manual__20-21"),
    ]
    assert plan_intervals(events) == argv(
        ("2024-01-02", "2024-01-06"), ("2024-01-10", "2024-01-11"), ("2024-01-20", "2024-01-22")
    )
    # order of arrival does not matter
    assert plan_intervals(list(reversed(events))) == plan_intervals(events)
    # one event, one day
    assert plan_intervals([extra("2024-02-29", "2024-03-01")]) == argv(("2024-02-29", "2024-03-01"))


def test_long_intervals_are_cut_into_pieces() -> None:
    import datetime as dt

    from _lib import merge_intervals, plan_intervals

    days = [extra(f"2024-01-{d:02d}", f"2024-01-{d + 1:02d}") for d in range(1, 11)]  # 1..10 Jan
    assert plan_intervals(days, max_days=4) == argv(
        ("2024-01-01", "2024-01-05"), ("2024-01-05", "2024-01-09"), ("2024-01-09", "2024-01-11")
    )
    assert plan_intervals(days, max_days=31) == argv(("2024-01-01", "2024-01-11"))
    d = dt.date
    assert merge_intervals([(d(2024, 1, 3), d(2024, 1, 5)), (d(2024, 1, 1), d(2024, 1, 2))], max_days=1) == [
        (d(2024, 1, 1), d(2024, 1, 2)),
        (d(2024, 1, 3), d(2024, 1, 4)),
        (d(2024, 1, 4), d(2024, 1, 5)),
    ]
    with pytest.raises(ValueError, match="max_days must be at least 1"):
        merge_intervals([], max_days=0)


def test_manual_runs_use_params_and_params_win() -> None:
    from _lib import plan_intervals

    assert plan_intervals([], {"interval_start": "2024-03-10"}) == argv(("2024-03-10", "2024-03-11"))
    assert plan_intervals([], {"interval_start": "2024-03-10", "interval_end": "2024-03-13"}) == argv(
        ("2024-03-10", "2024-03-13")
    )
    assert plan_intervals(
        [], {"interval_start": "2024-03-01", "interval_end": "2024-03-08"}, max_days=3
    ) == argv(("2024-03-01", "2024-03-04"), ("2024-03-04", "2024-03-07"), ("2024-03-07", "2024-03-08"))
    # explicit params win over the events of an asset-triggered run
    assert plan_intervals([extra("2024-01-02", "2024-01-03")], {"interval_start": "2024-03-10"}) == argv(
        ("2024-03-10", "2024-03-11")
    )
    # defaults (None) are no params
    params = {"interval_start": None, "interval_end": None, "max_days_per_task": 31}
    assert plan_intervals([extra("2024-01-02", "2024-01-03")], params) == argv(("2024-01-02", "2024-01-03"))


@pytest.mark.parametrize(
    ("events", "params", "message"),
    [
        ([], {}, r"not triggered by asset events, so it has no interval: trigger it with the params"),
        ([], None, r"not triggered by asset events"),
        ([], {"interval_end": "2024-01-02"}, "interval_end is set without interval_start"),
        ([], {"interval_start": "2024-01-02", "interval_end": "2024-01-01"}, "must be after"),
        ([], {"interval_start": "02/01/2024"}, "must be YYYY-MM-DD"),
        ([{"step": "publish", "run_id": "r1"}], {}, r"event 1 of 1 \(producer run 'r1'\): its extra has no"),
        ([None], {}, r"its extra has no interval"),
        ([extra("2024-01-02", "2024-01-03"), {"interval": "2024-01-02"}], {}, r"event 2 of 2.*no interval"),
        ([extra("2024-01-02", "2024-01-02")], {}, r"end 2024-01-02 is not after start 2024-01-02"),
        ([extra("2024-01-02", "tomorrow")], {}, r"interval.end is 'tomorrow', not a YYYY-MM-DD date"),
        ([{"interval": {"start": 20240102, "end": "2024-01-03"}}], {}, r"interval.start is 20240102"),
        ([{"intervals": []}], {}, r"extra.intervals is \[\], not a non-empty list"),
        ([{"intervals": [{"start": "2024-01-02", "end": "2024-01-03"}, "x"]}], {}, r"extra has no interval"),
    ],
)
def test_bad_events_and_params_fail_clearly(
    events: list[Mapping[str, Any] | None], params: dict[str, Any] | None, message: str
) -> None:
    from _lib import plan_intervals
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=message):
        plan_intervals(events, params)


# -- days left behind (issue 16, finding 8) -----------------------------------------------------------------
def test_days_left_behind_are_planned_with_the_events() -> None:
    """A day whose event was lost (or whose curated data changed) is planned by the next run."""
    from _lib import plan_intervals

    pending = {"intervals": [{"start": "2024-01-05", "end": "2024-01-06"}]}
    events = [extra("2024-01-07", "2024-01-08")]
    assert plan_intervals(events, {}, pending=pending) == argv(
        ("2024-01-05", "2024-01-06"), ("2024-01-07", "2024-01-08")
    )
    # adjacent and overlapping ones merge; a run without events plans the pending days alone
    assert plan_intervals(
        events, {}, pending={"intervals": [{"start": "2024-01-06", "end": "2024-01-08"}]}
    ) == (argv(("2024-01-06", "2024-01-08")))
    assert plan_intervals([], {}, pending=pending) == argv(("2024-01-05", "2024-01-06"))
    # a manual run's params name exactly its interval; nothing pending changes nothing
    assert plan_intervals(events, {"interval_start": "2024-03-01"}, pending=pending) == argv(
        ("2024-03-01", "2024-03-02")
    )
    assert plan_intervals(events, {}, pending={"intervals": []}) == argv(("2024-01-07", "2024-01-08"))
