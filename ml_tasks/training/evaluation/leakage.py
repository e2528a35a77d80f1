"""Single-feature ROC-AUCs: every model input alone as a score, and a leakage warning for any feature that
alone reaches a very high AUC (payment_type does on the Chicago data: reported, not hidden)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import LABEL
from ml_tasks.models.metrics import Array, Labels
from ml_tasks.training.evaluation.baselines import labels, model_inputs

#: default single-feature ROC-AUC at or above which a feature is flagged as a possible leak
LEAKAGE_THRESHOLD = 0.9


def _categorical_rate_scores(train_col: pa.ChunkedArray, train_y: Labels, eval_col: pa.ChunkedArray) -> Array:
    """Eval scores = the train positive rate of each eval row's category (null is a category; unseen ->
    the train prevalence)."""
    prevalence = float(train_y.mean())
    train_text = pc.fill_null(pc.cast(train_col, pa.string()), "\x00null")
    eval_text = pc.fill_null(pc.cast(eval_col, pa.string()), "\x00null")
    grouped = (
        pa.table({"key": train_text, "y": pa.array(train_y, pa.float64())})
        .group_by("key")
        .aggregate([("y", "mean")])
    )
    keys = grouped["key"].combine_chunks()
    lookup = np.append(grouped["y_mean"].to_numpy(), prevalence)
    index = pc.fill_null(pc.index_in(eval_text, value_set=keys), len(keys)).to_numpy(zero_copy_only=False)
    return np.asarray(lookup[index], dtype=np.float64)


def single_feature_auc(
    train: pa.Table,
    eval_table: pa.Table,
    *,
    inputs: tuple[Sequence[str], Sequence[str]] | None = None,
    label: str = LABEL,
) -> dict[str, float]:
    """ROC-AUC on ``eval_table`` of each model input alone, as max(auc, 1 - auc).

    Numeric: the value itself is the score (nulls take the train median: "unknown" ranks as typical).
    Categorical: the score is the category's positive rate in ``train`` (null is a category of its own;
    a category unseen in train scores the train prevalence). Columns of ``inputs`` = (categorical,
    numeric), default ``infer_inputs`` of the eval schema.
    """
    from sklearn.metrics import roc_auc_score

    y_train = labels(train, label, who="single_feature_auc train table")
    y_eval = labels(eval_table, label, who="single_feature_auc eval table")
    if y_eval.size == 0 or y_eval.min() == y_eval.max():
        raise ValueError("single_feature_auc: the eval table needs both classes")
    categorical, numeric = inputs if inputs is not None else model_inputs(eval_table.schema)
    missing = [
        c for c in (*categorical, *numeric) if c not in train.column_names or c not in eval_table.column_names
    ]
    if missing:
        raise ValueError(f"single_feature_auc: column(s) {missing} missing from the train or eval table")
    out: dict[str, float] = {}
    for name in categorical:
        scores = _categorical_rate_scores(train[name], y_train, eval_table[name])
        auc = float(roc_auc_score(y_eval, scores))
        out[name] = max(auc, 1.0 - auc)
    for name in numeric:
        train_values = pc.cast(train[name], pa.float64())
        median = pc.approximate_median(train_values).as_py()
        values = pc.fill_null(pc.cast(eval_table[name], pa.float64()), 0.0 if median is None else median)
        scores = np.nan_to_num(values.to_numpy(zero_copy_only=False), nan=0.0 if median is None else median)
        auc = float(roc_auc_score(y_eval, scores))
        out[name] = max(auc, 1.0 - auc)
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def leakage_warnings(aucs: Mapping[str, float], threshold: float = LEAKAGE_THRESHOLD) -> list[dict[str, Any]]:
    """One warning per feature whose single-feature ROC-AUC is >= ``threshold`` (highest first)."""
    if not 0.5 <= threshold <= 1.0:
        raise ValueError(f"leakage threshold must be in [0.5, 1], got {threshold}")
    return [
        {
            "feature": name,
            "auc": auc,
            "threshold": threshold,
            "message": f"{name} alone reaches ROC-AUC {auc:.3f} (>= {threshold:g}): a possible leak or a "
            "data-generation artefact; the model's score leans on it",
        }
        for name, auc in sorted(aucs.items(), key=lambda kv: (-kv[1], kv[0]))
        if auc >= threshold
    ]
