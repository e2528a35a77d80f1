"""
### taxi_monitoring: drift, data quality and performance of the scored days; alert; request retraining

`plan_intervals -> monitor (mapped: one per day) -> alert -> request_retrain`:

* **monitor** judges one day at a time, in order (hysteresis reads the earlier days' decisions), against
  the reference stored with the model that scored it (Evidently 0.7: data and prediction drift, data
  quality, performance once labels landed); writes `monitoring/<model>/dt=D/` with `decision.json`.
* **alert** raises an alert for every drift or performance verdict: a WARNING in the task log and a
  webhook POST when the Airflow connection `flywheel_alerts` exists (best effort).
* **request_retrain** emits the Asset `flywheel-drift` (taxi_training runs on it) when a decision says
  `retrain` (hysteresis and cooldown passed); otherwise it is skipped and says why.

**Schedule**: on `flywheel-predictions`, one run at a time. **Manual runs**: params `interval_start` /
`interval_end`. More: `docs/dags.md`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from _lib import (
    DAG_DEFAULTS,
    DRIFT,
    PREDICTIONS,
    START_DATE,
    DagSettings,
    interval_params,
    ml_step,
    plan_intervals_task,
)
from _lib.alerts import send_drift_alert
from _lib.monitoring import alerts_for, by_interval, retrain_request
from airflow.sdk import DAG, task

settings = DagSettings()
log = logging.getLogger(__name__)


@task
def alert(summaries: Any, ti: Any = None, dag_run: Any = None) -> list[dict[str, Any]]:
    """Alert on every drift/performance verdict (log + webhook); return what was sent."""
    context = {"ti": ti, "dag_run": dag_run}
    sent = [send_drift_alert(d, conn_id=settings.alert_conn_id, context=context)
            for d in alerts_for(by_interval(summaries))]  # fmt: skip
    if not sent:
        log.info("no drift: nothing to alert")
    return sent


@task(outlets=[DRIFT])
def request_retrain(summaries: Any, outlet_events: Any = None, run_id: Any = None) -> dict[str, Any]:
    """Emit ``flywheel-drift`` (taxi_training runs on it) when a decision asks for a retrain; else skip."""
    extra = {**retrain_request(by_interval(summaries)), "run_id": run_id}
    outlet_events[DRIFT].extra.update(extra)
    log.warning("retraining requested for %s: %s", extra["interval"], extra["decision"].get("reasons"))
    return extra


with DAG(
    dag_id=Path(__file__).stem,
    description="Drift, quality and performance of the scored days (Evidently); alert; request retraining",
    doc_md=__doc__,
    schedule=[PREDICTIONS],
    start_date=START_DATE,
    catchup=False,
    # one run at a time: hysteresis and cooldown read the decisions of the earlier days
    max_active_runs=1,
    max_active_tasks=2,
    dagrun_timeout=dt.timedelta(hours=4),
    default_args={**DAG_DEFAULTS, "execution_timeout": dt.timedelta(hours=1)},
    tags=["flywheel", "taxi", "monitoring"],
    params=interval_params(settings.monitor_max_days, "Days one monitoring task judges together."),
) as dag:
    monitor = ml_step(
        "monitor",
        expand_argv=plan_intervals_task(PREDICTIONS),
        # in order, one at a time: each day's hysteresis reads the decisions of the days before it
        max_active_tis_per_dag=1,
        doc_md="Evidently drift + quality (+ performance once labels landed) vs the model's reference.",
    )
    alert(monitor.output) >> request_retrain(monitor.output)
