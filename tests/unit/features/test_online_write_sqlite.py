"""SqliteWriter writes Feast's own table rows.

Compared with ``SqliteOnlineStore.online_write_batch`` / ``online_read`` on a real SQLite file.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.repo_config import RepoConfig
from feast.types import Float64, Int64, String
from feast.utils import _convert_arrow_to_proto

from ml_tasks.features.online_encoding import OnlineWriteError, ViewLayout
from ml_tasks.features.online_sqlite import SqliteWriter
from tests.unit.features._online_write import feast_key

# ------------------------------------------------------------------------------- a real SQLite table
VIEW_NAME = "area_stats"
START = dt.datetime(2024, 3, 4, 6, 0, 0, tzinfo=dt.UTC)


def feature_view() -> FeatureView:
    source = FileSource(
        name="area_stats_source",
        path="unused.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    area = Entity(name="area", join_keys=["area"], value_type=ValueType.INT64)
    return FeatureView(
        name=VIEW_NAME,
        entities=[area],
        ttl=dt.timedelta(days=3),
        schema=[
            Field(name="area", dtype=Int64),
            Field(name="trips", dtype=Int64),
            Field(name="fare_mean", dtype=Float64),
            Field(name="label", dtype=String),
        ],
        source=source,
        online=True,
    )


def batch(keys: list[int], day: int, seed: int) -> pa.RecordBatch:
    """Rows for ``keys`` on day ``day``: nulls, NaN, inf, -0.0, negative and big ints, unicode."""
    rng = np.random.default_rng(seed)
    n = len(keys)
    event = [START + dt.timedelta(days=day, microseconds=int(u)) for u in rng.integers(0, 999_999, n)]
    fares: list[float | None] = (rng.random(n) * 50).tolist()
    for i, special in enumerate([None, math.nan, math.inf, -0.0, 1e-7, 1e22]):
        if i < n:
            fares[i] = special
    trips = rng.integers(-(2**53), 2**53, n).tolist()
    trips[-1] = None
    labels = [None if i % 7 == 0 else f"é{i}" * (i % 5) for i in range(n)]
    return pa.RecordBatch.from_pydict(
        {
            "area": pa.array(keys, pa.int64()),
            "event_timestamp": pa.array(event, pa.timestamp("us", tz="UTC")),
            "created": pa.array([e + dt.timedelta(hours=1) for e in event], pa.timestamp("us", tz="UTC")),
            "trips": pa.array(trips, pa.int64()),
            "fare_mean": pa.array(fares, pa.float64()),
            "label": pa.array(labels, pa.string()),
        }
    )


@pytest.fixture(params=["UTC", "America/Chicago"])
def local_tz(request: pytest.FixtureRequest) -> Iterator[str]:
    """The process time zone: Feast's SQLite timestamp adapter reads naive datetimes in it."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def sqlite_store(folder: Path) -> tuple[RepoConfig, SqliteOnlineStore, str]:
    """A Feast SQLite online store with the view's table created by Feast (``update``)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(
        project="flywheel",
        provider="local",
        registry=str(folder / "registry.db"),
        online_store={"type": "sqlite", "path": str(folder / "online.db")},
        entity_key_serialization_version=3,
    )
    store = SqliteOnlineStore()
    store.update(config, [], [feature_view()], [], [], partial=False)
    return config, store, str(folder / "online.db")


def table_rows(path: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(
            "SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts,"
            f" typeof(event_ts), typeof(created_ts) FROM flywheel_{VIEW_NAME}"
            " ORDER BY entity_key, feature_name"
        ).fetchall()
    finally:
        con.close()


def write_with_feast(config: RepoConfig, store: SqliteOnlineStore, rows: pa.RecordBatch) -> None:
    fv = feature_view()
    data = _convert_arrow_to_proto(rows, fv, {"area": ValueType.INT64})
    store.online_write_batch(config, fv, data, progress=None)


def write_with_flywheel(config: RepoConfig, path: str, rows: pa.RecordBatch) -> tuple[int, int]:
    writer = SqliteWriter(path, f"flywheel_{VIEW_NAME}", ViewLayout.of(feature_view(), config))
    try:
        return writer.write(rows)
    finally:
        writer.close()


def test_sqlite_writer_stores_feasts_exact_rows(tmp_path: Path, local_tz: str) -> None:
    keys = [5, -3, 2**40, 0, 77, *range(100, 160)]
    rows = batch(keys, day=0, seed=1)
    feast_config, feast_store, feast_path = sqlite_store(tmp_path / "feast")
    config, _, path = sqlite_store(tmp_path / "flywheel")
    write_with_feast(feast_config, feast_store, rows)
    assert write_with_flywheel(config, path, rows) == (len(keys), 0)
    expected = table_rows(feast_path)
    assert len(expected) == len(keys) * 3
    assert table_rows(path) == expected
    # Feast reads our rows back: values and the event timestamp (seconds, as Feast stores them)
    got = SqliteOnlineStore().online_read(
        config,
        feature_view(),
        [EntityKey(join_keys=["area"], entity_values=[Value(int64_val=k)]) for k in keys[:6]],
    )
    want = rows.slice(0, 6).to_pylist()
    for (ts, values), row in zip(got, want, strict=True):
        assert values is not None and ts is not None
        assert ts == row["event_timestamp"].replace(microsecond=0)
        assert values["trips"].WhichOneof("val") == ("int64_val" if row["trips"] is not None else None)
        fare = row["fare_mean"]
        if fare is None or math.isnan(fare):
            assert values["fare_mean"].WhichOneof("val") is None
        else:
            assert values["fare_mean"].double_val == fare


def test_sqlite_writer_never_moves_an_entity_backwards(tmp_path: Path) -> None:
    config, _, path = sqlite_store(tmp_path)
    newer = batch([1, 2, 3], day=5, seed=2)
    assert write_with_flywheel(config, path, newer) == (3, 0)
    after_newer = table_rows(path)
    # an older window: entities 1-3 are skipped whole, entity 4 is new and written
    older = batch([1, 2, 3, 4], day=1, seed=3)
    assert write_with_flywheel(config, path, older) == (1, 3)
    rows = table_rows(path)
    assert [r for r in rows if r[0] in {x[0] for x in after_newer}] == after_newer
    assert len(rows) == 4 * 3
    # the same rows again (same timestamps): written again, same table
    assert write_with_flywheel(config, path, newer) == (3, 0)
    assert table_rows(path) == rows
    # newer values replace every feature of the entity
    newest = batch([2], day=9, seed=4)
    assert write_with_flywheel(config, path, newest) == (1, 0)
    entity_2 = [r for r in table_rows(path) if r[0] == feast_key("area", Value(int64_val=2))]
    assert len(entity_2) == 3 and len({r[5] for r in entity_2}) == 1
    assert entity_2[0][5] != next(r for r in rows if r[0] == entity_2[0][0])[5]


def test_sqlite_writer_refuses_a_missing_table_or_column(tmp_path: Path) -> None:
    config, _, path = sqlite_store(tmp_path)
    layout = ViewLayout.of(feature_view(), config)
    with pytest.raises(OnlineWriteError, match="run `ml-tasks feature-apply`"):
        SqliteWriter(path, "flywheel_nothing", layout)
    writer = SqliteWriter(path, f"flywheel_{VIEW_NAME}", layout)
    try:
        with pytest.raises(OnlineWriteError, match="no column 'fare_mean'"):
            writer.write(batch([1], day=0, seed=5).drop_columns(["fare_mean"]))
        no_time = batch([1, 2], 0, 7).to_pydict()
        stamps = [None, no_time["event_timestamp"][1]]
        no_time["event_timestamp"] = pa.array(stamps, pa.timestamp("us", "UTC"))
        with pytest.raises(OnlineWriteError, match="rows with a null event_timestamp"):
            writer.write(pa.RecordBatch.from_pydict(no_time))
        with pytest.raises(OnlineWriteError, match="null entity key 'area'"):
            writer.write(
                pa.RecordBatch.from_pydict(
                    {**batch([1], 0, 6).to_pydict(), "area": pa.array([None], pa.int64())}
                )
            )
    finally:
        writer.close()
    assert table_rows(path) == []  # nothing half-written
