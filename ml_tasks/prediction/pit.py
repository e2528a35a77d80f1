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
    DuckDB matches keys and times only (which feature row, if any); the features are then gathered with
    Arrow's ``take`` (carrying 19 payload columns through the ASOF join cost 4x the join itself).
    """
    import duckdb
    import numpy as np
    import pyarrow.compute as pc

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
            columns = ", ".join(_quote(c) for c in [*keys, *features])
            table = con.execute(
                f"SELECT {columns}, {_quote(ts_field)} AS _ts"
                " FROM read_parquet($path, hive_partitioning = false)",
                {"path": path},
            ).to_arrow_table()
            table = table.append_column("_frow", pa.array(np.arange(table.num_rows, dtype=np.int64)))
            con.register("features", table.select([*keys, "_ts", "_frow"]))
            ttl_us = int(fv.ttl.total_seconds() * 1_000_000) if fv.ttl else 0
            on = " AND ".join(f"e.{_quote(k)} = f.{_quote(k)}" for k in keys)
            at = f"e.{_quote(EVENT_TIMESTAMP)}"
            matched = con.execute(
                f"SELECT e.{_quote(row)} AS _row,"
                f" CASE WHEN f._ts + to_microseconds({ttl_us}) >= {at} THEN f._frow END AS _frow"
                f" FROM {_ENTITIES} e ASOF LEFT JOIN features f ON {on} AND {at} >= f._ts"
            ).to_arrow_table()
            con.unregister("features")
            matched = matched.take(pc.sort_indices(matched["_row"]))
            if matched.num_rows != entities.num_rows or not matched["_row"].equals(out[row]):
                raise RuntimeError(
                    f"the point-in-time join of {fv.name} returned {matched.num_rows} rows for"
                    f" {entities.num_rows} entity rows, or other rows than those sent"
                )
            gathered = table.select(features).take(matched["_frow"])  # a null index gives nulls
            for name in features:
                out = out.append_column(f"{fv.name}__{name}", gathered[name])
        return out
    finally:
        con.close()
