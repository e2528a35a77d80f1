"""bench/learning_curve.py: the extrapolation of the training rows a target ROC-AUC needs."""

from __future__ import annotations

import math

from bench.learning_curve import rows_for


def _records(*points: tuple[int, float]) -> list[dict[str, float]]:
    return [{"train_rows": n, "network": auc} for n, auc in points]


def test_a_straight_line_in_log2_rows_through_the_two_largest_sizes() -> None:
    records = _records((1_000, 0.90), (2_000, 0.94), (4_000, 0.95))
    # +0.01 per doubling from 4,000 rows: 0.96 one doubling on, 0.97 two (the first size is not used)
    assert math.isclose(rows_for(records, "network", 0.96), 8_000)
    assert math.isclose(rows_for(records, "network", 0.97), 16_000)
    assert math.isclose(rows_for(records, "network", 0.955), 4_000 * 2**0.5)


def test_a_target_already_reached_needs_the_rows_used_and_a_flat_curve_never_reaches_it() -> None:
    assert rows_for(_records((2_000, 0.94), (4_000, 0.961)), "network", 0.96) == 4_000
    assert rows_for(_records((2_000, 0.95), (4_000, 0.95)), "network", 0.96) == math.inf
    assert rows_for(_records((2_000, 0.951), (4_000, 0.95)), "network", 0.96) == math.inf
