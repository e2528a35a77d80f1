"""``insufficient_data``: a sample too small to judge neither triggers nor resets the hysteresis."""

from __future__ import annotations

from typing import Any

from ml_tasks.monitoring.policy import DRIFT, INSUFFICIENT_DATA, NO_DRIFT, PERFORMANCE
from tests.unit.monitoring.test_policy import drift, previous, run

WHY = "12 current row(s): 4 input column(s) have fewer non-null values than the 30 a drift verdict needs"


def small() -> dict[str, Any]:
    return {
        "drift_share": None, "drifted_columns": [], "tested_columns": [], "counted_columns": [],
        "excluded_columns": {}, "degenerate_columns": {}, "insufficient_data": WHY,
        "columns": {
            "fare": {"kind": "numeric", "drifted": None, "sample_size": 12, "insufficient_data": "12 < 30"}
        },
        "prediction_drift": {"column": "score", "drifted": None, "insufficient_data": "12 < 30"},
    }  # fmt: skip


def test_too_small_a_sample_is_insufficient_data_not_an_alert() -> None:
    result = run(5, small(), [previous(4)])
    assert (result["verdict"], result["alert"], result["retrain"], result["consecutive_drift"]) == (
        INSUFFICIENT_DATA, False, False, 0,
    )  # fmt: skip
    assert result["reasons"][0] == f"insufficient data for a drift verdict: {WHY}"
    assert "prediction drift not judged: 12 < 30" in result["reasons"]
    assert result["drift"]["insufficient_data"] == WHY
    assert result["drift"]["column_methods"]["fare"]["sample_size"] == 12


def test_insufficient_data_does_not_break_the_chain() -> None:
    # drift, too small, drift: the chain bridges the small interval and counts 2 drifts
    result = run(5, drift(0.5), [previous(3), previous(4, INSUFFICIENT_DATA)])
    assert result["consecutive_drift"] == 2 and result["retrain"] is True


def test_insufficient_data_does_not_count_as_an_alert() -> None:
    # too small, then one drift: 1 consecutive, below the hysteresis of 2
    result = run(5, drift(0.5), [previous(3, NO_DRIFT), previous(4, INSUFFICIENT_DATA)])
    assert result["verdict"] == DRIFT and result["consecutive_drift"] == 1 and result["retrain"] is False


def test_a_performance_alert_still_decides_on_a_small_sample() -> None:
    performance = {
        "status": "evaluated", "metrics": {"roc_auc": 0.80}, "baseline": {"roc_auc": 0.95, "source": "tags"},
        "interval": {"start": "2024-01-04", "end": "2024-01-05"},
    }  # fmt: skip
    result = run(5, small(), performance=performance)
    assert result["verdict"] == PERFORMANCE and result["alert"] is True
