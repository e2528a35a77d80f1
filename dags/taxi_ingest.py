"""
### taxi_ingest: Chicago taxi trips, one local day per run

`extract -> transform -> validate -> publish`, each step one `ml-tasks <step>` command (see
`ml_tasks/cli.py`) run by the project's step helper (`dags/_lib`): locally a subprocess, in the cluster
a pod.

* **extract** pulls the interval from the chosen source into `raw/trips/dt=YYYY-MM-DD`.
* **transform** types, derives and de-duplicates into `staging/trips/...`.
* **validate** applies the data-quality suite: rejected rows go to `quarantine/trips/...` with a
  reason code, reports to `reports/validation/...`; the batch fails when the reject rate is above the
  threshold (param `max_reject_rate`).
* **publish** checks the row accounting and moves accepted rows into `curated/trips/...`, then emits
  the Asset `flywheel-curated-trips` whose event extra carries the interval and the partition URIs.

**Schedule.** Daily intervals `[00:00, 24:00)` in America/Chicago (`CronDataIntervalTimetable`: a
plain `@daily` has zero-length intervals in Airflow 3). **Catchup is off by default**: unpausing on a
laptop runs only the latest interval instead of every day since `start_date`; history is loaded with
explicit, bounded backfills (`airflow backfill create --dag-id taxi_ingest --from-date A --to-date B`,
or `make demo`). Set `FLYWHEEL_INGEST_CATCHUP=true` (and `FLYWHEEL_INGEST_START_DATE`) where catchup
is wanted.

**Manual runs.** Trigger with a logical date, or with `logical_date: null` and the params
`interval_start` / `interval_end` (YYYY-MM-DD, end exclusive); without either the run fails at once
with a message saying so. The other params pick the source and its options.

**Settings** come from the environment, read when the file is parsed (no Variables at parse time):
`FLYWHEEL_DATA_ROOT` (read by the steps), `FLYWHEEL_RUNNER`, `FLYWHEEL_INGEST_SOURCE`,
`FLYWHEEL_INGEST_START_DATE` / `FLYWHEEL_INGEST_END_DATE` (no scheduled runs outside; backfills
are not limited by them), `FLYWHEEL_INGEST_CATCHUP`, `FLYWHEEL_TASK_RETRIES`,
`FLYWHEEL_RETRY_DELAY_SECONDS`.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pendulum
from _lib import CURATED_TRIPS, END, START, STEP_MACROS, default_args, ml_step, opt, switch
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

TZ = "America/Chicago"
SOURCES = ["synthetic", "file", "chicago", "postgres"]

START_DATE = pendulum.instance(
    dt.datetime.fromisoformat(os.environ.get("FLYWHEEL_INGEST_START_DATE", "2024-01-01")), tz=TZ
)
END_DATE = (
    pendulum.instance(dt.datetime.fromisoformat(os.environ["FLYWHEEL_INGEST_END_DATE"]), tz=TZ)
    if os.environ.get("FLYWHEEL_INGEST_END_DATE")
    else None
)
CATCHUP = os.environ.get("FLYWHEEL_INGEST_CATCHUP", "false").strip().lower() in {"1", "true", "yes"}
DEFAULT_SOURCE = os.environ.get("FLYWHEEL_INGEST_SOURCE", "synthetic")


def _optional(type_: str, description: str, **schema: Any) -> Param:
    return Param(None, type=["null", type_], description=description, **schema)


with DAG(
    dag_id=Path(__file__).stem,
    description="Chicago taxi trips: extract -> transform -> validate/quarantine -> publish (daily, Chicago)",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=TZ),
    start_date=START_DATE,
    end_date=END_DATE,
    catchup=CATCHUP,
    max_active_runs=2,
    max_active_tasks=2,
    dagrun_timeout=dt.timedelta(hours=2),
    default_args=default_args(execution_timeout=dt.timedelta(hours=1)),
    tags=["flywheel", "taxi", "ingest"],
    user_defined_macros=STEP_MACROS,
    params={
        "source": Param(DEFAULT_SOURCE, enum=SOURCES, description="Where the trips come from."),
        "interval_start": _optional(
            "string", "First local day (YYYY-MM-DD); overrides the run's data interval.", format="date"
        ),
        "interval_end": _optional(
            "string", "Day after the last local day (exclusive; default interval_start + 1).", format="date"
        ),
        "trips_per_day": _optional("integer", "synthetic: trips per day (default from settings).", minimum=0),
        "drift_from": _optional("string", "synthetic: drift scenario from this day on.", format="date"),
        "dirty_rate": _optional(
            "number", "synthetic: share of dirty rows to plant (default 0.005).", minimum=0, maximum=1
        ),
        "seed": _optional("integer", "synthetic: random seed (default fixed: same days, same rows)."),
        "file_uri": _optional("string", "file: path, URI or glob of CSV / Parquet / JSON trips."),
        "file_mapping": Param(
            None, type=["null", "string"], enum=[None, "portal", "tfx"], description="file: column layout."
        ),
        "dataset_id": _optional("string", "chicago: portal dataset id (default chosen by year)."),
        "pg_table": _optional("string", "postgres: table to read (schema.table)."),
        "max_reject_rate": _optional(
            "number", "validate: fail the batch above this rejected share.", minimum=0, maximum=1
        ),
        "allow_empty": Param(False, type="boolean", description="validate: accept days without trips."),
    },
) as dag:
    extract = ml_step(
        "extract",
        [
            "--start", START,
            "--end", END,
            "--source", "{{ params.source }}",
            opt("--trips-per-day", "params.trips_per_day"),
            opt("--drift-from", "params.drift_from"),
            opt("--option", "params.dirty_rate", prefix="dirty_rate="),
            opt("--option", "params.seed", prefix="seed="),
            opt("--uri", "params.file_uri"),
            opt("--mapping", "params.file_mapping"),
            opt("--dataset-id", "params.dataset_id"),
            opt("--table", "params.pg_table"),
        ],
    )  # fmt: skip
    transform = ml_step("transform", ["--start", START, "--end", END])
    validate = ml_step(
        "validate",
        [
            "--start", START,
            "--end", END,
            opt("--max-reject-rate", "params.max_reject_rate"),
            switch("--allow-empty", "params.allow_empty"),
        ],
    )  # fmt: skip
    publish = ml_step("publish", ["--start", START, "--end", END], outlets=[CURATED_TRIPS])

    extract >> transform >> validate >> publish
