"""Shared helpers of the taxi_features tests: expected argv lists and curated asset-event extras."""

from __future__ import annotations

from typing import Any


def argv(*pairs: tuple[str, str]) -> list[list[str]]:
    return [["--start", start, "--end", end] for start, end in pairs]


def extra(start: str, end: str, run_id: str = "backfill__x") -> dict[str, Any]:
    """An asset event extra as taxi_ingest's publish writes it."""
    return {
        "step": "publish",
        "interval": {"start": start, "end": end},
        "partitions": [{"dt": start, "uri": f"/data/curated/trips/dt={start}", "rows": 10}],
        "run_id": run_id,
    }
