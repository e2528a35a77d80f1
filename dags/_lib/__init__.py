"""Project helpers for DAG files (cheap to import: stdlib, pendulum, jinja2, pydantic-settings, airflow.sdk).

The Kubernetes runner (``_lib.pod``, ``_lib.kube``) is imported only when ``FLYWHEEL_RUNNER=kubernetes``.
"""

from _lib.argv import END, START, STEP_MACROS, opt, result, switch
from _lib.assets import CHAMPION_MODEL, CURATED_TRIPS, DRIFT, FEATURES, PREDICTIONS
from _lib.config import DAG_DEFAULTS, LOCAL_TZ, START_DATE, DagSettings, local_datetime, optional
from _lib.intervals import (
    interval_params,
    merge_intervals,
    plan_intervals,
    plan_intervals_task,
    resolve_interval,
)
from _lib.local import MlStepOperator
from _lib.steps import ml_step

__all__ = [
    "CHAMPION_MODEL",
    "CURATED_TRIPS",
    "DAG_DEFAULTS",
    "DRIFT",
    "END",
    "FEATURES",
    "LOCAL_TZ",
    "PREDICTIONS",
    "START",
    "START_DATE",
    "STEP_MACROS",
    "DagSettings",
    "MlStepOperator",
    "interval_params",
    "local_datetime",
    "merge_intervals",
    "ml_step",
    "opt",
    "optional",
    "plan_intervals",
    "plan_intervals_task",
    "resolve_interval",
    "result",
    "switch",
]
