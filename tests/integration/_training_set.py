"""The training-set tests' timeline: a synthetic week, hand-written trips around midnight and DST."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ml_tasks.features.store import StoreHandle
from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot

D = dt.date
SERVICE = "taxi_tips_v1"
SYNTHETIC = Interval(D(2024, 10, 23), D(2024, 10, 30))
HAND = Interval(D(2024, 10, 30), D(2024, 11, 8))
ALL = Interval(SYNTHETIC.start, HAND.end)
FEATURE_DAYS = Interval(SYNTHETIC.start, D(2024, 11, 4))  # no features for 11-04 .. 11-07
TTL = dt.timedelta(days=3)
CARD, CASH = "Credit Card", "Cash"
ALPHA, BETA, GHOST = "PIT Alpha", "PIT Beta", "PIT Ghost"  # companies the synthetic source never uses


def at(day: tuple[int, int], hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, day[0], day[1], hour, minute)


# (trip_id, local start, area, company, fare, tips, payment); 2 miles, 10 minutes each
HAND_TRIPS: list[tuple[Any, ...]] = [
    ("h01", at((10, 30), 9), 8, ALPHA, 10.0, 2.5, CARD),
    ("h02", at((10, 30), 23, 59), 8, ALPHA, 12.0, 0.0, CASH),  # Alpha's first day: no Alpha features yet
    ("h03", at((10, 31), 0), 8, ALPHA, 8.0, 2.0, CARD),  # exactly midnight: sees 10-30's row
    ("h04", at((10, 31), 0, 1), 32, BETA, 14.0, 0.0, CASH),
    ("h05", at((10, 31), 12), 32, ALPHA, 9.0, 3.0, CARD),  # h05-h07: the same entity row three times
    ("h06", at((10, 31), 12), 32, ALPHA, 11.0, 0.0, CASH),
    ("h07", at((10, 31), 12), 32, ALPHA, 7.0, 1.0, CARD),
    ("h08", at((10, 31), 23, 59), 8, ALPHA, 20.0, 5.0, CARD),  # one minute before 10-31's row exists
    ("h09", at((11, 1), 0), 8, ALPHA, 10.0, 0.0, CASH),  # the minute 10-31's row exists
    ("h10", at((11, 1), 10), None, BETA, 10.0, 3.0, CARD),  # no area
    ("h11", at((11, 1), 11), 32, None, 10.0, 0.0, CASH),  # no company
    ("h12", at((11, 1), 12), None, None, 10.0, 0.0, CASH),  # no entity at all
    ("h13", at((11, 2), 23, 59), 8, BETA, 16.0, 4.0, CARD),
    ("h14", at((11, 3), 0, 30), 8, ALPHA, 10.0, 0.0, CASH),  # CDT: 05:30 UTC, after 11-02's row (05:00)
    ("h15", at((11, 3), 1, 30), 8, ALPHA, 10.0, 2.5, CARD),  # ambiguous hour: earliest (CDT) instant
    ("h16", at((11, 3), 23, 59), 8, ALPHA, 10.0, 0.0, CASH),  # CST: 05:59 UTC, before 11-03's row (06:00)
    ("h17", at((11, 4), 0), 8, ALPHA, 10.0, 0.0, CASH),  # 06:00 UTC: 11-03's row, age 0
    ("h18", at((11, 5), 12), 32, BETA, 10.0, 0.0, CASH),  # no features built since 11-03: age 1.25 days
    ("h19", at((11, 5), 13), 32, GHOST, 10.0, 0.0, CASH),  # a company never seen in any feature row
    ("h20", at((11, 6), 23, 59), 8, ALPHA, 10.0, 0.0, CASH),  # age 2 d 23 h 59 min
    ("h21", at((11, 7), 0), 8, ALPHA, 10.0, 0.0, CASH),  # age exactly the ttl: still served
    ("h22", at((11, 7), 0, 15), 8, ALPHA, 10.0, 2.5, CARD),  # ttl + 15 min: expired, nulls
]


def hand_raw_rows(day: dt.date) -> list[dict[str, Any]]:
    rows = []
    for i, (trip_id, start, area, company, fare, tips, payment) in enumerate(HAND_TRIPS):
        if start.date() != day:
            continue
        rows.append(
            {
                "trip_id": trip_id,
                "taxi_id": f"taxi-{i}",
                "trip_start_timestamp": start,
                "trip_end_timestamp": start + dt.timedelta(minutes=10),
                "trip_seconds": 600,
                "trip_miles": 2.0,
                "pickup_community_area": area,
                "dropoff_community_area": 32,
                "fare": fare,
                "tips": tips,
                "tolls": 0.0,
                "extras": 0.0,
                "trip_total": fare + tips,
                "payment_type": payment,
                "company": company,
                "_source": "hand-built timeline",
                "_source_row": i,
            }
        )
    return rows


@dataclass
class Pipeline:
    """The module's data root, its open store, and the training set of ALL with default settings."""

    root: DataRoot
    settings: Settings
    handle: StoreHandle
    summary: dict[str, Any]
    table: pa.Table
