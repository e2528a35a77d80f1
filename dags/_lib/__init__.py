"""Project helpers for DAG files (cheap to import: stdlib, jinja2 and airflow.sdk only)."""

from _lib.assets import CURATED_TRIPS, FEATURES
from _lib.steps import (
    END,
    START,
    STEP_MACROS,
    MlStepOperator,
    default_args,
    merge_intervals,
    ml_step,
    opt,
    plan_intervals,
    resolve_interval,
    switch,
)

__all__ = [
    "CURATED_TRIPS",
    "END",
    "FEATURES",
    "START",
    "STEP_MACROS",
    "MlStepOperator",
    "default_args",
    "merge_intervals",
    "ml_step",
    "opt",
    "plan_intervals",
    "resolve_interval",
    "switch",
]
