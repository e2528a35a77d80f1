"""online_write: the bulk encoders produce Feast's own bytes (entity keys, values, texts, key order).

Every expectation comes from Feast itself: ``serialize_entity_key``, ``ValueProto(...).SerializeToString()``,
Feast's Arrow -> proto conversion (``python_values_to_proto_values``) and ``extract_text_and_num``.
"""

from __future__ import annotations

import datetime as dt
import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from feast import ValueType
from feast.infra.online_stores.helpers import _redis_key, extract_text_and_num
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values

from ml_tasks.features.online_encoding import (
    OnlineWriteError,
    UnsupportedLayout,
    encode_entity_keys,
    encode_values,
    key_order_sql,
)
from ml_tasks.features.online_redis import RedisWriter
from ml_tasks.features.online_sqlite import value_texts
from tests.unit.features._online_write import feast_key

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
