"""taxi_monitoring: structure, schedule and outlet, which decisions alert and which one requests a retrain."""

from __future__ import annotations

from typing import Any

import pytest

DAG_ID = "taxi_monitoring"
DRIFT = ("flywheel-drift", "flywheel://monitoring/drift")


@pytest.fixture(scope="module")
def dag(dagbag: Any) -> Any:
    return dagbag.dags[DAG_ID]


def summary(day: str, verdict: str, retrain: bool, reasons: list[str] | None = None) -> dict[str, Any]:
    """A monitor step's summary as the CLI prints it (the decision inside)."""
    end = f"{day[:8]}{int(day[8:]) + 1:02d}"
    interval = {"start": day, "end": end}
    return {
        "step": "monitor",
        "interval": interval,
        "decision": {"verdict": verdict, "retrain": retrain, "reasons": reasons or [f"{verdict} on {day}"],
                     "interval": interval, "model": {"name": "taxi_tips", "version": "3"}},
    }  # fmt: skip


def test_structure(dag: Any) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    up = {t: dag.get_task(t).upstream_task_ids for t in dag.task_ids}
    assert up == {
        "plan_intervals": set(),
        "monitor": {"plan_intervals"},
        "alert": {"monitor"},
        "request_retrain": {"monitor", "alert"},
    }
    monitor = dag.get_task("monitor")
    assert isinstance(monitor, MappedOperator) and monitor.partial_kwargs["step"] == "monitor"
    # one day at a time: hysteresis reads the decisions of the days before
    assert monitor.partial_kwargs["max_active_tis_per_dag"] == 1
    assert dag.max_active_runs == 1
    assert dag.params["max_days_per_task"] == 1


def test_only_request_retrain_emits_the_drift_asset_taxi_training_consumes(dag: Any, dagbag: Any) -> None:
    from airflow.sdk import Asset

    outlets = dag.get_task("request_retrain").outlets
    assert [(o.name, o.uri) for o in outlets if isinstance(o, Asset)] == [DRIFT]
    assert not dag.get_task("alert").outlets and not dag.get_task("monitor").partial_kwargs.get("outlets")
    training = dagbag.dags["taxi_training"].timetable.asset_condition
    assert (training.name, training.uri) == DRIFT


def test_the_alert_task_alerts_once_without_a_repeating_callback(dag: Any) -> None:
    """The alert task itself posts the alerts (test_alerts); no callback logs or posts them again."""
    alert = dag.get_task("alert")
    assert alert.upstream_task_ids == {"monitor"}
    assert not alert.on_success_callback and not alert.on_failure_callback


def test_alerts_for_every_verdict_but_no_drift() -> None:
    from _lib.monitoring import alerts_for, by_interval

    summaries = [summary("2024-01-05", "drift", False), summary("2024-01-03", "no_drift", False),
                 summary("2024-01-04", "performance", False), {"step": "monitor"}]  # fmt: skip
    ordered = by_interval(summaries)
    assert [s["interval"]["start"] for s in ordered] == ["2024-01-03", "2024-01-04", "2024-01-05"]
    assert [d["verdict"] for d in alerts_for(ordered)] == ["performance", "drift"]


def test_retrain_request_takes_the_newest_decision_that_asks() -> None:
    from _lib.monitoring import by_interval, retrain_request

    summaries = by_interval([summary("2024-01-04", "drift", True), summary("2024-01-06", "drift", True),
                              summary("2024-01-07", "drift", False, ["cooldown: ..."])])  # fmt: skip
    extra = retrain_request(summaries)
    assert extra["interval"] == {"start": "2024-01-06", "end": "2024-01-07"}
    assert extra["decision"]["retrain"] is True
    assert (extra["model"], extra["version"], extra["step"]) == ("taxi_tips", "3", "monitor")


def test_no_retrain_skips_and_says_why() -> None:
    from _lib.monitoring import by_interval, retrain_request
    from airflow.sdk.exceptions import AirflowSkipException

    summaries = by_interval([summary("2024-01-04", "drift", False, ["hysteresis needs 2"]),
                              summary("2024-01-05", "no_drift", False, ["no drift"])])  # fmt: skip
    with pytest.raises(AirflowSkipException, match="2024-01-04: hysteresis needs 2"):
        retrain_request(summaries)
