"""Monitoring of a deployed model: its reference, data / prediction drift, performance, the retrain decision.

* :mod:`.reference`: the reference stored with a model at training time (a seeded sample of the training
  set with the model's scores, and per-column statistics over every training row);
* :mod:`.drift`: the data-quality summary over every current row (pyarrow) and the Evidently drift report on
  a bounded, seeded sample;
* :mod:`.policy`: the decision (verdict, hysteresis, cooldown, retrain), pure functions;
* :mod:`.monitor`: ``run_monitoring`` for one interval of predictions (the ``monitor`` step).

Nothing heavy is imported here (Evidently, MLflow and torch are imported inside the functions that use them).
"""

from __future__ import annotations

from ml_tasks.errors import FlywheelError


class MonitoringError(FlywheelError, RuntimeError):
    """A monitoring input that cannot be used (names the input and the problem)."""


__all__ = ["MonitoringError"]
