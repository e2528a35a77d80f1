"""Streaming data-quality statistics, the seeded sample and the Evidently drift test (degenerate columns)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ml_tasks.models.reference import compute_reference, numeric_stats, sample_indices
from ml_tasks.monitoring import MonitoringError
from ml_tasks.monitoring.drift import (
    RULE_ALL_NULL,
    CategoricalAccumulator,
    NumericAccumulator,
    drift_report,
    scan_current,
)

CAT = ["payment_type", "area"]
NUM = ["fare", "miles"]


def frame(n: int, seed: int, shift: float = 0.0, new_payment: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    payments = np.array(["Cash", "Credit Card", "Mobile" if new_payment else "Cash"])
    fare = rng.gamma(2.0, 5.0, n) + shift
    fare[:3] = [np.nan, np.inf, -np.inf]  # non-finite values count as null
    return pa.table(
        {
            "payment_type": pa.array(payments[rng.integers(0, 3, n)]),
            "area": pa.array(rng.integers(1, 20, n), pa.int64(), mask=rng.uniform(size=n) < 0.1),
            "fare": pa.array(fare),
            "miles": pa.array(rng.exponential(2.0, n) * (1 + shift / 10)),
            "big_tipper": pa.array(rng.uniform(size=n) < 0.3),
        }
    )


def score(table: pa.Table) -> np.ndarray[Any, np.dtype[np.float64]]:
    fare = np.nan_to_num(table["fare"].to_numpy(zero_copy_only=False), nan=10.0, posinf=10.0, neginf=10.0)
    return np.asarray(1.0 / (1.0 + np.exp(-(fare - 10.0) / 5.0)), dtype=np.float64)


def reference(n: int = 4_000) -> tuple[pa.Table, dict[str, Any]]:
    return compute_reference(frame(n, 1), CAT, NUM, score, rows=2_000, seed=5)


def current_batches(table: pa.Table, size: int = 700) -> list[pa.RecordBatch]:
    with_score = table.append_column("score", pa.array(score(table)))
    batches: list[pa.RecordBatch] = with_score.to_batches(max_chunksize=size)
    return batches


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


@pytest.fixture(scope="module")
def ref_sample() -> pa.Table:
    return reference()[0]


def _with(table: pa.Table, **columns: pa.Array) -> pa.Table:
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table


def test_same_distribution_is_no_drift(ref_sample: pa.Table) -> None:
    current = frame(3_000, 7)
    current = current.append_column("score", pa.array(score(current)))
    result = drift_report(ref_sample, current, CAT, NUM, drift_share=0.3, summary=False)
    assert result.dataset_drift is False and result.drifted_columns == []
    assert result.tested_columns == CAT + NUM and result.drift_share == 0.0
    assert result.prediction_drift is not None and result.prediction_drift["drifted"] is False
    assert result.columns["fare"]["method"] == "Wasserstein distance (normed)"
    assert result.columns["payment_type"]["method"] == "Jensen-Shannon distance"
    assert result.columns["fare"]["threshold"] == 0.1


def test_shifted_columns_drift(ref_sample: pa.Table) -> None:
    current = frame(3_000, 7, shift=8.0, new_payment=True)
    current = current.append_column("score", pa.array(score(current)))
    result = drift_report(ref_sample, current, CAT, NUM, drift_share=0.3, summary=False)
    assert {"fare", "payment_type"} <= set(result.drifted_columns)
    assert "area" not in result.drifted_columns
    assert result.dataset_drift is True and result.drift_share == pytest.approx(
        len(result.drifted_columns) / 4
    )
    assert result.prediction_drift is not None and result.prediction_drift["drifted"] is True
    # one failed Evidently test per drifted column (inputs and the score)
    assert result.evidently["failed_tests"] == len(result.drifted_columns) + 1


def test_degenerate_columns_do_not_crash(ref_sample: pa.Table) -> None:
    n_ref, n_cur = ref_sample.num_rows, 2_000
    ref = _with(
        ref_sample,
        const=pa.array(np.full(n_ref, 2.0)),
        empty=pa.nulls(n_ref, pa.float64()),
        vanished=pa.array(np.arange(n_ref, dtype=np.float64)),
        born=pa.nulls(n_ref, pa.string()),
        const_cat=pa.array(["x"] * n_ref),
    )
    current = frame(n_cur, 7)
    current = _with(
        current,
        score=pa.array(score(current)),
        const=pa.array(np.full(n_cur, 2.0)),
        empty=pa.array(np.full(n_cur, np.nan)),  # NaN only: as empty as nulls
        vanished=pa.nulls(n_cur, pa.float64()),
        born=pa.array(["a", "b"] * (n_cur // 2)),
        const_cat=pa.array(["x"] * n_cur),
    )
    result = drift_report(
        ref, current, [*CAT, "born", "const_cat"], [*NUM, "const", "empty", "vanished"], drift_share=0.3
    )
    assert result.excluded_columns == {
        "empty": "all null in the reference and in the current rows: nothing to compare"
    }
    assert result.columns["vanished"]["method"] == RULE_ALL_NULL and result.columns["vanished"]["drifted"]
    assert result.columns["born"]["drifted"] is True
    assert "all null in the current rows" in result.degenerate["vanished"]
    assert "all null in the reference rows" in result.degenerate["born"]
    assert result.columns["const"]["drifted"] is False and result.columns["const"]["score"] == 0.0
    assert result.columns["const_cat"]["drifted"] is False
    assert "constant" in result.degenerate["const"] and "constant" in result.degenerate["const_cat"]
    # share over tested + rule columns (empty is not counted): vanished and born drifted
    assert set(result.drifted_columns) == {"vanished", "born"}
    assert result.drift_share == pytest.approx(2 / 8)
    assert result.snapshot is not None  # the summary preset ran too


def test_caller_exclusions_are_reported_not_tested(ref_sample: pa.Table) -> None:
    current = frame(2_000, 7)
    current = current.append_column("score", pa.array(score(current)))
    result = drift_report(ref_sample, current, CAT, NUM, drift_share=0.3, summary=False,
                          exclude={"area": "calendar column"})  # fmt: skip
    assert result.excluded_columns == {"area": "calendar column"}
    assert "area" not in result.tested_columns and result.columns["area"]["drifted"] is None


def test_no_current_rows_is_no_test(ref_sample: pa.Table) -> None:
    empty = ref_sample.slice(0, 0)
    result = drift_report(ref_sample, empty, CAT, NUM, drift_share=0.3)
    assert result.drift_share is None and result.dataset_drift is False and result.snapshot is None


def test_numeric_stats_of_an_empty_column() -> None:
    out = numeric_stats(pa.nulls(5, pa.float64()))
    assert out["count"] == 5 and out["null_count"] == 5 and out["mean"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in out.values())
    assert pc.sum(pa.array([1])).as_py() == 1


def test_columns_outside_share_of_are_tested_and_reported_not_counted(ref_sample: pa.Table) -> None:
    """A shift in columns left out of the share (feature-store aggregates) makes no dataset drift."""
    current = frame(3_000, seed=11, shift=8.0)
    everything = drift_report(ref_sample, current, CAT, NUM, drift_share=0.3, summary=False)
    assert set(everything.drifted_columns) >= {"fare", "miles"}
    trip_only = drift_report(ref_sample, current, CAT, NUM, drift_share=0.3, summary=False,
                             share_of=["payment_type", "area"])  # fmt: skip
    assert trip_only.counted_columns == ["payment_type", "area"]
    assert trip_only.drifted_columns == [] and trip_only.drift_share == 0.0
    assert trip_only.dataset_drift is False
    assert set(trip_only.drifted_not_counted) == set(everything.drifted_columns)
    # still tested, with their scores
    assert trip_only.columns["fare"]["drifted"] is True
