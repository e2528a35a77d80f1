"""The monitoring decision: every branch of ``policy.decide`` (pure: no I/O)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from ml_tasks.intervals import Interval
from ml_tasks.monitoring.policy import (
    DRIFT,
    NO_DRIFT,
    PERFORMANCE,
    PolicyConfig,
    consecutive_alerts,
    cooldown_state,
    decide,
    earlier_decisions,
)
from ml_tasks.settings import Settings

CONFIG = PolicyConfig(
    drift_share=0.3, prediction_drift=True, hysteresis=2, cooldown_days=7, max_auc_drop=0.05
)
MODEL = {"name": "taxi_tips", "version": "3"}


def day(n: int) -> dt.date:
    return dt.date(2024, 1, 1) + dt.timedelta(days=n)


def interval(n: int) -> Interval:
    return Interval(day(n), day(n + 1))


def drift(
    share: float | None = 0.5, drifted: list[str] | None = None, prediction: bool = False
) -> dict[str, Any]:
    tested = ["fare", "company", "payment_type", "trip_miles"]
    return {
        "drift_share": share,
        "drifted_columns": drifted if drifted is not None else ["fare", "company"],
        "tested_columns": tested,
        "excluded_columns": {},
        "degenerate_columns": {},
        "columns": {c: {"method": "Jensen-Shannon distance", "threshold": 0.1, "score": 0.2, "drifted": True}
                    for c in tested},
        "prediction_drift": {"column": "score", "method": "Wasserstein distance (normed)", "threshold": 0.1,
                             "score": 0.3 if prediction else 0.01, "drifted": prediction},
    }  # fmt: skip


NO = drift(0.0, [])


def previous(n: int, verdict: str = DRIFT, retrain: bool = False, version: str = "3") -> dict[str, Any]:
    return {
        "interval": {"start": day(n).isoformat(), "end": day(n + 1).isoformat()},
        "verdict": verdict,
        "retrain": retrain,
        "model": {"name": "taxi_tips", "version": version},
    }


def run(n: int, d: dict[str, Any], prev: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    return decide(
        interval=interval(n), model=MODEL, drift=d, performance=kw.pop("performance", None),
        previous=prev or [], config=kw.pop("config", CONFIG), **kw,
    )  # fmt: skip


def test_no_drift_is_no_alert_and_no_retrain() -> None:
    result = run(5, NO)
    assert (result["verdict"], result["alert"], result["retrain"], result["consecutive_drift"]) == (
        NO_DRIFT, False, False, 0,
    )  # fmt: skip
    assert result["reasons"][0] == "0 of 4 input column(s) drifted: share 0.00 < 0.30, no dataset drift"


def test_first_drift_waits_for_hysteresis() -> None:
    result = run(5, drift(0.5))
    assert result["verdict"] == DRIFT and result["alert"] is True and result["retrain"] is False
    assert result["consecutive_drift"] == 1
    assert "2 of 4 input column(s) drifted (fare, company): share 0.50 >= 0.30" in result["reasons"]
    assert "drift on 1 consecutive interval(s), hysteresis needs 2: no retrain yet" in result["reasons"]


def test_second_consecutive_drift_retrains() -> None:
    result = run(5, drift(0.5), [previous(3, NO_DRIFT), previous(4)])
    assert result["consecutive_drift"] == 2 and result["retrain"] is True
    assert result["reasons"][-1] == (
        "drift on 2 consecutive interval(s) (hysteresis 2), no earlier retrain request: retrain"
    )


def test_hysteresis_one_retrains_at_once() -> None:
    config = PolicyConfig(hysteresis=1)
    assert run(5, drift(0.5), config=config)["retrain"] is True


def test_share_exactly_at_the_threshold_is_drift() -> None:
    assert run(5, drift(0.3, ["fare"]))["verdict"] == DRIFT
    assert run(5, drift(0.29, ["fare"]))["verdict"] == NO_DRIFT


def test_prediction_drift_alone_is_drift_unless_switched_off() -> None:
    d = drift(0.0, [], prediction=True)
    on = run(5, d)
    assert on["verdict"] == DRIFT
    assert any(
        r.startswith("prediction drift detected: score Wasserstein distance (normed) 0.300")
        for r in on["reasons"]
    )
    off = run(5, d, config=PolicyConfig(prediction_drift=False))
    assert off["verdict"] == NO_DRIFT
    assert any("reported only" in r for r in off["reasons"])


def test_cooldown_blocks_a_second_retrain_in_data_time() -> None:
    prev = [previous(7), previous(8, retrain=True), previous(9)]
    result = run(10, drift(0.5), prev)
    assert result["consecutive_drift"] == 4 and result["retrain"] is False
    assert (
        "cooldown: last retrain requested for interval ending 2024-01-10, 2 of 7 days ago: no retrain"
        in result["reasons"]
    )
    assert result["cooldown"] == {
        "active": True, "days": 7, "last_retrain_interval_end": "2024-01-10", "days_since": 2,
    }  # fmt: skip


def test_cooldown_ends_after_the_configured_days() -> None:
    prev = [previous(8, retrain=True)] + [previous(n) for n in range(9, 15)]
    result = run(15, drift(0.5), prev)  # interval ends 2024-01-17, last retrain interval ended 2024-01-10
    assert result["cooldown"]["days_since"] == 7 and result["cooldown"]["active"] is False
    assert result["retrain"] is True
    assert "last retrain requested 7 days before (cooldown 7)" in result["reasons"][-1]


def test_cooldown_zero_never_blocks() -> None:
    config = PolicyConfig(cooldown_days=0, hysteresis=1)
    assert run(9, drift(0.5), [previous(8, retrain=True)], config=config)["retrain"] is True


def test_a_gap_restarts_the_consecutive_count() -> None:
    result = run(5, drift(0.5), [previous(2), previous(3)])  # day 4 was never monitored
    assert result["consecutive_drift"] == 1 and result["retrain"] is False
    assert any("does not end where the next one starts (2024-01-06)" in r for r in result["reasons"])


def test_a_new_model_version_restarts_the_consecutive_count() -> None:
    result = run(5, drift(0.5), [previous(4, version="2")])
    assert result["consecutive_drift"] == 1 and result["retrain"] is False
    assert any("monitored on model version 2, this one on 3" in r for r in result["reasons"])


def test_a_rerun_never_counts_itself_nor_later_intervals() -> None:
    prev = [previous(4), previous(5, retrain=True), previous(6, retrain=True)]
    result = run(5, drift(0.5), prev)
    assert result["consecutive_drift"] == 2 and result["retrain"] is True
    assert earlier_decisions(prev, interval(5)) == [prev[0]]


def test_unordered_previous_decisions_are_sorted() -> None:
    prev = [previous(4), previous(2, NO_DRIFT), previous(3)]
    assert run(5, drift(0.5), prev)["consecutive_drift"] == 3


def test_model_trained_on_the_interval_does_not_retrain() -> None:
    result = run(5, drift(0.5), [previous(4)], model_trained_until=day(6))
    assert result["retrain"] is False
    assert any("trained on data up to 2024-01-07 (exclusive)" in r for r in result["reasons"])
    assert run(5, drift(0.5), [previous(4)], model_trained_until=day(5))["retrain"] is True


def performance(auc: float, baseline: float | None = 0.9) -> dict[str, Any]:
    return {
        "status": "evaluated",
        "interval": {"start": day(3).isoformat(), "end": day(4).isoformat()},
        "metrics": {"roc_auc": auc},
        "baseline": {"roc_auc": baseline, "source": "version 3 tag flywheel.metric.eval_roc_auc"},
    }


def test_performance_drop_beyond_the_tolerance_alerts() -> None:
    result = run(5, NO, performance=performance(0.8))
    assert result["verdict"] == PERFORMANCE and result["alert"] is True
    assert result["performance"]["alert"] is True
    assert result["performance"]["auc_drop"] == pytest.approx(0.1)
    assert any("drop 0.100 > 0.050, performance alert" in r for r in result["reasons"])


def test_performance_drop_within_the_tolerance_does_not_alert() -> None:
    result = run(5, NO, performance=performance(0.86))
    assert result["verdict"] == NO_DRIFT and result["performance"]["alert"] is False
    assert any("drop 0.040 <= 0.050" in r for r in result["reasons"])


def test_drift_wins_over_performance_in_the_verdict() -> None:
    result = run(5, drift(0.5), performance=performance(0.5))
    assert result["verdict"] == DRIFT and result["performance"]["alert"] is True


def test_labels_not_landed_is_reported_without_alert() -> None:
    perf = {"status": "labels_not_landed", "reason": "labels not landed for [2024-01-04, 2024-01-05): x"}
    result = run(5, NO, performance=perf)
    assert result["performance"]["alert"] is False
    assert "labels not landed for [2024-01-04, 2024-01-05): x" in result["reasons"]


def test_missing_baseline_is_no_alert() -> None:
    result = run(5, NO, performance=performance(0.5, baseline=None))
    assert result["performance"]["alert"] is False and result["performance"]["auc_drop"] is None


def test_no_comparable_column_is_no_drift() -> None:
    result = run(5, drift(None, []))
    assert result["verdict"] == NO_DRIFT
    assert result["reasons"][0].startswith("no input column could be compared")


def test_decision_is_json_with_stable_keys() -> None:
    result = run(5, drift(0.5), [previous(4)], performance=performance(0.88))
    assert json.loads(json.dumps(result)) == result
    assert sorted(result) == [
        "alert", "consecutive_drift", "cooldown", "data_quality", "drift", "format_version", "interval",
        "model", "model_trained_until", "performance", "prediction_drift", "reasons", "retrain", "thresholds",
        "verdict",
    ]  # fmt: skip
    assert result["thresholds"] == {
        "drift_share": 0.3, "prediction_drift": True, "hysteresis": 2, "cooldown_days": 7,
        "max_auc_drop": 0.05,
    }  # fmt: skip
    assert result["drift"]["column_methods"]["fare"] == {
        "method": "Jensen-Shannon distance", "threshold": 0.1, "score": 0.2,
    }  # fmt: skip


def test_helpers_directly() -> None:
    assert consecutive_alerts([], interval(5), "3", alert=False) == (0, None)
    assert cooldown_state([], interval(5), CONFIG)["active"] is False


def test_config_from_settings() -> None:
    settings = Settings(monitor_drift_share=0.4, drift_hysteresis=3, retrain_cooldown_days=2,
                        monitor_max_auc_drop=0.1, monitor_prediction_drift=False)  # fmt: skip
    assert PolicyConfig.from_settings(settings) == PolicyConfig(0.4, False, 3, 2, 0.1)
