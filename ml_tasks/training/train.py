"""The training loop: fit a :class:`TabularNet` on a time split, on CPU or CUDA, in one process or under DDP.

Early stopping on the validation ROC-AUC (the gate's metric; or the log loss), a cosine learning-rate
decay; the best epoch's weights are the result. Policy, determinism
and the DDP rules are in docs/training.md; torchrun runs ``ml-tasks train-worker`` (:func:`train_worker`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as torch_dist
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from ml_tasks.models.metrics import binary_metrics, f1_threshold
from ml_tasks.models.network import ModelConfig, TabularNet, predict_encoded
from ml_tasks.models.preprocess import Encoded, Preprocessor, infer_inputs, labels
from ml_tasks.training.checkpoint import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    data_sha256,
    fingerprint,
    resume_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ml_tasks.training.distributed import (
    DevicePlan,
    DistInfo,
    destroy_process_group,
    detect_device,
    dist_from_env,
    init_process_group,
)
from ml_tasks.training.split import Split, SplitError

log = logging.getLogger(__name__)

GRAD_CLIP_NORM = 1.0
MetricsLogger = Callable[[dict[str, float], int], None]


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
        SplitError: an empty or single-class train split, or unusable columns.
    """
    info = dist_from_env()
    plan = detect_device(device, info.local_rank)
    created_group = init_process_group(info, plan)
    try:
        return _train(split, config, checkpoint_dir, plan, info, log_metrics)
    finally:
        if created_group:
            destroy_process_group()


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
        split.train,
        inputs,
        min_count=config.min_count,
        numeric_bins=config.numeric_bins,
        bin_method=config.numeric_bin_method,
        bin_inputs=config.bin_inputs,
    )
    encoded = {name: preprocessor.encode(getattr(split, name)) for name in ("train", "validation", "test")}
    y = {name: labels(getattr(split, name)) for name in ("train", "validation", "test")}
    positives = int(y["train"].sum())
    negatives = len(y["train"]) - positives
    if positives == 0 or negatives == 0:
        raise SplitError(
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
    state = resume_state(ckpt_path, run_fingerprint, info) if ckpt_path is not None else None
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
        set_rng_state(state["rng"])
        log.info("resuming from %s: %d epoch(s) done%s", ckpt_path, resumed_from,
                 " (run had finished)" if finished else "")  # fmt: skip

    epoch = start_epoch
    while not finished and epoch <= config.max_epochs:
        sampler.set_epoch(epoch)  # the shuffle is a function of (seed, epoch): resumable
        wrapped.train()
        t0 = time.perf_counter()
        total_loss, seen = 0.0, 0
        steps = max(len(loader), 1)
        for step, (numeric, categorical, target) in enumerate(_batches(loader, plan)):
            # a function of (epoch, step) only: a resumed run continues the same schedule
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at((epoch - 1 + step / steps) / config.max_epochs)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(
                device_type="cuda" if plan.amp_dtype else "cpu",
                dtype=plan.amp_dtype,
                enabled=plan.amp_dtype is not None,
            ):
                logits = wrapped(numeric, categorical)
                # an ensemble's logits are [N, members]: every member learns from every row
                loss = loss_fn(
                    logits.float(), target.unsqueeze(-1).expand_as(logits) if logits.dim() > 1 else target
                )
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
        # the lower the better: minus the ROC-AUC (the gate's metric), or the log loss (also when a
        # one-class validation split has no AUC)
        by_auc = config.stop_on == "roc_auc" and "roc_auc" in val
        score = -val["roc_auc"] if by_auc else val["log_loss"]
        improved = score < best_loss - 1e-6
        if improved:
            best_loss, best_epoch, bad_epochs = score, epoch, 0
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
            save_checkpoint(
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
                    "rng": rng_state(),
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
