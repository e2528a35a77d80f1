"""Synthetic training-set-shaped tables with known answers, and a scorer made from a function."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.training.frames import FRAME_SCHEMA

PAYMENTS = ("Cash", "Credit Card", "No Charge")
COMPANIES = tuple(f"company {i:02d}" for i in range(14))


def synthetic_table(rows: int, seed: int, start: dt.datetime | None = None) -> pa.Table:
    """A training-set-shaped table whose label depends on payment type (strongly) and fare (weakly)."""
    rng = np.random.default_rng(seed)
    start = start or dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    minutes = np.sort(rng.integers(0, 60 * 24 * 60, rows))
    ts = np.datetime64(start.replace(tzinfo=None), "us") + minutes.astype("timedelta64[m]")
    payment = rng.choice(PAYMENTS, rows, p=[0.6, 0.37, 0.03])
    company = [
        COMPANIES[i] if i < len(COMPANIES) else None for i in rng.integers(0, len(COMPANIES) + 1, rows)
    ]
    fare = np.round(rng.gamma(2.0, 6.0, rows) + 3.25, 2)
    miles = np.round(rng.gamma(1.5, 1.5, rows), 1)
    seconds = rng.integers(60, 3600, rows)
    logit = np.where(payment == "Credit Card", 0.8, -5.0) + 0.05 * (fare - 15)
    label = rng.random(rows) < 1 / (1 + np.exp(-logit))
    when = ts.astype("datetime64[us]")
    hours = (when.astype("datetime64[h]").astype(np.int64) % 24).astype(np.int8)
    data: dict[str, Any] = {
        "trip_key": [f"t{seed}-{i:06d}" for i in range(rows)],
        "event_timestamp": pa.array(when, pa.timestamp("us", tz="UTC")),
        "trip_date": pa.array(when.astype("datetime64[D]"), pa.date32()),
        "pickup_community_area": pa.array(rng.integers(1, 20, rows), pa.int64()),
        "dropoff_community_area": pa.array(rng.integers(1, 20, rows), pa.int64()),
        "company": pa.array(company, pa.string()),
        "payment_type": pa.array(payment.tolist(), pa.string()),
        "fare": fare,
        "trip_miles": miles,
        "trip_seconds": pa.array(seconds, pa.int64()),
        "big_tipper": label,
        "trip_start_hour": pa.array(hours, pa.int8()),
        "trip_start_day_of_week": pa.array(rng.integers(1, 8, rows), pa.int8()),
        "trip_start_month": pa.array(np.full(rows, 1), pa.int8()),
        "fare_per_mile": pa.array(np.where(miles > 0, fare / np.where(miles > 0, miles, 1), np.nan),
                                  pa.float64(), from_pandas=True),
        "speed_mph": pa.array(miles / (seconds / 3600.0), pa.float64()),
    }  # fmt: skip
    return pa.table(data, schema=FRAME_SCHEMA)


class FnScorer:
    """A scorer from a function of the table (test double for a model: the real ones are tested too)."""

    def __init__(self, fn: Any, threshold: float = 0.5) -> None:
        self.fn = fn
        self.threshold = threshold

    def predict_proba(self, table: pa.Table) -> npt.NDArray[np.float64]:
        return np.asarray(self.fn(table), dtype=np.float64)


def payment_fare_score(table: pa.Table) -> npt.NDArray[np.float64]:
    credit = pc.equal(table["payment_type"], "Credit Card").to_numpy(zero_copy_only=False)
    fare = table["fare"].to_numpy()
    return np.asarray(np.where(credit, 0.6, 0.01) + 0.001 * np.tanh(fare / 50), dtype=np.float64)
