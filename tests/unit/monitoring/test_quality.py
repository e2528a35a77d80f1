"""Streaming data-quality statistics and the seeded sample (pure pyarrow/numpy; Evidently: integration)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ml_tasks.models.column_stats import numeric_stats, sample_indices
from ml_tasks.monitoring import MonitoringError
from ml_tasks.monitoring.quality import CategoricalAccumulator, NumericAccumulator, scan_current
from tests.unit.monitoring._frames import current_batches, frame, reference


def test_sample_indices_are_seeded_sorted_and_unique() -> None:
    a, b = sample_indices(10_000, 1_000, 3), sample_indices(10_000, 1_000, 3)
    assert np.array_equal(a, b) and a.size == 1_000 == np.unique(a).size
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 10_000
    assert not np.array_equal(a, sample_indices(10_000, 1_000, 4))
    assert np.array_equal(sample_indices(50, 1_000, 3), np.arange(50))


def test_numeric_accumulator_matches_a_one_pass_computation() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(1e6, 3.0, 10_000)  # large mean: a naive sum of squares would lose the variance
    acc = NumericAccumulator(ref_min=1e6 - 5, ref_max=1e6 + 5)
    for chunk in np.array_split(values, 7):
        acc.update(pa.array(chunk))
    acc.update(pa.array([None, float("nan")], pa.float64()))
    out = acc.summary({"count": 10, "null_count": 1})
    assert out["count"] == 10_002 and out["null_count"] == 2
    assert out["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert out["std"] == pytest.approx(values.std(), rel=1e-9)
    assert (out["min"], out["max"]) == (values.min(), values.max())
    expected = int(((values < 1e6 - 5) | (values > 1e6 + 5)).sum())
    assert out["out_of_range"] == expected > 0
    assert out["out_of_range_share"] == pytest.approx(expected / 10_000)
    assert out["reference_null_rate"] == pytest.approx(0.1)


def test_categorical_accumulator_counts_new_categories() -> None:
    acc = CategoricalAccumulator(vocabulary={"Cash", "Credit Card"})
    acc.update(pa.array(["Cash", "Mobile", None, "Mobile"]))
    acc.update(pa.array(["Prcard", "Cash"]))
    out = acc.summary({"count": 100, "null_count": 0, "distinct": 2})
    assert out["count"] == 6 and out["null_count"] == 1
    assert out["new_categories"] == 2 and out["new_category_rows"] == 3
    assert out["new_category_share"] == pytest.approx(3 / 5)
    assert out["top_new_categories"] == [["Mobile", 2], ["Prcard", 1]]


def test_scan_covers_every_row_and_samples_deterministically() -> None:
    _, stats = reference()
    current = frame(5_000, 2)
    scans = [
        scan_current(current_batches(current, size), 5_000, stats, sample_rows=1_000, seed=9)
        for size in (700, 4_096)
    ]
    # the sample depends on the rows and the seed, not on how they were batched
    assert scans[0].sample.equals(scans[1].sample)
    assert scans[0].rows == 5_000 and scans[0].sample.num_rows == 1_000
    positions = sample_indices(5_000, 1_000, 9)
    assert (
        scans[0]
        .sample["fare"]
        .equals(current.select(["fare"]).take(pa.array(positions))["fare"].cast(pa.float64()))
    )
    fare = scans[0].quality["fare"]
    assert fare["count"] == 5_000 and fare["null_count"] == 3  # NaN, +inf, -inf
    valid = current["fare"].to_numpy()[3:]
    assert fare["mean"] == pytest.approx(valid.mean()) and fare["max"] == pytest.approx(valid.max())
    area = scans[0].quality["area"]
    assert area["null_count"] == current["area"].null_count
    assert scans[0].quality["score"]["count"] == 5_000
    other = scan_current(current_batches(current), 5_000, stats, sample_rows=1_000, seed=10)
    assert not other.sample.equals(scans[0].sample)


def test_scan_refuses_a_wrong_row_count_or_missing_columns() -> None:
    _, stats = reference()
    current = frame(1_000, 2)
    with pytest.raises(MonitoringError, match="announced as 999 but 1000"):
        scan_current(current_batches(current), 999, stats, sample_rows=1_000, seed=1)
    with pytest.raises(MonitoringError, match=r"lack the model input column\(s\) \['miles'\]"):
        scan_current(
            current_batches(current.drop_columns(["miles"])), 1_000, stats, sample_rows=1_000, seed=1
        )


def test_numeric_stats_of_an_empty_column() -> None:
    out = numeric_stats(pa.nulls(5, pa.float64()))
    assert out["count"] == 5 and out["null_count"] == 5 and out["mean"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in out.values())
    assert pc.sum(pa.array([1])).as_py() == 1
