"""
### taxi_monitoring: drift, data quality and performance of the scored days; alert; request retraining

`plan_intervals -> monitor (mapped: one per day) -> alert -> request_retrain`; `monitor` is an `ml-tasks`
command (see `ml_tasks/cli.py`) run by the project's step helper (`dags/_lib`).

* **plan_intervals** turns the triggering `flywheel-predictions` events (or a manual run's params) into
  days (`max_days_per_task`, default 1: drift is judged per day).
* **monitor** (one day at a time, in order: hysteresis reads the decisions of the earlier days) compares
  the day's model inputs and scores with the reference stored with the model that made them (a seeded
  sample and per-column statistics of its training set), with Evidently 0.7: data drift per column,
  prediction drift, a data-quality summary over every row; once the labels of an older day have landed
  (simulated delay `FLYWHEEL_MONITOR_LABEL_DELAY_DAYS`) also performance against the training-time
  metrics. Writes `monitoring/<model>/dt=D/` (Evidently HTML + JSON, `decision.json`).
* **alert** raises an alert for every drift or performance verdict: a WARNING in the task log, the
  `DriftNotifier` callback, and a webhook POST of the decision when the Airflow connection
  `flywheel_alerts` exists (best effort: a failing webhook is logged, it does not fail the run).
* **request_retrain** emits the Asset `flywheel-drift` (taxi_training runs on it) with the decision as
  extra, only when a decision says `retrain`: drift on `FLYWHEEL_DRIFT_HYSTERESIS` consecutive days
  (default 2) and no drift-triggered retrain within `FLYWHEEL_RETRAIN_COOLDOWN_DAYS` (default 7, data
  time) before. Both checks, with their numbers, are written in the decision; otherwise the task is
  skipped and says why.

**Schedule.** On the Asset `flywheel-predictions` (taxi_batch_predict's publish, one event per prediction
run): daily after predictions. Manual runs: params `interval_start` / `interval_end`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import pendulum
from _lib import DRIFT, PREDICTIONS, default_args, interval_params, ml_step, plan_intervals_task
from _lib.alerts import DriftNotifier, send_drift_alert
from airflow.sdk import DAG, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

TZ = "America/Chicago"
MAX_DAYS = int(os.environ.get("FLYWHEEL_MONITOR_MAX_DAYS", "1"))
ALERT_CONN_ID = os.environ.get("FLYWHEEL_ALERT_CONN_ID", "flywheel_alerts")

log = logging.getLogger(__name__)


def _by_interval(summaries: Any) -> list[dict[str, Any]]:
    """The monitor summaries in interval order (mapped XComs come back in map-index order)."""
    found = [s for s in (summaries or []) if isinstance(s, dict) and isinstance(s.get("decision"), dict)]
    return sorted(found, key=lambda s: str((s.get("interval") or {}).get("start")))


def alerts_for(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The decisions that call for an alert: any verdict but ``no_drift``."""
    return [s["decision"] for s in summaries if s["decision"].get("verdict") not in (None, "no_drift")]


@task(task_id="alert", on_success_callback=DriftNotifier(conn_id=ALERT_CONN_ID))
def alert(summaries: Any) -> list[dict[str, Any]]:
    """Alert on every drift/performance verdict (log + webhook); return what was sent."""
    context = get_current_context()
    sent = [
        send_drift_alert(d, conn_id=ALERT_CONN_ID, context=context)
        for d in alerts_for(_by_interval(summaries))
    ]
    if not sent:
        log.info("no drift: nothing to alert")
    return sent


def retrain_request(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The drift Asset's extra: the newest decision that asks for a retrain.

    Raises:
        AirflowSkipException: no decision asks for one (the reasons are in the message).
    """
    wanted = [s for s in summaries if s["decision"].get("retrain")]
    if not wanted:
        why = [f"{(s.get('interval') or {}).get('start')}: {'; '.join(s['decision'].get('reasons') or [])}"
               for s in summaries]  # fmt: skip
        raise AirflowSkipException("no retraining requested: " + (" | ".join(why) or "no decisions"))
    chosen = wanted[-1]
    decision = chosen["decision"]
    model = decision.get("model") or {}
    return {
        "step": "monitor",
        "interval": chosen.get("interval") or decision.get("interval"),
        "decision": decision,
        "model": model.get("name"),
        "version": model.get("version"),
    }


@task(task_id="request_retrain", outlets=[DRIFT])
def request_retrain(summaries: Any, outlet_events: Any = None, run_id: Any = None) -> dict[str, Any]:
    """Emit ``flywheel-drift`` (taxi_training runs on it) when a decision asks for a retrain; else skip."""
    extra = {**retrain_request(_by_interval(summaries)), "run_id": run_id}
    outlet_events[DRIFT].extra.update(extra)
    log.warning("retraining requested for %s: %s", extra["interval"], extra["decision"].get("reasons"))
    return extra


with DAG(
    dag_id=Path(__file__).stem,
    description="Drift, quality and performance of the scored days (Evidently); alert; request retraining",
    doc_md=__doc__,
    schedule=[PREDICTIONS],
    start_date=pendulum.datetime(2024, 1, 1, tz=TZ),
    catchup=False,
    # one run at a time: hysteresis and cooldown read the decisions of the earlier days
    max_active_runs=1,
    max_active_tasks=2,
    dagrun_timeout=dt.timedelta(hours=4),
    default_args=default_args(execution_timeout=dt.timedelta(hours=1)),
    tags=["flywheel", "taxi", "monitoring"],
    params=interval_params(MAX_DAYS, "Days one monitoring task judges together."),
) as dag:
    intervals = plan_intervals_task(PREDICTIONS)
    monitor = ml_step(
        "monitor",
        expand_argv=intervals,
        # in order, one at a time: each day's hysteresis reads the decisions of the days before it
        max_active_tis_per_dag=1,
        doc_md="Evidently drift + quality (+ performance once labels landed) vs the model's reference.",
    )
    alerted = alert(monitor.output)  # an XComArg, resolved at run time
    requested = request_retrain(monitor.output)
    alerted >> requested
