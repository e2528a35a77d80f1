"""Curated days whose feature partitions are missing or older than the curated partition they read.

Asset events can be lost (one that lands while ``taxi_features`` creates its run for the previous event
is consumed by neither run) and a curated day can be republished: planning from events alone would leave
such days behind until an event names them again. ``taxi_features`` plans these days too
(``docs/dags.md``). "Older" is judged by content, not clocks: a feature partition is stale when its
manifest does not record the sha256 of its own curated day's current files.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from ml_tasks.contract import CURATED, FEATURES_LAYER, MANIFEST
from ml_tasks.features.spec import VIEWS
from ml_tasks.storage import DataRoot, Manifest, input_record

log = logging.getLogger(__name__)


def _state(root: DataRoot, day: str, curated: dict[str, Any]) -> str | None:
    """``missing`` / ``stale`` for the first view whose partition of ``day`` is not built from
    ``curated`` (the day's curated input record), else None."""
    for view in VIEWS:
        path = root.partition_path(FEATURES_LAYER, view.dataset, day)
        if not root.exists(f"{path}/{MANIFEST}"):
            return "missing"
        manifest: Manifest = root.read_manifest(path)
        recorded = [i for i in manifest.inputs if i.get("uri") == curated["uri"]]
        if not recorded or recorded[0].get("files") != curated["files"]:
            return "stale"
    return None


def day_intervals(days: list[dt.date]) -> list[dict[str, str]]:
    """Sorted days as ``[start, end)`` intervals of consecutive days."""
    intervals: list[list[dt.date]] = []
    for day in sorted(days):
        if intervals and intervals[-1][1] == day:
            intervals[-1][1] = day + dt.timedelta(days=1)
        else:
            intervals.append([day, day + dt.timedelta(days=1)])
    return [{"start": s.isoformat(), "end": e.isoformat()} for s, e in intervals]


def pending_features(root: DataRoot) -> dict[str, Any]:
    """The step summary: curated days without up-to-date feature partitions, as days and intervals."""
    started = time.perf_counter()
    keys = root.list_partitions(*CURATED)
    found: dict[str, list[str]] = {"missing": [], "stale": []}
    for key in keys:
        state = _state(root, key, input_record(root, root.partition_path(*CURATED, key)))
        if state:
            found[state].append(key)
    days = sorted(dt.date.fromisoformat(d) for d in found["missing"] + found["stale"])
    seconds = time.perf_counter() - started
    log.info(
        "features-pending: %d curated day(s), %d without feature partitions, %d stale, in %.2f s",
        len(keys), len(found["missing"]), len(found["stale"]), seconds,
    )  # fmt: skip
    return {
        "step": "features-pending",
        "curated_days": len(keys),
        "missing": found["missing"],
        "stale": found["stale"],
        "intervals": day_intervals(days),
        "seconds": round(seconds, 3),
    }
