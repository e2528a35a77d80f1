"""Project helpers for DAG files (cheap to import: stdlib, jinja2 and airflow.sdk only)."""

from _lib.steps import END, START, STEP_MACROS, MlStepOperator, ml_step, opt, resolve_interval, switch

__all__ = ["END", "START", "STEP_MACROS", "MlStepOperator", "ml_step", "opt", "resolve_interval", "switch"]
