"""The SQLite online writer: a view's rows into its ``SqliteOnlineStore`` table, in Feast's row format.

One transaction per batch: stale entities (a newer stored row) are left out, the rest upserted.
"""

from __future__ import annotations

import itertools
import sqlite3
from typing import Any

import duckdb
import pyarrow as pa

from ml_tasks.features.online_encoding import (
    STALE_CHECK_ROWS,
    OnlineWriteError,
    ViewLayout,
    encode_entity_keys,
    encode_values,
    take_objects,
    unique_datetimes,
)


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
        uniques, idx = unique_datetimes(lay.column(batch, lay.timestamp_field))
        if any(u is None for u in uniques):
            raise OnlineWriteError(f"feature view {lay.name}: rows with a null {lay.timestamp_field}")
        columns.append(take_objects(uniques, idx))
        if lay.created_timestamp_field:
            uniques, idx = unique_datetimes(lay.column(batch, lay.created_timestamp_field))
            columns.append(take_objects(uniques, idx))
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


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
