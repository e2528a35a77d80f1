"""Prediction's point-in-time join from the registered feature views: Feast's join, faster.

Feast's DuckDB offline store answers ``get_historical_features`` by an ibis inner join of the view's
source with the entity rows on the join keys, ``event time <= entity time <= event time + ttl``, then the
latest event time per entity row, converting the entity rows to pandas and back. Here the same semantics
run over the same files (read by DuckDB), entity rows staying in Arrow: per view, a vectorised search for
the latest feature row at or before the entity's time, kept only while it is within the ttl. The views'
join keys, features, ttl, timestamp field and source files are the ones the (checked) registry holds.
Used only where Feast itself would run DuckDB over local parquet files (else :func:`supported` says no
and prediction asks Feast). Design notes and the equality test: ``docs/prediction.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ml_tasks.contract import EVENT_TIMESTAMP
from ml_tasks.prediction.checked_registry import RegisteredView

if TYPE_CHECKING:
    from feast import FeatureView

    from ml_tasks.features.store import StoreHandle

    View = FeatureView | RegisteredView


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
    files, no field mapping, no created-timestamp tie-break, no projection renaming keys, a ttl (Feast reads a
    zero ttl as none: no age limit, which this match does not do)."""
    return all(_source(fv) is not None and not _join_key_map(fv) and bool(fv.ttl) for fv in views)


def supported(handle: StoreHandle, views: Sequence[View]) -> bool:
    """:func:`views_supported`, with the store's offline store DuckDB."""
    if getattr(handle.store.config.offline_store, "type", None) != "duckdb":
        return False
    return views_supported(views)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _codes(
    feature_keys: list[pa.ChunkedArray], entity_keys: list[pa.ChunkedArray]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Integer codes of the join-key tuples: equal tuples, equal codes; -1 for a null key, and for an entity
    tuple no feature row has."""
    import pyarrow.compute as pc

    n_f, n_e = len(feature_keys[0]), len(entity_keys[0])
    f_code, e_code = np.zeros(n_f, dtype=np.int64), np.zeros(n_e, dtype=np.int64)
    f_ok, e_ok = np.ones(n_f, dtype=bool), np.ones(n_e, dtype=bool)
    for f_key, e_key in zip(feature_keys, entity_keys, strict=True):
        values = pc.unique(f_key.cast(e_key.type)).drop_null()
        f_part = pc.fill_null(pc.index_in(f_key.cast(e_key.type), value_set=values), -1).to_numpy()
        e_part = pc.fill_null(pc.index_in(e_key, value_set=values), -1).to_numpy()
        f_ok &= f_part >= 0
        e_ok &= e_part >= 0
        # combine with the codes so far, renumbered densely (the codes stay below the feature row count)
        f_comb = f_code * len(values) + f_part
        e_comb = e_code * len(values) + e_part
        seen = np.unique(f_comb[f_ok])
        f_code = np.searchsorted(seen, f_comb)
        at = np.minimum(np.searchsorted(seen, e_comb), max(len(seen) - 1, 0))
        e_ok &= len(seen) > 0
        e_ok[e_ok] &= seen[at[e_ok]] == e_comb[e_ok]
        e_code = at
    return np.where(f_ok, f_code, -1), np.where(e_ok, e_code, -1)


def _latest(
    f_code: npt.NDArray[np.int64],
    f_ts: npt.NDArray[np.int64],
    e_code: npt.NDArray[np.int64],
    e_ts: npt.NDArray[np.int64],
    ttl_us: int,
) -> npt.NDArray[np.int64]:
    """Per entity, the feature row with the same key code and the latest time at or before the entity's
    time, if that time is within ``ttl_us`` of it; else -1 (codes -1 match nothing)."""
    usable = np.flatnonzero(f_code >= 0)
    if len(usable) == 0:
        return np.full(len(e_code), -1, dtype=np.int64)
    f_code, f_ts = f_code[usable], f_ts[usable]
    # a feature time's rank among the feature times; an entity time's: the rank of the latest feature time
    # at or before it (-1: none). (key code, rank) then orders as (key, time) in one int64.
    times = np.unique(f_ts)
    f_key = f_code * len(times) + np.searchsorted(times, f_ts)
    e_key = e_code * len(times) + np.searchsorted(times, e_ts, side="right") - 1
    order = np.argsort(f_key, kind="stable")  # equal key and time: the last row read wins
    at = np.searchsorted(f_key[order], e_key, side="right") - 1
    best = order[np.maximum(at, 0)]
    found = (at >= 0) & (e_code >= 0) & (f_code[best] == e_code) & (f_ts[best] + ttl_us >= e_ts)
    matched: npt.NDArray[np.int64] = np.where(found, usable[best], -1)
    return matched


def _micros(column: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """A timestamp column as int64 microseconds since the epoch, UTC (a naive time is UTC, as in Feast's
    DuckDB store with the session in UTC)."""
    micros: npt.NDArray[np.int64] = (
        column.cast(pa.timestamp("us", tz="UTC"), safe=False).cast(pa.int64()).to_numpy()
    )
    return micros


def _read(path: str, columns: list[str], ts_field: str) -> pa.Table:
    """A view's feature rows (``columns`` and the timestamp as ``_ts``) from its parquet glob, read by DuckDB
    as Feast's DuckDB store reads it."""
    import duckdb

    con = duckdb.connect()
    try:
        return con.execute(
            f"SELECT {', '.join(_quote(c) for c in columns)}, {_quote(ts_field)} AS _ts"
            " FROM read_parquet($path, hive_partitioning = false)",
            {"path": path},
        ).to_arrow_table()
    finally:
        con.close()


def join(
    views: Sequence[View], entities: pa.Table, *, row: str, tables: dict[str, pa.Table] | None = None
) -> pa.Table:
    """``row`` and every view's features ``<view>__<feature>`` for each entity row, in ``entities``' order.

    ``entities`` holds ``row`` (the row position, ascending), the event timestamp (no nulls) and the views'
    join keys. DuckDB reads each view's files; the match (latest feature row at or before the entity's
    time for the same key, within the ttl) is a vectorised search over the view's (key, time) order
    (:func:`_latest`), and the features are gathered with Arrow's ``take``. ``tables`` keeps each view's
    feature rows between calls (one read per step; a step's inputs do not change while it runs).
    """
    e_ts = _micros(entities[EVENT_TIMESTAMP])
    out = entities.select([row])
    for fv in views:
        found = _source(fv)
        assert found is not None  # checked by supported()
        path, ts_field = found
        keys = [c.name for c in fv.entity_columns]
        features = [f.name for f in fv.features]
        table = (tables or {}).get(fv.name)
        if table is None:
            table = _read(path, [*keys, *features], ts_field)
            if tables is not None:
                tables[fv.name] = table
        f_code, e_code = _codes([table[k] for k in keys], [entities[k] for k in keys])
        f_code = np.where(table["_ts"].is_valid().to_numpy(zero_copy_only=False), f_code, -1)
        f_ts = _micros(table["_ts"].fill_null(0))
        ttl_us = int(fv.ttl.total_seconds() * 1_000_000) if fv.ttl else 0
        match = _latest(f_code, f_ts, e_code, e_ts, ttl_us)
        gathered = table.select(features).take(pa.array(match, mask=match < 0))  # no match: nulls
        for name in features:
            out = out.append_column(f"{fv.name}__{name}", gathered[name])
    return out
