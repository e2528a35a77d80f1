"""The intervals a run processes: its data interval or params (macros), or its triggering asset events.

Asset-scheduled DAGs have no data interval: their runs learn the intervals from the triggering asset
events (:func:`plan_intervals`, one argv per merged interval) and map a step over them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow.sdk import Asset, Param
from airflow.sdk.exceptions import AirflowFailException
from jinja2 import pass_context
from jinja2.runtime import Context as JinjaContext

log = logging.getLogger(__name__)

NO_INTERVAL_MESSAGE = (
    "this run has no data interval (a manual run triggered with logical_date null): set the params"
    " interval_start (and optionally interval_end, exclusive; default start + 1 day) as YYYY-MM-DD,"
    " or trigger the run with a logical date"
)


# -- interval macros ----------------------------------------------------------------------------------
def resolve_interval(
    params: Mapping[str, Any] | None,
    data_interval_start: Any,
    data_interval_end: Any,
    no_interval_message: str = NO_INTERVAL_MESSAGE,
) -> tuple[str, str]:
    """The run's interval as CLI boundaries: explicit params win, else the run's data interval.

    Args:
        params: the run's params (``interval_start`` / ``interval_end``, YYYY-MM-DD, end exclusive).
        data_interval_start: the run's data interval start (None when the run has none).
        data_interval_end: the run's data interval end (None when the run has none).
        no_interval_message: the error when there is neither (says how to fix it for this DAG).

    Raises:
        AirflowFailException: no interval at all, or inconsistent params (retrying cannot help).
    """
    params = params or {}
    start, end = params.get("interval_start"), params.get("interval_end")
    if start:
        try:
            first = dt.date.fromisoformat(str(start))
            last = dt.date.fromisoformat(str(end)) if end else first + dt.timedelta(days=1)
        except ValueError as exc:
            raise AirflowFailException(
                f"params interval_start/interval_end must be YYYY-MM-DD: {exc}"
            ) from exc
        if last <= first:
            raise AirflowFailException(f"params interval_end {last} must be after interval_start {first}")
        return first.isoformat(), last.isoformat()
    if end:
        raise AirflowFailException("params interval_end is set without interval_start: set both, or neither")
    if data_interval_start is None or data_interval_end is None:
        raise AirflowFailException(no_interval_message)
    # Airflow renders aware datetimes (UTC); the CLI converts them to local time and checks midnight.
    return data_interval_start.isoformat(), data_interval_end.isoformat()


def _interval_from(ctx: JinjaContext) -> tuple[str, str]:
    # Context.get returns None for names the run does not define (no logical date -> no data interval)
    return resolve_interval(ctx.get("params"), ctx.get("data_interval_start"), ctx.get("data_interval_end"))


@pass_context
def interval_start(ctx: JinjaContext) -> str:
    """Jinja macro: the interval start of the task being rendered."""
    return _interval_from(ctx)[0]


@pass_context
def interval_end(ctx: JinjaContext) -> str:
    """Jinja macro: the interval end (exclusive) of the task being rendered."""
    return _interval_from(ctx)[1]


#: pass as ``user_defined_macros`` of every DAG that uses :data:`START` / :data:`END`

# -- intervals of asset-triggered runs ---------------------------------------------------------------------
#: a run of an asset-scheduled DAG that no asset event triggered (a manual run) and that has no params
NO_EVENTS_MESSAGE = (
    "this run was not triggered by asset events, so it has no interval: trigger it with the params"
    " interval_start (and optionally interval_end, exclusive; default start + 1 day) as YYYY-MM-DD"
)


def _event_day(value: Any, what: str) -> dt.date:
    if not isinstance(value, str):
        raise ValueError(f"{what} is {value!r}, not a YYYY-MM-DD string")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} is {value!r}, not a YYYY-MM-DD date") from None


def _extra_intervals(extra: Mapping[str, Any]) -> list[tuple[dt.date, dt.date]]:
    """The intervals one event names: ``extra.intervals`` (a list, for a producer run that publishes several
    intervals in one event) or ``extra.interval``."""
    many = extra.get("intervals")
    if many is not None and not (isinstance(many, list) and many):
        shown = json.dumps(many, default=str)[:200]
        raise ValueError(f"its extra.intervals is {shown}, not a non-empty list")
    found: list[tuple[dt.date, dt.date]] = []
    for interval in many if many is not None else [extra.get("interval")]:
        if not isinstance(interval, Mapping):
            raise ValueError(f"its extra has no interval: {json.dumps(extra, default=str)[:300]}")
        start = _event_day(interval.get("start"), "interval.start")
        end = _event_day(interval.get("end"), "interval.end")
        if end <= start:
            raise ValueError(f"interval end {end} is not after start {start}")
        found.append((start, end))
    return found


def event_intervals(extras: Iterable[Mapping[str, Any] | None]) -> list[tuple[dt.date, dt.date]]:
    """The ``[start, end)`` day intervals of the asset events, from their extras (``{"interval": ...}``, or
    ``{"intervals": [...]}`` for an event that publishes several).

    Raises:
        AirflowFailException: an event without a usable interval (for example one created by hand in
            the UI): which data changed is unknown, so no interval is guessed; retrying cannot help.
    """
    extras = list(extras)
    intervals: list[tuple[dt.date, dt.date]] = []
    for number, extra in enumerate(extras, start=1):
        extra = extra or {}
        label = f"asset event {number} of {len(extras)} (producer run {extra.get('run_id')!r})"
        try:
            intervals += _extra_intervals(extra)
        except ValueError as exc:
            raise AirflowFailException(
                f"{label}: {exc}; events must carry extra.interval = {{start, end}} (YYYY-MM-DD, end"
                " exclusive) or extra.intervals = [{start, end}, ...], or trigger this DAG with the params"
                " interval_start / interval_end"
            ) from None
    return intervals


def merge_intervals(
    intervals: Iterable[tuple[dt.date, dt.date]], max_days: int | None = None
) -> list[tuple[dt.date, dt.date]]:
    """Sorted, disjoint intervals covering exactly the days of ``intervals``.

    Overlapping, duplicate and adjacent intervals merge into one (a backfill of N days becomes one
    interval); gaps stay gaps, so no day is processed that no interval named. With ``max_days``, a
    merged interval longer than that is cut into consecutive pieces of at most ``max_days`` days (one
    task each: bounded task time, and a failure re-runs one piece).
    """
    if max_days is not None and max_days < 1:
        raise ValueError(f"max_days must be at least 1, got {max_days}")
    merged: list[tuple[dt.date, dt.date]] = []
    for start, end in sorted(intervals):
        if end <= start:
            raise ValueError(f"interval [{start}, {end}) is empty")
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    if max_days is None:
        return merged
    step = dt.timedelta(days=max_days)
    pieces: list[tuple[dt.date, dt.date]] = []
    for start, end in merged:
        while start < end:
            pieces.append((start, min(start + step, end)))
            start += step
    return pieces


def interval_argv(intervals: Iterable[tuple[dt.date, dt.date]]) -> list[list[str]]:
    """One CLI argv per interval: ``["--start", "YYYY-MM-DD", "--end", "YYYY-MM-DD"]``."""
    return [["--start", start.isoformat(), "--end", end.isoformat()] for start, end in intervals]


def plan_intervals(
    extras: Sequence[Mapping[str, Any] | None],
    params: Mapping[str, Any] | None = None,
    max_days: int | None = None,
    pending: Mapping[str, Any] | None = None,
) -> list[list[str]]:
    """The argv lists a run of an asset-scheduled DAG maps its steps over.

    Args:
        extras: the extras of the run's triggering asset events, in any order (a run consolidates every
            event queued since the previous run: backfills deliver several, maybe out of order).
        params: ``interval_start`` / ``interval_end`` (YYYY-MM-DD, end exclusive) win when set: that
            is how a manual run names its interval.
        max_days: longest interval per argv (see :func:`merge_intervals`).
        pending: the summary of a step that lists days left behind (``ml-tasks features-pending``:
            ``{"intervals": [{start, end}, ...]}``); planned with the events' intervals, so a day whose
            event was lost or whose data changed waits no longer than the next run.

    Raises:
        AirflowFailException: no params, events or pending days; bad params; an event without interval.
    """
    params = params or {}
    left_behind = (
        event_intervals([{"intervals": pending["intervals"]}]) if pending and pending.get("intervals") else []
    )
    if not params.get("interval_start") and not params.get("interval_end") and left_behind:
        intervals = (event_intervals(extras) if extras else []) + left_behind
    elif params.get("interval_start") or params.get("interval_end") or not extras:
        # the run's own data interval is never used: asset-triggered runs have none, and a manual run
        # of an asset-scheduled DAG gets a zero-length one
        start, end = resolve_interval(params, None, None, no_interval_message=NO_EVENTS_MESSAGE)
        intervals = [(dt.date.fromisoformat(start), dt.date.fromisoformat(end))]
    else:
        intervals = event_intervals(extras)
    try:
        return interval_argv(merge_intervals(intervals, max_days))
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from exc


# -- asset-scheduled DAGs: params and the planning task ---------------------------------------------------
def interval_params(max_days: int, max_days_help: str) -> dict[str, Param]:
    """The params of an asset-scheduled DAG: a manual run's interval, and the longest interval per task."""
    return {
        "interval_start": Param(
            None,
            type=["null", "string"],
            format="date",
            title="First day",
            description="Manual runs: first local day (YYYY-MM-DD); overrides the asset events.",
        ),
        "interval_end": Param(
            None,
            type=["null", "string"],
            format="date",
            title="End day (exclusive)",
            description="Manual runs: day after the last local day (exclusive; default interval_start + 1).",
        ),
        "max_days_per_task": Param(
            max_days, type="integer", minimum=1, title="Days per task", description=max_days_help
        ),
    }


def plan_intervals_task(asset: Asset, pending: Any = None) -> Any:
    """The ``plan_intervals`` task of a DAG scheduled on ``asset``: one ``["--start", S, "--end", E]`` per
    merged interval of the run's triggering events of that Asset and of the days ``pending`` (an upstream
    step's summary, see :func:`plan_intervals`), or of the params of a manual run, in pieces of at most the
    param ``max_days_per_task`` days. Call it inside the DAG; map steps over its output.
    """
    # here, not at module level: the decorator's import chain (~75 ms: packaging's regexes) is paid only
    # by the DAG files that plan intervals (bench/dag_parse.py)
    from airflow.sdk import task

    @task(task_id="plan_intervals")
    def plan(triggering_asset_events: Any = None, params: Any = None, pending: Any = None) -> list[list[str]]:
        events = list(triggering_asset_events.get(asset, [])) if triggering_asset_events else []
        argv = plan_intervals(
            [e.extra for e in events], params, max_days=int(params["max_days_per_task"]), pending=pending
        )
        sources = sorted({str(e.source_run_id) for e in events})
        pieces = [f"[{a[1]}, {a[3]})" for a in argv]
        log.info("%d %s event(s) from %d run(s) %s -> %d interval(s): %s",
                 len(events), asset.name, len(sources), sources[:20], len(argv), pieces)  # fmt: skip
        return argv

    plan.__doc__ = f"One argv per merged interval of the triggering {asset.name} events (or the params)."
    return plan(pending=pending) if pending is not None else plan()
