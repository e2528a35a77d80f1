"""Training throughput benchmark: rows/s per epoch of ``train_model`` on the CPU, against a floor.

Data: the real TFDV training sample (``tfdv_train.csv`` through the project's loader) repeated to about
``--rows`` rows (default 200k); synthetic trips of the same shape when the samples are absent.

The floor, measured in the same run on the same machine and threads, is the least work an epoch must do:
one forward + backward pass of the same model over the same batches, with no data loader, optimizer,
gradient clipping or validation. The ratio epoch time / floor time is the overhead of the training loop
(it fails above ``--max-ratio``, a regression guard that holds on any machine, unlike a time budget).
Inference throughput (forward only, eval mode, 64k-row batches) is reported too.

Reports through ``bench._results.emit`` (bench "train").
Usage: python bench/train_throughput.py [--rows 200000] [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py`: import bench._results

import numpy as np
import pyarrow as pa

from bench._results import Figure, emit
from bench._samples import CHICAGO_SAMPLES as SAMPLES

REPO = Path(__file__).resolve().parents[1]


def synthetic_trips(n: int, seed: int = 0) -> pa.Table:
    """Training-set-shaped rows with a learnable label (payment type, fare): when the samples are absent."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    micros = np.sort(rng.integers(0, 90 * 86_400, n)) * 1_000_000 + int(start.timestamp() * 1_000_000)
    payment = np.array(["Cash", "Credit Card", "Mobile"])[rng.choice(3, n, p=[0.5, 0.4, 0.1])]
    fare = rng.gamma(2.0, 6.0, n) + 3.25
    miles = fare / 2.5 * rng.uniform(0.5, 1.5, n)
    seconds = (miles * 180 + rng.integers(60, 600, n)).astype(np.int64)
    logit = np.where(payment == "Cash", -4.0, 1.0) - 0.08 * fare + rng.normal(0, 0.5, n)
    ts = pa.array(micros, pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "trip_key": pa.array([f"s{i:08d}" for i in range(n)]),
            "event_timestamp": ts,
            "trip_date": ts.cast(pa.date32()),
            "pickup_community_area": pa.array(rng.integers(1, 78, n)),
            "dropoff_community_area": pa.array(rng.integers(1, 78, n)),
            "company": pa.array(np.array(["A", "B", "C", "D"])[rng.integers(0, 4, n)]),
            "payment_type": pa.array(payment),
            "fare": pa.array(fare),
            "trip_miles": pa.array(miles),
            "trip_seconds": pa.array(seconds),
            "big_tipper": pa.array(rng.uniform(size=n) < 1 / (1 + np.exp(-logit))),
            "trip_start_hour": pa.array(rng.integers(0, 24, n).astype(np.int8)),
            "trip_start_day_of_week": pa.array(rng.integers(1, 8, n).astype(np.int8)),
            "trip_start_month": pa.array(rng.integers(1, 13, n).astype(np.int8)),
            "fare_per_mile": pa.array(fare / miles),
            "speed_mph": pa.array(miles / (seconds / 3600.0)),
        }
    )


def load_rows(rows: int) -> tuple[pa.Table, str]:
    """About ``rows`` training rows: the real sample repeated (keys made unique), else synthetic."""
    csv = SAMPLES / "tfdv_train.csv"
    if not csv.is_file():
        return synthetic_trips(rows), "synthetic"
    from ml_tasks.training.frames import training_frame_from_csv

    base = training_frame_from_csv(csv)
    copies = max(1, round(rows / base.num_rows))
    parts = []
    for i in range(copies):
        keys = pa.array([f"{k}-{i}" for k in base["trip_key"].to_pylist()])
        parts.append(base.set_column(0, "trip_key", keys))
    return pa.concat_tables(parts), f"tfdv_train.csv x{copies}"


def floor_seconds(result: Any, table: pa.Table, batch_size: int) -> tuple[float, float]:
    """(forward+backward seconds over ``table`` in training batches, forward-only eval seconds)."""
    import torch

    model = result.model
    encoded = result.preprocessor.encode(table)
    numeric, categorical = torch.from_numpy(encoded.numeric), torch.from_numpy(encoded.categorical)
    target = torch.from_numpy(
        np.asarray(table["big_tipper"].to_numpy(zero_copy_only=False), dtype=np.float32)
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    started = time.perf_counter()
    for start in range(0, len(target), batch_size):
        stop = start + batch_size
        loss = loss_fn(model.logits(numeric[start:stop], categorical[start:stop]), target[start:stop])
        loss.backward()
    train_floor = time.perf_counter() - started
    model.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(target), 65_536):
            model(numeric[start : start + 65_536], categorical[start : start + 65_536])
    return train_floor, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="approximate training rows")
    parser.add_argument("--epochs", type=int, default=3, help="epochs to time (early stopping off)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (small matmuls: 1 is fastest on a shared box)",
    )
    parser.add_argument("--batch-size", type=int, default=512, help="training batch size")
    parser.add_argument("--max-ratio", type=float, default=3.0, help="fail above this epoch/floor time ratio")
    args = parser.parse_args()

    import torch

    from ml_tasks.models.network import ModelConfig
    from ml_tasks.training.split import split_by_time
    from ml_tasks.training.train import train_model

    torch.set_num_threads(args.threads)
    table, source = load_rows(args.rows)
    split = split_by_time(table, 0.1, 0.0)
    config = ModelConfig(max_epochs=args.epochs, patience=args.epochs + 1, batch_size=args.batch_size)
    started = time.perf_counter()
    result = train_model(split, config, checkpoint_dir=None, device="cpu")
    total = time.perf_counter() - started
    epoch_rates = [h["rows_per_second"] for h in result.history]
    epoch_seconds = float(np.median([h["seconds"] for h in result.history]))
    train_floor, infer_seconds = floor_seconds(result, split.train, args.batch_size)
    ratio = epoch_seconds / train_floor
    summary = {
        "bench": "train_throughput",
        "source": source,
        "train_rows": split.train.num_rows,
        "validation_rows": split.validation.num_rows,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "epochs": len(result.history),
        "rows_per_second_per_epoch": [round(r) for r in epoch_rates],
        "median_epoch_seconds": round(epoch_seconds, 3),
        "floor_forward_backward_seconds": round(train_floor, 3),
        "floor_rows_per_second": round(split.train.num_rows / train_floor),
        "ratio_epoch_to_floor": round(ratio, 2),
        "max_ratio": args.max_ratio,
        "inference_rows_per_second": round(split.train.num_rows / infer_seconds),
        "train_model_seconds": round(total, 2),
        "validation_roc_auc": round(result.metrics["validation"].get("roc_auc", float("nan")), 4),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(summary), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = split.train.num_rows
    note = f"{source}, {args.threads} thread(s), batch {args.batch_size}, {len(result.history)} epochs"
    return emit(
        "train",
        [
            Figure(
                name="train epoch vs forward+backward",
                value=round(rows / epoch_seconds),
                unit="rows/s",
                floor=round(rows / train_floor),
                ratio=round(ratio, 2),
                bound=args.max_ratio,
                rows=rows,
                peak_rss_mib=round(peak),
                note=note,
            ),
            Figure(
                name="inference (forward only)",
                value=round(rows / infer_seconds),
                unit="rows/s",
                rows=rows,
                peak_rss_mib=round(peak),
                note=f"validation ROC AUC {summary['validation_roc_auc']}",
            ),
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
