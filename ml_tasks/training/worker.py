"""Training on one file: the torchrun worker (``ml-tasks train-worker``), benches and offline experiments."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from ml_tasks.jsonout import read_summary
from ml_tasks.models.network import Bundle, ModelConfig, load_bundle, save_bundle
from ml_tasks.settings import Settings
from ml_tasks.storage import file_sha256
from ml_tasks.training.distributed import dist_from_env, log_with_rank
from ml_tasks.training.inputs import TrainingStepError
from ml_tasks.training.split import split_by_time
from ml_tasks.training.train import MetricsLogger, TrainResult, train_model

log = logging.getLogger(__name__)


def read_training_table(path: str | Path, mapping: str = "tfx") -> pa.Table:
    """A training set parquet file, or a trips CSV turned into a training-set-shaped table."""
    text = str(path)
    if text.endswith((".csv", ".csv.gz")):
        from ml_tasks.training.frames import training_frame_from_csv

        return training_frame_from_csv(text, mapping=mapping)
    import pyarrow.parquet as pq

    return pq.read_table(text)


def train_from_file(
    training_set: str | Path,
    out: str | Path,
    config: ModelConfig,
    *,
    checkpoint_dir: Path | None,
    device: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    mapping: str = "tfx",
    log_metrics: MetricsLogger | None = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[TrainResult, dict[str, Any]]:
    """Split, train and (on rank 0) write the bundle ``out``; return the result and a JSON-able summary.

    ``metadata`` is added to model.json (e.g. feature_service, mlflow_run_id); the training set's URI and
    sha256 are recorded always.
    """
    table = read_training_table(training_set, mapping)
    split = split_by_time(table, val_fraction, test_fraction)
    result = train_model(split, config, checkpoint_dir=checkpoint_dir, device=device, log_metrics=log_metrics)
    summary: dict[str, Any] = {
        "step": "train",
        "bundle": str(Path(out).resolve()),
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
        "resumed_from_epoch": result.resumed_from_epoch,
        "threshold": result.threshold,
        "metrics": result.metrics,
        "split": result.split,
        "world_size": result.world_size,
        "device": result.device,
        "rows_per_second": [round(h["rows_per_second"], 1) for h in result.history],
    }
    if result.rank == 0:
        save_bundle(
            out,
            result.model,
            result.preprocessor,
            config,
            result.bundle_metadata(
                training_set_uri=str(Path(training_set).resolve()),
                training_set_sha256=file_sha256(training_set),
                **(metadata or {}),
            ),
        )
    return result, summary


def train_worker(
    training_set: str,
    out: str,
    *,
    checkpoint_dir: str | None = None,
    config_json: str | None = None,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    threads: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    mapping: str = "tfx",
) -> dict[str, Any] | None:
    """One torchrun rank (``ml-tasks train-worker``): train on one file; rank 0 writes the bundle.

    Logs carry the rank (``rank0 ...``). Returns the job's summary on rank 0 (printed once for the whole
    job), None on the other ranks. ``checkpoint_dir`` defaults to ``<out>.checkpoints`` beside the bundle.
    """
    info = dist_from_env()
    log_with_rank(info)
    if threads:
        torch.set_num_threads(threads)
    values: dict[str, Any] = json.loads(config_json) if config_json else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    config = ModelConfig.from_dict(values)
    bundle = Path(out)
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else bundle.with_name(bundle.name + ".checkpoints")
    result, summary = train_from_file(
        training_set, bundle, config, checkpoint_dir=checkpoints, device=device,
        val_fraction=val_fraction, test_fraction=test_fraction, mapping=mapping,
    )  # fmt: skip
    return summary if result.rank == 0 else None


class TrialResult:
    """What the search needs from one trial, whether it ran in this process or under torchrun."""

    def __init__(self, bundle: Bundle | None, metrics: dict[str, dict[str, float]], best_epoch: int,
                 threshold: float, rows_per_second: list[float], device: str, world_size: int,
                 result: Any = None) -> None:  # fmt: skip
        self.bundle, self.metrics, self.best_epoch = bundle, metrics, best_epoch
        self.threshold, self.rows_per_second, self.device = threshold, rows_per_second, device
        self.world_size, self.result = world_size, result


def torchrun_trial(
    settings: Settings, training_file: Path, config: Any, out: Path, checkpoint_dir: Path, device: str | None
) -> TrialResult:
    """One trial as ``torchrun --nproc-per-node N -m ml_tasks.cli train-worker``: DDP over N processes.

    Rank 0 writes the trial's bundle and prints the summary; this process (no process group of its own)
    keeps the MLflow bookkeeping, so the tracking code never runs on several ranks.
    """
    import os
    import subprocess
    import sys

    from ml_tasks.jsonout import XCOM_ENV

    threads = settings.train_threads or 1
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={settings.train_processes}", "-m", "ml_tasks.cli", "train-worker",
        "--training-set", str(training_file), "--out", str(out), "--checkpoint-dir", str(checkpoint_dir),
        "--config", json.dumps(config.to_dict()), "--threads", str(threads),
        "--val-fraction", "0.1", "--test-fraction", "0",
    ]  # fmt: skip
    if device:
        cmd += ["--device", device]
    # the step's own summary is the XCom: the worker's line must not land in the step's XCom file
    env = {k: v for k, v in os.environ.items() if k != XCOM_ENV}
    log.info("trial under torchrun: %s", " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise TrainingStepError(
            f"torchrun with {settings.train_processes} processes failed (exit {proc.returncode}); see the log"
        )
    try:
        summary = read_summary(proc.stdout)
    except ValueError:
        raise TrainingStepError("torchrun finished without the rank-0 summary line") from None
    bundle = load_bundle(out)
    return TrialResult(
        bundle, summary["metrics"], int(summary["best_epoch"]), float(summary["threshold"]),
        [float(v) for v in summary["rows_per_second"]], str(summary["device"]), int(summary["world_size"]),
    )  # fmt: skip
