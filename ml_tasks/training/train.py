"""Training: time-based split, the training loop (CPU / CUDA, single process or DDP), checkpoints.

* **Split** (:func:`split_by_time`): rows ordered by (event_timestamp, trip_key); the oldest share trains,
  the next validates (early stopping, threshold, trial selection), the newest tests. Rows that start at
  the same instant never straddle a boundary (the TFX sample has 15-minute timestamps: a cut inside a
  tie would put simultaneous trips on both sides).
* **Loop** (:func:`train_model`): AdamW, BCE-with-logits weighted by ``pos_weight`` (from the train
  split; see :mod:`ml_tasks.models.network` for how probabilities stay calibrated), gradient clipping,
  early stopping on the validation LOG LOSS (a proper scoring rule: it rewards calibrated probabilities,
  which evaluation measures, and is far less noisy epoch to epoch than PR-AUC on a 1k-row window).
  The weights of the best epoch are the result.
* **Determinism**: python / numpy / torch seeds; ``torch.use_deterministic_algorithms`` (warn-only: a
  few CUDA kernels have no deterministic variant); the shuffle order is a pure function of (seed, epoch)
  through :class:`~torch.utils.data.DistributedSampler` (also with one process), so a resumed run sees
  the batches an uninterrupted run would have seen.
* **Device** (:func:`plan_device`): CUDA when available, with autocast (bf16 when the GPU supports it,
  else fp16 + GradScaler, which bf16 does not need) and pinned-memory batches; the CPU otherwise (no
  autocast: CPU fp32 is what the parity checks and the bench compare against).
* **Checkpoints**: after every epoch, ``<checkpoint_dir>/last.pt`` (temp file + rename) with the model,
  optimizer, scaler, early-stopping state, history and RNG states, under a fingerprint of (config,
  preprocessing hash, training data hash, world size). A restarted run with the same fingerprint resumes
  after the last completed epoch (and a finished run returns at once); another fingerprint is ignored
  with a warning and overwritten by the next checkpoint.
* **DDP**: under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised (nccl on CUDA, gloo
  on the CPU), the train split is sharded by ``DistributedSampler`` and the model wrapped in
  ``DistributedDataParallel``; ``batch_size`` is per process. Every rank validates on the whole
  validation split, rank 0's early-stopping decision is broadcast, so all ranks stop together with the
  same weights; only rank 0 writes checkpoints, bundles and metrics, and on a restart rank 0 reads the
  checkpoint and broadcasts it (the other ranks may run on nodes that do not see its disk).

Entry point usable by torchrun: ``python -m ml_tasks.training.train --training-set FILE --out DIR``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.distributed as torch_dist
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from ml_tasks.contract import EVENT_TIMESTAMP, TRIP_KEY
from ml_tasks.models.metrics import binary_metrics, f1_threshold
from ml_tasks.models.network import ModelConfig, TabularNet, predict_encoded, save_bundle
from ml_tasks.models.preprocess import Encoded, Preprocessor, infer_inputs, labels
from ml_tasks.storage import atomic_write_bytes, file_sha256

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.pt"
CHECKPOINT_FORMAT = 1
GRAD_CLIP_NORM = 1.0
MetricsLogger = Callable[[dict[str, float], int], None]


# -- split ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Train / validation / test tables, disjoint in time, in (event_timestamp, trip_key) order."""

    train: pa.Table
    validation: pa.Table
    test: pa.Table

    def describe(self) -> dict[str, Any]:
        """Rows and time range of each part (for logs, MLflow params and the model card)."""
        out: dict[str, Any] = {}
        for name in ("train", "validation", "test"):
            part: pa.Table = getattr(self, name)
            ts = part[EVENT_TIMESTAMP]
            low, high = (pc.min(ts).as_py(), pc.max(ts).as_py()) if part.num_rows else (None, None)
            out[name] = {
                "rows": part.num_rows,
                "start": low.isoformat() if low else None,
                "end": high.isoformat() if high else None,
            }
        return out


def _cut(ts: npt.NDArray[np.int64], index: int) -> int:
    """Move ``index`` back to the first row of its timestamp, so equal timestamps stay on one side."""
    if index <= 0 or index >= len(ts):
        return max(0, min(index, len(ts)))
    return int(np.searchsorted(ts, ts[index], side="left"))


def split_by_time(table: pa.Table, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """Split ``table`` by event time: oldest ``1 - val - test`` train, then validation, newest test.

    Raises:
        ValueError: fractions out of range, a missing column, or a part that would be empty (test may be
            empty only when ``test_fraction`` is 0).
    """
    if not 0.0 < val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"split fractions must satisfy 0 < val < 1, 0 <= test < 1, val + test < 1;"
            f" got val={val_fraction}, test={test_fraction}"
        )
    for column in (EVENT_TIMESTAMP, TRIP_KEY):
        if column not in table.column_names:
            raise ValueError(f"split_by_time: the table has no column {column!r}")
    if table[EVENT_TIMESTAMP].null_count:
        raise ValueError(
            f"split_by_time: {table[EVENT_TIMESTAMP].null_count} row(s) have no {EVENT_TIMESTAMP}"
        )
    ordered = table.sort_by([(EVENT_TIMESTAMP, "ascending"), (TRIP_KEY, "ascending")])
    n = ordered.num_rows
    ts = ordered[EVENT_TIMESTAMP].cast(pa.int64()).to_numpy()
    train_end = _cut(ts, round(n * (1.0 - val_fraction - test_fraction)))
    val_end = _cut(ts, round(n * (1.0 - test_fraction))) if test_fraction > 0 else n
    split = Split(
        ordered.slice(0, train_end), ordered.slice(train_end, val_end - train_end), ordered.slice(val_end)
    )
    empty = [name for name in ("train", "validation") if getattr(split, name).num_rows == 0]
    if test_fraction > 0 and split.test.num_rows == 0:
        empty.append("test")
    if empty:
        raise ValueError(
            f"split_by_time: the {', '.join(empty)} part(s) would be empty ({n} rows,"
            f" val={val_fraction}, test={test_fraction}); the window needs more distinct trip start times"
        )
    return split


# -- device --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DevicePlan:
    """Where and how to train: device, autocast dtype (None: fp32), GradScaler, pinned memory."""

    device: str
    amp_dtype: torch.dtype | None
    grad_scaler: bool
    pin_memory: bool


def plan_device(
    requested: str | None, *, cuda_available: bool, bf16_supported: bool, local_rank: int = 0
) -> DevicePlan:
    """Choose the device and mixed-precision mode (the availability is passed in, so it is testable).

    ``requested``: None / "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".

    Raises:
        ValueError: CUDA requested but not available, or an unknown device.
    """
    choice = (requested or "auto").lower()
    if choice == "auto":
        choice = "cuda" if cuda_available else "cpu"
    if choice == "cpu":
        return DevicePlan("cpu", None, grad_scaler=False, pin_memory=False)
    if choice == "cuda" or choice.startswith("cuda:"):
        if not cuda_available:
            raise ValueError(f"device {requested!r} requested but CUDA is not available")
        device = f"cuda:{local_rank}" if choice == "cuda" else choice
        if bf16_supported:  # bf16 has fp32's exponent range: no loss scaling needed
            return DevicePlan(device, torch.bfloat16, grad_scaler=False, pin_memory=True)
        return DevicePlan(device, torch.float16, grad_scaler=True, pin_memory=True)
    raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N")


def detect_device(requested: str | None, local_rank: int = 0) -> DevicePlan:
    """:func:`plan_device` with what this machine offers."""
    cuda = torch.cuda.is_available()
    return plan_device(
        requested,
        cuda_available=cuda,
        bf16_supported=cuda and torch.cuda.is_bf16_supported(),
        local_rank=local_rank,
    )


# -- distributed ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly single-process) job."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env(env: dict[str, str] | None = None) -> DistInfo:
    """WORLD_SIZE / RANK / LOCAL_RANK as torchrun sets them (absent: one process)."""
    source = os.environ if env is None else env
    return DistInfo(
        int(source.get("WORLD_SIZE", "1")), int(source.get("RANK", "0")), int(source.get("LOCAL_RANK", "0"))
    )


def _init_process_group(info: DistInfo, plan: DevicePlan) -> bool:
    """Initialise the process group when running under torchrun; True when this call created it."""
    if info.world_size <= 1 or torch_dist.is_initialized():
        return False
    backend = "nccl" if plan.device.startswith("cuda") else "gloo"
    if plan.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(plan.device))
    torch_dist.init_process_group(backend=backend, timeout=dt.timedelta(minutes=10))
    log.info("process group: backend %s, rank %d of %d", backend, info.rank, info.world_size)
    return True


# -- data ----------------------------------------------------------------------------------------------


class _Arrays(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Encoded rows served a whole batch per ``__getitem__`` (a list of indices): no per-row collation."""

    def __init__(self, encoded: Encoded, y: npt.NDArray[np.float32]) -> None:
        self.numeric = torch.from_numpy(encoded.numeric)
        self.categorical = torch.from_numpy(encoded.categorical)
        self.y = torch.from_numpy(y)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: Any) -> tuple[Tensor, Tensor, Tensor]:
        rows = torch.as_tensor(index, dtype=torch.int64)
        return self.numeric[rows], self.categorical[rows], self.y[rows]


def data_sha256(parts: Sequence[tuple[Encoded, npt.NDArray[np.float32]]]) -> str:
    """Hash of the encoded arrays and labels of every split part (what the model actually sees)."""
    digest = hashlib.sha256()
    for encoded, y in parts:
        for array in (encoded.numeric, encoded.categorical, y):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# -- metrics -------------------------------------------------------------------------------------------


# -- checkpoint ----------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [int(v) for v in np.random.get_state()[1]],  # type: ignore[index]
        "numpy_pos": int(np.random.get_state()[2]),  # type: ignore[index]
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def fingerprint(
    config: ModelConfig, preprocessing_sha256: str, training_data_sha256: str, world_size: int
) -> str:
    """What identifies a training run for resuming: same fingerprint, same trajectory."""
    payload = {
        "config": config.to_dict(),
        "preprocessing_sha256": preprocessing_sha256,
        "data_sha256": training_data_sha256,
        "world_size": world_size,
        "checkpoint_format": CHECKPOINT_FORMAT,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _load_checkpoint(path: Path, expected: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated/corrupt file must not stop a fresh start; say so loudly
        log.warning(
            "checkpoint %s cannot be read (%s): starting from scratch; it will be replaced", path, exc
        )
        return None
    found = state.get("fingerprint")
    if found != expected:
        log.warning(
            "checkpoint %s belongs to another run (fingerprint %s, this run %s): ignoring it;"
            " it will be replaced after the first epoch",
            path, str(found)[:12], expected[:12],
        )  # fmt: skip
        return None
    return state


# -- training ------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """A trained model (CPU, eval mode, best epoch's weights) and everything needed to judge and save it."""

    model: TabularNet
    preprocessor: Preprocessor
    config: ModelConfig
    history: list[dict[str, float]]
    best_epoch: int
    threshold: float
    metrics: dict[str, dict[str, float]]  # "validation" / "test" -> binary_metrics
    pos_weight: float
    fingerprint: str
    data_sha256: str
    device: str
    world_size: int = 1
    rank: int = 0
    resumed_from_epoch: int = 0
    split: dict[str, Any] = field(default_factory=dict)

    def weights_sha256(self) -> str:
        """Hash of the final weights and buffers (equal across DDP ranks; equal for a resumed run)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def bundle_metadata(self, **extra: Any) -> dict[str, Any]:
        """model.json content for :func:`~ml_tasks.models.network.save_bundle` (plus ``extra``)."""
        return {
            "threshold": self.threshold,
            "threshold_rule": "max F1 on the validation split",
            "metrics": self.metrics,
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "pos_weight": self.pos_weight,
            "training_fingerprint": self.fingerprint,
            "training_data_sha256": self.data_sha256,
            "split": self.split,
            "device": self.device,
            "world_size": self.world_size,
            **extra,
        }


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices); prefer deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # cuBLAS needs this to be deterministic; it must be set before the first CUDA call of the process
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def _batches(loader: DataLoader[Any], plan: DevicePlan) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    non_blocking = plan.pin_memory
    for numeric, categorical, y in loader:
        yield (
            numeric.to(plan.device, non_blocking=non_blocking),
            categorical.to(plan.device, non_blocking=non_blocking),
            y.to(plan.device, non_blocking=non_blocking),
        )


def train_model(
    split: Split,
    config: ModelConfig,
    *,
    checkpoint_dir: Path | None,
    device: str | None = None,
    log_metrics: MetricsLogger | None = None,
) -> TrainResult:
    """Fit a :class:`TabularNet` on ``split.train`` (see the module docstring for the policy).

    Args:
        split: from :func:`split_by_time` (or any disjoint train / validation / test tables).
        config: model and optimisation settings.
        checkpoint_dir: where ``last.pt`` lives (None: no checkpoints, no resume).
        device: None / "auto", "cpu", "cuda", "cuda:N".
        log_metrics: called on rank 0 after every epoch with the epoch's metrics and the epoch number.

    Returns:
        the model with the best epoch's weights (CPU, eval mode) and its metrics on validation and test.

    Raises:
        ValueError: an empty or single-class train split, or unusable columns.
    """
    info = dist_from_env()
    plan = detect_device(device, info.local_rank)
    created_group = _init_process_group(info, plan)
    try:
        return _train(split, config, checkpoint_dir, plan, info, log_metrics)
    finally:
        if created_group:
            torch_dist.destroy_process_group()


def _train(
    split: Split,
    config: ModelConfig,
    checkpoint_dir: Path | None,
    plan: DevicePlan,
    info: DistInfo,
    log_metrics: MetricsLogger | None,
) -> TrainResult:
    started = time.perf_counter()
    seed_everything(config.seed)
    inputs = infer_inputs(split.train.schema)
    preprocessor = Preprocessor.fit(
        split.train, inputs, min_count=config.min_count, numeric_bins=config.numeric_bins
    )
    encoded = {name: preprocessor.encode(getattr(split, name)) for name in ("train", "validation", "test")}
    y = {name: labels(getattr(split, name)) for name in ("train", "validation", "test")}
    positives = int(y["train"].sum())
    negatives = len(y["train"]) - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"the train split has only one class ({positives} positive, {negatives} negative rows)"
        )
    pos_weight = config.pos_weight_value(positives, negatives)
    data_hash = data_sha256([(encoded[n], y[n]) for n in ("train", "validation", "test")])
    run_fingerprint = fingerprint(config, preprocessor.sha256(), data_hash, info.world_size)

    model = TabularNet(config, preprocessor)
    prior = positives / len(y["train"])
    # the loss sees positives weighted: its optimum log-odds are log(w * p / (1 - p)); start there
    model.init_output(math.log(pos_weight * prior / (1.0 - prior)), -math.log(pos_weight))
    model.to(plan.device)
    wrapped: nn.Module = _Logits(model)
    if info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            wrapped, device_ids=[info.local_rank] if plan.device.startswith("cuda") else None
        )
    # foreach: one fused kernel per step over all tensors (the per-tensor loop is the default on the CPU)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=True
    )
    scaler = torch.amp.GradScaler("cuda", enabled=plan.grad_scaler)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=plan.device))

    dataset = _Arrays(encoded["train"], y["train"])
    sampler: DistributedSampler[int] = DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=config.seed, drop_last=False
    )
    loader: DataLoader[Any] = DataLoader(
        dataset,
        sampler=BatchSampler(sampler, batch_size=config.batch_size, drop_last=False),
        batch_size=None,
        num_workers=0,  # the arrays are in memory: worker processes would only copy them
        pin_memory=plan.pin_memory,
    )

    history: list[dict[str, float]] = []
    best_loss, best_epoch, bad_epochs = math.inf, 0, 0
    best_state: dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_epoch, finished, resumed_from = 1, False, 0
    ckpt_path = checkpoint_dir / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if ckpt_path is not None:
        state = _load_checkpoint(ckpt_path, run_fingerprint) if info.is_main else None
        if info.world_size > 1:
            # rank 0's view decides (other nodes may not see its disk): every rank resumes from the same state
            shared: list[Any] = [state]
            torch_dist.broadcast_object_list(shared, src=0)
            state = shared[0]
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            stopping = state["early_stopping"]
            best_loss, best_epoch, bad_epochs = (
                stopping["best_loss"],
                stopping["best_epoch"],
                stopping["bad_epochs"],
            )
            best_state = stopping["best_state"]
            history = list(state["history"])
            finished = bool(state["finished"])
            resumed_from = int(state["epoch"])
            start_epoch = resumed_from + 1
            _set_rng_state(state["rng"])
            log.info(
                "resuming from %s: %d epoch(s) done%s",
                ckpt_path,
                resumed_from,
                " (run had finished)" if finished else "",
            )

    epoch = start_epoch
    while not finished and epoch <= config.max_epochs:
        sampler.set_epoch(epoch)  # the shuffle is a function of (seed, epoch): resumable
        wrapped.train()
        t0 = time.perf_counter()
        total_loss, seen = 0.0, 0
        for numeric, categorical, target in _batches(loader, plan):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(
                device_type="cuda" if plan.amp_dtype else "cpu",
                dtype=plan.amp_dtype,
                enabled=plan.amp_dtype is not None,
            ):
                logits = wrapped(numeric, categorical)
                loss = loss_fn(logits.float(), target)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP_NORM)
            scaler.step(optimizer)
            scaler.update()
            total_loss += float(loss.detach()) * target.shape[0]
            seen += int(target.shape[0])
        seconds = time.perf_counter() - t0
        val_p = predict_encoded(model, encoded["validation"].numeric, encoded["validation"].categorical)
        val = binary_metrics(y["validation"], val_p)
        # rows of the whole train split per second of this epoch (all ranks together)
        entry = {
            "epoch": float(epoch),
            "train_loss": total_loss / max(seen, 1),
            "val_log_loss": val["log_loss"],
            "val_roc_auc": val.get("roc_auc", float("nan")),
            "val_pr_auc": val.get("pr_auc", float("nan")),
            "seconds": seconds,
            "rows_per_second": len(dataset) / seconds if seconds > 0 else float("inf"),
        }
        history.append(entry)
        improved = val["log_loss"] < best_loss - 1e-6
        if improved:
            best_loss, best_epoch, bad_epochs = val["log_loss"], epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        stop = bad_epochs >= config.patience or epoch >= config.max_epochs
        if info.world_size > 1:  # rank 0 decides for everyone: no rank can train an extra epoch alone
            flag = torch.tensor([1 if stop else 0], device=plan.device)
            torch_dist.broadcast(flag, src=0)
            stop = bool(flag.item())
        finished = stop
        log.info(
            "epoch %d: train loss %.4f, val log loss %.4f, val AUC %.4f, %.0f rows/s%s",
            epoch, entry["train_loss"], entry["val_log_loss"], entry["val_roc_auc"], entry["rows_per_second"],
            " (best)" if improved else "",
        )  # fmt: skip
        if ckpt_path is not None and info.is_main:
            _atomic_torch_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "fingerprint": run_fingerprint,
                    "epoch": epoch,
                    "finished": finished,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "early_stopping": {
                        "best_loss": best_loss,
                        "best_epoch": best_epoch,
                        "bad_epochs": bad_epochs,
                        "best_state": best_state,
                    },
                    "history": history,
                    "rng": _rng_state(),
                },
                ckpt_path,
            )
        if log_metrics is not None and info.is_main:
            log_metrics({k: v for k, v in entry.items() if k != "epoch" and math.isfinite(v)}, epoch)
        epoch += 1

    final = TabularNet(config, preprocessor)
    final.load_state_dict({k: v.cpu() for k, v in best_state.items()})
    final.eval()
    metrics: dict[str, dict[str, float]] = {}
    val_p = predict_encoded(final, encoded["validation"].numeric, encoded["validation"].categorical)
    threshold = f1_threshold(y["validation"], val_p)
    metrics["validation"] = binary_metrics(y["validation"], val_p)
    if len(y["test"]):
        test_p = predict_encoded(final, encoded["test"].numeric, encoded["test"].categorical)
        metrics["test"] = binary_metrics(y["test"], test_p)
    log.info(
        "trained in %.1f s: best epoch %d of %d, validation %s, test %s, threshold %.3f",
        time.perf_counter() - started, best_epoch, len(history), _short(metrics["validation"]),
        _short(metrics.get("test", {})), threshold,
    )  # fmt: skip
    result = TrainResult(
        model=final,
        preprocessor=preprocessor,
        config=config,
        history=history,
        best_epoch=best_epoch,
        threshold=threshold,
        metrics=metrics,
        pos_weight=pos_weight,
        fingerprint=run_fingerprint,
        data_sha256=data_hash,
        device=plan.device,
        world_size=info.world_size,
        rank=info.rank,
        resumed_from_epoch=resumed_from,
        split=split.describe(),
    )
    log.info("rank %d of %d: final weights sha256 %s", info.rank, info.world_size, result.weights_sha256())
    return result


class _Logits(nn.Module):
    """The training logits as a module's ``forward``: DDP synchronises gradients of ``forward`` only."""

    def __init__(self, net: TabularNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, numeric: Tensor, categorical: Tensor) -> Tensor:
        return self.net.logits(numeric, categorical)


def _short(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("roc_auc", "pr_auc", "log_loss"))


# -- entry point (torchrun) ----------------------------------------------------------------------------


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ml_tasks.training.train``: train on one file and write a bundle (rank 0)."""
    parser = argparse.ArgumentParser(prog="python -m ml_tasks.training.train", description=main.__doc__)
    parser.add_argument("--training-set", required=True, help="training set parquet file (or a trips CSV)")
    parser.add_argument("--out", required=True, help="bundle directory to write (rank 0 only)")
    parser.add_argument(
        "--checkpoint-dir", default=None, help="checkpoint directory (default: <out>.checkpoints beside it)"
    )
    parser.add_argument("--config", default=None, help="ModelConfig overrides as a JSON object")
    parser.add_argument("--epochs", type=int, default=None, help="max_epochs override")
    parser.add_argument("--batch-size", type=int, default=None, help="per-process batch size override")
    parser.add_argument("--seed", type=int, default=None, help="seed override")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share (by time)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="test share (newest)")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    parser.add_argument("--mapping", default="tfx", help="column mapping when --training-set is a CSV")
    args = parser.parse_args(argv)
    info = dist_from_env()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=f"%(asctime)s rank{info.rank} %(name)s %(message)s"
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = json.loads(args.config) if args.config else {}
    for key, value in (("max_epochs", args.epochs), ("batch_size", args.batch_size), ("seed", args.seed)):
        if value is not None:
            overrides[key] = value
    config = ModelConfig.from_dict(overrides)
    out = Path(args.out)
    checkpoint_dir = (
        Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_name(out.name + ".checkpoints")
    )
    result, summary = train_from_file(
        args.training_set,
        out,
        config,
        checkpoint_dir=checkpoint_dir,
        device=args.device,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        mapping=args.mapping,
    )
    if result.rank == 0:  # one JSON line on stdout for the whole job
        print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
