"""The hyperparameter search (Optuna TPE + median pruning + a time budget), with a fast fake objective.

Trial 0 is the defaults; trials are seeded (same seed and results, same trials) and inside the space; pins
apply to all; a trial trailing the median is pruned; the time budget stops the search between trials.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from ml_tasks.models.network import ModelConfig
from ml_tasks.training.search import HIDDEN, SPACE, Report, search


def fake(number: int, config: ModelConfig, report: Report) -> tuple[float, Any]:
    """A score peaked at lr 2e-3 and the default bins, reported over 5 epochs (rising to it)."""
    final = 0.9 - abs(config.lr - 2e-3) * 20 - abs(config.numeric_bins - ModelConfig().numeric_bins) / 1000
    for epoch in range(1, 6):
        report(final - (5 - epoch) * 0.01, epoch)
    return final, {"number": number}


def test_trial_zero_is_the_default_config_with_the_seed() -> None:
    [only] = search(fake, trials=1, seed=7)
    assert only.config == ModelConfig().replace(seed=7) and only.number == 0
    assert only.score == pytest.approx(0.9) and only.result == {"number": 0} and not only.pruned


def test_trials_are_seeded_and_inside_the_space() -> None:
    first = search(fake, trials=6, seed=11)
    again = search(fake, trials=6, seed=11)
    assert [t.config for t in first] == [t.config for t in again], "same seed, same trials"
    assert [t.config for t in first] != [t.config for t in search(fake, trials=6, seed=12)]
    assert [t.config.seed for t in first] == [11, 12, 13, 14, 15, 16]
    assert len({t.config for t in first}) == 6, "no duplicate trials"
    for trial in first[1:]:
        c = trial.config
        assert (
            SPACE["lr"][0] <= c.lr <= SPACE["lr"][1]
            and SPACE["dropout"][0] <= c.dropout <= SPACE["dropout"][1]
        )
        assert c.numeric_bins in SPACE["numeric_bins"] and c.hidden in HIDDEN.values()


def test_pinned_values_apply_to_every_trial() -> None:
    trials = search(fake, trials=4, seed=3, pinned={"max_epochs": 1, "lr": 1e-6})
    assert {(t.config.max_epochs, t.config.lr) for t in trials} == {(1, 1e-6)}


def test_a_trial_trailing_the_median_is_pruned() -> None:
    def objective(number: int, config: ModelConfig, report: Report) -> tuple[float, Any]:
        level = 0.5 if number == 3 else 0.9  # trial 3 is far behind from its first epochs
        for epoch in range(1, 6):
            report(level, epoch)
        return level, None

    trials = search(objective, trials=5, seed=1)
    assert [t.pruned for t in trials] == [False, False, False, True, False]
    assert trials[3].score is None and trials[3].result is None


def test_the_time_budget_stops_between_trials() -> None:
    def slow(number: int, config: ModelConfig, report: Report) -> tuple[float, Any]:
        time.sleep(0.3)
        return 0.9, None

    trials = search(slow, trials=20, seed=1, seconds=0.5)
    assert 2 <= len(trials) <= 3  # trial 0 always runs; no new trial starts after the budget
    assert len(search(slow, trials=3, seed=1, seconds=0.0)) == 1


def test_bad_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="trials must be >= 1"):
        search(fake, trials=0, seed=1)
    with pytest.raises(ValueError, match=r"\['epochs'\] are not ModelConfig fields"):
        search(fake, trials=2, seed=1, pinned={"epochs": 3})
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        search(fake, trials=2, seed=1, seconds=-1)
