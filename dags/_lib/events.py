"""The extra of the Asset events a step emits: which interval and partitions it wrote (see ``_lib.assets``).

Shared by both runners: the local CLI's stdout summary and the pod's ``/airflow/xcom/return.json`` are the
same JSON, so consumers see one event contract.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk import Asset


def step_event_extra(step: str, result: Mapping[str, Any] | None, context: Any) -> dict[str, Any]:
    """Asset event extra of a step: the interval and partitions it wrote, and the producing run.

    Shared by both runners (the local CLI's stdout summary and the pod's ``/airflow/xcom/return.json``
    are the same JSON), so consumers see one event contract (``_lib.assets``).
    """
    result = result or {}
    partitions = [
        {k: p[k] for k in ("dt", "uri", "rows") if k in p}
        for p in result.get("partitions", [])
        if isinstance(p, Mapping)
    ]
    return {
        "step": step,
        "interval": result.get("interval"),
        "partitions": partitions,
        "run_id": context.get("run_id"),
    }


def attach_event_extra(outlets: Iterable[Any], extra: Mapping[str, Any], context: Any) -> None:
    """Put ``extra`` on the events the task emits for each of its Asset ``outlets``."""
    for outlet in outlets or ():
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra.update(extra)
