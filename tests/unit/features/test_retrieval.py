"""The shared point-in-time join: rows come back complete, once each, in our order; per-view misses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from ml_tasks.features.retrieval import ROW, join_features, missing_views
from ml_tasks.features.store import FeatureStoreError


def test_missing_views_counts_rows_whose_view_columns_are_all_null() -> None:
    table = pa.table(
        {
            "a__x": pa.array([1.0, None, None, None]),
            "a__y": pa.array([None, None, 2.0, None]),  # row 0 and 2 have a row of view a
            "b__x": pa.array([None, 1.0, None, None]),
        }
    )
    counts, per_row = missing_views(table, {"a": ["a__x", "a__y"], "b": ["b__x"]})
    assert counts == {"a": 2, "b": 3}
    assert per_row.type == pa.int8() and per_row.to_pylist() == [1, 1, 1, 2]


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


class _View:
    """What the join reads of a Feast feature view: its name, features and entity columns."""

    def __init__(self, name: str, features: list[str], entity: str) -> None:
        self.name = name
        self.features = [_Named(f) for f in features]
        self.entity_columns = [_Named(entity)]


class _Job:
    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def to_arrow(self) -> pa.Table:
        return self.table


class _Store:
    """A stand-in for Feast's ``get_historical_features``: each row's features are its key times 10, except
    for keys without a feature row (nulls); rows come back in reverse order; ``tamper`` breaks a result."""

    def __init__(self, tamper: str | None = None) -> None:
        self.tamper = tamper
        self.calls: list[int] = []

    def get_historical_features(self, entity_df: Any, features: Any, full_feature_names: bool) -> _Job:
        assert full_feature_names and features == "service"
        sent = pa.Table.from_pandas(entity_df, preserve_index=False)
        self.calls.append(sent.num_rows)
        keys = sent["area"].to_pylist()
        values = [None if k is None or k < 0 else float(k * 10) for k in keys]
        table = sent.append_column("v__x", pa.array(values, pa.float64()))
        table = table.append_column("v__y", pa.array([None if v is None else 1.0 for v in values]))
        table = table.take(pa.array(list(range(table.num_rows))[::-1]))
        if self.tamper == "drop" and table.num_rows > 1:
            table = table.slice(1)
        if self.tamper == "invent":
            table = table.set_column(0, ROW, pa.array([r + 100 for r in table[ROW].to_pylist()], pa.int64()))
        return _Job(table)


class _Handle:
    def __init__(self, store: _Store) -> None:
        self.store = store


def _entities(keys: list[int | None]) -> pa.Table:
    start = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
    return pa.table(
        {
            "trip_key": pa.array([f"t{i}" for i in range(len(keys))]),
            "event_timestamp": pa.array(
                [start + dt.timedelta(minutes=i) for i in range(len(keys))], pa.timestamp("us", tz="UTC")
            ),
            "area": pa.array(keys, pa.int64()),
        }
    )


def _join(store: _Store, entities: pa.Table, chunk_rows: int = 2) -> pa.Table:
    handle = _Handle(store)
    views = [_View("v", ["x", "y"], "area")]
    return join_features(
        handle,  # type: ignore[arg-type]
        "service",  # type: ignore[arg-type]
        views,  # type: ignore[arg-type]
        entities,
        chunk_rows=chunk_rows,
        refusing="predictions",
    )


def test_the_join_keeps_every_row_once_in_our_order_in_chunks() -> None:
    store = _Store()
    entities = _entities([3, -1, 5, None, 7])
    joined = _join(store, entities)
    assert store.calls == [2, 2, 1]
    assert joined.column_names == [*entities.column_names, "v__x", "v__y"]
    assert joined.select(entities.column_names).equals(entities)
    assert joined["v__x"].to_pylist() == [30.0, None, 50.0, None, 70.0]
    counts, per_row = missing_views(joined, {"v": ["v__x", "v__y"]})
    assert counts == {"v": 2} and per_row.to_pylist() == [0, 1, 0, 1, 0]


def test_the_join_of_no_rows_has_the_typed_feature_columns() -> None:
    store = _Store()
    joined = _join(store, _entities([]))
    assert store.calls == [] and joined.num_rows == 0
    assert joined.schema.field("v__x").type == pa.float64()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("drop", r"returned 1 rows for 2 entity rows: refusing predictions that lost or duplicated trips"),
        ("invent", r"returned entity rows that were not sent: refusing predictions"),
    ],
)
def test_the_join_refuses_lost_or_foreign_rows(tamper: str, message: str) -> None:
    with pytest.raises(FeatureStoreError, match=message):
        _join(_Store(tamper), _entities([1, 2, 3]))
    with pytest.raises(ValueError, match="chunk_rows must be >= 1"):
        _join(_Store(), _entities([1]), chunk_rows=0)
