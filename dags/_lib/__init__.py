"""Project helpers for DAG files (cheap to import: stdlib, jinja2 and airflow.sdk only)."""

from _lib.assets import CHAMPION_MODEL, CURATED_TRIPS, DRIFT, FEATURES, PREDICTIONS
from _lib.steps import (
    END,
    START,
    STEP_MACROS,
    MlStepOperator,
    default_args,
    interval_params,
    merge_intervals,
    ml_step,
    opt,
    plan_intervals,
    plan_intervals_task,
    resolve_interval,
    switch,
)

__all__ = [
    "CHAMPION_MODEL",
    "CURATED_TRIPS",
    "DRIFT",
    "END",
    "FEATURES",
    "PREDICTIONS",
    "START",
    "STEP_MACROS",
    "MlStepOperator",
    "default_args",
    "interval_params",
    "merge_intervals",
    "ml_step",
    "opt",
    "plan_intervals",
    "plan_intervals_task",
    "resolve_interval",
    "switch",
]
