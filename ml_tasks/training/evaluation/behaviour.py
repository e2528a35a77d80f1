"""Behavioural tests: perturbations that must not move the score (invariance) or must move it one way
(directional), each with its bound and why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import EVENT_TIMESTAMP
from ml_tasks.training.evaluation.scoring import Scorer, scores


def _replace(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(name), pc.cast(values, table.schema.field(name).type))


def shift_start_within_hour(table: pa.Table, minutes: int = 7) -> pa.Table:
    """``table`` with each trip start moved by ``minutes`` inside its own clock hour (wrapping around).

    Hour, day of week, month and date stay the same, so the request-time features are unchanged.
    """
    if not 0 < minutes < 60:
        raise ValueError(f"minutes must be in 1..59, got {minutes}")
    start = table[EVENT_TIMESTAMP]
    minute = pc.minute(start).to_numpy(zero_copy_only=False)
    delta_min = np.where(minute + minutes < 60, minutes, minutes - 60).astype(np.int64)
    micros = pc.cast(start, pa.int64()).to_numpy(zero_copy_only=False) + delta_min * 60_000_000
    return _replace(table, EVENT_TIMESTAMP, pa.array(micros, pa.int64()).cast(start.type))


def add_to_fare(table: pa.Table, amount: float = 0.01) -> pa.Table:
    """``table`` with ``amount`` added to every fare, fare_per_mile recomputed as the request features do."""
    fare = pc.add(table["fare"], amount)
    out = _replace(table, "fare", fare)
    if "fare_per_mile" in table.column_names and "trip_miles" in table.column_names:
        miles = table["trip_miles"]
        out = _replace(out, "fare_per_mile", pc.if_else(pc.greater(miles, 0.0), pc.divide(fare, miles), None))
    return out


def replace_value(table: pa.Table, column: str, old: str, new: str) -> pa.Table:
    """``table`` with ``column == old`` set to ``new`` (other rows unchanged)."""
    values = table[column]
    return _replace(table, column, pc.if_else(pc.equal(values, old), new, values))


@dataclass(frozen=True)
class Invariance:
    """A perturbation that must not move the score: |delta p| <= ``bound`` for >= ``min_fraction`` rows."""

    name: str
    perturb: Callable[[pa.Table], pa.Table]
    bound: float
    min_fraction: float
    why: str
    needs: tuple[str, ...]


@dataclass(frozen=True)
class Directional:
    """Setting ``column`` from ``old`` to ``new`` must move the rows' mean score by >= bound in ``sign``."""

    name: str
    column: str
    old: str
    new: str
    sign: int  # +1: the mean score must rise by >= bound; -1: it must fall by >= bound
    bound: float
    why: str


INVARIANCES: tuple[Invariance, ...] = (
    Invariance(
        name="start_minute_shift",
        perturb=shift_start_within_hour,
        bound=1e-6,
        min_fraction=0.99,
        why="the model sees the start hour, day and month, not the minute: moving a trip by 7 minutes "
        "within its hour changes no input, so any movement above float noise means the score depends on "
        "something it should not (a leaked timestamp, nondeterminism)",
        needs=(EVENT_TIMESTAMP,),
    ),
    Invariance(
        name="fare_plus_one_cent",
        perturb=add_to_fare,
        bound=0.01,
        min_fraction=0.99,
        why="one cent is ~0.1% of a typical fare; a score that moves by more than 0.01 for it is reacting "
        "to noise. Trees jump at split points, so 1% of rows may cross one",
        needs=("fare",),
    ),
)

DIRECTIONALS: tuple[Directional, ...] = (
    Directional(
        name="cash_to_credit_card",
        column="payment_type",
        old="Cash",
        new="Credit Card",
        sign=+1,
        bound=0.05,
        why="tips on cash trips are almost never recorded (0.04% big tippers vs 67.6% for credit cards "
        "in the Chicago samples), so paying by card must raise the mean score of the same trips; 0.05 "
        "leaves room for models that spread the effect over correlated inputs",
    ),
    Directional(
        name="credit_card_to_cash",
        column="payment_type",
        old="Credit Card",
        new="Cash",
        sign=-1,
        bound=0.05,
        why="the mirror of cash_to_credit_card: paying cash must lower the mean score",
    ),
)


def _evenly_spaced(table: pa.Table, max_rows: int) -> pa.Table:
    if table.num_rows <= max_rows:
        return table
    return table.take(np.linspace(0, table.num_rows - 1, max_rows).astype(np.int64))


def behavioural_tests(scorer: Scorer, table: pa.Table, *, max_rows: int = 20_000) -> list[dict[str, Any]]:
    """Invariance and directional tests of ``scorer`` on (an evenly spaced sample of) ``table``.

    Each result has name, kind ("invariance" / "directional"), passed, measured, bound, rows, skipped
    and why. Invariance: ``measured`` = share of rows with |delta p| <= bound (max |delta p| reported
    too), passed when >= ``min_fraction``. Directional: ``measured`` = mean delta p over the rows
    perturbed, passed when it moves in the expected direction by >= bound. A test whose column is
    missing or that has no row to perturb is skipped (passed True, skipped True, with the reason).
    """
    sample = _evenly_spaced(table, max_rows)
    base = scores(scorer, sample, "behavioural_tests")
    results: list[dict[str, Any]] = []
    for inv in INVARIANCES:
        result: dict[str, Any] = {
            "name": inv.name,
            "kind": "invariance",
            "bound": inv.bound,
            "min_fraction": inv.min_fraction,
            "why": inv.why,
        }
        missing = [c for c in inv.needs if c not in sample.column_names]
        if missing or sample.num_rows == 0:
            results.append(
                {
                    **result,
                    "passed": True,
                    "skipped": True,
                    "measured": None,
                    "rows": 0,
                    "reason": f"missing column(s) {missing}" if missing else "no rows",
                }
            )
            continue
        delta = np.abs(scores(scorer, inv.perturb(sample), inv.name) - base)
        within = float(np.mean(delta <= inv.bound))
        results.append(
            {
                **result,
                "passed": within >= inv.min_fraction,
                "skipped": False,
                "measured": within,
                "max_abs_delta": float(delta.max()),
                "rows": sample.num_rows,
            }
        )
    for d in DIRECTIONALS:
        result = {"name": d.name, "kind": "directional", "bound": d.bound, "direction": d.sign, "why": d.why}
        if d.column not in sample.column_names:
            results.append(
                {
                    **result,
                    "passed": True,
                    "skipped": True,
                    "measured": None,
                    "rows": 0,
                    "reason": f"missing column {d.column!r}",
                }
            )
            continue
        mask = pc.fill_null(pc.equal(sample[d.column], d.old), False).to_numpy(zero_copy_only=False)
        rows = int(mask.sum())
        if rows == 0:
            results.append(
                {
                    **result,
                    "passed": True,
                    "skipped": True,
                    "measured": None,
                    "rows": 0,
                    "reason": f"no rows with {d.column} == {d.old!r}",
                }
            )
            continue
        subset = sample.filter(pa.array(mask))
        delta = scores(scorer, replace_value(subset, d.column, d.old, d.new), d.name) - base[mask]
        mean = float(delta.mean())
        results.append(
            {
                **result,
                "passed": mean * d.sign >= d.bound,
                "skipped": False,
                "measured": mean,
                "share_moved_as_expected": float(np.mean(delta * d.sign > 0)),
                "rows": rows,
            }
        )
    return results
