"""Vectorised online-store writers: Arrow record batches straight into Feast's own storage format.

Feast's default write path turns every value into a ``ValueProto`` object in Python, then executes
one SQL statement per value (SQLite) or builds one dict per entity (Redis). Here the bytes Feast would
store are computed a column at a time with numpy and handed to the stores in bulk:

* entity keys: ``serialize_entity_key`` (version 3) of a single ``int64`` or ``string`` join key;
* values: ``ValueProto(...).SerializeToString()`` of ``int64`` (varint), ``float64`` (fixed 64-bit)
  and ``string`` features;
* SQLite ``value_text``: ``str(value)``, as Feast's ``extract_text_and_num`` writes it (DuckDB's
  ``CAST(DOUBLE AS VARCHAR)`` prints the same shortest round-trip text as Python's ``repr``);
* timestamps: each distinct timestamp of a batch is converted once, by the code Feast uses: the
  ``sqlite3`` adapter Feast registers (epoch seconds of the naive UTC time read in the process's
  local time zone: equal to Feast's rows in any zone) and protobuf ``Timestamp.FromDatetime`` (Redis).

Missing values are Feast's missing value, the empty ``ValueProto`` (zero bytes): a null, and also a
float ``NaN`` (Feast's conversion cannot tell them apart: ``pd.isnull(nan)`` is true), which therefore
reads back as ``None``. ``inf``, ``-inf`` and ``-0.0`` are stored as values. ``int64`` values are
exact over the whole range (Feast's own path goes through ``float64`` when a column has nulls and
rounds values beyond 2**53; the bytes are equal wherever Feast's are exact).

Writers, and their rule "never older than what is stored", applied per entity (all of an entity's
features are written together or not at all):

* :class:`SqliteWriter` (``SqliteOnlineStore`` tables ``<project>_<view>``: ``entity_key,
  feature_name, value, value_text, event_ts, created_ts``): in one transaction per batch, a query
  finds the batch's entities that have a stored row with a later ``event_ts`` (left out, counted),
  then one ``INSERT ... VALUES <a row per feature> ON CONFLICT DO UPDATE ... WHERE excluded.event_ts
  >= event_ts`` per entity, bound with ``executemany``.
* :class:`RedisWriter` (``RedisOnlineStore`` hashes: key = serialized entity key + project, fields
  ``mmh3("<view>:<feature>")`` and ``_ts:<view>``): a pipelined ``HGET`` of the stored ``_ts`` per
  entity, then a pipelined ``HSET`` per entity that is not older (no transaction, as Feast; on a plain
  client the commands are packed and the replies read in bulk, bypassing redis-py's per-command
  pipeline bookkeeping). ``key_ttl_seconds`` and ``skip_dedup`` are honoured as Feast does.
* :class:`FeastWriter`: any other store or layout (other key or value types, several join keys,
  vector or ``value_num`` columns, another entity-key serialization): Feast's generic
  ``_convert_arrow_to_proto`` + ``online_write_batch``, guarded with ``online_read`` (on Redis Feast
  skips older rows itself and the counts are rows sent).

A row with the same event timestamp as the stored one is written again (SQLite and Redis alike): a
re-run of an interval whose feature partition was rebuilt stores the rebuilt values. Feast's own Redis
path skips equal timestamps; Flywheel treats a re-run as a replacement, like every other partition.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import sqlite3
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.errors import FlywheelError
from ml_tasks.features.store import FeatureStoreError

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

log = logging.getLogger(__name__)

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


def _unique_datetimes(values: pa.Array) -> tuple[list[dt.datetime | None], I64]:
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


def _take(objects: Sequence[Any], indices: I64) -> list[Any]:
    table = np.empty(len(objects), dtype=object)
    table[:] = objects
    return list(table[indices])


# ------------------------------------------------------------------------------------------ writers
class OnlineWriter(Protocol):
    """Writes record batches of one feature view (one latest row per entity) to an online store.

    ``prepare`` only computes (no I/O: it may run in another thread while the previous batch is
    committed); ``commit`` writes what ``prepare`` returned.
    """

    name: str
    #: Feast value type of the join key when the writer prefers rows in serialized-key order
    key_kind: str | None

    def prepare(self, batch: pa.RecordBatch) -> Any:
        """Encode ``batch`` for the store."""
        ...

    def commit(self, prepared: Any) -> tuple[int, int]:
        """Write a prepared batch; return (rows written, rows skipped: the store holds newer ones)."""
        ...

    def close(self) -> None: ...


def write_batch(writer: OnlineWriter, batch: pa.RecordBatch) -> tuple[int, int]:
    """Prepare and commit one batch; return (rows written, rows skipped as older)."""
    return writer.commit(writer.prepare(batch))


class _Texts:
    """``value_text`` of a batch's columns (Feast: ``str(value)``; null and NaN: NULL)."""

    def __init__(self) -> None:
        self._con = duckdb.connect()
        self._con.execute("SET enable_progress_bar = false")

    def columns(self, columns: dict[str, tuple[pa.Array, str]]) -> dict[str, pa.Array]:
        out: dict[str, pa.Array] = {}
        floats = {name: arr for name, (arr, kind) in columns.items() if kind == "DOUBLE"}
        for name, (arr, kind) in columns.items():
            if kind == "INT64":
                out[name] = arr.cast(pa.int64()).cast(pa.string())  # str(int): exact digits
            elif kind == "STRING":
                out[name] = arr.cast(pa.string())
        if floats:
            # Python's repr(float) is the shortest round-trip text; DuckDB's cast prints the same text
            table = pa.table({f"c{i}": arr.cast(pa.float64()) for i, arr in enumerate(floats.values())})
            select = ", ".join(
                f"CASE WHEN isnan(c{i}) THEN NULL ELSE c{i}::VARCHAR END AS c{i}" for i in range(len(floats))
            )
            self._con.register("texts", table)
            try:
                result = self._con.execute(f"SELECT {select} FROM texts").to_arrow_table()
            finally:
                self._con.unregister("texts")
            for i, name in enumerate(floats):
                out[name] = result.column(i).combine_chunks()
        return out

    def close(self) -> None:
        self._con.close()


def value_texts(columns: dict[str, tuple[pa.Array, str]]) -> dict[str, pa.Array]:
    """SQLite ``value_text`` per column (name -> (values, Feast value type name)), as Feast writes it."""
    texts = _Texts()
    try:
        return texts.columns(columns)
    finally:
        texts.close()


class SqliteWriter:
    """Writes a view's rows into its ``SqliteOnlineStore`` table, in Feast's row format."""

    name = "sqlite"

    def __init__(self, db_path: str, table: str, layout: ViewLayout) -> None:
        self.layout = layout
        self.key_kind: str | None = layout.key_kind
        self.table = table
        self._con = sqlite3.connect(db_path, timeout=60.0, isolation_level=None, check_same_thread=False)
        columns = {row[1] for row in self._con.execute(f"PRAGMA table_info({_quote(table)})")}
        expected = {"entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts"}
        if not expected <= columns:
            self._con.close()
            raise OnlineWriteError(
                f"SQLite online store {db_path} has no table {table} with the Feast columns"
                f" {sorted(expected)} (found {sorted(columns) or 'no table'}): run `ml-tasks feature-apply`"
            )
        n = len(layout.features)
        self._ts_index = 2 * n + 1  # position of event_ts in a parameter tuple
        rows = ", ".join(
            f"(?1, {_literal(name)}, ?{2 + 2 * i}, ?{3 + 2 * i}, ?{2 * n + 2}, ?{2 * n + 3})"
            for i, (name, _) in enumerate(layout.features)
        )
        # one statement per entity, all of its features (the WHERE only guards against a concurrent
        # writer: stale entities are left out before, see _stale)
        self.upsert = (
            f"INSERT INTO {_quote(table)} (entity_key, feature_name, value, value_text, event_ts, created_ts)"
            f" VALUES {rows}"
            " ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value,"
            " value_text = excluded.value_text, event_ts = excluded.event_ts,"
            f" created_ts = excluded.created_ts WHERE excluded.event_ts >= {_quote(table)}.event_ts"
        )
        limit = self._con.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._check_rows = max(1, min(STALE_CHECK_ROWS, limit // 3))
        self._texts = _Texts()

    def prepare(self, batch: pa.RecordBatch) -> list[tuple[Any, ...]]:
        """One parameter tuple per entity: key, (value, value_text) per feature, event_ts, created_ts."""
        lay = self.layout
        n = batch.num_rows
        keys = encode_entity_keys(lay.column(batch, lay.join_key), lay.join_key, lay.key_kind)
        raw = {name: (lay.column(batch, name), kind) for name, kind in lay.features}
        texts = self._texts.columns(raw)
        columns: list[Any] = [keys.to_pylist()]
        for name, kind in lay.features:
            columns.append(encode_values(raw[name][0], kind).to_pylist())
            columns.append(texts[name].to_pylist())
        # naive UTC datetimes, bound through the sqlite3 adapter Feast registers (as its own writes are)
        uniques, idx = _unique_datetimes(lay.column(batch, lay.timestamp_field))
        if any(u is None for u in uniques):
            raise OnlineWriteError(f"feature view {lay.name}: rows with a null {lay.timestamp_field}")
        columns.append(_take(uniques, idx))
        if lay.created_timestamp_field:
            uniques, idx = _unique_datetimes(lay.column(batch, lay.created_timestamp_field))
            columns.append(_take(uniques, idx))
        else:
            columns.append(itertools.repeat(None, n))
        return list(zip(*columns, strict=False))

    def _stale(self, prepared: list[tuple[Any, ...]]) -> set[int]:
        """Positions of the entities whose stored rows are newer than theirs (a query per few thousand)."""
        stale: set[int] = set()
        table, ts = _quote(self.table), self._ts_index
        for start in range(0, len(prepared), self._check_rows):
            chunk = prepared[start : start + self._check_rows]
            rows = ", ".join(["(?, ?, ?)"] * len(chunk))
            args = [x for i, p in enumerate(chunk, start) for x in (i, p[0], p[ts])]
            # a statement of its own: an INSERT ... SELECT that reads the table it writes costs SQLite a
            # temporary copy of every row (~25 % more time here)
            found = self._con.execute(
                f"WITH batch(i, k, ts) AS (VALUES {rows}) SELECT i FROM batch WHERE EXISTS"
                f" (SELECT 1 FROM {table} AS t WHERE t.entity_key = batch.k AND t.event_ts > batch.ts)",
                args,
            )
            stale.update(int(row[0]) for row in found)
        return stale

    def commit(self, prepared: list[tuple[Any, ...]]) -> tuple[int, int]:
        if not prepared:
            return 0, 0
        con = self._con
        con.execute("BEGIN IMMEDIATE")  # the write lock first: nobody writes between check and upsert
        try:
            stale = self._stale(prepared)
            fresh = [p for i, p in enumerate(prepared) if i not in stale] if stale else prepared
            before = con.total_changes
            con.executemany(self.upsert, fresh)
            changed = con.total_changes - before
            expected = len(fresh) * len(self.layout.features)
            if changed != expected:  # cannot happen under the lock: say so rather than miscount
                raise RuntimeError(
                    f"SQLite table {self.table}: {changed} rows changed, {expected} expected; rolled back"
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return len(fresh), len(stale)

    def write(self, batch: pa.RecordBatch) -> tuple[int, int]:
        """Prepare and commit ``batch``."""
        return self.commit(self.prepare(batch))

    def close(self) -> None:
        self._texts.close()
        self._con.close()


@dataclass
class _RedisBatch:
    keys: list[bytes]
    hsets: list[tuple[bytes, ...]]  # ("HSET", key, field, value, ..., "_ts:view", ts) per row
    nanos: I64  # event timestamp per row, ns since the epoch


class RedisWriter:
    """Writes a view's rows into ``RedisOnlineStore`` hashes, in Feast's format."""

    name = "redis"

    def __init__(
        self,
        client: Any,
        project: str,
        fv_name: str,
        layout: ViewLayout,
        key_ttl_seconds: int | None = None,
        skip_dedup: bool = False,
    ) -> None:
        from feast.infra.online_stores.helpers import _mmh3

        self.client = client
        self.layout = layout
        self.key_kind: str | None = layout.key_kind
        self.suffix = project.encode("utf8")
        self.ts_field = f"_ts:{fv_name}".encode()
        self.fields = [bytes(_mmh3(f"{fv_name}:{name}")) for name, _ in layout.features]
        self.key_ttl_seconds = key_ttl_seconds
        self.skip_dedup = skip_dedup

    @staticmethod
    def timestamp_bytes(value: dt.datetime) -> bytes:
        """``Timestamp.FromDatetime(make_tzaware(value)).SerializeToString()``, as Feast stores ``_ts``."""
        from google.protobuf.timestamp_pb2 import Timestamp

        ts = Timestamp()
        ts.FromDatetime(value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value)
        return bytes(ts.SerializeToString())

    @staticmethod
    def timestamp_nanos(raw: bytes) -> int:
        """Nanoseconds since the epoch of a serialized protobuf ``Timestamp``."""
        from google.protobuf.timestamp_pb2 import Timestamp

        ts = Timestamp()
        ts.ParseFromString(raw)
        return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)

    def prepare(self, batch: pa.RecordBatch) -> _RedisBatch:
        lay = self.layout
        keys = encode_entity_keys(lay.column(batch, lay.join_key), lay.join_key, lay.key_kind, self.suffix)
        key_list: list[bytes] = keys.to_pylist()
        uniques, idx = _unique_datetimes(lay.column(batch, lay.timestamp_field))
        if any(u is None for u in uniques):
            raise OnlineWriteError(f"feature view {lay.name}: rows with a null {lay.timestamp_field}")
        ts_bytes = [self.timestamp_bytes(u) for u in uniques if u is not None]
        columns: list[Any] = [itertools.repeat(b"HSET"), key_list]
        for field, (name, kind) in zip(self.fields, lay.features, strict=True):
            columns.append(itertools.repeat(field))
            columns.append(encode_values(lay.column(batch, name), kind).to_pylist())
        columns.append(itertools.repeat(self.ts_field))
        columns.append(_take(ts_bytes, idx))
        nanos = np.array([self.timestamp_nanos(b) for b in ts_bytes], np.int64)[idx]
        return _RedisBatch(key_list, list(zip(*columns, strict=False)), nanos)

    def commit(self, prepared: _RedisBatch) -> tuple[int, int]:
        n = len(prepared.keys)
        if n == 0:
            return 0, 0
        fresh = np.ones(n, np.bool_)
        if not self.skip_dedup:
            stored = self._round_trip([(b"HGET", key, self.ts_field) for key in prepared.keys])
            cache: dict[bytes, int] = {}
            for i, raw in enumerate(stored):
                if raw is not None:
                    nanos = cache.get(raw)
                    if nanos is None:
                        nanos = cache[raw] = self.timestamp_nanos(raw)
                    fresh[i] = prepared.nanos[i] >= nanos  # same instant: written again
        rows = np.flatnonzero(fresh).tolist()
        commands = prepared.hsets if len(rows) == n else [prepared.hsets[i] for i in rows]
        if self.key_ttl_seconds:
            ttl = str(self.key_ttl_seconds).encode()
            commands = [c for cmd in commands for c in (cmd, (b"EXPIRE", cmd[1], ttl))]
        if commands:
            self._round_trip(commands)
        return len(rows), n - len(rows)

    def write(self, batch: pa.RecordBatch) -> tuple[int, int]:
        """Prepare and commit ``batch``."""
        return self.commit(self.prepare(batch))

    def _round_trip(self, commands: list[tuple[bytes, ...]]) -> list[Any]:
        """Send ``commands`` pipelined (no transaction) and return their replies, in order.

        On a plain Redis client the commands are packed at once and the replies read back on one
        connection (redis-py's pipeline spends ~20 us of Python per command); a cluster client uses
        its pipeline, which routes each key to its node.
        """
        import redis

        if not isinstance(self.client, redis.Redis):
            with self.client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return list(pipe.execute())
        pool = self.client.connection_pool
        conn: Any = pool.get_connection()
        try:
            conn.send_packed_command([_pack(conn, commands)])
            replies = [conn.read_response() for _ in commands]  # raises on an error reply
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            pool.release(conn)
        return replies

    def close(self) -> None:
        pass


def _pack(conn: Any, commands: list[tuple[bytes, ...]]) -> bytes:
    """RESP encoding of ``commands``: hiredis when installed (as redis-py uses it), else redis-py's."""
    try:
        import hiredis
    except ImportError:  # redis-py packs in Python then
        return b"".join(conn.pack_commands(commands))
    pack: Any = hiredis.pack_command
    return b"".join([pack(command) for command in commands])


class FeastWriter:
    """Feast's generic path for any online store: ``_convert_arrow_to_proto`` + ``online_write_batch``.

    Unless the store is Redis (which keeps the newest row per entity itself), each batch's current
    timestamps are read first (``online_read``) and rows older than the stored ones are skipped.
    """

    name = "feast"

    def __init__(self, store: FeatureStore, fv: FeatureView, guard: bool) -> None:
        self.store = store
        self.fv = fv
        self.key_kind: str | None = None
        self.guard = guard
        self.join_keys = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}

    def prepare(self, batch: pa.RecordBatch) -> list[Any]:
        from feast.utils import _convert_arrow_to_proto

        return list(_convert_arrow_to_proto(batch, self.fv, self.join_keys))

    def commit(self, prepared: list[Any]) -> tuple[int, int]:
        provider = self.store._get_provider()
        rows = prepared
        skipped = 0
        if self.guard and rows:
            current = provider.online_read(
                self.store.config,
                self.fv,
                [r[0] for r in rows],
                requested_features=[self.fv.features[0].name],
            )
            fresh = [
                r
                for r, (ts, _) in zip(rows, current, strict=True)
                if ts is None or _as_utc(ts) <= _as_utc(r[2])
            ]
            skipped = len(rows) - len(fresh)
            rows = fresh
        if rows:
            provider.online_write_batch(self.store.config, self.fv, rows, progress=None)
        return len(rows), skipped

    def write(self, batch: pa.RecordBatch) -> tuple[int, int]:
        """Prepare and commit ``batch``."""
        return self.commit(self.prepare(batch))

    def close(self) -> None:
        pass


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def online_writer(store: FeatureStore, fv: FeatureView, fast: bool = True) -> OnlineWriter:
    """The writer for ``fv`` in ``store``'s online store: a fast one for SQLite and Redis, else Feast's.

    Args:
        store: the open feature store.
        fv: the feature view, as registered.
        fast: ``False`` forces Feast's generic path (used to compare the two).
    """
    config = store.config
    online = config.online_store
    kind = str(getattr(online, "type", ""))
    reason = "disabled" if not fast else ""
    if fast:
        try:
            layout = ViewLayout.of(fv, config)
            if kind in ("sqlite", "feast.infra.online_stores.sqlite.SqliteOnlineStore"):
                return _sqlite_writer(store, fv, layout)
            if kind in ("redis", "feast.infra.online_stores.redis.RedisOnlineStore"):
                return _redis_writer(store, fv, layout)
            reason = f"online store type {kind}"
        except UnsupportedLayout as exc:
            reason = str(exc)
    log.info("feature view %s: Feast's generic online write path (%s)", fv.name, reason)
    return FeastWriter(store, fv, guard="redis" not in kind)


def _sqlite_writer(store: FeatureStore, fv: FeatureView, layout: ViewLayout) -> SqliteWriter:
    from feast.infra.online_stores.helpers import compute_table_id
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    config = store.config
    online = config.online_store
    if getattr(online, "vector_enabled", False) or getattr(online, "enable_openai_compatible_store", False):
        raise UnsupportedLayout("SQLite vector or value_num columns")
    table = compute_table_id(config.project, fv, config.registry.enable_online_feature_view_versioning)
    return SqliteWriter(SqliteOnlineStore._get_db_path(config), table, layout)


def _redis_writer(store: FeatureStore, fv: FeatureView, layout: ViewLayout) -> RedisWriter:
    from feast.infra.online_stores.redis import _versioned_fv_name

    config = store.config
    online = config.online_store
    online_store = getattr(store._get_provider(), "online_store", None)
    if online_store is None or not hasattr(online_store, "_get_client"):
        raise UnsupportedLayout("no redis-py client from Feast's RedisOnlineStore")
    client = online_store._get_client(online)  # Feast's own client: redis, cluster or sentinel
    return RedisWriter(
        client,
        config.project,
        _versioned_fv_name(fv, config),
        layout,
        key_ttl_seconds=getattr(online, "key_ttl_seconds", None),
        skip_dedup=bool(getattr(online, "skip_dedup", False)),
    )
