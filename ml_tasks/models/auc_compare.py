"""Paired comparison of two models' ROC-AUC on the same rows: DeLong's variance of the difference.

DeLong, DeLong & Clarke-Pearson (1988), in the fast midrank form of Sun & Xu (2014): the AUC of each model
is the mean of per-row "structural components"; their covariance across the two models on the SAME rows
gives the variance of the difference, hence a normal confidence interval. Exact, deterministic and
O(n log n): no bootstrap draws. See ``docs/evaluation.md``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ml_tasks.models.metrics import check_scores

METHOD = "DeLong paired ROC-AUC difference (normal interval)"
LEVEL = 0.95


def _midranks(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks with ties given their mean rank."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    # start index of each run of equal values, and each run's mean rank
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _components(
    positives: npt.NDArray[np.float64], negatives: npt.NDArray[np.float64]
) -> tuple[float, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """AUC and DeLong's structural components (per positive, per negative) of one model."""
    m, n = len(positives), len(negatives)
    tx, ty = _midranks(positives), _midranks(negatives)
    tz = _midranks(np.concatenate([positives, negatives]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    v_pos = (tz[:m] - tx) / n
    v_neg = 1.0 - (tz[m:] - ty) / m
    return auc, v_pos, v_neg


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def paired_auc_difference(
    y: npt.ArrayLike, a: npt.ArrayLike, b: npt.ArrayLike, *, level: float = LEVEL
) -> dict[str, Any]:
    """AUC(a) - AUC(b) on the same labelled rows with its ``level`` confidence interval.

    Returns:
        ``{"method", "level", "rows", "auc_a", "auc_b", "delta", "se", "low", "high"}``.

    Raises:
        ValueError: mismatched lengths, bad scores, or a single class in ``y``.
    """
    labels, p_a = check_scores(y, a, "model a")
    _, p_b = check_scores(y, b, "model b")
    if p_a.shape != p_b.shape:
        raise ValueError(f"paired comparison needs the same rows: {p_a.size} vs {p_b.size} scores")
    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        raise ValueError("paired AUC comparison needs both classes in the labels")
    auc_a, pa_pos, pa_neg = _components(p_a[pos], p_a[neg])
    auc_b, pb_pos, pb_neg = _components(p_b[pos], p_b[neg])
    m, n = int(pos.sum()), int(neg.sum())
    d_pos, d_neg = pa_pos - pb_pos, pa_neg - pb_neg
    var = (float(np.var(d_pos, ddof=1)) / m if m > 1 else 0.0) + (
        float(np.var(d_neg, ddof=1)) / n if n > 1 else 0.0
    )
    se = math.sqrt(max(var, 0.0))
    delta = auc_a - auc_b
    half = _z(level) * se
    return {
        "method": METHOD,
        "level": level,
        "rows": int(labels.size),
        "auc_a": auc_a,
        "auc_b": auc_b,
        "delta": delta,
        "se": se,
        "low": delta - half,
        "high": delta + half,
    }


def auc_interval(y: npt.ArrayLike, p: npt.ArrayLike, *, level: float = LEVEL) -> dict[str, float]:
    """One model's ROC-AUC with its DeLong ``level`` interval (``{"auc", "low", "high"}``, rounded)."""
    labels, scores = check_scores(y, p, "model")
    pos, neg = labels == 1, labels == 0
    if not pos.any() or not neg.any():
        raise ValueError("an AUC interval needs both classes in the labels")
    auc, v_pos, v_neg = _components(scores[pos], scores[neg])
    se = math.sqrt(float(np.var(v_pos, ddof=1)) / v_pos.size + float(np.var(v_neg, ddof=1)) / v_neg.size)
    half = _z(level) * se
    return {"auc": round(auc, 4), "low": round(auc - half, 4), "high": round(auc + half, 4)}
