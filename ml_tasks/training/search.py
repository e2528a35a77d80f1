"""The hyperparameter search: Optuna TPE over the few parameters that matter, with pruning and a time budget.

Trial 0 is always the default configuration (so ``trials=1`` is the defaults, a sensible daily retrain);
the next ones are TPE suggestions (seeded: the same seed and results give the same trials). A trial reports
its validation ROC-AUC per epoch; the median pruner stops one that trails the completed trials' median at
the same epoch. The search stops at ``trials`` or after ``seconds`` (checked between trials), whichever
comes first. Pinned values apply to every trial (docs/training.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ml_tasks.models.network import ModelConfig

#: the searched parameters and their ranges (the rest keep the base configuration's values)
HIDDEN = {"128-64": (128, 64), "256-128": (256, 128), "64-64": (64, 64), "256-128-64": (256, 128, 64)}
SPACE: dict[str, Any] = {
    "lr": (5e-4, 5e-3),  # log-uniform
    "dropout": (0.0, 0.3),
    "weight_decay": (1e-6, 1e-3),  # log-uniform
    "numeric_bins": (16, 32, 64),
    "hidden": tuple(HIDDEN),
}

#: report(validation ROC-AUC, epoch): raises :class:`Pruned` when the trial should stop
Report = Callable[[float, int], None]


class Pruned(Exception):
    """Raised inside a trial the pruner stopped (caught by :func:`search`)."""


@dataclass
class SearchTrial:
    """One trial: its configuration, its final validation score (None when pruned) and the objective's
    result (whatever it returned alongside the score)."""

    number: int
    config: ModelConfig
    score: float | None
    pruned: bool
    result: Any = None


def _suggest(trial: Any, base: ModelConfig, pinned: dict[str, Any]) -> ModelConfig:
    values = {
        "lr": trial.suggest_float("lr", *SPACE["lr"], log=True),
        "dropout": trial.suggest_float("dropout", *SPACE["dropout"]),
        "weight_decay": trial.suggest_float("weight_decay", *SPACE["weight_decay"], log=True),
        "numeric_bins": trial.suggest_categorical("numeric_bins", list(SPACE["numeric_bins"])),
        "hidden": HIDDEN[trial.suggest_categorical("hidden", list(SPACE["hidden"]))],
    }
    return base.replace(**{**values, **pinned}, seed=base.seed + trial.number)


def _as_params(config: ModelConfig) -> dict[str, Any] | None:
    """``config``'s searched values as Optuna parameters (None when one lies outside the space)."""
    hidden = next((k for k, v in HIDDEN.items() if v == config.hidden), None)
    lo_wd, hi_wd = SPACE["weight_decay"]
    if hidden is None or config.numeric_bins not in SPACE["numeric_bins"]:
        return None
    if not (SPACE["lr"][0] <= config.lr <= SPACE["lr"][1] and lo_wd <= config.weight_decay <= hi_wd):
        return None
    if not SPACE["dropout"][0] <= config.dropout <= SPACE["dropout"][1]:
        return None
    return {"lr": config.lr, "dropout": config.dropout, "weight_decay": config.weight_decay,
            "numeric_bins": config.numeric_bins, "hidden": hidden}  # fmt: skip


def search(
    objective: Callable[[int, ModelConfig, Report], tuple[float, Any]],
    *,
    trials: int,
    seed: int,
    seconds: float | None = None,
    base: ModelConfig | None = None,
    pinned: dict[str, Any] | None = None,
) -> list[SearchTrial]:
    """Run the search; return every trial (completed and pruned) in order.

    Args:
        objective: ``(number, config, report) -> (validation score, result)``; it calls ``report`` per
            epoch (which raises :class:`Pruned` to stop it).
        trials: at most this many (>= 1).
        seed: seeds TPE and every trial's initialisation (trial n: ``seed + n``).
        seconds: time budget (None: none); trial 0 always runs.
        base: trial 0 (default: :class:`ModelConfig` defaults).
        pinned: fields forced to the same value in every trial (e.g. ``{"max_epochs": 1}``).

    Raises:
        ValueError: ``trials < 1``, a pinned field that is not a ModelConfig field, a negative budget.
    """
    import optuna

    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if seconds is not None and seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    pinned = dict(pinned or {})
    unknown = sorted(set(pinned) - set(ModelConfig().to_dict()))
    if unknown:
        raise ValueError(f"pinned field(s) {unknown} are not ModelConfig fields")
    first = (base or ModelConfig()).replace(seed=seed, **pinned)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
    )
    defaults = _as_params(first)
    if defaults is not None:  # trial 0's values: TPE learns from the defaults' result too
        study.enqueue_trial(defaults)
    out: list[SearchTrial] = []
    started = time.perf_counter()
    for number in range(trials):
        if number and seconds is not None and time.perf_counter() - started >= seconds:
            break
        trial = study.ask()
        suggested = _suggest(trial, first, pinned)
        config = first if number == 0 else suggested

        def report(value: float, epoch: int, trial: Any = trial) -> None:
            if math.isfinite(value):
                trial.report(value, epoch)
                if trial.should_prune():
                    raise Pruned(f"trial {trial.number} pruned at epoch {epoch} (validation AUC {value:.4f})")

        try:
            score, result = objective(number, config, report)
        except Pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            out.append(SearchTrial(number, config, None, True))
            continue
        study.tell(trial, score if math.isfinite(score) else float("-inf"))
        out.append(SearchTrial(number, config, score, False, result))
    return out
