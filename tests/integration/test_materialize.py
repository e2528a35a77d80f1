"""Materialization into real online stores: SQLite (file) and Redis (a real redis-server on 127.0.0.1).

One data root for the module: four days of synthetic trips (2024-03-01 .. 03-04) through extract /
transform / validate / publish and build-features (the steps' functions, in-process: GX and Feast are
imported once). Two stores over the same declarations, applied once each: the local one (SQLite online
store under <data root>/feast, the CLI's default) and a Redis one (FLYWHEEL_FEAST_ENV=redis).

Every expectation is computed here from the feature partitions (the latest row per entity of a window)
and every online value is read back with Feast's own reader (``get_online_features``), or compared with
what Feast's own write path stores for the same rows. Each test first empties the online stores.
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis

from ml_tasks.contract import EVENT_TIMESTAMP, FEATURES_LAYER
from ml_tasks.extract import extract
from ml_tasks.features.build import build_features
from ml_tasks.features.materialize import interval_files, latest_rows, materialize
from ml_tasks.features.online_write import online_writer, write_batch
from ml_tasks.features.spec import VIEWS, VIEWS_BY_NAME, ViewSpec
from ml_tasks.features.store import (
    APPLY_HINT,
    FeatureStoreError,
    StoreHandle,
    apply_declarations,
    open_store,
)
from ml_tasks.intervals import Interval
from ml_tasks.publish import publish
from ml_tasks.settings import Settings
from ml_tasks.sources.synthetic import SyntheticSource
from ml_tasks.storage import DataRoot, PartitionError
from ml_tasks.transform import transform
from ml_tasks.validation import validate
from tests.conftest import run_cli
from tests.integration._servers.redis import RedisServer, redis_server

D = dt.date
WINDOW = Interval(D(2024, 3, 1), D(2024, 3, 5))
DAYS = list(WINDOW.days())
ENV = {"FLYWHEEL_CODE_VERSION": "test"}


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


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    base = tmp_path_factory.mktemp("materialize")
    data = base / "data"
    data.mkdir()
    with pytest.MonkeyPatch.context() as mp, redis_server(base / "redis") as server:
        # open_store exports FLYWHEEL_* variables: the context undoes them after the module
        mp.setenv("FLYWHEEL_DATA_ROOT", str(data))
        mp.setenv("FLYWHEEL_CODE_VERSION", "test")
        mp.setenv("FLYWHEEL_REDIS_CONNECTION", server.connection)
        mp.delenv("FLYWHEEL_FEAST_DIR", raising=False)
        mp.delenv("FLYWHEEL_FEAST_ENV", raising=False)
        root = DataRoot(str(data))
        settings = Settings(data_root=str(data))
        extract(root, SyntheticSource(trips_per_day=600), WINDOW)
        transform(root, WINDOW, settings)
        assert validate(root, WINDOW, settings)["verdict"] == "passed"
        publish(root, WINDOW, settings)
        build_features(root, WINDOW, settings)
        sqlite_handle = open_store(settings)  # <data root>/feast: what the CLI opens by default
        apply_declarations(sqlite_handle)
        redis_settings = Settings(data_root=str(data), feast_env="redis", feast_dir=str(base / "feast-redis"))
        redis_handle = open_store(redis_settings)
        apply_declarations(redis_handle)
        yield Stores(base, data, root, settings, sqlite_handle, redis_handle, server)


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


@pytest.fixture
def empty(stores: Stores) -> Stores:
    """The module's stores with both online stores emptied."""
    return empty_stores(stores)


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


def redis_hashes(stores: Stores) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of the Redis online store."""
    client = stores.server.client()
    try:
        hashes: dict[bytes, dict[bytes, bytes]] = {}
        for key in client.scan_iter(count=1000):
            hashes[key] = dict(client.hgetall(key))  # type: ignore[arg-type]
        return hashes
    finally:
        client.close()


def snapshot(stores: Stores, kind: str) -> Any:
    return sqlite_rows(stores) if kind == "sqlite" else redis_hashes(stores)


def run(stores: Stores, kind: str, interval: Interval, **kwargs: Any) -> dict[str, Any]:
    return materialize(stores.handle(kind), stores.root, interval, stores.settings, **kwargs)


def by_view(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["view"]: v for v in summary["views"]}


# -- tests --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_online_values_equal_the_latest_feature_rows(empty: Stores, kind: str) -> None:
    summary = run(empty, kind, WINDOW, batch_rows=17)  # many small batches: batching must not matter
    views = by_view(summary)
    assert summary["online_store"] == kind
    for view in VIEWS:
        expected = latest_per_entity(empty.root, view, DAYS)
        assert len(expected) > 10
        assert views[view.name] | {"seconds": 0} == {
            "view": view.name,
            "files": len(DAYS),
            "writer": kind,
            "rows_read": len(expected),
            "rows_written": len(expected),
            "rows_skipped_older": 0,
            "seconds": 0,
        }
        got = online_values(empty.handle(kind), view, list(expected))
        assert got == {k: expected_values(row, view) for k, row in expected.items()}
        assert any(v is None for values in got.values() for v in values.values())  # nulls are served
    assert summary["rows"] == sum(v["rows_read"] for v in summary["views"])
    assert summary["peak_rss_mib"] > 0 and summary["rows_per_second"] > 0


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_stored_bytes_equal_feasts_own_write_path(empty: Stores, kind: str) -> None:
    """The fast writers store exactly what Feast's _convert_arrow_to_proto + online_write_batch store."""
    handle = empty.handle(kind)
    for spec in VIEWS:
        writer = online_writer(handle.store, handle.store.get_feature_view(spec.name), fast=False)
        assert writer.name == "feast"
        for batch in latest_rows(empty.root, spec, interval_files(empty.root, spec, WINDOW), 1000):
            write_batch(writer, batch)
    feasts = snapshot(empty, kind)
    assert sum(len(rows) for rows in feasts.values()) > 100
    empty_again = snapshot(empty_stores(empty), kind)
    assert sum(len(rows) for rows in empty_again.values()) == 0
    run(empty, kind, WINDOW)
    assert snapshot(empty, kind) == feasts


def edge_batch(view: ViewSpec) -> pa.RecordBatch:
    """Rows Feast must store faithfully: odd keys, nulls, NaN, infinities, -0.0, sub-second timestamps."""
    keys: list[Any] = (
        [0, -1, 7, 2**40, -(2**62), 77]
        if view.key_type == pa.int64()
        else ["", "Flash Cab", "é漢字 🚕", "x" * 300, "'", "7"]
    )
    n = len(keys)
    base = dt.datetime(2030, 1, 1, 6, tzinfo=dt.UTC)
    columns: dict[str, Any] = {
        view.entity: keys,
        EVENT_TIMESTAMP: [base + dt.timedelta(days=i % 2, microseconds=123_457 * i) for i in range(n)],
    }
    specials = [None, math.nan, math.inf, -math.inf, -0.0, 1e-300]
    for j, (name, typ) in enumerate(view.feature_columns().items()):
        if typ == pa.int64():
            columns[name] = [None if (i + j) % 4 == 0 else (i - 3) * 10**j for i in range(n)]
        else:
            columns[name] = [specials[(i + j) % n] if (i + j) % 3 else 1.0 / (i + j + 3) for i in range(n)]
    return pa.RecordBatch.from_pydict(columns, schema=view.schema())


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_edge_rows_are_stored_exactly_as_feast_stores_them(empty: Stores, kind: str) -> None:
    handle = empty.handle(kind)
    for fast in (False, True):
        empty_stores(empty)
        for view in VIEWS:
            fv = handle.store.get_feature_view(view.name)
            writer = online_writer(handle.store, fv, fast=fast)
            assert writer.name == (kind if fast else "feast")
            assert write_batch(writer, edge_batch(view)) == (6, 0)
            writer.close()
        if not fast:
            feasts = snapshot(empty, kind)
    features = len(VIEWS[0].feature_columns())
    if kind == "sqlite":  # a row per entity and feature
        assert sum(len(rows) for rows in feasts.values()) == 6 * len(VIEWS) * features
    else:  # a hash per entity and view: the features and the view's _ts field
        assert len(feasts) == 6 * len(VIEWS) and {len(h) for h in feasts.values()} == {features + 1}
    assert snapshot(empty, kind) == feasts
    # and Feast reads them back: NaN and null as missing, infinities and -0.0 as values
    view = VIEWS_BY_NAME["pickup_area_stats"]
    rows = edge_batch(view).to_pylist()
    got = online_values(handle, view, [r[view.entity] for r in rows])
    assert got == {r[view.entity]: expected_values(r, view) for r in rows}
    assert any(v == math.inf for values in got.values() for v in values.values())


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_materializing_a_window_twice_is_idempotent(empty: Stores, kind: str) -> None:
    first = run(empty, kind, WINDOW)
    stored = snapshot(empty, kind)
    values = {
        v.name: online_values(empty.handle(kind), v, list(latest_per_entity(empty.root, v, DAYS)))
        for v in VIEWS
    }
    second = run(empty, kind, WINDOW)
    # the same rows again: written again (same timestamps), nothing older, nothing changed
    for a, b in zip(first["views"], second["views"], strict=True):
        assert b["rows_read"] == b["rows_written"] == a["rows_written"] > 0
        assert b["rows_skipped_older"] == 0
    assert snapshot(empty, kind) == stored
    assert {
        v.name: online_values(empty.handle(kind), v, list(latest_per_entity(empty.root, v, DAYS)))
        for v in VIEWS
    } == values


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_backfill_of_n_days_equals_n_daily_runs(empty: Stores, kind: str) -> None:
    """Each day alone (without the later days build-features rebuilds): the guard keeps the newest."""
    run(empty, kind, WINDOW)
    whole = snapshot(empty, kind)
    for order in (DAYS, list(reversed(DAYS))):
        empty_stores(empty)
        skipped = 0
        for day in order:
            summary = run(empty, kind, WINDOW.single(day), dependents=False)
            for view in summary["views"]:
                assert view["rows_read"] == view["rows_written"] + view["rows_skipped_older"]
                skipped += view["rows_skipped_older"]
        assert snapshot(empty, kind) == whole, [d.isoformat() for d in order]
        # forwards every day is newer than the last; backwards every older day is skipped
        assert (skipped == 0) if order == DAYS else (skipped > 0)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_an_older_window_after_a_newer_one_leaves_the_newer_values(empty: Stores, kind: str) -> None:
    newest, oldest = DAYS[-1], DAYS[0]
    run(empty, kind, WINDOW.single(newest))
    after_newest = snapshot(empty, kind)
    summary = by_view(run(empty, kind, WINDOW.single(oldest), dependents=False))
    for view in VIEWS:
        old = {r[view.entity] for r in partition_rows(empty.root, view, oldest)}
        new = {r[view.entity] for r in partition_rows(empty.root, view, newest)}
        assert summary[view.name]["rows_read"] == len(old)
        assert summary[view.name]["rows_skipped_older"] == len(old & new) > 0
        assert summary[view.name]["rows_written"] == len(old - new)
        latest = latest_per_entity(empty.root, view, [newest])
        got = online_values(empty.handle(kind), view, list(latest))
        assert got == {k: expected_values(row, view) for k, row in latest.items()}
    if all(summary[v.name]["rows_written"] == 0 for v in VIEWS):
        assert snapshot(empty, kind) == after_newest


def test_a_missing_feature_partition_names_the_day_and_writes_nothing(empty: Stores) -> None:
    beyond = Interval(WINDOW.start, WINDOW.end + dt.timedelta(days=2))
    with pytest.raises(PartitionError) as err:
        run(empty, "sqlite", beyond)
    message = str(err.value)
    assert "2024-03-05, 2024-03-06" in message and "2 day(s)" in message
    assert "`ml-tasks build-features`" in message and "pickup_area_stats" in message
    assert sum(len(rows) for rows in sqlite_rows(empty).values()) == 0


def test_an_unknown_view_is_refused_with_the_choices(empty: Stores) -> None:
    with pytest.raises(FeatureStoreError, match=r"unknown feature view\(s\) \['trip_stats'\]") as err:
        run(empty, "sqlite", WINDOW, views=["pickup_area_stats", "trip_stats"])
    assert "company_stats" in str(err.value) and "pickup_area_stats" in str(err.value)
    assert sum(len(rows) for rows in sqlite_rows(empty).values()) == 0


def test_cli_materializes_one_view_of_one_day(empty: Stores) -> None:
    day = DAYS[1]
    env = {**ENV, "FLYWHEEL_DATA_ROOT": str(empty.data)}
    out = run_cli(
        "materialize",
        "--start",
        day.isoformat(),
        "--view",
        "company_stats",
        "--batch-rows",
        "7",
        "--no-dependents",
        env=env,
    )
    view = VIEWS_BY_NAME["company_stats"]
    expected = latest_per_entity(empty.root, view, [day])
    assert out["step"] == "materialize" and out["online_store"] == "sqlite"
    assert [(v["view"], v["rows_read"], v["rows_written"], v["writer"]) for v in out["views"]] == [
        ("company_stats", len(expected), len(expected), "sqlite")
    ]
    assert out["rows"] == len(expected) and out["peak_rss_mib"] > 0
    rows = sqlite_rows(empty)
    assert rows["pickup_area_stats"] == []
    assert len(rows["company_stats"]) == len(expected) * len(view.feature_columns())
    got = online_values(empty.sqlite, view, list(expected))
    assert got == {k: expected_values(row, view) for k, row in expected.items()}


def test_cli_refuses_an_out_of_date_registry(stores: Stores) -> None:
    """A registry applied for another data root differs from the declarations: exit 1, say to apply."""
    stale = stores.base / "feast-stale"
    other = stores.base / "other-data"
    other.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_DATA_ROOT", str(other))
        handle = open_store(Settings(data_root=str(other), feast_dir=str(stale)))
        apply_declarations(handle)
    env = {**ENV, "FLYWHEEL_DATA_ROOT": str(stores.data), "FLYWHEEL_FEAST_DIR": str(stale)}
    result = run_cli("materialize", "--start", DAYS[0].isoformat(), env=env, check=False)
    assert result["returncode"] == 1, result
    assert APPLY_HINT in result["stderr"] and "out of date" in result["stderr"]
    assert "pickup_area_stats_source" in result["stderr"]  # names what differs
    assert result["stdout"].strip() == ""


def test_redis_server_is_real_and_local(stores: Stores) -> None:
    client = redis.Redis(host="127.0.0.1", port=stores.server.port)
    try:
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        assert str(info["redis_version"]).startswith("6.2")
        assert stores.server.connection == f"127.0.0.1:{stores.server.port}"
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_an_older_day_takes_the_later_days_whose_windows_include_it(empty: Stores, kind: str) -> None:
    """With dependents (the default) a late day's run also loads the later, rebuilt days: the store ends
    as after the whole window, and the summary names every partition it read."""
    run(empty, kind, WINDOW)
    whole = snapshot(empty, kind)
    empty_stores(empty)
    for day in reversed(DAYS):
        summary = run(empty, kind, WINDOW.single(day))
        read = sorted({p["dt"] for p in summary["partitions"]})
        assert read == [d.isoformat() for d in DAYS if d >= day]
        assert summary["window_end"] == WINDOW.end.isoformat()
        assert summary["interval"] == {
            "start": day.isoformat(),
            "end": (day + dt.timedelta(days=1)).isoformat(),
        }
    assert snapshot(empty, kind) == whole
