"""Binary classification metrics shared by training, evaluation and monitoring (one implementation)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int8]
#: clip for the log loss so a confident wrong 0/1 score costs ~34.5 nats instead of infinity
LOG_LOSS_EPS = 1e-15


def _log_loss(y: Labels, p: Array) -> float:
    clipped = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return float(-np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped)))


def check_scores(y: npt.ArrayLike, p: npt.ArrayLike, who: str = "scores") -> tuple[Labels, Array]:
    """``y`` as 0/1 int8 and ``p`` as float64, checked (same length, non-empty, finite, in [0, 1])."""
    y_arr = np.asarray(y)
    p_arr = np.asarray(p, dtype=np.float64)
    if y_arr.ndim != 1 or p_arr.ndim != 1:
        raise ValueError(f"{who}: labels and scores must be 1-D, got shapes {y_arr.shape} and {p_arr.shape}")
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"{who}: {y_arr.size} labels but {p_arr.size} scores")
    if y_arr.size == 0:
        raise ValueError(f"{who}: no rows to evaluate")
    if not np.isin(y_arr, (0, 1)).all():
        raise ValueError(f"{who}: labels must be 0/1 or boolean")
    bad = ~np.isfinite(p_arr)
    if bad.any():
        raise ValueError(f"{who}: {int(bad.sum())} score(s) are NaN or infinite")
    if (p_arr < 0).any() or (p_arr > 1).any():
        raise ValueError(
            f"{who}: scores must be probabilities in [0, 1] (min {p_arr.min()}, max {p_arr.max()})"
        )
    return y_arr.astype(np.int8), p_arr


def auc_or_none(y: Labels, p: Array) -> float | None:
    from sklearn.metrics import roc_auc_score

    if y.min() == y.max():
        return None
    return float(roc_auc_score(y, p))


def classification_metrics(y: npt.ArrayLike, p: npt.ArrayLike, threshold: float) -> dict[str, float]:
    """Metrics of scores ``p`` against labels ``y`` (positive = score >= ``threshold``).

    Returns roc_auc, pr_auc (average precision), log_loss, accuracy, precision, recall, f1, brier, ece
    (10 equal-width bins), positive_rate (labels), predicted_positive_rate, mean_score and rows.

    Raises:
        ValueError: mismatched or empty inputs, scores outside [0, 1], a threshold outside [0, 1], or
            labels of a single class (ROC-AUC is undefined; an evaluation window needs both classes).
    """
    from sklearn.metrics import average_precision_score, brier_score_loss, precision_recall_fscore_support

    y_arr, p_arr = check_scores(y, p)
    if not 0.0 <= threshold <= 1.0 or not math.isfinite(threshold):
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    roc_auc = auc_or_none(y_arr, p_arr)
    if roc_auc is None:
        raise ValueError(
            f"classification_metrics: all {y_arr.size} labels are {int(y_arr[0])}; "
            "ROC-AUC needs both classes in the evaluation window"
        )
    predicted = (p_arr >= threshold).astype(np.int8)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_arr, predicted, average="binary", zero_division=0
    )
    return {
        "roc_auc": roc_auc,
        "pr_auc": float(average_precision_score(y_arr, p_arr)),
        "log_loss": _log_loss(y_arr, p_arr),
        "accuracy": float(np.mean(predicted == y_arr)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "brier": float(brier_score_loss(y_arr, p_arr)),
        "ece": calibration(y_arr, p_arr).ece,
        "positive_rate": float(y_arr.mean()),
        "predicted_positive_rate": float(predicted.mean()),
        "mean_score": float(p_arr.mean()),
        "rows": float(y_arr.size),
    }


class Calibration(NamedTuple):
    """Expected calibration error and the reliability table (one dict per equal-width bin)."""

    ece: float
    table: list[dict[str, Any]]


def calibration(y: npt.ArrayLike, p: npt.ArrayLike, bins: int = 10) -> Calibration:
    """ECE and reliability table of scores ``p`` over ``bins`` equal-width bins of [0, 1].

    Bin i holds scores in [i/bins, (i+1)/bins) (the last bin also holds 1.0). ECE is the row-weighted
    mean of |mean predicted - observed rate| over the bins. Empty bins have count 0 and None rates.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y_arr, p_arr = check_scores(y, p, "calibration")
    index = np.minimum((p_arr * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p_arr, minlength=bins)
    sum_y = np.bincount(index, weights=y_arr.astype(np.float64), minlength=bins)
    table: list[dict[str, Any]] = []
    ece = 0.0
    for i in range(bins):
        n = int(counts[i])
        mean_p = float(sum_p[i] / n) if n else None
        rate = float(sum_y[i] / n) if n else None
        if mean_p is not None and rate is not None:
            ece += n / y_arr.size * abs(mean_p - rate)
        table.append(
            {
                "bin": i,
                "lower": i / bins,
                "upper": (i + 1) / bins,
                "count": n,
                "mean_predicted": mean_p,
                "observed_rate": rate,
            }
        )
    return Calibration(ece=float(ece), table=table)


def binary_metrics(y: npt.NDArray[Any], p: npt.NDArray[np.float64]) -> dict[str, float]:
    """roc_auc, pr_auc (average precision), log_loss, positive rate; AUCs left out with only one class."""
    from sklearn.metrics import average_precision_score

    y_arr, p_arr = check_scores(y, p, "binary_metrics")
    out = {
        "log_loss": _log_loss(y_arr, p_arr),
        "rows": float(y_arr.size),
        "positive_rate": float(y_arr.mean()),
    }
    roc_auc = auc_or_none(y_arr, p_arr)
    if roc_auc is not None:
        out["roc_auc"] = roc_auc
        out["pr_auc"] = float(average_precision_score(y_arr, p_arr))
    return out


def f1_threshold(y: npt.NDArray[Any], p: npt.NDArray[np.float64]) -> float:
    """The probability threshold with the highest F1 on (y, p); 0.5 when undefined (one class only).

    Why F1 and not 0.5: the positive class is the minority (~22 %); a decision rule should trade
    precision against recall on held-out data, and F1 does so without inventing costs. The threshold is
    clipped to [0.05, 0.95] so a degenerate validation window cannot produce an all-yes/all-no rule.
    """
    from sklearn.metrics import precision_recall_curve

    if not 0 < y.sum() < len(y):
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = float(thresholds[int(np.argmax(f1))])
    return float(min(0.95, max(0.05, best)))
