"""
### taxi_features: feature tables and the online store, for exactly the intervals ingest published

`features-pending -> plan_intervals -> build-features -> materialize`, the last two **mapped**: one task
instance per interval.

* **features-pending** lists the curated days whose feature partitions are missing or older than their
  curated data (an event lost while a run was being created, a republished day).
* **plan_intervals** merges the run's triggering `flywheel-curated-trips` events and those days (or a manual
  run's params) into sorted intervals of local days, at most `max_days_per_task` days each.
* **build-features** writes `features/<view>/dt=D` (trailing 1/7/28-day aggregates per pickup area and per
  company) and rebuilds the later days whose windows include the interval.
* **materialize** loads the interval into the Feast online store, one instance at a time across runs,
  and emits the Asset `flywheel-features`.

**Schedule**: on `flywheel-curated-trips`; unpause it before ingest publishes. **Manual runs**: the params
`interval_start` / `interval_end`. More: `docs/dags.md`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from _lib import (
    CURATED_TRIPS,
    DAG_DEFAULTS,
    FEATURES,
    START_DATE,
    DagSettings,
    interval_params,
    ml_step,
    plan_intervals_task,
)
from airflow.sdk import DAG

settings = DagSettings()

with DAG(
    dag_id=Path(__file__).stem,
    description="Feature tables + online store for the intervals taxi_ingest published (curated-trips Asset)",
    doc_md=__doc__,
    schedule=[CURATED_TRIPS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=4,
    max_active_tasks=2,
    dagrun_timeout=dt.timedelta(hours=4),
    default_args={**DAG_DEFAULTS, "execution_timeout": dt.timedelta(hours=2)},
    tags=["flywheel", "taxi", "features"],
    params=interval_params(settings.features_max_days, "Longest interval one mapped task processes."),
) as dag:
    pending = ml_step(
        "features-pending",
        doc_md="Curated days whose feature partitions are missing or older than their curated data.",
    )
    intervals = plan_intervals_task(CURATED_TRIPS, pending=pending.output)
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
