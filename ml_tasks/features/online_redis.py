"""The Redis online writer: a view's rows into ``RedisOnlineStore`` hashes, in Feast's format, pipelined."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ml_tasks.features.online_encoding import (
    I64,
    OnlineWriteError,
    ViewLayout,
    encode_entity_keys,
    encode_values,
    take_objects,
    unique_datetimes,
)


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
        uniques, idx = unique_datetimes(lay.column(batch, lay.timestamp_field))
        if any(u is None for u in uniques):
            raise OnlineWriteError(f"feature view {lay.name}: rows with a null {lay.timestamp_field}")
        ts_bytes = [self.timestamp_bytes(u) for u in uniques if u is not None]
        columns: list[Any] = [itertools.repeat(b"HSET"), key_list]
        for field, (name, kind) in zip(self.fields, lay.features, strict=True):
            columns.append(itertools.repeat(field))
            columns.append(encode_values(lay.column(batch, name), kind).to_pylist())
        columns.append(itertools.repeat(self.ts_field))
        columns.append(take_objects(ts_bytes, idx))
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

        try:
            return self._send(commands)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise OnlineWriteError(
                f"Redis online store {self._where()} unreachable while writing feature view "
                f"{self.layout.name}: {exc}; entities already written hold the new values, the others "
                "the old ones: re-run materialize once the server is back"
            ) from exc

    def _where(self) -> str:
        kwargs = getattr(getattr(self.client, "connection_pool", None), "connection_kwargs", {})
        host, port = kwargs.get("host"), kwargs.get("port")
        return f"{host}:{port}" if host and port else type(self.client).__name__

    def _send(self, commands: list[tuple[bytes, ...]]) -> list[Any]:
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
