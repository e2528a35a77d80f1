"""The tabular model (:class:`TabularNet`), its configuration and the bundle a trained candidate lives in.

``TabularNet.forward(numeric, categorical)`` takes raw numeric values (normalised inside) and vocabulary
indices and returns the calibrated PROBABILITY of a big tipper; ``logits()`` (for the loss) is before the
``pos_weight`` correction. Design notes: ``docs/training.md``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
from torch import Tensor, nn

from ml_tasks.contract import LABEL, MODEL_FILE, MODEL_JSON, PREPROCESSING_JSON
from ml_tasks.errors import FlywheelError
from ml_tasks.models.layers import (
    MemberHeads,
    coarsen,
    mlp_blocks,
    piecewise_linear,
    ple_tables,
    scaled_views,
)
from ml_tasks.models.numeric_stats import DEFAULT_NUMERIC_BINS, BinMethod
from ml_tasks.models.preprocess import BinInputs, Preprocessor
from ml_tasks.storage import atomic_write_bytes

log = logging.getLogger(__name__)

BUNDLE_FORMAT = 1

PosWeightPolicy = Literal["balanced", "sqrt", "none"]
StopOn = Literal["roc_auc", "log_loss"]
LrSchedule = Literal["cosine", "constant"]


class BundleError(FlywheelError, ValueError):
    """A bundle directory that is incomplete or inconsistent (names the file and the problem)."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and optimisation settings (everything that defines a training run besides the data).

    Embedding width of a column with ``n`` rows: ``min(max_embedding_dim, max(2, round(1.6 * n ** 0.56)))``
    (the fast.ai rule of thumb: grows sub-linearly with the vocabulary).

    ``pos_weight``: ``balanced`` = negatives / positives of the train split; ``sqrt`` = its square root (a
    milder push); ``none`` = 1.
    """

    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    activation: Literal["relu", "gelu"] = "relu"
    max_embedding_dim: int = 16
    clip: float = 8.0
    #: piecewise-linear-encoding bins per numeric input (at most; 0 = off); the preprocessor's edges
    numeric_bins: int = DEFAULT_NUMERIC_BINS
    #: where the bins' edges fall: ``target``-aware (a per-column tree on the label) or ``quantile``
    numeric_bin_method: BinMethod = "target"
    #: which numeric inputs are binned: the ``trip``'s own (fare, miles, ...) or ``all`` (also the
    #: ``<view>__<feature>`` aggregates: ~40 more binned inputs in the demo, 4x slower scoring)
    bin_inputs: BinInputs = "trip"
    min_count: int = 20
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 512
    max_epochs: int = 20
    patience: int = 3
    seed: int = 0
    pos_weight: PosWeightPolicy = "balanced"
    #: members of the parameter-efficient ensemble (TabM-mini: one shared MLP, a per-member multiplicative
    #: adapter on its input and a per-member head; probabilities averaged inside the model); 1 = a plain MLP
    ensemble: int = 1
    #: the validation metric early stopping keeps the best epoch by (``roc_auc``: the gate's metric)
    stop_on: StopOn = "roc_auc"
    #: ``cosine``: the learning rate decays per step from ``lr`` to ``lr / 10`` over ``max_epochs``
    lr_schedule: LrSchedule = "constant"

    def __post_init__(self) -> None:
        problems = []
        if not self.hidden or any(h < 1 for h in self.hidden):
            problems.append(f"hidden must be positive layer widths, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.activation not in ("relu", "gelu"):
            problems.append(f"activation must be relu or gelu, got {self.activation!r}")
        if self.stop_on not in ("roc_auc", "log_loss"):
            problems.append(f"stop_on must be roc_auc or log_loss, got {self.stop_on!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            problems.append(f"lr_schedule must be cosine or constant, got {self.lr_schedule!r}")
        if self.numeric_bin_method not in ("target", "quantile"):
            problems.append(f"numeric_bin_method must be target or quantile, got {self.numeric_bin_method!r}")
        if self.bin_inputs not in ("trip", "all"):
            problems.append(f"bin_inputs must be trip or all, got {self.bin_inputs!r}")
        if self.pos_weight not in ("balanced", "sqrt", "none"):
            problems.append(f"pos_weight must be balanced, sqrt or none, got {self.pos_weight!r}")
        for name in ("max_embedding_dim", "min_count", "batch_size", "max_epochs", "patience", "ensemble"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.numeric_bins < 0:
            problems.append(f"numeric_bins must be >= 0, got {self.numeric_bins}")
        if self.lr <= 0 or self.weight_decay < 0 or self.clip <= 0:
            problems.append(
                f"lr and clip must be > 0 and weight_decay >= 0 ({self.lr}, {self.clip}, {self.weight_decay})"
            )
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    def lr_at(self, progress: float) -> float:
        """The learning rate at ``progress`` = epochs done (fractional) / ``max_epochs``."""
        if self.lr_schedule == "constant":
            return self.lr
        floor = self.lr / 10
        return floor + (self.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))

    def embedding_dim(self, rows: int) -> int:
        return min(self.max_embedding_dim, max(2, round(1.6 * math.pow(rows, 0.56))))

    def pos_weight_value(self, positives: int, negatives: int) -> float:
        """The loss weight of positives for a train split with these counts (1 when a class is absent)."""
        if self.pos_weight == "none" or positives == 0 or negatives == 0:
            return 1.0
        ratio = negatives / positives
        return math.sqrt(ratio) if self.pos_weight == "sqrt" else ratio

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict` (unknown keys are an error: a typo must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; known: {sorted(known)}")
        values = dict(data)
        if "hidden" in values:
            values["hidden"] = tuple(int(h) for h in values["hidden"])
        return cls(**values)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


class TabularNet(nn.Module):
    """Embeddings + MLP over the preprocessor's inputs (see the module docstring)."""

    # buffers (declared for the type checker: nn.Module.__getattr__ is typed Tensor | Module)
    mean: Tensor
    std: Tensor
    log_mean: Tensor
    log_std: Tensor
    logit_offset: Tensor
    ple_lo: Tensor
    ple_inv_width: Tensor
    ple_mask: Tensor

    def __init__(self, config: ModelConfig, preprocessor: Preprocessor) -> None:
        super().__init__()
        self.config = config
        n_numeric = len(preprocessor.stats)
        self.n_numeric = n_numeric
        self.n_categorical = len(preprocessor.vocabularies)
        for name in ("mean", "std", "log_mean", "log_std"):
            values = [getattr(s, name) for s in preprocessor.stats]
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32))
        self.register_buffer("logit_offset", torch.zeros((), dtype=torch.float32))
        # PLE only when configured and fitted (an older preprocessing without edges has no such buffers)
        # only the inputs with edges are binned (gathered first: no padding rows for the others)
        coarse = [coarsen(s.edges, config.numeric_bins) for s in preprocessor.stats]
        self.binned = [j for j, e in enumerate(coarse) if len(e) >= 2]
        edges = [coarse[j] for j in self.binned]
        self.n_bins = max((len(e) - 1 for e in edges), default=0)
        if self.n_bins:
            lo, inv_width, mask = ple_tables(edges, self.n_bins)
            self.register_buffer("ple_lo", lo)
            self.register_buffer("ple_inv_width", inv_width)
            self.register_buffer("ple_mask", mask)
        # flattened straight into the first layer: a per-column linear map first (the paper's "LR") trained
        # no better here and stopped earlier
        sizes = preprocessor.vocabulary_sizes()
        self.embeddings = nn.ModuleList(nn.Embedding(n, config.embedding_dim(n)) for n in sizes)
        width = 3 * n_numeric + len(self.binned) * self.n_bins + sum(config.embedding_dim(n) for n in sizes)
        first = width
        self.mlp = mlp_blocks(width, config.hidden, config.activation, config.dropout)
        width = config.hidden[-1]
        self.members = config.ensemble
        self.head: nn.Module
        if self.members > 1:
            # TabM-mini: random +-1 signs make the members differ from the first step (seeded)
            signs = torch.randint(0, 2, (self.members, first), dtype=torch.float32) * 2 - 1
            self.adapter = nn.Parameter(signs)
            self.head = MemberHeads(self.members, width)
        else:
            self.head = nn.Linear(width, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for embedding in self._embeddings():
            nn.init.normal_(embedding.weight, std=0.1)
        head = self.head
        assert isinstance(head, nn.Linear | MemberHeads)
        nn.init.xavier_uniform_(head.weight, gain=0.1)  # small: start near the prior
        nn.init.zeros_(head.bias)

    def _embeddings(self) -> list[nn.Embedding]:
        return [m for m in self.embeddings if isinstance(m, nn.Embedding)]

    def init_output(self, prior_logit: float, logit_offset: float) -> None:
        """Start the output at the train split's (loss-weighted) log-odds; keep the calibration offset."""
        head = self.head
        assert isinstance(head, nn.Linear | MemberHeads)
        with torch.no_grad():
            head.bias.fill_(prior_logit)
            self.logit_offset.fill_(logit_offset)

    def features(self, numeric: Tensor, categorical: Tensor) -> Tensor:
        parts = scaled_views(numeric, (self.mean, self.std), (self.log_mean, self.log_std), self.config.clip)
        if self.n_bins:
            parts.append(self.piecewise_linear(numeric).flatten(1))
        parts += [emb(categorical[:, j]) for j, emb in enumerate(self._embeddings())]
        return torch.cat(parts, dim=1)

    def piecewise_linear(self, numeric: Tensor) -> Tensor:
        """The piecewise-linear encoding [N, B, bins] of the B binned inputs of raw ``numeric`` [N, F] (0
        where NaN / padding)."""
        if len(self.binned) < self.n_numeric:
            numeric = numeric[:, self.binned]
        return piecewise_linear(numeric, self.ple_lo, self.ple_inv_width * self.ple_mask)

    def logits(self, numeric: Tensor, categorical: Tensor) -> Tensor:
        """Training logits (before the class-weight correction; for the loss): [N], or [N, members] for an
        ensemble (each member is trained on its own loss, as in TabM)."""
        x = self.features(numeric, categorical)
        if self.members > 1:
            x = x.unsqueeze(1) * self.adapter  # [N, members, D]
        out: Tensor = self.head(self.mlp(x))
        return out.squeeze(-1)

    def forward(self, numeric: Tensor, categorical: Tensor) -> Tensor:
        """Calibrated probabilities [N] of the positive class (an ensemble's members' mean)."""
        p = torch.sigmoid(self.logits(numeric, categorical) + self.logit_offset)
        return p.mean(dim=-1) if self.members > 1 else p


# -- bundle ------------------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("numpy", "pyarrow", "ml-tasks"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


def save_bundle(
    directory: str | Path,
    model: TabularNet,
    preprocessor: Preprocessor,
    config: ModelConfig,
    metadata: dict[str, Any],
) -> None:
    """Write ``model.pt``, ``model.json`` and ``preprocessing.json`` into ``directory`` (each atomically).

    ``metadata`` goes into model.json as given (``threshold`` default 0.5; typical keys: training_set_uri,
    training_set_sha256, feature_service, metrics, mlflow_run_id); the keys written by this function
    (config, inputs, label, versions, preprocessing hash) cannot be overridden.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    threshold = float(metadata.get("threshold", 0.5))
    if not 0.0 < threshold < 1.0:
        raise BundleError(f"threshold must be in (0, 1), got {threshold}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(out / PREPROCESSING_JSON, preprocessor.to_json().encode())
    atomic_write_bytes(out / MODEL_FILE, buffer.getvalue())
    document = {
        **metadata,
        "format_version": BUNDLE_FORMAT,
        "config": config.to_dict(),
        "inputs": preprocessor.inputs.to_dict(),
        "label": LABEL,
        "threshold": threshold,
        "seed": config.seed,
        "preprocessing_sha256": preprocessor.sha256(),
        "library_versions": library_versions(),
    }
    # model.json last: its presence marks a complete bundle
    atomic_write_bytes(out / MODEL_JSON, json.dumps(document, indent=2, sort_keys=True, default=str).encode())
    log.info("bundle written: %s (preprocessing %s)", out, document["preprocessing_sha256"][:12])


@dataclass
class Bundle:
    """A loaded bundle: the model in eval mode on the CPU, its preprocessing and its model.json."""

    path: Path
    model: TabularNet
    preprocessor: Preprocessor
    config: ModelConfig
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    def predict_proba(self, table: pa.Table, batch_size: int = 65_536) -> npt.NDArray[np.float64]:
        """Probabilities of the positive class, row-aligned with ``table`` (float64)."""
        encoded = self.preprocessor.encode(table)
        return predict_encoded(self.model, encoded.numeric, encoded.categorical, batch_size)


def predict_encoded(
    model: TabularNet,
    numeric: npt.NDArray[np.float32],
    categorical: npt.NDArray[np.int64],
    batch_size: int = 65_536,
) -> npt.NDArray[np.float64]:
    """Probabilities for encoded arrays, in eval mode, batched (bounded memory), on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = np.empty(numeric.shape[0], dtype=np.float64)
    try:
        with torch.inference_mode():
            for start in range(0, numeric.shape[0], batch_size):
                stop = start + batch_size
                num = torch.from_numpy(numeric[start:stop]).to(device)
                cat = torch.from_numpy(categorical[start:stop]).to(device)
                out[start:stop] = model(num, cat).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def load_bundle(directory: str | Path) -> Bundle:
    """Load a bundle written by :func:`save_bundle` (CPU, eval mode).

    Raises:
        BundleError: a file is missing, or preprocessing.json does not match the hash in model.json.
    """
    path = Path(directory)
    for name in (MODEL_JSON, MODEL_FILE, PREPROCESSING_JSON):
        if not (path / name).is_file():
            raise BundleError(f"bundle {path} has no {name}")
    metadata = json.loads((path / MODEL_JSON).read_text())
    if metadata.get("format_version") != BUNDLE_FORMAT:
        raise BundleError(
            f"{path / MODEL_JSON}: format_version {metadata.get('format_version')!r} is not supported"
        )
    preprocessor = Preprocessor.from_json((path / PREPROCESSING_JSON).read_text())
    if preprocessor.sha256() != metadata.get("preprocessing_sha256"):
        raise BundleError(
            f"bundle {path}: {PREPROCESSING_JSON} (sha256 {preprocessor.sha256()[:12]}) is not the one"
            f" the model was trained with ({str(metadata.get('preprocessing_sha256'))[:12]})"
        )
    config = ModelConfig.from_dict(metadata["config"])
    model = TabularNet(config, preprocessor)
    state = torch.load(path / MODEL_FILE, map_location="cpu", weights_only=True)
    own = model.state_dict()
    for key in ("ple_lo", "ple_inv_width", "ple_mask"):
        # derived from preprocessing.json: an older bundle kept padding rows for inputs without edges
        if key in state and key in own and state[key].shape != own[key].shape:
            state[key] = own[key]
    model.load_state_dict(state, strict=True)
    model.eval()
    return Bundle(path, model, preprocessor, config, metadata)
