"""
### taxi_ingest: Chicago taxi trips, one local day per run

`extract -> transform -> validate -> publish`, each an `ml-tasks` step (see `ml_tasks/cli/`):

* **extract** pulls the interval from the chosen source into `raw/trips/dt=YYYY-MM-DD`.
* **transform** types, derives and de-duplicates into `staging/trips/...`.
* **validate** sends rejected rows to `quarantine/trips/...` with a reason code and fails the batch above
  `max_reject_rate`.
* **publish** moves accepted rows into `curated/trips/...` and emits the Asset `flywheel-curated-trips`.

**Schedule**: daily `[00:00, 24:00)` America/Chicago, catchup off (backfill explicitly:
`airflow backfill create --dag-id taxi_ingest --from-date A --to-date B`). **Manual runs**: a logical date,
or the params `interval_start` / `interval_end`. More: `docs/dags.md`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from _lib import (
    CURATED_TRIPS,
    DAG_DEFAULTS,
    END,
    LOCAL_TZ,
    START,
    STEP_MACROS,
    DagSettings,
    local_datetime,
    ml_step,
    opt,
    optional,
    switch,
)
from airflow.sdk import DAG, CronDataIntervalTimetable, Param

SOURCES = ["synthetic", "file", "chicago", "postgres"]
settings = DagSettings()


with DAG(
    dag_id=Path(__file__).stem,
    description="Chicago taxi trips: extract -> transform -> validate/quarantine -> publish (daily, Chicago)",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=LOCAL_TZ),
    start_date=local_datetime(settings.ingest_start_date),
    end_date=local_datetime(settings.ingest_end_date),
    catchup=settings.ingest_catchup,
    max_active_runs=2,
    max_active_tasks=2,
    dagrun_timeout=dt.timedelta(hours=2),
    default_args={**DAG_DEFAULTS, "execution_timeout": dt.timedelta(hours=1)},
    tags=["flywheel", "taxi", "ingest"],
    user_defined_macros=STEP_MACROS,
    params={
        "source": Param(
            settings.ingest_source, enum=SOURCES, title="Source", description="Where the trips come from."
        ),
        "interval_start": optional(
            "string",
            "First day",
            "First local day (YYYY-MM-DD); overrides the run's data interval.",
            format="date",
        ),
        "interval_end": optional(
            "string",
            "End day (exclusive)",
            "Day after the last local day (exclusive; default interval_start + 1).",
            format="date",
        ),
        "trips_per_day": optional(
            "integer", "Trips per day", "synthetic: trips per day (default from settings).", minimum=0
        ),
        "drift_from": optional(
            "string", "Drift from", "synthetic: drift scenario from this day on.", format="date"
        ),
        "dirty_rate": optional(
            "number",
            "Dirty-row share",
            "synthetic: share of dirty rows to plant (default 0.005).",
            minimum=0,
            maximum=1,
        ),
        "seed": optional("integer", "Seed", "synthetic: random seed (default fixed: same days, same rows)."),
        "file_uri": optional("string", "File URI", "file: path, URI or glob of CSV / Parquet / JSON trips."),
        "file_mapping": Param(
            None,
            type=["null", "string"],
            enum=[None, "portal", "tfx"],
            title="File layout",
            description="file: column layout.",
        ),
        "dataset_id": optional("string", "Portal dataset", "chicago: portal dataset id (default by year)."),
        "pg_table": optional("string", "PostgreSQL table", "postgres: table to read (schema.table)."),
        "max_reject_rate": optional(
            "number",
            "Max reject rate",
            "validate: fail the batch above this rejected share.",
            minimum=0,
            maximum=1,
        ),
        "allow_empty": Param(
            False, type="boolean", title="Allow empty days", description="validate: accept trip-less days."
        ),
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
