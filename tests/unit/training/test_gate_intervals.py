"""The gate with paired confidence intervals (DeLong) on constructed score sets: a real gain, a tie, noise.

The interval itself is checked against scikit-learn's AUC and a paired bootstrap of the same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ml_tasks.models.auc_compare import paired_auc_difference
from ml_tasks.training.gate import decide

PASSED: dict[str, Any] = {"passed": True, "reasons": []}
MARGIN = 0.005


def rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a latent signal: a score = sigmoid(signal * strength + noise)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(np.int8)
    return y, y * 1.0 + rng.normal(0, 1, n)


def score(signal: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-(signal + rng.normal(0, noise, signal.size))))


def gate(y: np.ndarray, cand: np.ndarray, base: np.ndarray, champion: np.ndarray | None = None) -> Any:
    comparisons = {
        "metric": "roc_auc",
        "baselines": {"tree": paired_auc_difference(y, cand, base)},
        "champion": paired_auc_difference(y, cand, champion) if champion is not None else None,
    }
    auc = float(roc_auc_score(y, cand))
    return decide(
        {"roc_auc": auc}, {"tree": {"roc_auc": float(roc_auc_score(y, base))}},
        None if champion is None else {"roc_auc": float(roc_auc_score(y, champion))}, PASSED,
        margin=MARGIN, comparisons=comparisons,
    )  # fmt: skip


def test_interval_matches_sklearn_and_a_paired_bootstrap() -> None:
    y, signal = rows(4_000, 1)
    a, b = score(signal, 0.3, 2), score(signal, 0.8, 3)
    ci = paired_auc_difference(y, a, b)
    assert ci["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert ci["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(400):
        i = rng.integers(0, y.size, y.size)
        deltas.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    assert ci["se"] == pytest.approx(float(np.std(deltas)), rel=0.15)
    assert ci["low"] < ci["delta"] < ci["high"]


def test_ties_in_scores_use_midranks() -> None:
    y = np.array([0, 0, 1, 1, 0, 1], dtype=np.int8)
    a = np.array([0.1, 0.5, 0.5, 0.9, 0.5, 0.5])
    ci = paired_auc_difference(y, a, np.full(6, 0.3))
    assert ci["auc_a"] == pytest.approx(roc_auc_score(y, a)) and ci["auc_b"] == 0.5


def test_a_real_gain_beats_the_baseline() -> None:
    y, signal = rows(5_000, 4)
    d = gate(y, score(signal, 0.2, 5), score(signal, 1.0, 6))
    interval = d.details["baselines"]["tree"]["interval"]
    assert interval["low"] > 0.01 and d.promote is True
    assert "lower bound above -0.005" in d.reasons[0] and d.reasons[0].startswith("roc_auc")


def test_a_tie_beats_the_baseline_within_the_margin() -> None:
    # the same scores: difference 0, interval [0, 0], above -margin: a tie is not a loss
    y, signal = rows(5_000, 7)
    same = score(signal, 0.5, 8)
    d = gate(y, same, same.copy(), champion=same.copy())
    assert d.promote is True
    assert d.details["baselines"]["tree"]["interval"]["delta"] == 0.0
    assert d.details["champion"]["interval"]["low"] == 0.0


def test_noise_on_few_rows_does_not_beat_the_baseline() -> None:
    # a slightly worse candidate on 300 rows: the point estimate is close, the interval is wide and
    # reaches well below -margin, so "beats" cannot be claimed
    y, signal = rows(300, 9)
    d = gate(y, score(signal, 0.9, 10), score(signal, 0.6, 11))
    interval = d.details["baselines"]["tree"]["interval"]
    assert interval["low"] < -MARGIN < interval["high"] and interval["high"] - interval["low"] > 0.02
    assert d.promote is False
    assert d.reasons[0].startswith("roc_auc") and "does not beat baseline tree" in d.reasons[0]
    assert "lower bound not above -0.005" in d.reasons[0]


def test_worse_than_the_champion_beyond_the_margin_blocks() -> None:
    y, signal = rows(5_000, 12)
    base, champion = score(signal, 2.0, 13), score(signal, 0.2, 14)
    d = gate(y, score(signal, 0.8, 15), base, champion=champion)
    assert d.promote is False and d.details["champion"]["within_margin"] is False
    assert any("worse than the champion by more than the margin" in r for r in d.reasons)


def test_mismatched_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="model b: 3 labels but 2 scores"):
        paired_auc_difference([0, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2])
