"""Behavioural tests: invariances and directional expectations catch what they should."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ml_tasks.training.evaluation import behaviour
from tests.unit.training.evaluation._tables import FnScorer, payment_fare_score


def _by_name(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in results}


def test_perturbations_keep_the_request_features(evaluation: pa.Table) -> None:
    shifted = behaviour.shift_start_within_hour(evaluation, 7)
    before, after = evaluation["event_timestamp"], shifted["event_timestamp"]
    assert pc.all(pc.equal(pc.hour(before), pc.hour(after))).as_py()
    assert pc.all(pc.equal(pc.day(before), pc.day(after))).as_py()
    assert not pc.any(pc.equal(before, after)).as_py()
    moved = pc.add(evaluation["fare"], 0.01)
    plus = behaviour.add_to_fare(evaluation)
    assert np.allclose(plus["fare"].to_numpy(), moved.to_numpy())
    miles = evaluation["trip_miles"].to_numpy()
    fpm = plus["fare_per_mile"].to_numpy(zero_copy_only=False)
    positive = miles > 0
    assert np.allclose(fpm[positive], moved.to_numpy()[positive] / miles[positive])
    assert plus.schema == evaluation.schema


def test_behavioural_tests_pass_for_a_sensible_scorer(evaluation: pa.Table) -> None:
    results = _by_name(behaviour.behavioural_tests(FnScorer(payment_fare_score), evaluation))
    assert set(results) == {"start_minute_shift", "fare_plus_one_cent", "cash_to_credit_card",
                            "credit_card_to_cash"}  # fmt: skip
    assert all(r["passed"] and not r["skipped"] for r in results.values())
    assert results["cash_to_credit_card"]["measured"] == pytest.approx(0.59, abs=1e-3)
    assert results["start_minute_shift"]["measured"] == 1.0
    for r in results.values():
        assert {"name", "kind", "passed", "measured", "bound", "rows", "why"} <= set(r)


def test_directional_test_catches_a_scorer_that_ignores_payment_type(evaluation: pa.Table) -> None:
    ignores = FnScorer(lambda t: np.clip(t["fare"].to_numpy() / 100, 0, 1))
    results = _by_name(behaviour.behavioural_tests(ignores, evaluation))
    assert results["cash_to_credit_card"]["passed"] is False
    assert results["cash_to_credit_card"]["measured"] == pytest.approx(0.0)
    assert results["credit_card_to_cash"]["passed"] is False
    assert results["start_minute_shift"]["passed"] is True


def test_invariance_test_catches_a_scorer_noisy_to_the_minute(evaluation: pa.Table) -> None:
    def minute_noise(table: pa.Table) -> npt.NDArray[np.float64]:
        minute = pc.minute(table["event_timestamp"]).to_numpy().astype(float)
        return np.asarray(payment_fare_score(table) * 0.9 + minute / 6000, dtype=np.float64)

    results = _by_name(behaviour.behavioural_tests(FnScorer(minute_noise), evaluation))
    assert results["start_minute_shift"]["passed"] is False
    assert results["start_minute_shift"]["measured"] < 0.01
    assert results["start_minute_shift"]["max_abs_delta"] == pytest.approx(53 / 6000)


def test_invariance_test_catches_a_fare_step(evaluation: pa.Table) -> None:
    # a score that jumps at every whole dollar: a cent moves the fares just below one, nothing else
    def step(table: pa.Table) -> npt.NDArray[np.float64]:
        return np.asarray(0.1 + 0.5 * (np.floor(table["fare"].to_numpy()) % 2), dtype=np.float64)

    table = evaluation.set_column(evaluation.schema.get_field_index("fare"), "fare",
                                  pa.array(np.full(evaluation.num_rows, 10.995)))  # fmt: skip
    results = _by_name(behaviour.behavioural_tests(FnScorer(step), table))
    assert results["fare_plus_one_cent"]["passed"] is False
    assert results["fare_plus_one_cent"]["measured"] == 0.0
    mid_dollar = table.set_column(
        table.schema.get_field_index("fare"), "fare", pa.array(np.full(table.num_rows, 10.5))
    )
    assert (
        _by_name(behaviour.behavioural_tests(FnScorer(step), mid_dollar))["fare_plus_one_cent"]["measured"]
        == 1.0
    )


def test_behavioural_tests_skip_what_cannot_be_perturbed(evaluation: pa.Table) -> None:
    no_cash = evaluation.filter(pc.not_equal(evaluation["payment_type"], "Cash"))
    results = _by_name(behaviour.behavioural_tests(FnScorer(payment_fare_score), no_cash))
    assert results["cash_to_credit_card"]["skipped"] is True and results["cash_to_credit_card"]["rows"] == 0
    assert results["credit_card_to_cash"]["skipped"] is False


def test_behavioural_tests_reject_a_misaligned_scorer(evaluation: pa.Table) -> None:
    with pytest.raises(ValueError, match="shape"):
        behaviour.behavioural_tests(FnScorer(lambda t: np.zeros(3)), evaluation)
