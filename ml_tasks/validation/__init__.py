"""Validation: staging/trips -> staging/trips_accepted + quarantine/trips + reports/validation.

Light on purpose: the CLI imports :class:`ValidationFailed`; great_expectations (seconds to import)
loads only inside :func:`validate`. See ``docs/ingest.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ml_tasks.errors import FlywheelError

if TYPE_CHECKING:
    from ml_tasks.intervals import Interval
    from ml_tasks.settings import Settings
    from ml_tasks.storage import DataRoot


class ValidationFailed(FlywheelError, RuntimeError):
    """One or more partitions failed a batch-level rule (schema, empty, reject share).

    Attributes:
        failures: one entry per failed partition and rule (``dt``, ``rule``, ``message``, numbers).
        summary: the step summary that would have been printed, reports included.
    """

    def __init__(self, message: str, failures: list[dict[str, Any]], summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.failures = failures
        self.summary = summary


def validate(root: DataRoot, interval: Interval, settings: Settings) -> dict[str, Any]:
    """Validate ``staging/trips/dt=D`` for every day D of ``interval`` (see :mod:`.step`)."""
    from ml_tasks.validation.step import validate_interval

    return validate_interval(root, interval, settings)


__all__ = ["ValidationFailed", "validate"]
