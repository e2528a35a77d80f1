"""Binary metrics and calibration (ml_tasks.models.metrics) with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from ml_tasks.models import metrics as model_metrics


def test_classification_metrics_known_answers() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = model_metrics.classification_metrics(y, p, 0.5)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(0.5)
    assert m["positive_rate"] == 0.5 and m["predicted_positive_rate"] == 0.25 and m["rows"] == 4
    # threshold matters for accuracy only
    assert model_metrics.classification_metrics(y, p, 0.3)["accuracy"] == pytest.approx(0.75)
    assert model_metrics.classification_metrics(y, p, 0.05)["accuracy"] == pytest.approx(0.5)


def test_confident_wrong_score_has_a_finite_log_loss() -> None:
    m = model_metrics.classification_metrics(np.array([0, 1]), np.array([1.0, 1.0]), 0.5)
    # one row right, one confidently wrong at the clip (~34.5 nats): mean ~17.3, not infinity
    assert 15 < m["log_loss"] < 20


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1], [0.5], "2 labels but 1 scores"),
        ([], [], "no rows"),
        ([0, 1], [0.2, 1.2], "probabilities in"),
        ([0, 1], [0.2, np.nan], "NaN or infinite"),
        ([0, 2], [0.2, 0.3], "labels must be 0/1"),
        ([1, 1], [0.2, 0.3], "ROC-AUC needs both classes"),
    ],
)
def test_classification_metrics_rejects_bad_input(y: list[int], p: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        model_metrics.classification_metrics(np.array(y), np.array(p, dtype=float), 0.5)


def test_ece_zero_for_calibrated_bins_and_shift_for_shifted_scores() -> None:
    # bin 2 holds four rows scored 0.25 of which one is positive: exactly calibrated
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    p = np.array([0.25] * 4 + [0.75] * 4)
    assert model_metrics.calibration(y, p).ece == pytest.approx(0.0)
    shifted = model_metrics.calibration(y, p + 0.2)
    assert shifted.ece == pytest.approx(0.2)
    rows = {r["bin"]: r for r in shifted.table}
    assert rows[4]["count"] == 4 and rows[4]["mean_predicted"] == pytest.approx(0.45)
    assert rows[4]["observed_rate"] == pytest.approx(0.25)
    assert rows[0]["count"] == 0 and rows[0]["mean_predicted"] is None


def test_ece_of_random_calibrated_vs_shifted_predictor() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.2, 0.8, 200_000)
    y = (rng.random(p.size) < p).astype(int)
    assert model_metrics.calibration(y, p).ece < 0.01
    assert model_metrics.calibration(y, p + 0.15).ece == pytest.approx(0.15, abs=0.01)


def test_calibration_puts_one_in_the_last_bin() -> None:
    result = model_metrics.calibration(np.array([0, 1]), np.array([0.0, 1.0]), bins=5)
    assert [r["count"] for r in result.table] == [1, 0, 0, 0, 1]
    assert result.table[-1]["upper"] == 1.0 and result.ece == 0.0
    with pytest.raises(ValueError, match="bins must be >= 1"):
        model_metrics.calibration(np.array([0, 1]), np.array([0.0, 1.0]), bins=0)
