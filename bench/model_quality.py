"""Model quality and speed on the real Chicago samples: the network against the tuned tree and the rule.

Per split (TFDV train -> eval; 2013-2015 -> 2016 of tfx_simple_data.csv) and per model configuration
(``today``: the configuration before issue 15; ``new``: the current defaults), it trains the network
(one torch thread), scores the evaluation rows, fits the evaluation's baselines on the same training rows,
and reports each ROC-AUC with its 95% DeLong interval, the paired interval of network minus tree and minus
rule, the training seconds, and the exported ONNX model's single-thread rows/s (best of 20 batches of
20k rows). The rows/s is also measured for the same architecture with 40 more numeric
``<view>__<feature>`` inputs (noisy copies of the trip's numbers): about the demo's ~45 numeric
feature-store inputs, whose first layer is what made today's model slow. ``--wide N`` trains on such
widened frames instead.

Prints one JSON line per (split, configuration), then the bench contract's figures (``bench._results``:
AUC shortfall against the tree, rows/s against today's architecture). Usage:
python bench/model_quality.py [--configs today,new] [--splits tfdv,tfx] [--wide 40]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._samples import add_samples_argument  # noqa: E402

#: the configuration before issue 15 (the ModelConfig defaults of that time)
TODAY = {
    "numeric_bins": 64, "numeric_bin_method": "quantile", "bin_inputs": "all", "hidden": [128, 64],
    "lr": 2e-3, "max_epochs": 20, "patience": 3, "stop_on": "log_loss", "lr_schedule": "constant",
}  # fmt: skip


def frames(samples: Path, split: str) -> tuple[pa.Table, pa.Table]:
    from ml_tasks.training.frames import rows_between, training_frame_from_csv

    if split == "tfdv":
        return (
            training_frame_from_csv(samples / "tfdv_train.csv"),
            training_frame_from_csv(samples / "tfdv_eval.csv"),
        )
    frame = training_frame_from_csv(samples / "tfx_simple_data.csv")
    return (
        rows_between(frame, dt.date(2013, 1, 1), dt.date(2016, 1, 1)),
        rows_between(frame, dt.date(2016, 1, 1), dt.date(2017, 1, 1)),
    )


def widen(table: pa.Table, n: int, seed: int = 0) -> pa.Table:
    """``n`` extra numeric inputs: noisy copies of the trip's numeric columns (stand-ins for aggregates)."""
    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.5, 2.0, n)  # the same per column in every table
    base = ["fare", "trip_miles", "trip_seconds"]
    for i in range(n):
        source = table.column(base[i % len(base)]).to_numpy(zero_copy_only=False).astype(np.float64)
        noisy = np.nan_to_num(source) * scales[i] + rng.normal(0, 1, table.num_rows)
        table = table.append_column(f"bench_view__f{i:02d}", pa.array(noisy))
    return table


def onnx_rows_per_second(bundle_dir: Path, rows: pa.Table, *, batch: int = 20_000, runs: int = 20) -> float:
    """Single-thread rows/s of the exported model: the best of ``runs`` batches of ``batch`` rows (the best,
    not the mean: on a shared machine the other runs measure the neighbours). Parity is checked first."""
    import onnxruntime as ort

    from ml_tasks.contract import ONNX_FILE
    from ml_tasks.models.network import load_bundle
    from ml_tasks.training.onnx_export import check_onnx, export_onnx

    exported = export_onnx(bundle_dir, sample=rows.slice(0, 64))
    check = check_onnx(bundle_dir, rows, expected_sha256=exported["onnx_sha256"], latency_calls=10, threads=1)
    if not check["passed"]:
        raise RuntimeError(f"ONNX check failed: {check['reasons']}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(bundle_dir / ONNX_FILE), options, providers=["CPUExecutionProvider"])
    encoded = load_bundle(bundle_dir).preprocessor.encode(rows)
    reps = -(-batch // rows.num_rows)
    names = [i.name for i in session.get_inputs()]
    arrays = (np.tile(encoded.numeric, (reps, 1))[:batch], np.tile(encoded.categorical, (reps, 1))[:batch])
    feed = dict(zip(names, arrays, strict=True))
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - started)
    return batch / best


def wide_rows_per_second(config: Any, train: pa.Table, evaluation: pa.Table, wide: int) -> float:
    """The same architecture's rows/s with ``wide`` extra numeric inputs (untrained: the speed does not
    depend on the weights), i.e. at about the demo's ~45 numeric feature-store inputs."""
    from ml_tasks.models.network import TabularNet, save_bundle
    from ml_tasks.models.preprocess import Preprocessor, infer_inputs

    train, evaluation = widen(train, wide), widen(evaluation, wide)
    pre = Preprocessor.fit(
        train,
        infer_inputs(train.schema),
        min_count=config.min_count,
        numeric_bins=config.numeric_bins,
        bin_method=config.numeric_bin_method,
        bin_inputs=config.bin_inputs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        save_bundle(tmp, TabularNet(config, pre).eval(), pre, config, {"threshold": 0.5})
        return onnx_rows_per_second(Path(tmp), evaluation)


def run(split: str, name: str, train: pa.Table, evaluation: pa.Table) -> dict[str, Any]:
    import torch

    from ml_tasks.models.auc_compare import auc_interval, paired_auc_difference
    from ml_tasks.models.network import ModelConfig, save_bundle
    from ml_tasks.models.preprocess import labels
    from ml_tasks.training.evaluation.baselines import fit_baselines
    from ml_tasks.training.split import split_by_time
    from ml_tasks.training.train import train_model

    torch.set_num_threads(1)
    config = ModelConfig.from_dict(TODAY) if name == "today" else ModelConfig()
    started = time.perf_counter()
    result = train_model(split_by_time(train, 0.1, 0.0), config, checkpoint_dir=None, device="cpu")
    seconds = time.perf_counter() - started
    y = labels(evaluation).astype(np.int8)
    with tempfile.TemporaryDirectory() as tmp:
        save_bundle(tmp, result.model, result.preprocessor, result.config, result.bundle_metadata())
        from ml_tasks.models.network import load_bundle

        p = load_bundle(tmp).predict_proba(evaluation)
        rows_per_second = onnx_rows_per_second(Path(tmp), evaluation)
    scores = {b.name: b.predict_proba(evaluation) for b in fit_baselines(train, gbt_threads=1)}
    tree, rule = scores["gradient_boosted_tree"], scores["payment_type_rule"]
    out: dict[str, Any] = {
        "split": split,
        "config": name,
        "inputs": len(result.preprocessor.inputs.columns),
        "eval_rows": evaluation.num_rows,
        "candidate": auc_interval(y, p),
        "tree": auc_interval(y, tree),
        "rule": auc_interval(y, rule),
        "minus_tree": paired_auc_difference(y, p, tree),
        "minus_rule": paired_auc_difference(y, p, rule),
        "train_seconds": round(seconds, 1),
        "best_epoch": result.best_epoch,
        "onnx_rows_per_second": round(rows_per_second),
        "onnx_rows_per_second_45_numeric": round(wide_rows_per_second(result.config, train, evaluation, 40)),
    }
    for key in ("minus_tree", "minus_rule"):
        out[key] = {k: round(v, 4) for k, v in out[key].items() if k in ("delta", "low", "high")}
    return out


def figures(results: list[dict[str, Any]]) -> list[Any]:
    """The bench contract's records: per split the new model's AUC shortfall against the tuned tree (goal
    0.002, bound the gate's margin 0.005) and its single-thread ONNX rows/s at ~45 numeric inputs against
    today's architecture in the same run (ratio = today's / new rows/s: goal 0.25, i.e. 4x; bound 0.5)."""
    from bench._results import Figure

    out = []
    by = {(r["split"], r["config"]): r for r in results}
    for (split, name), r in sorted(by.items()):
        if name != "new":
            continue
        shortfall = r["tree"]["auc"] - r["candidate"]["auc"]
        out.append(
            Figure(
                f"{split}.auc_shortfall_vs_tree", round(shortfall, 4), "roc_auc", goal=0.002, bound=0.005,
                rows=r["eval_rows"],
                note=f"network {r['candidate']['auc']:.4f}, tree {r['tree']['auc']:.4f},"
                f" rule {r['rule']['auc']:.4f}; network - tree {r['minus_tree']}",
            )
        )  # fmt: skip
        today = by.get((split, "today"))
        speed = r["onnx_rows_per_second_45_numeric"]
        floor = today["onnx_rows_per_second_45_numeric"] if today else None
        out.append(
            Figure(
                f"{split}.onnx_rows_per_second_45_numeric", speed, "rows/s", floor=floor,
                ratio=round(floor / speed, 3) if floor else None, goal=0.25, bound=0.5, rows=20_000,
                note="one thread, best of 20 batches of 20k rows; floor = today's architecture, same run",
            )
        )  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="today,new")
    parser.add_argument("--splits", default="tfdv,tfx")
    parser.add_argument("--wide", type=int, default=0)
    add_samples_argument(parser)
    ns = parser.parse_args()
    results = []
    for split in ns.splits.split(","):
        train, evaluation = frames(ns.samples, split)
        if ns.wide:
            train, evaluation = widen(train, ns.wide), widen(evaluation, ns.wide)
        for name in ns.configs.split(","):
            results.append(run(split, name, train, evaluation))
            print(json.dumps(results[-1]), flush=True)
    from bench._results import emit

    return emit("model_quality", figures(results))


if __name__ == "__main__":
    sys.exit(main())
