"""Training and evaluation windows of a ``taxi_training`` run (pure functions; rationale: ``docs/dags.md``).

A run trains on ``[eval_start - train_days, eval_start)`` and evaluates on the LATER window
``[eval_start, window_end)``; ``window_end`` is the param, else the newest drift event's interval end, else
the run's data interval end (a local date).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException


def training_windows(window_end: dt.date, train_days: int, eval_days: int) -> dict[str, str]:
    """The ``train`` and ``eval`` windows ending at ``window_end`` (exclusive), as YYYY-MM-DD strings."""
    if train_days < 1 or eval_days < 1:
        raise AirflowFailException(f"train_days ({train_days}) and eval_days ({eval_days}) must be >= 1")
    eval_start = window_end - dt.timedelta(days=eval_days)
    train_start = eval_start - dt.timedelta(days=train_days)
    return {
        "train_start": train_start.isoformat(),
        "train_end": eval_start.isoformat(),
        "eval_start": eval_start.isoformat(),
        "eval_end": window_end.isoformat(),
    }


def _day(value: Any, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise AirflowFailException(f"{what} is {value!r}, not a YYYY-MM-DD date") from None


def window_end_for_run(
    params: Mapping[str, Any] | None,
    drift_extras: Iterable[Mapping[str, Any] | None],
    data_interval_end: dt.datetime | None,
    timezone: str,
) -> tuple[dt.date, str]:
    """The run's ``window_end`` and where it came from (``param``, ``drift events`` or ``schedule``).

    Raises:
        AirflowFailException: none of the three is available (a manual run without the param), or a drift
            event without an interval.
    """
    params = params or {}
    if params.get("window_end"):
        return _day(params["window_end"], "params.window_end"), "param"
    extras = list(drift_extras)
    if extras:
        ends = []
        for number, extra in enumerate(extras, start=1):
            interval = (extra or {}).get("interval")
            if not isinstance(interval, Mapping) or not interval.get("end"):
                raise AirflowFailException(
                    f"drift event {number} of {len(extras)} has no extra.interval.end: {extra!r}; set the"
                    " param window_end to retrain by hand"
                )
            ends.append(_day(interval["end"], f"drift event {number} interval.end"))
        return max(ends), "drift events"
    if data_interval_end is not None:
        import pendulum

        return pendulum.instance(data_interval_end).in_timezone(timezone).date(), "schedule"
    raise AirflowFailException(
        "this run has no window: trigger it with the param window_end (YYYY-MM-DD, exclusive end of the"
        " evaluation window), or let the weekly schedule or a drift event start it"
    )
