"""Data intervals: half-open ``[start, end)`` ranges of whole local (Chicago) days."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ml_tasks.errors import FlywheelError
from ml_tasks.settings import CHICAGO_TZ


class IntervalError(FlywheelError, ValueError):
    """A data interval that cannot be used (unparseable, empty, or not day-aligned)."""


@dataclass(frozen=True)
class Interval:
    """A half-open range of local calendar days ``[start, end)``."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise IntervalError(f"interval end {self.end} must be after start {self.start}")

    def days(self) -> Iterator[dt.date]:
        """Each local day in the interval, in order."""
        day = self.start
        while day < self.end:
            yield day
            day += dt.timedelta(days=1)

    @property
    def n_days(self) -> int:
        return (self.end - self.start).days

    def start_local(self) -> dt.datetime:
        """Naive local wall-clock datetime of the start (the source's floating timestamps)."""
        return dt.datetime.combine(self.start, dt.time())

    def end_local(self) -> dt.datetime:
        return dt.datetime.combine(self.end, dt.time())

    def single(self, day: dt.date) -> Interval:
        return Interval(day, day + dt.timedelta(days=1))

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def parse_boundary(value: str, tz: str = CHICAGO_TZ) -> dt.date:
    """Parse an interval boundary given as a date or as an ISO datetime with an offset.

    Datetimes (as Airflow renders ``data_interval_start``) are converted to local time in ``tz``
    and must fall on local midnight: intervals are whole local days.
    """
    text = value.strip()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise IntervalError(f"interval boundary {value!r} is neither a date nor an ISO datetime") from exc
    if moment.tzinfo is not None:
        moment = moment.astimezone(ZoneInfo(tz))
    if moment.time() != dt.time():
        raise IntervalError(
            f"interval boundary {value!r} is {moment.isoformat()} in {tz}: intervals must start and end at"
            " local midnight (use a daily timetable in that time zone)"
        )
    return moment.date()


def make_interval(start: str, end: str | None = None, tz: str = CHICAGO_TZ) -> Interval:
    """Interval from CLI-style boundaries; ``end`` defaults to one day after ``start``."""
    first = parse_boundary(start, tz)
    last = parse_boundary(end, tz) if end else first + dt.timedelta(days=1)
    return Interval(first, last)
