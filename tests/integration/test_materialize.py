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
from typing import Any

import pyarrow as pa
import pytest

from ml_tasks.contract import EVENT_TIMESTAMP
from ml_tasks.features.materialize import interval_files, latest_rows
from ml_tasks.features.online_write import online_writer, write_batch
from ml_tasks.features.spec import VIEWS, VIEWS_BY_NAME, ViewSpec
from tests.integration._materialize import (
    DAYS,
    WINDOW,
    Stores,
    empty_stores,
    expected_values,
    latest_per_entity,
    online_values,
    partition_rows,
    run,
    sqlite_rows,
)


def redis_hashes(online_stores: Stores) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of the Redis online store."""
    client = online_stores.server.client()
    try:
        hashes: dict[bytes, dict[bytes, bytes]] = {}
        for key in client.scan_iter(count=1000):
            hashes[key] = dict(client.hgetall(key))  # type: ignore[arg-type]
        return hashes
    finally:
        client.close()


def snapshot(online_stores: Stores, kind: str) -> Any:
    return sqlite_rows(online_stores) if kind == "sqlite" else redis_hashes(online_stores)


def by_view(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["view"]: v for v in summary["views"]}


# -- tests --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_online_values_equal_the_latest_feature_rows(empty_online_stores: Stores, kind: str) -> None:
    summary = run(
        empty_online_stores, kind, WINDOW, batch_rows=17
    )  # many small batches: batching must not matter
    views = by_view(summary)
    assert summary["online_store"] == kind
    for view in VIEWS:
        expected = latest_per_entity(empty_online_stores.root, view, DAYS)
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
        got = online_values(empty_online_stores.handle(kind), view, list(expected))
        assert got == {k: expected_values(row, view) for k, row in expected.items()}
        assert any(v is None for values in got.values() for v in values.values())  # nulls are served
    assert summary["rows"] == sum(v["rows_read"] for v in summary["views"])
    assert summary["peak_rss_mib"] > 0 and summary["rows_per_second"] > 0


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_stored_bytes_equal_feasts_own_write_path(empty_online_stores: Stores, kind: str) -> None:
    """The fast writers store exactly what Feast's _convert_arrow_to_proto + online_write_batch store."""
    handle = empty_online_stores.handle(kind)
    for spec in VIEWS:
        writer = online_writer(handle.store, handle.store.get_feature_view(spec.name), fast=False)
        assert writer.name == "feast"
        for batch in latest_rows(
            empty_online_stores.root, spec, interval_files(empty_online_stores.root, spec, WINDOW), 1000
        ):
            write_batch(writer, batch)
    feasts = snapshot(empty_online_stores, kind)
    assert sum(len(rows) for rows in feasts.values()) > 100
    empty_again = snapshot(empty_stores(empty_online_stores), kind)
    assert sum(len(rows) for rows in empty_again.values()) == 0
    run(empty_online_stores, kind, WINDOW)
    assert snapshot(empty_online_stores, kind) == feasts


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
def test_edge_rows_are_stored_exactly_as_feast_stores_them(empty_online_stores: Stores, kind: str) -> None:
    handle = empty_online_stores.handle(kind)
    for fast in (False, True):
        empty_stores(empty_online_stores)
        for view in VIEWS:
            fv = handle.store.get_feature_view(view.name)
            writer = online_writer(handle.store, fv, fast=fast)
            assert writer.name == (kind if fast else "feast")
            assert write_batch(writer, edge_batch(view)) == (6, 0)
            writer.close()
        if not fast:
            feasts = snapshot(empty_online_stores, kind)
    features = len(VIEWS[0].feature_columns())
    if kind == "sqlite":  # a row per entity and feature
        assert sum(len(rows) for rows in feasts.values()) == 6 * len(VIEWS) * features
    else:  # a hash per entity and view: the features and the view's _ts field
        assert len(feasts) == 6 * len(VIEWS) and {len(h) for h in feasts.values()} == {features + 1}
    assert snapshot(empty_online_stores, kind) == feasts
    # and Feast reads them back: NaN and null as missing, infinities and -0.0 as values
    view = VIEWS_BY_NAME["pickup_area_stats"]
    rows = edge_batch(view).to_pylist()
    got = online_values(handle, view, [r[view.entity] for r in rows])
    assert got == {r[view.entity]: expected_values(r, view) for r in rows}
    assert any(v == math.inf for values in got.values() for v in values.values())


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_materializing_a_window_twice_is_idempotent(empty_online_stores: Stores, kind: str) -> None:
    first = run(empty_online_stores, kind, WINDOW)
    stored = snapshot(empty_online_stores, kind)
    values = {
        v.name: online_values(
            empty_online_stores.handle(kind), v, list(latest_per_entity(empty_online_stores.root, v, DAYS))
        )
        for v in VIEWS
    }
    second = run(empty_online_stores, kind, WINDOW)
    # the same rows again: written again (same timestamps), nothing older, nothing changed
    for a, b in zip(first["views"], second["views"], strict=True):
        assert b["rows_read"] == b["rows_written"] == a["rows_written"] > 0
        assert b["rows_skipped_older"] == 0
    assert snapshot(empty_online_stores, kind) == stored
    assert {
        v.name: online_values(
            empty_online_stores.handle(kind), v, list(latest_per_entity(empty_online_stores.root, v, DAYS))
        )
        for v in VIEWS
    } == values


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_backfill_of_n_days_equals_n_daily_runs(empty_online_stores: Stores, kind: str) -> None:
    """Each day alone (without the later days build-features rebuilds): the guard keeps the newest."""
    run(empty_online_stores, kind, WINDOW)
    whole = snapshot(empty_online_stores, kind)
    for order in (DAYS, list(reversed(DAYS))):
        empty_stores(empty_online_stores)
        skipped = 0
        for day in order:
            summary = run(empty_online_stores, kind, WINDOW.single(day), dependents=False)
            for view in summary["views"]:
                assert view["rows_read"] == view["rows_written"] + view["rows_skipped_older"]
                skipped += view["rows_skipped_older"]
        assert snapshot(empty_online_stores, kind) == whole, [d.isoformat() for d in order]
        # forwards every day is newer than the last; backwards every older day is skipped
        assert (skipped == 0) if order == DAYS else (skipped > 0)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_an_older_window_after_a_newer_one_leaves_the_newer_values(
    empty_online_stores: Stores, kind: str
) -> None:
    newest, oldest = DAYS[-1], DAYS[0]
    run(empty_online_stores, kind, WINDOW.single(newest))
    after_newest = snapshot(empty_online_stores, kind)
    summary = by_view(run(empty_online_stores, kind, WINDOW.single(oldest), dependents=False))
    for view in VIEWS:
        old = {r[view.entity] for r in partition_rows(empty_online_stores.root, view, oldest)}
        new = {r[view.entity] for r in partition_rows(empty_online_stores.root, view, newest)}
        assert summary[view.name]["rows_read"] == len(old)
        assert summary[view.name]["rows_skipped_older"] == len(old & new) > 0
        assert summary[view.name]["rows_written"] == len(old - new)
        latest = latest_per_entity(empty_online_stores.root, view, [newest])
        got = online_values(empty_online_stores.handle(kind), view, list(latest))
        assert got == {k: expected_values(row, view) for k, row in latest.items()}
    if all(summary[v.name]["rows_written"] == 0 for v in VIEWS):
        assert snapshot(empty_online_stores, kind) == after_newest


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_an_older_day_takes_the_later_days_whose_windows_include_it(
    empty_online_stores: Stores, kind: str
) -> None:
    """With dependents (the default) a late day's run also loads the later, rebuilt days: the store ends
    as after the whole window, and the summary names every partition it read."""
    run(empty_online_stores, kind, WINDOW)
    whole = snapshot(empty_online_stores, kind)
    empty_stores(empty_online_stores)
    for day in reversed(DAYS):
        summary = run(empty_online_stores, kind, WINDOW.single(day))
        read = sorted({p["dt"] for p in summary["partitions"]})
        assert read == [d.isoformat() for d in DAYS if d >= day]
        assert summary["window_end"] == WINDOW.end.isoformat()
        assert summary["interval"] == {
            "start": day.isoformat(),
            "end": (day + dt.timedelta(days=1)).isoformat(),
        }
    assert snapshot(empty_online_stores, kind) == whole
