"""Baselines: majority class, payment-type rule, gradient-boosted tree; the label reader."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.metrics import roc_auc_score

from ml_tasks.training.evaluation import baselines


def test_majority_and_payment_rule(train: pa.Table) -> None:
    y = baselines.labels(train)
    majority = baselines.majority_class(train)
    assert np.all(majority.predict_proba(train[:5]) == pytest.approx(y.mean()))
    rule = baselines.payment_type_rule(train)
    cash = pc.equal(train["payment_type"], "Cash").to_numpy(zero_copy_only=False)
    assert rule.rates["Cash"] == pytest.approx(y[cash].mean())
    probe = pa.table({"payment_type": pa.array(["Cash", "Bitcoin", None, "Credit Card"])})
    scores = rule.predict_proba(probe)
    assert scores[0] == pytest.approx(rule.rates["Cash"]) and scores[3] == pytest.approx(
        rule.rates["Credit Card"]
    )
    assert scores[1] == pytest.approx(y.mean()) and scores[2] == pytest.approx(y.mean())
    assert majority.threshold == rule.threshold == 0.5
    with pytest.raises(ValueError, match="no column 'payment_type'"):
        rule.predict_proba(pa.table({"fare": [1.0]}))


def test_labels_errors() -> None:
    with pytest.raises(ValueError, match="no label column"):
        baselines.labels(pa.table({"x": [1]}))
    with pytest.raises(ValueError, match="1 null"):
        baselines.labels(pa.table({"big_tipper": [True, None]}))
    with pytest.raises(ValueError, match="boolean or 0/1"):
        baselines.labels(pa.table({"big_tipper": [0, 3]}))


def test_gradient_boosted_tree_learns_and_is_deterministic(train: pa.Table, evaluation: pa.Table) -> None:
    a = baselines.gradient_boosted_tree(train, max_iter=40, seed=3, n_threads=1)
    b = baselines.gradient_boosted_tree(train, max_iter=40, seed=3, n_threads=1)
    pa_, pb = a.predict_proba(evaluation), b.predict_proba(evaluation)
    assert np.array_equal(pa_, pb)
    y = baselines.labels(evaluation)
    assert roc_auc_score(y, pa_) > 0.85
    assert a.info["validation"] == "newest" and 1 <= a.info["n_iter"] <= 40
    assert a.categorical[0] == "payment_type" and "fare" in a.numeric
    # unseen categories and nulls at prediction time are "missing", not an error
    odd = evaluation.slice(0, 3).set_column(
        evaluation.schema.get_field_index("company"), "company", pa.array(["nope", None, "company 01"])
    )
    assert np.isfinite(a.predict_proba(odd)).all()
    with pytest.raises(ValueError, match="lacks model input column"):
        a.predict_proba(evaluation.drop_columns(["fare"]))
    with pytest.raises(ValueError, match="validation_fraction"):
        baselines.gradient_boosted_tree(train, validation_fraction=0.7)
