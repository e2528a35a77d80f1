"""Slices: top values, "other", "(null)", hour buckets, per-slice metrics."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.metrics import roc_auc_score

from ml_tasks.training.evaluation import baselines
from ml_tasks.training.evaluation.slices import hour_bucket_labels, slice_metrics, top_k_labels
from tests.unit.training.evaluation._tables import payment_fare_score, synthetic_table


def test_top_k_labels_other_and_null() -> None:
    column = pa.array(["a"] * 5 + ["c"] * 3 + ["b"] * 3 + ["d"] + [None] * 2)
    values, order = top_k_labels(column, top=2)
    # b and c tie on count: the value order decides (deterministic), so c goes to "other"
    assert order == ["a", "b", "other", "(null)"]
    assert values.tolist() == ["a"] * 5 + ["other"] * 3 + ["b"] * 3 + ["other"] + ["(null)"] * 2
    values, order = top_k_labels(pa.array([3, 3, 8], pa.int64()), top=10)
    assert order == ["3", "8"] and values.tolist() == ["3", "3", "8"]


def test_hour_buckets() -> None:
    values, order = hour_bucket_labels(pa.array([0, 5, 6, 11, 12, 17, 18, 23, None], pa.int8()))
    assert values.tolist() == ["night", "night", "morning", "morning", "afternoon", "afternoon",
                               "evening", "evening", "(null)"]  # fmt: skip
    assert order == ["night", "morning", "afternoon", "evening", "(null)"]
    assert hour_bucket_labels(pa.array([19], pa.int8()))[1] == ["evening"]
    with pytest.raises(ValueError, match="0-23"):
        hour_bucket_labels(pa.array([24], pa.int8()))


def test_slice_metrics_values(evaluation: pa.Table) -> None:
    y = baselines.labels(evaluation)
    p = payment_fare_score(evaluation)
    slices = slice_metrics(evaluation, y, p, 0.5)
    assert set(slices) == {"payment_type", "company", "hour_bucket", "pickup_area"}
    by_payment = {r["slice"]: r for r in slices["payment_type"]}
    cash = pc.equal(evaluation["payment_type"], "Cash").to_numpy(zero_copy_only=False)
    assert by_payment["Cash"]["rows"] == int(cash.sum())
    assert by_payment["Cash"]["positive_rate"] == pytest.approx(y[cash].mean())
    assert by_payment["Cash"]["accuracy"] == pytest.approx(np.mean(y[cash] == 0))
    credit = ~cash & pc.equal(evaluation["payment_type"], "Credit Card").to_numpy(zero_copy_only=False)
    assert by_payment["Credit Card"]["roc_auc"] == pytest.approx(roc_auc_score(y[credit], p[credit]))
    # 14 companies + nulls: top 10, then "other", then "(null)"; every row in exactly one slice
    companies = [r["slice"] for r in slices["company"]]
    assert len(companies) == 12 and companies[-2:] == ["other", "(null)"]
    for name, rows in slices.items():
        assert sum(r["rows"] for r in rows) == evaluation.num_rows, name
    assert sum(r["rows"] for r in slices["hour_bucket"]) == evaluation.num_rows


def test_slice_with_one_class_has_no_auc() -> None:
    table = synthetic_table(50, seed=3)
    y = np.zeros(50, dtype=np.int8)
    y[:3] = 1
    table = table.set_column(table.schema.get_field_index("payment_type"), "payment_type",
                             pa.array(["Credit Card"] * 10 + ["Cash"] * 40))  # fmt: skip
    rows = {r["slice"]: r for r in slice_metrics(table, y, np.full(50, 0.3), 0.5)["payment_type"]}
    assert rows["Cash"]["roc_auc"] is None and rows["Credit Card"]["roc_auc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no slice column"):
        slice_metrics(table.drop_columns(["company"]), y, np.full(50, 0.3), 0.5)
    with pytest.raises(ValueError, match="50 rows but there are 3 scores"):
        slice_metrics(table, y[:3], np.full(3, 0.3), 0.5)
