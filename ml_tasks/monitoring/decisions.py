"""Earlier monitoring decisions (``decision.json`` of earlier intervals), checked field by field on read."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from ml_tasks.contract import DECISION_JSON, MONITORING_LAYER
from ml_tasks.intervals import Interval
from ml_tasks.monitoring.policy import DRIFT, INSUFFICIENT_DATA, NO_DRIFT, PERFORMANCE
from ml_tasks.storage import DataRoot, parse_contract_file


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class DecisionInterval(_Open):
    start: dt.date
    end: dt.date


class DecisionModel(_Open):
    name: str
    version: str | None


class DecisionRecord(_Open):
    """The fields of a decision the hysteresis and the cooldown read (:mod:`.policy`); the rest is kept."""

    format_version: int
    interval: DecisionInterval
    model: DecisionModel
    verdict: str
    alert: bool
    retrain: bool

    @field_validator("verdict")
    @classmethod
    def _known_verdict(cls, value: str) -> str:
        if value not in (DRIFT, PERFORMANCE, NO_DRIFT, INSUFFICIENT_DATA):
            raise ValueError(
                f"unknown verdict {value!r} (expected {DRIFT}, {PERFORMANCE}, {NO_DRIFT}"
                f" or {INSUFFICIENT_DATA})"
            )
        return value


def read_decision(root: DataRoot, path: str) -> dict[str, Any]:
    """The decision document at ``path``.

    Raises:
        ContractFileError: it is corrupt (names the file and the field).
    """
    with root.fs.open_input_stream(path) as stream:
        text = stream.read()
    parse_contract_file(DecisionRecord, text, root.uri(path))
    payload: dict[str, Any] = json.loads(text)
    return payload


def previous_decisions(root: DataRoot, model_name: str, interval: Interval) -> list[dict[str, Any]]:
    """Decisions of the intervals that start before ``interval`` (ordered by start).

    Raises:
        ContractFileError: one of them is corrupt: its hysteresis and cooldown cannot be judged.
    """
    out = []
    for key in root.list_partitions(MONITORING_LAYER, model_name):
        if key >= interval.start.isoformat():
            continue
        path = f"{root.partition_path(MONITORING_LAYER, model_name, key)}/{DECISION_JSON}"
        if root.exists(path):
            out.append(read_decision(root, path))
    return sorted(out, key=lambda d: str(d["interval"]["start"]))
