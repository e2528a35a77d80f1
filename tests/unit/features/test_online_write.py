"""online_write: the bulk encoders produce Feast's own bytes, and SqliteWriter Feast's own table rows.

Every expectation comes from Feast itself: ``serialize_entity_key``, ``ValueProto(...).SerializeToString()``,
Feast's Arrow -> proto conversion (``python_values_to_proto_values``), ``extract_text_and_num`` and
``SqliteOnlineStore.online_write_batch`` / ``online_read`` on a real SQLite file.
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

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _redis_key, extract_text_and_num
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.repo_config import RepoConfig
from feast.type_map import python_values_to_proto_values
from feast.types import Float64, Int64, String
from feast.utils import _convert_arrow_to_proto

from ml_tasks.contract import EVENT_TIMESTAMP, FEATURES_LAYER
from ml_tasks.features.materialize import interval_files, latest_rows, prefetched
from ml_tasks.features.online_encoding import (
    OnlineWriteError,
    UnsupportedLayout,
    ViewLayout,
    encode_entity_keys,
    encode_values,
    key_order_sql,
)
from ml_tasks.features.online_redis import RedisWriter
from ml_tasks.features.online_sqlite import SqliteWriter, value_texts
from ml_tasks.features.spec import VIEWS_BY_NAME, ViewSpec
from ml_tasks.intervals import Interval
from ml_tasks.storage import DataRoot, Manifest, PartitionError

RNG = np.random.default_rng(20240501)
INT_EDGES = [
    0,
    1,
    -1,
    127,
    128,
    -128,
    300,
    16_383,
    16_384,
    2**31,
    -(2**31),
    2**53,
    -(2**53),
    2**63 - 1,
    -(2**63),
]
FLOAT_EDGES = [
    0.0,
    -0.0,
    1.0,
    -1.5,
    0.1,
    1 / 3,
    1e16,
    1e15,
    1e-4,
    1e-5,
    123456789.125,
    5e-324,
    1.7976931348623157e308,
]
STRINGS = ["", "a", "Flash Cab", "é漢字🚕", "x" * 127, "y" * 128, "z" * 20_000, "quote ' and \" and \x00 nul"]


def feast_key(join_key: str, value: Value) -> bytes:
    return bytes(serialize_entity_key(EntityKey(join_keys=[join_key], entity_values=[value]), 3))


def feast_convert(values: pa.Array, value_type: ValueType) -> list[Value]:
    """Feast's own conversion of an Arrow column (what ``_convert_arrow_to_proto`` does per column)."""
    return list(python_values_to_proto_values(values.to_numpy(zero_copy_only=False), value_type))


# ------------------------------------------------------------------------------------ entity keys
def test_int64_entity_keys_equal_serialize_entity_key() -> None:
    keys = INT_EDGES + RNG.integers(-(2**63), 2**63 - 1, 2000, dtype=np.int64).tolist()
    got = encode_entity_keys(pa.array(keys, pa.int64()), "pickup_community_area", "INT64").to_pylist()
    expected = [feast_key("pickup_community_area", Value(int64_val=k)) for k in keys]
    assert len(got) == len(keys) == 2015
    assert got == expected


def test_string_entity_keys_equal_serialize_entity_key() -> None:
    keys = STRINGS + [f"company {i}" for i in range(500)]
    got = encode_entity_keys(pa.array(keys, pa.string()), "company", "STRING").to_pylist()
    assert got == [feast_key("company", Value(string_val=k)) for k in keys]
    # a large_string column and a sliced array (non-zero Arrow offset) encode the same
    sliced = pa.array(["pad", "pad", *keys], pa.large_string()).slice(2)
    assert encode_entity_keys(sliced, "company", "STRING").to_pylist() == got


def test_redis_keys_equal_feast_redis_key() -> None:
    ints = [3, -7, 2**40]
    got = encode_entity_keys(pa.array(ints), "pickup_community_area", "INT64", b"flywheel").to_pylist()
    assert got == [
        _redis_key(
            "flywheel", EntityKey(join_keys=["pickup_community_area"], entity_values=[Value(int64_val=k)])
        )
        for k in ints
    ]
    texts = ["Flash Cab", "é"]
    got = encode_entity_keys(pa.array(texts), "company", "STRING", b"flywheel").to_pylist()
    assert got == [
        _redis_key("flywheel", EntityKey(join_keys=["company"], entity_values=[Value(string_val=k)]))
        for k in texts
    ]


def test_null_entity_key_is_refused_with_the_key_name() -> None:
    with pytest.raises(OnlineWriteError, match=r"1 row\(s\) have a null entity key 'company'"):
        encode_entity_keys(pa.array(["a", None, "b"]), "company", "STRING")


def test_unsupported_key_and_value_kinds_are_refused() -> None:
    with pytest.raises(UnsupportedLayout, match="BOOL"):
        encode_entity_keys(pa.array([True]), "flag", "BOOL")
    with pytest.raises(UnsupportedLayout, match="FLOAT"):
        encode_values(pa.array([1.0], pa.float32()), "FLOAT")


# ----------------------------------------------------------------------------------------- values
def test_int64_values_equal_value_proto_including_negatives_and_nulls() -> None:
    values = INT_EDGES + RNG.integers(-(2**63), 2**63 - 1, 3000, dtype=np.int64).tolist() + [None]
    mask = [v is None for v in values]
    got = encode_values(pa.array(values, pa.int64()), "INT64").to_pylist()
    expected = [b"" if v is None else Value(int64_val=v).SerializeToString() for v in values]
    assert got == expected
    assert got[-1] == Value().SerializeToString() == b""  # Feast's missing value
    assert sum(mask) == 1 and len(got[2]) == 11  # -1: tag + a 10-byte varint, as protobuf writes it


def test_int64_values_equal_feasts_own_conversion() -> None:
    # no nulls: Feast converts numpy int64 exactly, over the whole range
    exact = pa.array(INT_EDGES + RNG.integers(-(2**63), 2**63 - 1, 1000, dtype=np.int64).tolist(), pa.int64())
    expected = [v.SerializeToString() for v in feast_convert(exact, ValueType.INT64)]
    assert encode_values(exact, "INT64").to_pylist() == expected
    # with nulls Feast goes through float64: equal wherever that is exact (|v| <= 2**53)
    small = RNG.integers(-(2**53), 2**53, 1000, dtype=np.int64)
    with_nulls = pa.array(small, pa.int64(), mask=RNG.random(1000) < 0.1)
    expected = [v.SerializeToString() for v in feast_convert(with_nulls, ValueType.INT64)]
    got = encode_values(with_nulls, "INT64").to_pylist()
    assert got == expected
    assert got.count(b"") == with_nulls.null_count > 50


def test_float64_values_equal_value_proto_and_feasts_conversion() -> None:
    randoms = (RNG.standard_normal(3000) * 10.0 ** RNG.integers(-300, 300, 3000)).tolist()
    values: list[float | None] = [*FLOAT_EDGES, math.inf, -math.inf, *randoms, None, math.nan]
    array = pa.array(values, pa.float64())
    got = encode_values(array, "DOUBLE").to_pylist()
    # NaN is Feast's missing value, like null (Feast's pd.isnull cannot tell them apart)
    expected = [
        b"" if v is None or math.isnan(v) else Value(double_val=v).SerializeToString() for v in values
    ]
    assert got == expected
    assert got[-2:] == [b"", b""]
    assert got[1] == b"\x29" + b"\x00" * 7 + b"\x80"  # -0.0 keeps its sign bit
    assert got == [v.SerializeToString() for v in feast_convert(array, ValueType.DOUBLE)]


def test_string_values_equal_value_proto() -> None:
    values: list[str | None] = [*STRINGS, None, *[f"s{i}" * (i % 90) for i in range(400)]]
    array = pa.array(values, pa.string())
    got = encode_values(array, "STRING").to_pylist()
    assert got == [b"" if v is None else Value(string_val=v).SerializeToString() for v in values]
    assert got == [v.SerializeToString() for v in feast_convert(array, ValueType.STRING)]
    assert encode_values(array.slice(3), "STRING").to_pylist() == got[3:]


def test_all_null_and_empty_columns() -> None:
    assert encode_values(pa.array([None, None], pa.float64()), "DOUBLE").to_pylist() == [b"", b""]
    assert encode_values(pa.array([None], pa.int64()), "INT64").to_pylist() == [b""]
    assert encode_values(pa.array([None], pa.string()), "STRING").to_pylist() == [b""]
    assert encode_values(pa.array([], pa.float64()), "DOUBLE").to_pylist() == []
    assert encode_entity_keys(pa.array([], pa.int64()), "k", "INT64").to_pylist() == []


SCALES = RNG.integers(-30, 30, 2000)


def test_value_text_equals_feasts_extract_text() -> None:
    floats = pa.array(
        [
            *FLOAT_EDGES,
            math.inf,
            -math.inf,
            math.nan,
            None,
            *(RNG.random(2000) * 10.0 ** RNG.integers(-30, 30, 2000)),
        ],
        pa.float64(),
    )
    ints = pa.array([*INT_EDGES, None], pa.int64())
    strings = pa.array([*STRINGS, None], pa.string())
    texts = value_texts({"f": (floats, "DOUBLE"), "i": (ints, "INT64"), "s": (strings, "STRING")})
    for name, array, value_type in (
        ("f", floats, ValueType.DOUBLE),
        ("i", ints, ValueType.INT64),
        ("s", strings, ValueType.STRING),
    ):
        protos = (
            feast_convert(array, value_type)
            if name != "i"
            else [Value() if v is None else Value(int64_val=v) for v in array.to_pylist()]
        )
        expected = [extract_text_and_num(p, False)[0] for p in protos]
        assert texts[name].to_pylist() == expected, name
    assert texts["f"].to_pylist()[:3] == ["0.0", "-0.0", "1.0"]
    assert texts["f"].to_pylist()[len(FLOAT_EDGES) : len(FLOAT_EDGES) + 4] == ["inf", "-inf", None, None]


def test_redis_timestamp_bytes_round_trip() -> None:
    when = dt.datetime(2024, 3, 4, 6, 0, 0, 123456, tzinfo=dt.UTC)
    raw = RedisWriter.timestamp_bytes(when)
    assert RedisWriter.timestamp_bytes(when.replace(tzinfo=None)) == raw  # naive = UTC, as Feast
    assert RedisWriter.timestamp_nanos(raw) == int(when.timestamp()) * 10**9 + 123_456_000


# ------------------------------------------------------------------------------------- key order
def test_key_order_sql_sorts_like_serialized_keys() -> None:
    ints = [*INT_EDGES, *RNG.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64).tolist()]
    strings = [*STRINGS, *[chr(0x41 + i % 50) * (i % 300) for i in range(400)], "Ä", "a" * 256, "b" * 255]
    con = duckdb.connect()
    try:
        for column, kind, values, typ in (
            ("k", "INT64", ints, pa.int64()),
            ("k", "STRING", list(dict.fromkeys(strings)), pa.string()),
        ):
            table = pa.table({column: pa.array(values, typ)})
            con.register("t", table)
            ordered = con.execute(f"SELECT k FROM t ORDER BY {', '.join(key_order_sql(column, kind))}")
            got = ordered.to_arrow_table().column(0).combine_chunks()
            con.unregister("t")
            serialized = encode_entity_keys(got, column, kind).to_pylist()
            assert serialized == sorted(serialized), kind
            assert len(serialized) == len(values)
    finally:
        con.close()


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


# ------------------------------------------------ materialize: latest rows per entity, prefetching
Rows = list[dict[str, Any]]


def write_feature_days(
    root: DataRoot, view: ViewSpec, rows_by_day: dict[dt.date, list[dict[str, Any]]]
) -> None:
    schema = view.schema()
    for day, rows in rows_by_day.items():
        full = [{name: row.get(name) for name in schema.names} for row in rows]
        root.write_table(
            root.partition_path(FEATURES_LAYER, view.dataset, day),
            pa.Table.from_pylist(full, schema=schema),
            schema,
            Manifest(dataset=view.dataset, partition=day.isoformat(), step="test", code_version="test"),
        )


def feature_row(view: ViewSpec, key: Any, day: dt.date, trips: int) -> dict[str, Any]:
    end = dt.datetime(day.year, day.month, day.day, 6, tzinfo=dt.UTC) + dt.timedelta(days=1)
    return {view.entity: key, EVENT_TIMESTAMP: end, "trips_1d": trips, "fare_mean_1d": trips / 7}


DAY1 = dt.date(2024, 3, 1)
DAYS3 = [DAY1 + dt.timedelta(days=i) for i in range(3)]


@pytest.mark.parametrize("view_name", ["pickup_area_stats", "company_stats"])
def test_latest_rows_are_the_latest_per_entity_in_serialized_key_order(
    tmp_path: Path, view_name: str
) -> None:
    view = VIEWS_BY_NAME[view_name]
    keys: list[Any] = [3, -2, 256, 1, 77] if view.key_type == pa.int64() else ["b", "", "é", "aa", "Z"]
    rows_by_day = {
        day: [feature_row(view, k, day, 10 * i + j) for j, k in enumerate(keys) if (i + j) % 3 != 2]
        for i, day in enumerate(DAYS3)
    }
    root = DataRoot(str(tmp_path))
    write_feature_days(root, view, rows_by_day)
    expected: dict[Any, dict[str, Any]] = {}
    for day in DAYS3:
        for row in rows_by_day[day]:
            expected[row[view.entity]] = row  # later days replace earlier ones
    files = interval_files(root, view, Interval(DAYS3[0], DAYS3[-1] + dt.timedelta(days=1)))
    kind = "INT64" if view.key_type == pa.int64() else "STRING"
    batches = list(latest_rows(root, view, files, batch_rows=2, key_kind=kind))
    assert [b.num_rows for b in batches] == [2, 2, 1]
    got = pa.Table.from_batches(batches).to_pylist()
    assert {r[view.entity]: (r[EVENT_TIMESTAMP], r["trips_1d"]) for r in got} == {
        k: (r[EVENT_TIMESTAMP], r["trips_1d"]) for k, r in expected.items()
    }
    assert len(got) == len(keys)
    serialized = encode_entity_keys(pa.array([r[view.entity] for r in got], view.key_type), view.entity, kind)
    assert serialized.to_pylist() == sorted(serialized.to_pylist())


@pytest.mark.parametrize("batch_rows", [1, 10])
def test_latest_rows_refuse_two_latest_rows_of_one_entity(tmp_path: Path, batch_rows: int) -> None:
    view = VIEWS_BY_NAME["pickup_area_stats"]
    root = DataRoot(str(tmp_path))
    write_feature_days(
        root,
        view,
        {DAY1: [feature_row(view, 1, DAY1, 1), feature_row(view, 8, DAY1, 2), feature_row(view, 8, DAY1, 3)]},
    )
    files = interval_files(root, view, Interval(DAY1, DAY1 + dt.timedelta(days=1)))
    with pytest.raises(PartitionError, match=r"pickup_community_area=8 .*`ml-tasks build-features`"):
        list(latest_rows(root, view, files, batch_rows, "INT64"))


class RecordingWriter:
    """A writer that records what it is given (prepare: the batch's first key; commit: counts)."""

    name = "recording"
    key_kind: str | None = None

    def __init__(self, fail_prepare_at: int | None = None) -> None:
        self.fail_prepare_at = fail_prepare_at
        self.prepared: list[int] = []
        self.committed: list[int] = []

    def prepare(self, batch: pa.RecordBatch) -> int:
        first = int(batch.column(0)[0].as_py())
        if first == self.fail_prepare_at:
            raise OnlineWriteError(f"cannot encode the batch starting at {first}")
        self.prepared.append(first)
        return first

    def commit(self, prepared: Any) -> tuple[int, int]:
        self.committed.append(int(prepared))
        return 1, 0

    def close(self) -> None:
        pass


def numbered_batches(closed: list[bool]) -> Iterator[pa.RecordBatch]:
    try:
        for start in range(0, 50, 10):
            yield pa.RecordBatch.from_pydict({"k": list(range(start, start + 10))})
    finally:
        closed.append(True)


def test_prefetched_keeps_order_and_counts() -> None:
    closed: list[bool] = []
    writer = RecordingWriter()
    items = list(prefetched(writer, numbered_batches(closed)))
    assert [rows for rows, _ in items] == [10] * 5
    assert [prepared for _, prepared in items] == [0, 10, 20, 30, 40] == writer.prepared
    assert closed == [True]


def test_prefetched_raises_the_prepare_error_and_closes_the_source() -> None:
    closed: list[bool] = []
    writer = RecordingWriter(fail_prepare_at=30)
    seen = []
    with pytest.raises(OnlineWriteError, match="starting at 30"):
        for _, prepared in prefetched(writer, numbered_batches(closed)):
            seen.append(writer.commit(prepared))
    assert writer.committed == [0, 10, 20]
    assert closed == [True]
