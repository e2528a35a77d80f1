"""Trips from PostgreSQL: a table filtered on the interval, or a query with ``:start`` and ``:end``.

Rows stream through a server-side cursor in batches and are typed by :func:`ml_tasks.schema.to_canonical`;
the password never appears in logs, errors or :meth:`describe`. See ``docs/ingest.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any, Self

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import NullPool

from ml_tasks.intervals import Interval
from ml_tasks.schema import MAPPINGS, to_canonical
from ml_tasks.settings import CHICAGO_TZ, Settings
from ml_tasks.sources._options import check_known, opt_int, opt_str
from ml_tasks.sources.base import SourceBatch, SourceError

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 50_000
TIMESTAMP_COLUMN = "trip_start_timestamp"
_KNOWN_OPTIONS = {"uri", "postgres_uri", "table", "query", "batch_rows", "connect_timeout", "mapping"}
# Types whose values can be ORDERed in PostgreSQL (json, point, ... cannot).
_SORTABLE = (
    sa.String,
    sa.Integer,
    sa.Numeric,
    sa.DateTime,
    sa.Date,
    sa.Time,
    sa.Boolean,
    sa.Interval,
    sa.Uuid,
)


def _escape_userinfo(uri: str) -> str:
    """``uri`` with its password percent-encoded when it holds an unescaped ``@`` (as users paste them).

    The userinfo ends at the authority's LAST ``@`` (urllib's rule); SQLAlchemy stops the password at the
    first, and then reports the password's tail as the host.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    authority, slash, tail = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at or "@" not in userinfo:
        return uri
    user, colon, password = userinfo.partition(":")
    quoted = urllib.parse.quote(urllib.parse.unquote(password), safe="") if colon else ""
    return f"{scheme}://{user}{colon}{quoted}@{hostport}{slash}{tail}"


def engine_url(uri: str) -> URL:
    """Parse a SQLAlchemy / libpq URI; plain ``postgresql://`` uses psycopg 3.

    Errors never echo the URI: it holds the password.
    """
    try:
        url = sa.engine.make_url(_escape_userinfo(uri))
    except sa.exc.ArgumentError:
        raise SourceError("postgres URI is not a valid SQLAlchemy URL (postgresql://user@host/db)") from None
    except ValueError:  # int() of the port
        raise SourceError(
            "postgres URI has a port that is not a number (the form is postgresql://HOST:5432/DB;"
            " percent-encode special characters of the password)"
        ) from None
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    if not url.drivername.startswith("postgresql"):
        raise SourceError(f"postgres URI must use the postgresql scheme, got {url.drivername!r}")
    return url


def _split_table(table: str) -> tuple[str | None, str]:
    parts = table.split(".")
    if len(parts) > 2 or not all(p.strip() for p in parts):
        raise SourceError(f"postgres table must be 'name' or 'schema.name', got {table!r}")
    return (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else (None, parts[0].strip())


def first_line(exc: BaseException) -> str:
    """The driver's message (first lines) without SQLAlchemy's statement and parameter dump."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    lines = [line for line in text.splitlines() if line.strip()][:3]
    return " | ".join(lines) or type(orig).__name__


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _column(values: Sequence[Any]) -> pa.Array:
    """Python values of one result column as an Arrow array DuckDB can read.

    Scalars keep their types (``to_canonical`` parses any type); anything else (json, arrays, uuid,
    ranges, geometric types) becomes text. Time-zone-aware timestamps become naive local time: the
    session time zone is the pipeline's, so that is the floating local time the raw schema holds.
    """
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.array([_as_text(v) for v in values], pa.string())
    typ = array.type
    if pa.types.is_timestamp(typ) and typ.tz is not None:
        return pc.local_timestamp(array)
    if (
        pa.types.is_null(typ)
        or pa.types.is_boolean(typ)
        or pa.types.is_integer(typ)
        or pa.types.is_floating(typ)
        or pa.types.is_decimal(typ)
        or pa.types.is_string(typ)
        or pa.types.is_timestamp(typ)
        or pa.types.is_date(typ)
    ):
        return array
    return pa.array([_as_text(v) for v in values], pa.string())


def rows_table(rows: Sequence[Sequence[Any]], names: list[str]) -> pa.Table:
    """Result rows (tuples) as an Arrow table with ``names``."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pa.table([_column(list(values)) for values in columns], names=names)


class PostgresSource:
    """A PostgreSQL table or query (see the module docstring)."""

    name = "postgres"
    server_side_filter = True

    def __init__(
        self,
        uri: str,
        *,
        table: str | None = None,
        query: str | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        connect_timeout: int = 10,
        mapping: str = "portal",
        timezone: str = CHICAGO_TZ,
    ) -> None:
        if (table is None) == (query is None):
            raise SourceError("postgres source needs exactly one of --table or --query")
        if mapping not in MAPPINGS:
            raise SourceError(f"unknown mapping {mapping!r}; choose one of {sorted(MAPPINGS)}")
        self.url = engine_url(uri)
        self.table = _split_table(table) if table is not None else None
        self.query = query
        if query is not None:
            binds = set(sa.text(query).compile().params)
            if not {"start", "end"} <= binds:
                raise SourceError(
                    "postgres --query must filter on the interval with both :start and :end bind parameters"
                    f" (found: {sorted(binds) or 'none'})"
                )
            if binds - {"start", "end"}:
                raise SourceError(
                    f"postgres --query has unknown bind parameters {sorted(binds - {'start', 'end'})}"
                )
        self.batch_rows = batch_rows
        self.connect_timeout = connect_timeout
        self.mapping = mapping
        self.timezone = timezone
        self._rows: dict[Interval, int] = {}
        self._engine: Engine | None = None

    @classmethod
    def from_options(cls, settings: Settings, options: dict[str, Any]) -> Self:
        """Build from options (``table`` | ``query``, ``batch_rows``, ...) and ``settings.postgres_uri``."""
        check_known(options, "postgres", _KNOWN_OPTIONS)
        uri = opt_str(options, "postgres_uri") or opt_str(options, "uri")
        if uri is None and settings.postgres_uri is not None:
            uri = settings.postgres_uri.get_secret_value()
        if not uri:
            raise SourceError(
                "postgres source needs a URI: set FLYWHEEL_POSTGRES_URI (or --option postgres_uri=)"
            )
        return cls(
            uri,
            table=opt_str(options, "table"),
            query=opt_str(options, "query"),
            batch_rows=opt_int(options, "batch_rows", DEFAULT_BATCH_ROWS, minimum=1),
            connect_timeout=opt_int(options, "connect_timeout", 10, minimum=1),
            mapping=opt_str(options, "mapping", "portal") or "portal",
            timezone=settings.timezone,
        )

    # -- naming (never the password) ------------------------------------------------------------
    @property
    def host(self) -> str:
        socket_dir = self.url.query.get("host")
        if self.url.host:
            return self.url.host
        return str(socket_dir) if socket_dir else "localhost"

    @property
    def locator(self) -> str:
        """``db/schema.table`` or ``db/query:<hash>``: names the rows without exposing secrets."""
        if self.table is not None:
            schema, name = self.table
            return f"{self.url.database}/{schema + '.' if schema else ''}{name}"
        return f"{self.url.database}/query:{self.query_sha256[:12]}"

    @property
    def query_sha256(self) -> str:
        return hashlib.sha256((self.query or "").encode()).hexdigest()

    def describe(self, interval: Interval) -> dict[str, Any]:
        """Server, database and table (or the query's hash), the interval bounds, rows fetched."""
        described: dict[str, Any] = {
            "source": "postgres",
            "host": self.host,
            "port": self.url.port,
            "database": self.url.database,
            "start": interval.start_local().isoformat(),
            "end": interval.end_local().isoformat(),
        }
        if self.table is not None:
            described["table"] = self.locator.split("/", 1)[1]
        else:
            described["query_sha256"] = self.query_sha256
        if interval in self._rows:
            described["rows"] = self._rows[interval]
        return described

    # -- reading ---------------------------------------------------------------------------------
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = sa.create_engine(
                self.url,
                poolclass=NullPool,  # one short-lived connection per read; nothing lingers
                connect_args={
                    "connect_timeout": self.connect_timeout,
                    "options": f"-c TimeZone={self.timezone}",
                },
            )
        return self._engine

    def _table_statement(self, conn: Connection) -> sa.Select[Any]:
        assert self.table is not None
        schema, name = self.table
        inspector = sa.inspect(conn)
        if not inspector.has_table(name, schema=schema):
            raise SourceError(f"postgres: table {self.locator} does not exist on {self.host}")
        columns = inspector.get_columns(name, schema=schema)
        names = [c["name"] for c in columns]
        if TIMESTAMP_COLUMN not in names:
            raise SourceError(
                f"postgres: table {self.locator} has no {TIMESTAMP_COLUMN} column to select the interval"
                f" (columns: {names}); use --query to map another layout"
            )
        table = sa.table(name, *(sa.column(n) for n in names), schema=schema)
        # a total order: timestamp, then trip_id or the primary key, else every sortable column
        keys = [TIMESTAMP_COLUMN]
        primary = inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or []
        if "trip_id" in names:
            keys.append("trip_id")
        keys += [k for k in primary if k not in keys]
        if len(keys) == 1:
            keys += [c["name"] for c in columns if isinstance(c["type"], _SORTABLE) and c["name"] not in keys]
        ts = table.c[TIMESTAMP_COLUMN]
        return (
            sa.select(*(table.c[n] for n in names))
            .where(
                ts >= sa.bindparam("start", type_=sa.DateTime()),
                ts < sa.bindparam("end", type_=sa.DateTime()),
            )
            .order_by(*(table.c[k] for k in keys))
        )

    def read(self, interval: Interval) -> Iterator[SourceBatch]:
        """The interval's rows in batches of ``batch_rows``, streamed through a server-side cursor."""
        started = time.perf_counter()
        params = {"start": interval.start_local(), "end": interval.end_local()}
        source = f"postgres:{self.locator}"
        mapping = MAPPINGS[self.mapping]
        where = f"{self.host}/{self.locator}"
        offset = 0
        stage = "connect to"
        try:
            with self.engine().connect() as conn:
                stage = "query"
                stmt: sa.Executable = (
                    self._table_statement(conn) if self.table is not None else sa.text(self.query or "")
                )
                result = conn.execution_options(yield_per=self.batch_rows).execute(stmt, params)
                names = list(result.keys())
                for rows in result.partitions():
                    table = rows_table(rows, names)
                    typed = to_canonical(table, source, mapping, offset)
                    offset += table.num_rows
                    yield SourceBatch(typed.table, typed.missing_optional, typed.extra_columns)
                if offset == 0:  # no rows: the columns are still checked
                    typed = to_canonical(rows_table([], names), source, mapping)
                    yield SourceBatch(typed.table, typed.missing_optional, typed.extra_columns)
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"postgres: cannot {stage} {where}: {first_line(exc)}") from exc
        self._rows[interval] = offset
        log.info("postgres %s %s: %d rows in %.2f s", where, interval, offset, time.perf_counter() - started)
