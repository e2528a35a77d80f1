"""
### taxi_features: feature tables and the online store, for exactly the intervals ingest published

`plan_intervals -> build-features -> materialize`; the two steps are `ml-tasks` commands (see
`ml_tasks/cli.py`) run by the project's step helper (`dags/_lib`), **mapped**: one task instance per
interval the run has to process.

* **plan_intervals** reads the run's triggering asset events and returns one argv per interval
  (`["--start", S, "--end", E]`, local days, end exclusive).
* **build-features** writes `features/<view>/dt=D` for every day of the interval: trailing 1/7/28-day
  aggregates per pickup community area and per company, event timestamp = end of day D.
* **materialize** loads the interval's latest row per entity into the Feast online store (batched,
  never moving an entity backwards in time), then emits the Asset `flywheel-features` with the interval
  in the event extra.

**Schedule.** On the Asset `flywheel-curated-trips` (taxi_ingest's publish). Airflow consolidates the
events queued since the previous run into ONE run, so a run may carry several ingest intervals, in any
order: a backfill of N days emits N events that arrive over minutes, out of order and maybe with gaps.
`plan_intervals` merges them into sorted, de-duplicated intervals (adjacent and overlapping ones join,
gaps stay gaps; pieces of at most `max_days_per_task` days), so a backfill of `taxi_ingest` leads to
features for exactly the days it published, and a re-run of one ingest day rebuilds that day only.
Materialize runs one instance at a time across ALL runs of the DAG (`max_active_tis_per_dag=1`: the
online store's "never move backwards" check reads then writes), after every interval of its run is built
(a failed build holds back the run's materialization until it is cleared). The runs themselves are
not limited to one: Airflow 3.3 creates an asset-triggered run only when the DAG may start one, and
consumes the events up to the moment the run was first due, so an event that arrives while the run
waits is left to the NEXT run (with `max_active_runs=1` the last day of a backfill could wait for the
next ingest event). **The DAG must be unpaused before ingest publishes**:
Airflow queues no run for a paused consumer.

Days may arrive in any order (a backfill running two days at a time, a late day, a re-run):
build-features also rebuilds the existing later days whose 28-day windows include the interval, and
materialize loads those too, so the feature tables and the online store end as if the days had
arrived in order. Days missing from a window are counted (`window_days_28d`), not hidden.

`feast apply` is a deploy step, not a task: `scripts/airflow_local.py` runs `ml-tasks feature-apply`
when the platform starts; the steps refuse a registry that differs from `feature_repo/`.

**Manual runs.** Trigger with the params `interval_start` / `interval_end` (YYYY-MM-DD, end exclusive;
default start + 1 day): asset and manual runs have no data interval of their own, so a manual run
without them fails at once with a message saying so. Params win over asset events when both are set.

**Settings** come from the environment, read when the file is parsed (no Variables at parse time):
`FLYWHEEL_DATA_ROOT`, `FLYWHEEL_FEAST_ENV` (read by the steps), `FLYWHEEL_RUNNER`,
`FLYWHEEL_FEATURES_MAX_DAYS` (default of `max_days_per_task`, 31), `FLYWHEEL_TASK_RETRIES`,
`FLYWHEEL_RETRY_DELAY_SECONDS`.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pendulum
from _lib import CURATED_TRIPS, FEATURES, default_args, interval_params, ml_step, plan_intervals_task
from airflow.sdk import DAG

TZ = "America/Chicago"
MAX_DAYS = int(os.environ.get("FLYWHEEL_FEATURES_MAX_DAYS", "31"))


with DAG(
    dag_id=Path(__file__).stem,
    description="Feature tables + online store for the intervals taxi_ingest published (curated-trips Asset)",
    doc_md=__doc__,
    schedule=[CURATED_TRIPS],
    start_date=pendulum.datetime(2024, 1, 1, tz=TZ),
    catchup=False,
    max_active_runs=4,
    max_active_tasks=2,
    dagrun_timeout=dt.timedelta(hours=4),
    default_args=default_args(execution_timeout=dt.timedelta(hours=2)),
    tags=["flywheel", "taxi", "features"],
    params={
        **interval_params(MAX_DAYS, "Longest interval one mapped task processes."),
    },
) as dag:
    intervals = plan_intervals_task(CURATED_TRIPS)
    build = ml_step(
        "build-features",
        expand_argv=intervals,
        doc_md="Trailing-window feature tables `features/<view>/dt=D` for each day of the interval.",
    )
    materialize = ml_step(
        "materialize",
        expand_argv=intervals,
        outlets=[FEATURES],
        # one at a time: the online store's "never move backwards" check reads then writes
        max_active_tis_per_dag=1,
        doc_md="Latest row per entity of the interval into the online store; emits the features Asset.",
    )
    build >> materialize
