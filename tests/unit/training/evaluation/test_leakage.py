"""Single-feature AUCs and leakage warnings with known answers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from ml_tasks.training.evaluation import baselines, leakage
from tests.unit.training.evaluation._tables import synthetic_table


def test_single_feature_auc_known_answers() -> None:
    train = synthetic_table(400, seed=4)
    ev = synthetic_table(400, seed=5)
    y = baselines.labels(ev)
    # a numeric column equal to the label, one equal to its negation, one constant
    ev = ev.set_column(ev.schema.get_field_index("fare"), "fare", pa.array(y.astype(float)))
    ev = ev.set_column(ev.schema.get_field_index("trip_miles"), "trip_miles", pa.array(-y.astype(float)))
    ev = ev.set_column(
        ev.schema.get_field_index("trip_seconds"), "trip_seconds", pa.array(np.ones(400, np.int64))
    )
    aucs = leakage.single_feature_auc(
        train, ev, inputs=(["payment_type"], ["fare", "trip_miles", "trip_seconds"])
    )
    assert aucs["fare"] == 1.0 and aucs["trip_miles"] == 1.0 and aucs["trip_seconds"] == 0.5
    # categorical: the eval score is the TRAIN rate of the category
    rates = baselines.payment_type_rule(train).rates
    expected = roc_auc_score(y, [rates[v] for v in ev["payment_type"].to_pylist()])
    assert aucs["payment_type"] == pytest.approx(max(expected, 1 - expected))
    assert list(aucs) == ["fare", "trip_miles", "payment_type", "trip_seconds"]


def test_single_feature_auc_handles_nulls_and_unseen_categories() -> None:
    train = pa.table(
        {"c": ["x", "x", "y", None], "n": [1.0, None, 3.0, 4.0], "big_tipper": [True, False, False, True]}
    )
    ev = pa.table(
        {"c": ["x", "z", None, "y"], "n": [None, 2.0, 5.0, 0.5], "big_tipper": [True, False, True, False]}
    )
    aucs = leakage.single_feature_auc(train, ev, inputs=(["c"], ["n"]))
    # c scores: x -> 0.5, z (unseen) -> prevalence 0.5, null -> 1.0, y -> 0.0
    assert aucs["c"] == pytest.approx(roc_auc_score([1, 0, 1, 0], [0.5, 0.5, 1.0, 0.0]))
    # n: the null takes the train median (3.0)
    assert aucs["n"] == pytest.approx(roc_auc_score([1, 0, 1, 0], [3.0, 2.0, 5.0, 0.5]))


def test_leakage_warnings() -> None:
    warnings = leakage.leakage_warnings({"payment_type": 0.93, "fare": 0.55, "x": 0.9})
    assert [w["feature"] for w in warnings] == ["payment_type", "x"]
    assert "payment_type alone reaches ROC-AUC 0.930" in warnings[0]["message"]
    assert leakage.leakage_warnings({"payment_type": 0.93}, threshold=0.95) == []
    with pytest.raises(ValueError, match="leakage threshold"):
        leakage.leakage_warnings({}, threshold=0.2)
