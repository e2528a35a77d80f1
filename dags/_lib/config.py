"""What every DAG file shares: the local time zone, defaults, typed optional params, and the settings.

Settings come from ``FLYWHEEL_*`` environment variables of the dag-processor and workers, read when a
DAG file is parsed (never Variables at parse time). The table is in ``docs/dags.md``. A plain pydantic
model reads them (as pydantic-settings would: any case, empty values ignored): pydantic-settings cost
~25 ms to import and ~20 ms per instance, most of a DAG file's parse time (bench/dag_parse.py).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, Literal

import pendulum
from airflow.sdk import Param
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: the pipeline's local day: data intervals, partitions and windows are Chicago days
LOCAL_TZ = "America/Chicago"
#: the static start_date of the pipeline's DAGs
START_DATE = pendulum.datetime(2024, 1, 1, tz=LOCAL_TZ)

Runner = Literal["local", "kubernetes"]
RUNNERS: tuple[Runner, ...] = ("local", "kubernetes")
Profile = Literal["cpu", "gpu"]
PROFILES: tuple[Profile, ...] = ("cpu", "gpu")


ENV_PREFIX = "FLYWHEEL_"


class DagSettings(BaseModel):
    """The ``FLYWHEEL_*`` settings DAG files read at parse time (the steps read their own).

    ``DagSettings()`` reads ``FLYWHEEL_<FIELD>`` (any case; an empty value is unset); keyword arguments
    win over the environment.
    """

    model_config = ConfigDict(extra="ignore")

    runner: str = Field("local", description="Where steps run: local (subprocess) or kubernetes (pods).")
    task_retries: int = Field(2, ge=0, description="Retries of every task.")
    retry_delay_seconds: float = Field(120, gt=0, description="First retry delay (exponential backoff).")
    ingest_source: str = Field("synthetic", description="taxi_ingest: default of the param source.")
    ingest_start_date: dt.datetime = Field(dt.datetime(2024, 1, 1), description="taxi_ingest: start_date.")
    ingest_end_date: dt.datetime | None = Field(None, description="taxi_ingest: no scheduled runs after.")
    ingest_catchup: bool = Field(False, description="taxi_ingest: catch up every day since start_date.")
    features_max_days: int = Field(31, ge=1, description="taxi_features: default of max_days_per_task.")
    train_trials: int = Field(2, ge=1, description="taxi_training: default of the param trials.")
    train_days: int = Field(28, ge=1, description="taxi_training: default of the param train_days.")
    eval_days: int = Field(7, ge=1, description="taxi_training: default of the param eval_days.")
    training_end_date: dt.datetime | None = Field(None, description="taxi_training: no weekly runs after.")
    predict_shards: int = Field(2, ge=1, description="taxi_batch_predict: default of the param shards.")
    predict_max_days: int = Field(7, ge=1, description="taxi_batch_predict: default of max_days_per_task.")
    monitor_max_days: int = Field(1, ge=1, description="taxi_monitoring: default of max_days_per_task.")
    alert_conn_id: str = Field("flywheel_alerts", description="taxi_monitoring: the webhook connection.")
    allow_fault_injection: bool = Field(
        False, description="Tests only: offer fault-injection params (the steps check the same setting)."
    )

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, data: Any) -> Any:
        given = data if isinstance(data, dict) else {}
        env = {
            name[len(ENV_PREFIX) :].lower(): value
            for name, value in os.environ.items()
            if name.upper().startswith(ENV_PREFIX) and value != ""
        }
        return {**{name: env[name] for name in cls.model_fields if name in env}, **given}

    @field_validator("runner", mode="before")
    @classmethod
    def _known_runner(cls, value: Any) -> str:
        name = str(value).strip().lower() or "local"
        if name not in RUNNERS:
            raise ValueError(f"FLYWHEEL_RUNNER={name!r} is not a runner; choose one of {list(RUNNERS)}")
        return name


def local_datetime(value: dt.datetime | None) -> pendulum.DateTime | None:
    """A naive setting (``FLYWHEEL_*_DATE``) as a datetime in the pipeline's time zone."""
    return None if value is None else pendulum.instance(value, tz=LOCAL_TZ)


def optional(type_: str, title: str, description: str, **schema: Any) -> Param:
    """A typed param that may stay unset (``None``): ``optional("integer", "Title", "...", minimum=0)``."""
    return Param(None, type=["null", type_], title=title, description=description, **schema)


_defaults = DagSettings()
#: ``default_args`` of every DAG (add its own ``execution_timeout``): retries with exponential backoff
DAG_DEFAULTS: dict[str, Any] = {
    "owner": "flywheel",
    "retries": _defaults.task_retries,
    "retry_delay": dt.timedelta(seconds=_defaults.retry_delay_seconds),
    "retry_exponential_backoff": True,
}
