"""``online-features``: read a feature service's values for entity rows from the online store.

For debugging and for any online serving to come. Entities are given as ``key=value`` pairs: values
of the same key make several rows, a key given once applies to every row. Works with whatever online
store the environment's yaml names (SQLite locally, Redis in production).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ml_tasks.features.retrieval import resolve_service
from ml_tasks.features.store import FeatureStoreError, StoreHandle

log = logging.getLogger(__name__)


def entity_rows(pairs: Sequence[str], key_types: dict[str, str]) -> list[dict[str, Any]]:
    """Entity rows from ``key=value`` pairs, values typed by the entity's value type.

    Raises:
        FeatureStoreError: a malformed pair, an unknown entity key, a value of the wrong type, or keys
            given a different number of times.
    """
    values: dict[str, list[Any]] = defaultdict(list)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FeatureStoreError(f"--entity expects key=value, got {pair!r}")
        if key not in key_types:
            raise FeatureStoreError(
                f"unknown entity key {key!r}: the feature service joins on {sorted(key_types)}"
            )
        if key_types[key] == "INT64":
            try:
                values[key].append(int(raw))
            except ValueError:
                raise FeatureStoreError(f"entity {key} is an integer, got {raw!r}") from None
        else:
            values[key].append(raw)
    if not values:
        raise FeatureStoreError("no entity given: pass --entity key=value")
    n = max(len(v) for v in values.values())
    uneven = {k: len(v) for k, v in values.items() if len(v) not in (1, n)}
    if uneven:
        raise FeatureStoreError(
            f"entity keys given {uneven} times for {n} rows: give each key once or {n} times"
        )
    return [{k: v[i] if len(v) > 1 else v[0] for k, v in values.items()} for i in range(n)]


def online_features(handle: StoreHandle, service_name: str, pairs: Sequence[str]) -> dict[str, Any]:
    """Features of ``service_name`` for the entity rows in ``pairs``, and which rows had any value."""
    started = time.perf_counter()
    _, views = resolve_service(handle, service_name)
    key_types = {e.name: e.dtype.to_value_type().name for fv in views for e in fv.entity_columns}
    rows = entity_rows(pairs, key_types)
    given = set(rows[0])
    # Feast needs every join key of what it is asked for: ask only for the views whose keys were given
    served = [fv for fv in views if {e.name for e in fv.entity_columns} <= given]
    skipped = sorted(fv.name for fv in views if fv not in served)
    if not served:
        raise FeatureStoreError(
            f"no feature view of {service_name} can be served for keys {sorted(given)}: give one of"
            f" {sorted({e.name for fv in views for e in fv.entity_columns})}"
        )
    refs = [f"{fv.name}:{f.name}" for fv in served for f in fv.features]
    result = handle.store.get_online_features(
        features=refs, entity_rows=rows, full_feature_names=True
    ).to_dict()
    keys = set(key_types)
    out: list[dict[str, Any]] = []
    found: dict[str, int] = {fv.name: 0 for fv in served}
    for i, row in enumerate(rows):
        record: dict[str, Any] = dict(row)
        for fv in served:
            feats = {f"{fv.name}__{f.name}": result[f"{fv.name}__{f.name}"][i] for f in fv.features}
            record.update(feats)
            if any(v is not None for v in feats.values()):
                found[fv.name] += 1
        out.append({k: record[k] for k in record if k in keys or "__" in k})
    log.info(
        "online-features %s: %d row(s), found per view %s%s", service_name, len(rows), found,
        f", not requested (their keys were not given): {skipped}" if skipped else "",
    )  # fmt: skip
    return {
        "step": "online-features",
        "feature_service": service_name,
        **{"online_store": handle.describe()["online_store"]},
        "rows": out,
        "found": found,
        "views_not_requested": skipped,
        "seconds": round(time.perf_counter() - started, 3),
    }
