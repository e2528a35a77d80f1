"""Monitoring of a deployed model: data quality, drift, performance and the retrain decision.

Nothing heavy is imported here (Evidently and MLflow load inside the functions that use them).
See ``docs/monitoring.md`` for the modules and the method.
"""

from __future__ import annotations

from ml_tasks.errors import FlywheelError


class MonitoringError(FlywheelError, RuntimeError):
    """A monitoring input that cannot be used (names the input and the problem)."""


__all__ = ["MonitoringError"]
