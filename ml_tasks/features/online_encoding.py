"""Feast's online bytes, a column at a time: serialized entity keys (version 3) and ``ValueProto`` values.

The encoders produce exactly the bytes Feast's own conversion writes; the rules are in docs/online-store.md.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.errors import FlywheelError
from ml_tasks.features.store import FeatureStoreError

if TYPE_CHECKING:
    from feast import FeatureView

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

# feast.protos.feast.types.Value_pb2.ValueType numbers, as written into serialized entity keys
VALUE_TYPE_STRING = 2
VALUE_TYPE_INT64 = 4
# ValueProto field tags (field number << 3 | wire type): string_val = 2 (length-delimited),
# int64_val = 4 (varint), double_val = 5 (64-bit)
TAG_STRING = 0x12
TAG_INT64 = 0x20
TAG_DOUBLE = 0x29
#: value kinds the fast writers encode; anything else goes through Feast's generic path
KINDS: dict[str, pa.DataType] = {"INT64": pa.int64(), "DOUBLE": pa.float64(), "STRING": pa.large_string()}
KEY_KINDS = ("INT64", "STRING")
#: entities per SQLite "is the stored row newer?" query (3 parameters each)
STALE_CHECK_ROWS = 2000
ENTITY_KEY_SERIALIZATION_VERSION = 3


class UnsupportedLayout(FlywheelError, ValueError):
    """The view or store cannot be written by the fast writers (use Feast's generic path)."""


class OnlineWriteError(FeatureStoreError):
    """A batch cannot be written: a null entity key or timestamp, a missing column, no online table."""


# ------------------------------------------------------------------------------------ bytes, in bulk
@dataclass
class _Part:
    """One piece of every row's byte string: row r is ``lengths[r]`` bytes.

    Either a matrix (row r = the first ``lengths[r]`` bytes of ``matrix[r]``) or flat (the rows' bytes
    one after the other in ``data``).
    """

    lengths: I64
    matrix: U8 | None = None
    data: U8 | None = None

    @classmethod
    def constant(cls, value: bytes, valid: Bool) -> _Part:
        """``value`` in every valid row, nothing in the others."""
        matrix = np.broadcast_to(np.frombuffer(value, np.uint8), (len(valid), len(value)))
        return cls(np.where(valid, len(value), 0).astype(np.int64), matrix=matrix)


def _flatten(parts: Sequence[_Part]) -> _Part:
    """Matrix parts side by side -> one flat part (their valid bytes, row after row)."""
    matrices = [p.matrix for p in parts if p.matrix is not None]
    big = np.hstack(matrices) if len(matrices) > 1 else np.asarray(matrices[0])
    lengths = np.sum([p.lengths for p in parts], axis=0).astype(np.int64)
    if np.all(lengths == big.shape[1]):
        return _Part(lengths, data=np.ascontiguousarray(big).reshape(-1))
    # row-major order keeps each row's pieces in order: the mask picks each piece's leading bytes
    mask = np.hstack(
        [np.arange(m.shape[1])[None, :] < p.lengths[:, None] for p, m in zip(parts, matrices, strict=True)]
    )
    return _Part(lengths, data=big[mask])


def _concat(parts: Sequence[_Part]) -> pa.LargeBinaryArray:
    """Row-wise concatenation of ``parts`` (all of the same row count) as an Arrow binary array."""
    flat: list[_Part] = []
    run: list[_Part] = []
    for part in [*parts, None]:
        if part is not None and part.matrix is not None:
            run.append(part)
            continue
        if run:
            flat.append(_flatten(run))
            run = []
        if part is not None:
            flat.append(part)
    n = len(parts[0].lengths)
    total = np.sum([p.lengths for p in flat], axis=0).astype(np.int64)
    out_off = np.zeros(n + 1, np.int64)
    np.cumsum(total, out=out_off[1:])
    if len(flat) == 1:
        out = np.asarray(flat[0].data)
    else:
        out = np.empty(int(out_off[-1]), np.uint8)
        before = np.zeros(n, np.int64)
        for part in flat:
            data = np.asarray(part.data)
            if len(data):
                part_off = np.zeros(n, np.int64)
                np.cumsum(part.lengths[:-1], out=part_off[1:])
                # byte j of the part (row r) goes to out_off[r] + before[r] + (j - part_off[r])
                shift = np.repeat(out_off[:-1] + before - part_off, part.lengths)
                out[shift + np.arange(len(data))] = data
            before += part.lengths
    buffers = [None, pa.py_buffer(out_off), pa.py_buffer(np.ascontiguousarray(out))]
    return pa.Array.from_buffers(pa.large_binary(), n, buffers)


def _varint(unsigned: npt.NDArray[np.uint64], valid: Bool) -> _Part:
    """Protobuf base-128 varints of ``unsigned`` (1-10 bytes each); nothing for invalid rows."""
    n = len(unsigned)
    nbytes = np.ones(n, np.int64)
    for k in range(1, 10):
        nbytes += (unsigned >> np.uint64(7 * k)) != 0
    width = int(nbytes.max()) if n else 1
    matrix = np.empty((n, width), np.uint8)
    for i in range(width):
        group = ((unsigned >> np.uint64(7 * i)) & np.uint64(0x7F)).astype(np.uint8)
        matrix[:, i] = group | ((i < nbytes - 1).astype(np.uint8) << 7)
    return _Part(np.where(valid, nbytes, 0).astype(np.int64), matrix=matrix)


def _utf8(values: pa.Array) -> tuple[_Part, Bool]:
    """The UTF-8 bytes of a string array (nulls: no bytes) and its validity."""
    text = pc.fill_null(values.cast(pa.large_string()), "")
    valid = _valid(values)
    offsets = np.frombuffer(text.buffers()[1], np.int64)[text.offset : text.offset + len(text) + 1]
    data_buf = text.buffers()[2]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    return _Part(np.diff(offsets), data=data[offsets[0] : offsets[-1]]), valid


def _valid(values: pa.Array) -> Bool:
    if values.null_count == 0:
        return np.ones(len(values), np.bool_)
    return np.asarray(values.is_valid().to_numpy(zero_copy_only=False), np.bool_)


def encode_values(values: pa.Array, kind: str) -> pa.LargeBinaryArray:
    """``ValueProto(<kind>_val=v).SerializeToString()`` for every value; null (and NaN): ``b""``.

    Args:
        values: the column; cast to the kind's Arrow type first (int64, float64 or string).
        kind: Feast value type name: ``INT64``, ``DOUBLE`` or ``STRING``.
    """
    if kind not in KINDS:
        raise UnsupportedLayout(f"no fast encoding for Feast value type {kind}")
    values = values.cast(KINDS[kind])
    n = len(values)
    if kind == "DOUBLE":
        floats = np.asarray(values.to_numpy(zero_copy_only=False), dtype="<f8")  # nulls -> NaN
        valid = ~np.isnan(floats)  # Feast stores NaN as a missing value, like null
        matrix = np.empty((n, 9), np.uint8)
        matrix[:, 0] = TAG_DOUBLE
        matrix[:, 1:] = floats.view(np.uint8).reshape(n, 8)
        return _concat([_Part(np.where(valid, 9, 0).astype(np.int64), matrix=matrix)])
    if kind == "INT64":
        valid = _valid(values)
        ints = np.asarray(pc.fill_null(values, 0).to_numpy(zero_copy_only=False), np.int64)
        # negative int64 values are varints of their two's complement: 10 bytes, as protobuf writes them
        return _concat([_Part.constant(bytes([TAG_INT64]), valid), _varint(ints.view(np.uint64), valid)])
    data, valid = _utf8(values)
    return _concat(
        [
            _Part.constant(bytes([TAG_STRING]), valid),
            _varint(data.lengths.astype(np.uint64), valid),
            data,
        ]
    )


def entity_key_prefix(join_key: str) -> bytes:
    """The serialized-entity-key bytes before the value: key count, key type, key name (version 3)."""
    name = join_key.encode("utf8")
    return struct.pack("<III", 1, VALUE_TYPE_STRING, len(name)) + name


def encode_entity_keys(keys: pa.Array, join_key: str, kind: str, suffix: bytes = b"") -> pa.LargeBinaryArray:
    """``serialize_entity_key(EntityKey(join_keys=[join_key], entity_values=[v]), 3) + suffix`` per row.

    Raises:
        OnlineWriteError: a null key (Feast cannot serialize it either).
        UnsupportedLayout: a key type other than INT64 or STRING.
    """
    if kind not in KEY_KINDS:
        raise UnsupportedLayout(f"no fast encoding for entity keys of type {kind}")
    if keys.null_count:
        raise OnlineWriteError(f"{keys.null_count} row(s) have a null entity key {join_key!r}")
    n = len(keys)
    everywhere = np.ones(n, np.bool_)
    parts = [_Part.constant(entity_key_prefix(join_key), everywhere)]
    if kind == "INT64":
        ints = np.asarray(keys.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype="<i8")
        matrix = np.empty((n, 16), np.uint8)
        matrix[:, :8] = np.frombuffer(struct.pack("<II", VALUE_TYPE_INT64, 8), np.uint8)
        matrix[:, 8:] = ints.view(np.uint8).reshape(n, 8)
        parts.append(_Part(np.full(n, 16, np.int64), matrix=matrix))
    else:
        data, _ = _utf8(keys)
        header = np.empty((n, 8), np.uint8)
        header[:, :4] = np.frombuffer(struct.pack("<I", VALUE_TYPE_STRING), np.uint8)
        header[:, 4:] = data.lengths.astype("<u4").view(np.uint8).reshape(n, 4)
        parts += [_Part(np.full(n, 8, np.int64), matrix=header), data]
    if suffix:
        parts.append(_Part.constant(suffix, everywhere))
    return _concat(parts)


def key_order_sql(column: str, kind: str) -> list[str]:
    """DuckDB ORDER BY terms that sort rows like their serialized entity keys sort as bytes.

    SQLite keeps the online table's primary key and entity-key index as B-trees in byte order:
    writing in that order appends to them instead of touching pages all over a large table.
    """
    col = f'"{column}"'
    if kind == "INT64":  # little-endian: the lowest byte decides first
        return [f"(({col} >> {8 * i}) & 255)" for i in range(8)]
    if kind == "STRING":  # little-endian UTF-8 length, then the bytes
        return [f"((strlen({col}) >> {8 * i}) & 255)" for i in range(4)] + [f"encode({col})"]
    return [col]


# ---------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class ViewLayout:
    """What a fast writer needs to know about a feature view's rows."""

    name: str
    join_key: str
    key_kind: str
    features: tuple[tuple[str, str], ...]  # (feature name, Feast value type name), declaration order
    timestamp_field: str
    created_timestamp_field: str | None

    @classmethod
    def of(cls, fv: FeatureView, config: Any) -> ViewLayout:
        """The layout of ``fv``.

        Raises:
            UnsupportedLayout: several join keys, unsupported key or value types, or an entity-key
                serialization other than version 3.
        """
        if config.entity_key_serialization_version != ENTITY_KEY_SERIALIZATION_VERSION:
            raise UnsupportedLayout(
                f"entity_key_serialization_version {config.entity_key_serialization_version}"
            )
        if len(fv.entity_columns) != 1:
            raise UnsupportedLayout(f"{len(fv.entity_columns)} join keys")
        key = fv.entity_columns[0]
        key_kind = key.dtype.to_value_type().name
        if key_kind not in KEY_KINDS:
            raise UnsupportedLayout(f"join key {key.name} of type {key_kind}")
        features = tuple((f.name, f.dtype.to_value_type().name) for f in fv.features)
        odd = [f"{name} ({kind})" for name, kind in features if kind not in KINDS]
        if odd:
            raise UnsupportedLayout(f"feature types {', '.join(odd)}")
        if not features:
            raise UnsupportedLayout("no features")
        source = fv.batch_source
        if source is None:
            raise UnsupportedLayout("no batch source")
        return cls(
            name=fv.name,
            join_key=key.name,
            key_kind=key_kind,
            features=features,
            timestamp_field=source.timestamp_field,
            created_timestamp_field=source.created_timestamp_column or None,
        )

    def column(self, batch: pa.RecordBatch, name: str) -> pa.Array:
        if name not in batch.schema.names:
            raise OnlineWriteError(
                f"feature view {self.name}: the batch has no column {name!r} (columns: {batch.schema.names})"
            )
        return batch.column(name)


def unique_datetimes(values: pa.Array) -> tuple[list[dt.datetime | None], I64]:
    """Distinct timestamps as naive UTC datetimes (what Feast's conversion hands its stores) + indices."""
    if pa.types.is_timestamp(values.type):
        unit_us = pa.timestamp("us", tz=values.type.tz)
        values = values.cast(unit_us, safe=False)  # Feast's to_pydatetime() drops nanoseconds too
    encoded = pc.dictionary_encode(values, null_encoding="encode")  # a null is a value: None
    uniques: list[dt.datetime | None] = []
    for value in encoded.dictionary.to_pylist():
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        uniques.append(value)
    indices = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), np.int64)
    return uniques, indices


def take_objects(objects: Sequence[Any], indices: I64) -> list[Any]:
    table = np.empty(len(objects), dtype=object)
    table[:] = objects
    return list(table[indices])
