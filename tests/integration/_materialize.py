"""Shared helpers of the materialize tests: the module's stores and references read from the partitions."""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_tasks.contract import EVENT_TIMESTAMP, FEATURES_LAYER
from ml_tasks.features.materialize import materialize
from ml_tasks.features.spec import VIEWS, ViewSpec
from ml_tasks.features.store import StoreHandle
from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot
from tests.integration._servers.redis import RedisServer

D = dt.date
WINDOW = Interval(D(2024, 3, 1), D(2024, 3, 5))
DAYS = list(WINDOW.days())


@dataclass
class Stores:
    """The module's data root and its two feature stores (SQLite and Redis online stores)."""

    base: Path
    data: Path
    root: DataRoot
    settings: Settings
    sqlite: StoreHandle
    redis: StoreHandle
    server: RedisServer

    def handle(self, kind: str) -> StoreHandle:
        return self.sqlite if kind == "sqlite" else self.redis


def empty_stores(stores: Stores) -> Stores:
    """Empty both online stores (the SQLite tables stay, as feast apply made them)."""
    con = sqlite3.connect(sqlite_path(stores))
    with con:
        for view in VIEWS:
            con.execute(f'DELETE FROM "flywheel_{view.name}"')
    con.close()
    client = stores.server.client()
    client.flushdb()
    client.close()
    return stores


# -- references, from the partitions ------------------------------------------------------------------
def partition_rows(root: DataRoot, view: ViewSpec, day: dt.date) -> list[dict[str, Any]]:
    return list(root.read_partition(root.partition_path(FEATURES_LAYER, view.dataset, day)).to_pylist())


def latest_per_entity(root: DataRoot, view: ViewSpec, days: list[dt.date]) -> dict[Any, dict[str, Any]]:
    """Entity -> its row with the latest event timestamp over ``days``."""
    latest: dict[Any, dict[str, Any]] = {}
    for day in days:
        for row in partition_rows(root, view, day):
            key = row[view.entity]
            if key not in latest or row[EVENT_TIMESTAMP] > latest[key][EVENT_TIMESTAMP]:
                latest[key] = row
    return latest


def online_values(handle: StoreHandle, view: ViewSpec, keys: list[Any]) -> dict[Any, dict[str, Any]]:
    """Entity -> feature values, read with Feast's own online reader."""
    names = list(view.feature_columns())
    got = handle.store.get_online_features(
        features=[f"{view.name}:{n}" for n in names], entity_rows=[{view.entity: k} for k in keys]
    ).to_dict()
    return {k: {n: got[n][i] for n in names} for i, k in enumerate(got[view.entity])}


def expected_values(row: dict[str, Any], view: ViewSpec) -> dict[str, Any]:
    """What Feast serves for a feature row: the values, NaN as a missing value (None)."""
    return {
        n: None if isinstance(row[n], float) and math.isnan(row[n]) else row[n]
        for n in view.feature_columns()
    }


def sqlite_path(stores: Stores) -> Path:
    return stores.data / "feast" / "online.db"


def sqlite_rows(stores: Stores) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the online tables, all columns, in key order."""
    con = sqlite3.connect(sqlite_path(stores))
    try:
        return {
            view.name: con.execute(
                "SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts"
                f' FROM "flywheel_{view.name}" ORDER BY entity_key, feature_name'
            ).fetchall()
            for view in VIEWS
        }
    finally:
        con.close()


def run(stores: Stores, kind: str, interval: Interval, **kwargs: Any) -> dict[str, Any]:
    return materialize(stores.handle(kind), stores.root, interval, stores.settings, **kwargs)
