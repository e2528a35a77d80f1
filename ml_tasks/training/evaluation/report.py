"""``evaluate``: a candidate on a later window against the baselines and the champion, on ONE table.

:func:`evaluate_candidate` writes ``evaluation.json``, ``reliability.png`` and ``model_card.md`` and returns
the report; ``report["gate_inputs"]`` is what :func:`ml_tasks.training.gate.decide` takes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import (
    EVALUATION_JSON,
    EVENT_TIMESTAMP,
    LABEL,
    MODEL_CARD_MD,
    RELIABILITY_PNG,
    TRIP_KEY,
)
from ml_tasks.models.auc_compare import paired_auc_difference
from ml_tasks.models.metrics import Labels, calibration, classification_metrics
from ml_tasks.storage import atomic_write_text
from ml_tasks.training.evaluation.baselines import fit_baselines, labels, model_inputs
from ml_tasks.training.evaluation.behaviour import behavioural_tests
from ml_tasks.training.evaluation.card import model_card
from ml_tasks.training.evaluation.leakage import LEAKAGE_THRESHOLD, leakage_warnings, single_feature_auc
from ml_tasks.training.evaluation.scoring import Scorer, scores
from ml_tasks.training.evaluation.slices import slice_metrics

log = logging.getLogger(__name__)


def reliability_plot(table: Sequence[Mapping[str, Any]], path: Path, *, title: str = "Reliability") -> Path:
    """Write the reliability diagram of a :func:`calibration` table to ``path`` (PNG) and return it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not table:
        raise ValueError("reliability_plot: empty calibration table")
    # a bare Figure + Agg canvas: no pyplot global state, no GUI backend, safe in threads and pods
    fig = Figure(figsize=(5.5, 5.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    filled = [row for row in table if row["count"]]
    ax.plot(
        [row["mean_predicted"] for row in filled],
        [row["observed_rate"] for row in filled],
        marker="o",
        color="tab:blue",
        label="model",
    )
    counts = ax.twinx()
    counts.bar(
        [(row["lower"] + row["upper"]) / 2 for row in table],
        [row["count"] for row in table],
        width=[(row["upper"] - row["lower"]) * 0.9 for row in table],
        alpha=0.2,
        color="tab:orange",
        label="rows per bin",
    )
    counts.set_ylabel("rows per bin")
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed positive rate")
    ax.set_title(title)
    ax.legend(loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # no "Software" metadata: the bytes then do not depend on the matplotlib version string
    fig.savefig(tmp, format="png", metadata={"Software": None})
    tmp.replace(path)
    return path


def window_info(table: pa.Table, label: str = LABEL) -> dict[str, Any]:
    """Rows, label rate, first/last event timestamp and a hash of the trip keys (identifies the window)."""
    info: dict[str, Any] = {"rows": table.num_rows}
    if label in table.column_names and table.num_rows:
        info["label_rate"] = float(labels(table, label).mean())
    if EVENT_TIMESTAMP in table.column_names and table.num_rows:
        bounds = pc.min_max(table[EVENT_TIMESTAMP])
        info["start"] = bounds["min"].as_py().isoformat()
        info["end"] = bounds["max"].as_py().isoformat()
    if TRIP_KEY in table.column_names:
        digest = hashlib.sha256()
        keys = pc.fill_null(pc.cast(table[TRIP_KEY], pa.string()), "")
        for offset in range(0, len(keys), 65_536):  # bounded memory on large windows
            # a unit separator (never in a key) between keys: ("ab","c") and ("a","bc") hash differently
            digest.update("\x1f".join(keys.slice(offset, 65_536).to_pylist()).encode() + b"\x1f")
        info["trip_keys_sha256"] = digest.hexdigest()
    return info


def _scored(name: str, scorer: Scorer, table: pa.Table, y: Labels) -> dict[str, Any]:
    started = time.perf_counter()
    p = scores(scorer, table, name)
    seconds = time.perf_counter() - started
    return {
        "name": name,
        "threshold": float(scorer.threshold),
        "metrics": classification_metrics(y, p, float(scorer.threshold)),
        "predict_seconds": round(seconds, 3),
        "_p": p,
    }


def evaluate_candidate(
    scorer: Scorer,
    train_table: pa.Table,
    eval_table: pa.Table,
    *,
    champion: Scorer | None,
    out_dir: Path,
    model_meta: Mapping[str, Any] | None = None,
    label: str = LABEL,
    bins: int = 10,
    slice_top: int = 10,
    leakage_threshold: float = LEAKAGE_THRESHOLD,
    seed: int = 0,
    gbt_max_iter: int = 300,
    gbt_threads: int | None = 1,
    behavioural_max_rows: int = 20_000,
) -> dict[str, Any]:
    """Evaluate ``scorer`` (and ``champion``, and the baselines) on ``eval_table``; write the artifacts.

    Args:
        scorer: The candidate (Scorer protocol).
        train_table: The table the candidate was trained on: the baselines are fitted on it and the
            categorical single-feature scores come from it.
        eval_table: The evaluation window (later than training; overlap is reported).
        champion: The current champion, scored on the SAME eval table, or None.
        out_dir: Where evaluation.json, reliability.png and model_card.md are written.
        model_meta: The candidate's metadata (model.json) for the model card.
        label: Label column.
        bins: Reliability bins.
        slice_top: Values per categorical slice before "other".
        leakage_threshold: Single-feature ROC-AUC that triggers a leakage warning.
        seed: Seed of the gradient-boosted-tree baseline.
        gbt_max_iter: Iteration bound of the gradient-boosted-tree baseline.
        gbt_threads: OpenMP threads of the gradient-boosted-tree baseline (None: all cores). Default 1:
            on a machine shared with other tasks, OpenMP workers spin-waiting for busy cores made a
            3k-row fit take 177 s instead of 1.4 s here; one thread fits 10k rows in a few seconds.
        behavioural_max_rows: Rows (evenly spaced) the behavioural tests perturb.

    Returns:
        The report (also written as evaluation.json); ``report["gate_inputs"]`` feeds the gate.
    """
    started = time.perf_counter()
    y_eval = labels(eval_table, label, who="eval table")
    labels(train_table, label, who="train table")
    if y_eval.size == 0 or y_eval.min() == y_eval.max():
        raise ValueError(
            f"eval table: needs both classes, got {y_eval.size} rows with label rate "
            f"{float(y_eval.mean()) if y_eval.size else float('nan'):.3f}"
        )
    inputs = model_inputs(eval_table.schema)

    candidate = _scored("candidate", scorer, eval_table, y_eval)
    p = candidate.pop("_p")
    cal = calibration(y_eval, p, bins)
    champion_result = None
    paired: dict[str, Any] = {"metric": "roc_auc", "baselines": {}, "champion": None}
    if champion is not None:
        champion_result = _scored("champion", champion, eval_table, y_eval)
        paired["champion"] = paired_auc_difference(y_eval, p, champion_result.pop("_p"))

    baselines: dict[str, dict[str, Any]] = {}
    for baseline in fit_baselines(
        train_table, label, seed=seed, gbt_max_iter=gbt_max_iter, gbt_threads=gbt_threads, inputs=inputs
    ):
        scored = _scored(baseline.name, baseline, eval_table, y_eval)
        paired["baselines"][baseline.name] = paired_auc_difference(y_eval, p, scored.pop("_p"))
        baselines[baseline.name] = {**scored, "info": baseline.info}

    slices = slice_metrics(eval_table, y_eval, p, candidate["threshold"], top=slice_top)
    behavioural = behavioural_tests(scorer, eval_table, max_rows=behavioural_max_rows)
    aucs = single_feature_auc(train_table, eval_table, inputs=inputs, label=label)
    warnings = leakage_warnings(aucs, leakage_threshold)
    for warning in warnings:
        log.warning("leakage warning: %s", warning["message"])

    train_window, eval_window = window_info(train_table, label), window_info(eval_table, label)
    later = None
    if "end" in train_window and "start" in eval_window:
        later = eval_window["start"] > train_window["end"]
    out_dir.mkdir(parents=True, exist_ok=True)
    reliability_plot(cal.table, out_dir / RELIABILITY_PNG, title=f"Reliability (ECE {cal.ece:.3f})")
    report: dict[str, Any] = {
        "candidate": candidate,
        "champion": champion_result,
        "baselines": baselines,
        "calibration": {"ece": cal.ece, "bins": bins, "table": cal.table, "plot": RELIABILITY_PNG},
        "slices": slices,
        "behavioural_tests": behavioural,
        "single_feature_auc": aucs,
        "leakage_warnings": warnings,
        "windows": {"train": train_window, "eval": eval_window, "eval_after_train": later},
        "inputs": {"categorical": inputs[0], "numeric": inputs[1]},
        "settings": {
            "label": label,
            "bins": bins,
            "slice_top": slice_top,
            "leakage_threshold": leakage_threshold,
            "seed": seed,
            "gbt_max_iter": gbt_max_iter,
            "gbt_threads": gbt_threads,
            "behavioural_max_rows": behavioural_max_rows,
        },
        "gate_inputs": {
            "candidate": candidate["metrics"],
            "baselines": {name: b["metrics"] for name, b in baselines.items()},
            "champion": champion_result["metrics"] if champion_result else None,
            "comparisons": paired,
            "behavioural_passed": all(t["passed"] for t in behavioural),
            "eval_window": eval_window,
        },
        "artifacts": {
            "evaluation": EVALUATION_JSON,
            "reliability_plot": RELIABILITY_PNG,
            "model_card": MODEL_CARD_MD,
        },
    }
    atomic_write_text(out_dir / MODEL_CARD_MD, model_card(report, dict(model_meta or {})))
    report["seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_text(
        out_dir / EVALUATION_JSON, json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"
    )
    log.info(
        "evaluate: %d eval rows, candidate roc_auc %.4f (baselines %s) in %.1f s",
        eval_table.num_rows,
        candidate["metrics"]["roc_auc"],
        {n: round(b["metrics"]["roc_auc"], 4) for n, b in baselines.items()},
        report["seconds"],
    )
    return report
