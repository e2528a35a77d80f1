"""Online-store writers for materialization: the fast SQLite and Redis writers, else Feast's generic path.

:func:`online_writer` picks the writer of a view; why and how the fast ones match Feast: docs/online-store.md.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from ml_tasks.features.online_encoding import UnsupportedLayout, ViewLayout
from ml_tasks.features.online_redis import RedisWriter
from ml_tasks.features.online_sqlite import SqliteWriter

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

log = logging.getLogger(__name__)


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
