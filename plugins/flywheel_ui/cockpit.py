"""The Flywheel view's state: the registry's aliased versions, drift decisions, the newest partitions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from flywheel_ui.outputs import MANIFEST

#: the monitor's per-day verdict (ml_tasks.contract.DECISION_JSON / DRIFT_REPORT_HTML)
DECISION = "decision.json"
DRIFT_REPORT = "drift_report.html"
#: model version tags written by the registry (ml_tasks.contract.TAG_METRIC, TAG_DECISION, TAG_REASONS)
TAG_METRIC_PREFIX = "flywheel.metric."
TAG_DECISION = "flywheel.promotion.decision"
TAG_REASONS = "flywheel.promotion.reasons"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def newest_partitions(root: Path) -> list[dict[str, Any]]:
    """Per dataset (``<layer>/<name>``): the newest ``dt=`` partition with a manifest, its row counts."""
    rows = []
    for dataset in sorted(p for p in root.glob("*/*") if p.is_dir()):
        days = sorted((p for p in dataset.glob("dt=*") if (p / MANIFEST).is_file()), reverse=True)
        if not days:
            continue
        manifest = _read_json(days[0] / MANIFEST) or {}
        counts = manifest.get("row_counts")
        rows.append(
            {
                "dataset": dataset.relative_to(root).as_posix(),
                "dt": days[0].name.removeprefix("dt="),
                "partitions": len(days),
                "row_counts": counts if isinstance(counts, dict) else {},
                "path": days[0].relative_to(root).as_posix(),
            }
        )
    return rows


def drift_days(root: Path, limit: int = 14) -> list[dict[str, Any]]:
    """The newest ``limit`` monitoring decisions, newest first."""
    found = sorted(root.glob(f"*/*/dt=*/{DECISION}"), key=lambda p: p.parent.name, reverse=True)
    days = []
    for path in found[:limit]:
        decision = _read_json(path) or {}
        report = path.parent / DRIFT_REPORT
        drift: dict[str, Any] = decision["drift"] if isinstance(decision.get("drift"), dict) else {}
        days.append(
            {
                "dataset": path.parent.parent.relative_to(root).as_posix(),
                "dt": path.parent.name.removeprefix("dt="),
                "verdict": decision.get("verdict", "unknown"),
                "retrain": bool(decision.get("retrain")),
                "alert": bool(decision.get("alert")),
                "drift_share": drift.get("drift_share"),
                "reasons": [str(r) for r in decision.get("reasons", [])][:3],
                "decision": path.relative_to(root).as_posix(),
                "report": report.relative_to(root).as_posix() if report.is_file() else None,
            }
        )
    return days


def _tags(version: dict[str, Any]) -> dict[str, str]:
    tags = version.get("tags", [])
    return {t["key"]: t.get("value", "") for t in tags if isinstance(t, dict) and "key" in t}


def registry(tracking_uri: str | None, timeout: float = 3.0) -> dict[str, Any]:
    """Aliased model versions (champion, challenger...) from an MLflow tracking server's REST API."""
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return {"error": "MLflow is not a tracking server here (set MLFLOW_TRACKING_URI to its http URL)"}
    api = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow"
    try:
        with httpx.Client(timeout=timeout) as client:
            found = client.get(f"{api}/registered-models/search", params={"max_results": 100})
            found.raise_for_status()
            models = []
            for model in found.json().get("registered_models", []):
                aliases = []
                for alias in sorted(model.get("aliases", []), key=lambda a: a.get("alias", "")):
                    query = {"name": model["name"], "version": alias["version"]}
                    got = client.get(f"{api}/model-versions/get", params=query)
                    got.raise_for_status()
                    version = got.json().get("model_version", {})
                    tags = _tags(version)
                    aliases.append(
                        {
                            "alias": alias["alias"],
                            "version": str(alias["version"]),
                            "run_id": version.get("run_id") or None,
                            "metrics": {
                                k.removeprefix(TAG_METRIC_PREFIX): v
                                for k, v in sorted(tags.items())
                                if k.startswith(TAG_METRIC_PREFIX)
                            },
                            "decision": tags.get(TAG_DECISION),
                            "reasons": _reasons(tags.get(TAG_REASONS)),
                        }
                    )
                models.append({"name": model["name"], "aliases": aliases})
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return {"error": f"MLflow registry at {tracking_uri} not readable: {type(exc).__name__}"}
    return {"models": models}


def _reasons(value: str | None) -> list[str]:
    if not value:
        return []
    try:
        parsed = json.loads(value)
    except ValueError:
        return [value]
    return [str(r) for r in parsed] if isinstance(parsed, list) else [str(parsed)]


def cockpit(root: Path | None, tracking_uri: str | None) -> dict[str, Any]:
    """Everything the Flywheel view shows, as JSON."""
    days = drift_days(root) if root else []
    return {
        "data_root": str(root) if root else None,
        "registry": registry(tracking_uri),
        "drift": days,
        "retrain_requested": next((d["dt"] for d in days if d["retrain"]), None),
        "partitions": newest_partitions(root) if root else [],
    }
