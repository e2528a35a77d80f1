"""Decisions of taxi_monitoring: which verdicts alert, and which decision asks for retraining."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowSkipException


def by_interval(summaries: Any) -> list[dict[str, Any]]:
    """The monitor summaries in interval order (mapped XComs come back in map-index order)."""
    found = [s for s in (summaries or []) if isinstance(s, dict) and isinstance(s.get("decision"), dict)]
    return sorted(found, key=lambda s: str((s.get("interval") or {}).get("start")))


def alerts_for(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The decisions that call for an alert: any verdict but ``no_drift``."""
    return [s["decision"] for s in summaries if s["decision"].get("verdict") not in (None, "no_drift")]


def retrain_request(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The drift Asset's extra: the newest decision that asks for a retrain.

    Raises:
        AirflowSkipException: no decision asks for one (the reasons are in the message).
    """
    wanted = [s for s in summaries if s["decision"].get("retrain")]
    if not wanted:
        why = [f"{(s.get('interval') or {}).get('start')}: {'; '.join(s['decision'].get('reasons') or [])}"
               for s in summaries]  # fmt: skip
        raise AirflowSkipException("no retraining requested: " + (" | ".join(why) or "no decisions"))
    chosen = wanted[-1]
    decision = chosen["decision"]
    model = decision.get("model") or {}
    return {
        "step": "monitor",
        "interval": chosen.get("interval") or decision.get("interval"),
        "decision": decision,
        "model": model.get("name"),
        "version": model.get("version"),
    }
