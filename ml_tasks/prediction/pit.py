"""Prediction's point-in-time join in DuckDB, from the registered feature views: Feast's join, faster.

Feast's DuckDB offline store answers ``get_historical_features`` by an ibis inner join of the view's
source with the entity rows on the join keys, ``event time <= entity time <= event time + ttl``, then the
latest event time per entity row, converting the entity rows to pandas and back. Here the same semantics
run as one DuckDB ``ASOF LEFT JOIN`` per view over the same files, entity rows staying in Arrow: the
latest feature row at or before the entity's time, kept only while it is within the ttl. The views'
join keys, features, ttl, timestamp field and source files are the ones the (checked) registry holds.
Used only where Feast itself would run DuckDB over local parquet files (else :func:`supported` says no
and prediction asks Feast). Design notes and the equality test: ``docs/prediction.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from ml_tasks.contract import EVENT_TIMESTAMP
from ml_tasks.prediction.checked_registry import RegisteredView

if TYPE_CHECKING:
    from feast import FeatureView

    from ml_tasks.features.store import StoreHandle

    View = FeatureView | RegisteredView

#: the entity frame's row position column (``ml_tasks.features.retrieval.ROW``)
_ENTITIES = "entities"


def _source(fv: View) -> tuple[str, str] | None:
    """(local parquet glob, timestamp field) of a view DuckDB can read as Feast does, else None."""
    if isinstance(fv, RegisteredView):
        path, timestamp, created, mapping = (
            fv.path, fv.timestamp_field, fv.created_timestamp_column, fv.field_mapping,
        )  # fmt: skip
    else:
        from feast.infra.offline_stores.file_source import FileSource

        source = fv.batch_source
        if not isinstance(source, FileSource):
            return None
        path, timestamp = source.path, source.timestamp_field
        created, mapping = source.created_timestamp_column, source.field_mapping
    if mapping or created or "://" in path or not path.endswith(".parquet"):
        return None
    return path, timestamp


def _join_key_map(fv: View) -> dict[str, str]:
    return fv.join_key_map if isinstance(fv, RegisteredView) else dict(fv.projection.join_key_map)


def views_supported(views: Sequence[View]) -> bool:
    """Whether :func:`join` computes what Feast's DuckDB offline store would for ``views``: local parquet
    files, no field mapping, no created-timestamp tie-break, no projection renaming keys, a ttl."""
    return all(_source(fv) is not None and not _join_key_map(fv) and fv.ttl is not None for fv in views)


def supported(handle: StoreHandle, views: Sequence[View]) -> bool:
    """:func:`views_supported`, with the store's offline store DuckDB."""
    if getattr(handle.store.config.offline_store, "type", None) != "duckdb":
        return False
    return views_supported(views)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def join(views: Sequence[View], entities: pa.Table, *, row: str) -> pa.Table:
    """``row`` and every view's features ``<view>__<feature>`` for each entity row, in ``entities``' order.

    ``entities`` holds ``row`` (the row position, ascending), the event timestamp and the views' join keys.
    """
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register(_ENTITIES, entities)
        out = entities.select([row])
        for fv in views:
            found = _source(fv)
            assert found is not None  # checked by supported()
            path, ts_field = found
            keys = [c.name for c in fv.entity_columns]
            features = [f.name for f in fv.features]
            names = [f"{fv.name}__{f}" for f in features]
            ttl_us = int(fv.ttl.total_seconds() * 1_000_000) if fv.ttl else 0
            on = " AND ".join(f"e.{_quote(k)} = f.{_quote(k)}" for k in keys)
            fresh = f"f._ts + to_microseconds({ttl_us}) >= e.{_quote(EVENT_TIMESTAMP)}"
            select = ", ".join(
                f"CASE WHEN {fresh} THEN f.{_quote(c)} END AS {_quote(n)}"
                for c, n in zip(features, names, strict=True)
            )
            columns = ", ".join(_quote(c) for c in [*keys, *features])
            query = (
                f"SELECT e.{_quote(row)}, {select} FROM {_ENTITIES} e"
                f" ASOF LEFT JOIN (SELECT {columns}, {_quote(ts_field)} AS _ts"
                "  FROM read_parquet($path, hive_partitioning = false)) f"
                f" ON {on} AND e.{_quote(EVENT_TIMESTAMP)} >= f._ts"
                f" ORDER BY e.{_quote(row)}"
            )
            joined = con.execute(query, {"path": path}).to_arrow_table()
            if joined.num_rows != entities.num_rows or not joined[row].equals(out[row]):
                raise RuntimeError(
                    f"the point-in-time join of {fv.name} returned {joined.num_rows} rows for"
                    f" {entities.num_rows} entity rows, or other rows than those sent"
                )
            for name in names:
                out = out.append_column(name, joined[name])
        return out
    finally:
        con.close()
