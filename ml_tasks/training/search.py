"""A small hyperparameter search: trial 0 is the default configuration, the others are seeded draws.

Pinned values apply to every trial; the same seed gives the same trials (docs/training.md).
"""

from __future__ import annotations

import random
from typing import Any

from ml_tasks.models.network import ModelConfig

#: field -> candidate values of the draws
SPACE: dict[str, tuple[Any, ...]] = {
    "hidden": ((128, 64), (256, 128), (64, 32), (256, 128, 64)),
    "dropout": (0.0, 0.1, 0.2),
    "lr": (1e-3, 3e-3, 6e-3),
    "weight_decay": (0.0, 1e-4, 1e-3),
    "activation": ("relu", "gelu"),
    "batch_size": (256, 512, 1024),
}


def trial_configs(
    trials: int, seed: int, base: ModelConfig | None = None, pinned: dict[str, Any] | None = None
) -> list[ModelConfig]:
    """``trials`` distinct configurations: the base first, then seeded draws from :data:`SPACE`.

    Args:
        trials: how many (>= 1).
        seed: seeds the draws and every trial's initialisation.
        base: trial 0 (default: :class:`ModelConfig` defaults).
        pinned: fields forced to the same value in every trial (e.g. ``{"max_epochs": 1}``).
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    pinned = dict(pinned or {})
    unknown = sorted(set(pinned) - set(ModelConfig().to_dict()))
    if unknown:
        raise ValueError(f"pinned field(s) {unknown} are not ModelConfig fields")
    first = (base or ModelConfig()).replace(seed=seed, **pinned)
    configs = [first]
    seen = {_key(first)}
    rng = random.Random(seed)
    attempts = 0
    while len(configs) < trials:
        attempts += 1
        draw = {name: rng.choice(values) for name, values in SPACE.items()}
        config = first.replace(**{**draw, **pinned}, seed=seed + len(configs))
        if _key(config) in seen and attempts < 1000:
            continue  # a duplicate trial teaches nothing
        seen.add(_key(config))
        configs.append(config)
    return configs


def _key(config: ModelConfig) -> tuple[Any, ...]:
    data = config.to_dict()
    data.pop("seed")
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in data.items()))
