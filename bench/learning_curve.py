"""How ROC-AUC grows with the training rows on the real Chicago samples: is a goal model-bound or data-bound?

Per split (those of ``bench/model_quality.py``) and per training size (1/8, 1/4, 1/2 and all of the
training rows; ``--draws`` seeded random subsets of each smaller size, the network seeded the same way),
it fits the network (the current defaults, one torch thread) and the tuned tree on the subset and scores
the whole evaluation split: the ROC-AUC and the ROC-AUC among credit-card trips (where the ranking is
hard: cash trips record no tips, so the payment type alone sorts them). Then it fits ROC-AUC against
log2(training rows) over the two largest sizes and extrapolates the rows a ``--target`` ROC-AUC would need.
Growth slows with each doubling, so a straight line in log2(rows) is optimistic: the extrapolation is a
lower bound on the rows needed.

Prints one JSON line per (split, size), then the bench contract's figures. Usage:
python bench/learning_curve.py [--splits tfdv,tfx] [--draws 4] [--target 0.96]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._samples import add_samples_argument  # noqa: E402
from bench.model_quality import frames  # noqa: E402

FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def scores(train: pa.Table, evaluation: pa.Table, seed: int) -> dict[str, np.ndarray]:
    """The network's and the tuned tree's probabilities for ``evaluation``, both fitted on ``train``."""
    from ml_tasks.models.network import ModelConfig, load_bundle, save_bundle
    from ml_tasks.training.evaluation.baselines import fit_baselines
    from ml_tasks.training.split import split_by_time
    from ml_tasks.training.train import train_model

    config = ModelConfig(seed=seed)
    result = train_model(split_by_time(train, 0.1, 0.0), config, checkpoint_dir=None, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        save_bundle(tmp, result.model, result.preprocessor, result.config, result.bundle_metadata())
        network = load_bundle(tmp).predict_proba(evaluation)
    tree = {b.name: b for b in fit_baselines(train, gbt_threads=1)}["gradient_boosted_tree"]
    return {"network": network, "tree": tree.predict_proba(evaluation)}


def curve(split: str, train: pa.Table, evaluation: pa.Table, draws: int) -> list[dict[str, Any]]:
    """One record per training size: the mean (and spread) of each model's ROC-AUC over the draws."""
    from sklearn.metrics import roc_auc_score

    from ml_tasks.models.preprocess import labels

    y = labels(evaluation).astype(np.int8)
    card = np.asarray(evaluation["payment_type"].to_pylist(), dtype=object) == "Credit Card"
    out = []
    for fraction in FRACTIONS:
        rows = round(train.num_rows * fraction)
        runs: dict[str, list[float]] = {}
        for draw in range(draws):
            picked = np.sort(np.random.default_rng(draw).choice(train.num_rows, rows, replace=False))
            for model, p in scores(train.take(pa.array(picked)), evaluation, seed=draw).items():
                runs.setdefault(model, []).append(float(roc_auc_score(y, p)))
                runs.setdefault(f"{model}_credit_card", []).append(float(roc_auc_score(y[card], p[card])))
        record = {"split": split, "train_rows": rows, "eval_rows": len(y), "draws": draws}
        for key, values in runs.items():
            record[key] = round(float(np.mean(values)), 4)
            record[f"{key}_sd"] = round(float(np.std(values)), 4)
        out.append(record)
        print(json.dumps(record), flush=True)
    return out


def rows_for(records: list[dict[str, Any]], model: str, target: float) -> float:
    """Training rows at which the straight line through the two largest sizes' mean ROC-AUC (against
    log2 rows) reaches ``target`` (inf when it does not grow)."""
    (n1, a1), (n2, a2) = [(r["train_rows"], r[model]) for r in records[-2:]]
    slope = (a2 - a1) / (np.log2(n2) - np.log2(n1))
    if a2 >= target:
        return float(n2)
    return float(n2 * 2 ** ((target - a2) / slope)) if slope > 0 else float("inf")


def figures(results: dict[str, list[dict[str, Any]]], target: float) -> list[Any]:
    """Per split: the network minus the tree on all training rows (the gaps by size in the note); for the
    TFDV split (the one with an absolute goal) also each model's extrapolated rows for ``target``."""
    from bench._results import Figure

    out = []
    for split, records in results.items():
        full = records[-1]
        gaps = [(r["train_rows"], round(r["network"] - r["tree"], 4)) for r in records]
        out.append(
            Figure(
                f"{split}.network_minus_tree", round(full["network"] - full["tree"], 4), "roc_auc",
                rows=full["eval_rows"],
                note=f"by train rows: {gaps}",
            )
        )  # fmt: skip
        if split != "tfdv":
            continue
        for model in ("network", "tree"):
            needed = rows_for(records, model, target)
            curve_of = [(r["train_rows"], r[model]) for r in records]
            card = [r[f"{model}_credit_card"] for r in records]
            out.append(
                Figure(
                    f"{split}.{model}.train_rows_for_auc_{target:g}", round(needed), "rows",
                    floor=full["train_rows"], ratio=round(needed / full["train_rows"], 2),
                    rows=full["eval_rows"],
                    note=f"ROC-AUC by train rows {curve_of}; credit-card trips {card}; straight line in"
                    " log2(rows) through the two largest sizes (optimistic: growth slows)",
                )
            )  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", default="tfdv,tfx")
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--target", type=float, default=0.96)
    add_samples_argument(parser)
    ns = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    results = {split: curve(split, *frames(ns.samples, split), ns.draws) for split in ns.splits.split(",")}
    from bench._results import emit

    return emit("learning_curve", figures(results, ns.target))


if __name__ == "__main__":
    sys.exit(main())
