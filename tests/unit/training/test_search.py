"""The hyperparameter trials: trial 0 is the defaults, draws are seeded and distinct, pins apply to all."""

from __future__ import annotations

import pytest

from ml_tasks.models.network import ModelConfig
from ml_tasks.training.search import SPACE, trial_configs


def test_trial_zero_is_the_default_config_with_the_seed() -> None:
    [only] = trial_configs(1, seed=7)
    assert only == ModelConfig().replace(seed=7)


def test_draws_are_seeded_distinct_and_inside_the_space() -> None:
    first = trial_configs(5, seed=11)
    assert first == trial_configs(5, seed=11), "same seed, same trials (a retry resumes the same ones)"
    assert first != trial_configs(5, seed=12)
    assert [c.seed for c in first] == [11, 12, 13, 14, 15]
    keys = {tuple(sorted((k, str(v)) for k, v in c.to_dict().items() if k != "seed")) for c in first}
    assert len(keys) == 5, "no duplicate trials"
    for config in first[1:]:
        for name, values in SPACE.items():
            assert getattr(config, name) in values, (name, getattr(config, name))


def test_pinned_values_apply_to_every_trial() -> None:
    configs = trial_configs(4, seed=3, pinned={"max_epochs": 1, "lr": 1e-6})
    assert {(c.max_epochs, c.lr) for c in configs} == {(1, 1e-6)}


def test_bad_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="trials must be >= 1"):
        trial_configs(0, seed=1)
    with pytest.raises(ValueError, match=r"\['epochs'\] are not ModelConfig fields"):
        trial_configs(2, seed=1, pinned={"epochs": 3})
