"""Upsert committed predictions into a PostgreSQL table keyed by (trip_key, model_version), in one
transaction per commit (COPY into a temporary table, then INSERT ... ON CONFLICT). See docs/prediction.md."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pacsv

from ml_tasks.prediction.schema import CORE_COLUMNS, PredictionError
from ml_tasks.storage import DataRoot

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

PRIMARY_KEY = ("trip_key", "model_version")
#: PostgreSQL type of each core column (NOT NULL except the run id)
SQL_TYPES: dict[str, str] = {
    "trip_key": "text NOT NULL",
    "event_timestamp": "timestamptz NOT NULL",
    "trip_date": "date NOT NULL",
    "score": "double precision NOT NULL",
    "decision": "boolean NOT NULL",
    "threshold": "double precision NOT NULL",
    "model_name": "text NOT NULL",
    "model_version": "text NOT NULL",
    "model_run_id": "text",
    "feature_service": "text NOT NULL",
    "interval_start": "date NOT NULL",
    "interval_end": "date NOT NULL",
    "missing_feature_views": "smallint NOT NULL",
}
_COPY_ROWS = 65_536


def sqlalchemy_uri(uri: str) -> str:
    """``postgresql://`` / ``postgres://`` URIs get the psycopg 3 driver (the installed one)."""
    for prefix in ("postgresql://", "postgres://"):
        if uri.startswith(prefix):
            return "postgresql+psycopg://" + uri[len(prefix) :]
    return uri


def _url(uri: str) -> URL:
    """The source's parse (``ml_tasks.sources.postgres``): a password's unescaped ``@`` is escaped, a bad
    port or scheme is one line that never echoes the URI.

    Raises:
        PredictionError: the URI cannot be parsed.
    """
    from ml_tasks.sources.base import SourceError
    from ml_tasks.sources.postgres import engine_url as source_url

    try:
        return source_url(sqlalchemy_uri(uri))
    except SourceError as exc:
        raise PredictionError(f"predictions {exc}") from None


def _create_sql(table: str) -> Any:
    from psycopg import sql

    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(SQL_TYPES[c])) for c in CORE_COLUMNS
    )
    key = sql.SQL(", ").join(sql.Identifier(c) for c in PRIMARY_KEY)
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
        sql.Identifier(table), columns, key
    )


def _merge_sql(table: str, staging: str) -> Any:
    from psycopg import sql

    names = sql.SQL(", ").join(sql.Identifier(c) for c in CORE_COLUMNS)
    key = sql.SQL(", ").join(sql.Identifier(c) for c in PRIMARY_KEY)
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
        for c in CORE_COLUMNS
        if c not in PRIMARY_KEY
    )
    # DISTINCT ON: ON CONFLICT cannot touch a row twice in one statement (a trip repeated in the interval)
    return sql.SQL(
        "INSERT INTO {table} ({names}) SELECT DISTINCT ON ({key}) {names} FROM {staging}"
        " ORDER BY {key}, {ts} DESC ON CONFLICT ({key}) DO UPDATE SET {updates}"
    ).format(
        table=sql.Identifier(table),
        names=names,
        key=key,
        staging=sql.Identifier(staging),
        ts=sql.Identifier("event_timestamp"),
        updates=updates,
    )


def _csv(batch: pa.Table) -> bytes:
    out = io.BytesIO()
    pacsv.write_csv(batch, out, pacsv.WriteOptions(include_header=False, batch_size=_COPY_ROWS))
    return out.getvalue()


def _copy(cursor: psycopg.Cursor[Any], staging: str, tables: Iterable[pa.Table]) -> int:
    from psycopg import sql

    names = sql.SQL(", ").join(sql.Identifier(c) for c in CORE_COLUMNS)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(sql.Identifier(staging), names)
    rows = 0
    with cursor.copy(statement) as copy:
        for table in tables:
            table = table.select(list(CORE_COLUMNS))
            for start in range(0, table.num_rows, _COPY_ROWS):
                chunk = table.slice(start, _COPY_ROWS)
                copy.write(_csv(chunk))
                rows += chunk.num_rows
    return rows


def upsert_tables(uri: str, table: str, tables: Iterable[pa.Table]) -> int:
    """Upsert the core columns of ``tables`` into ``table`` in ONE transaction; the number of rows sent.

    Raises:
        PredictionError: the URI cannot be parsed, or the database refused (the message names the table,
            never the URI).
    """
    import sqlalchemy as sa

    from ml_tasks.sources.postgres import first_line  # the driver's message, on one line

    started = time.perf_counter()
    engine = sa.create_engine(_url(uri), poolclass=sa.pool.NullPool)
    try:
        raw = engine.raw_connection()
        try:
            conn: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute(_create_sql(table))
                staging = f"_flywheel_upsert_{table}"[:63]
                from psycopg import sql

                cursor.execute(
                    sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(
                        sql.Identifier(staging), sql.Identifier(table)
                    )
                )
                rows = _copy(cursor, staging, tables)
                cursor.execute(_merge_sql(table, staging))
            raw.commit()
        finally:
            raw.close()
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise PredictionError(
            f"upserting predictions into PostgreSQL table {table!r} failed: {first_line(exc)}"
        ) from None
    except Exception as exc:
        import psycopg

        if isinstance(exc, psycopg.Error):
            raise PredictionError(
                f"upserting predictions into PostgreSQL table {table!r} failed: {first_line(exc)}"
            ) from None
        raise
    finally:
        engine.dispose()
    log.info("upserted %d prediction rows into %s in %.2f s", rows, table, time.perf_counter() - started)
    return rows


def upsert_partitions(uri: str, table: str, root: DataRoot, paths: Sequence[str]) -> int:
    """Upsert the committed predictions partitions at ``paths`` (their core columns), in one transaction."""
    import pyarrow.parquet as pq

    # a generator: one day's partition in memory at a time
    tables = (
        pq.read_table(f, filesystem=root.fs, columns=list(CORE_COLUMNS))
        for path in paths
        for f in root.parquet_files(path)
    )
    return upsert_tables(uri, table, tables)
