"""The postgres source against a real PostgreSQL server (the session ``postgres_uri`` fixture)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from ml_tasks.intervals import Interval
from ml_tasks.schema import RAW_SCHEMA, SchemaError
from ml_tasks.settings import Settings
from ml_tasks.sources import get_source
from ml_tasks.sources.base import SourceError
from ml_tasks.sources.postgres import PostgresSource
from tests.conftest import run_cli

PASSWORD = "s3cr3t-pw-do-not-log"  # the server trusts local sockets; the password only has to stay hidden
D9, D10, D11, D12 = (dt.date(2024, 3, d) for d in (9, 10, 11, 12))  # 10 March: DST starts in Chicago

TRIPS = [
    # trip_id, start (local), seconds, miles, area, fare, tips, payment, company
    ("a1", "2024-03-09 00:00:00", 600, 2.5, 8, "12.50", "3.00", "Credit Card", "Flash Cab"),
    ("a2", "2024-03-09 23:45:00", None, 0.0, None, "7.25", "0.00", "Cash", None),
    ("a0", "2024-03-09 23:45:00", 300, 1.0, 32, "5.00", "1.00", "Cash", "Sun Taxi"),
    ("b1", "2024-03-10 00:00:00", 900, 3.0, 76, "40.00", "10.00", "Mobile", "Flash Cab"),
    ("b2", "2024-03-10 03:15:00", 60, 0.1, 8, "3.25", None, "Cash", "Flash Cab"),
    ("c1", "2024-03-11 00:00:00", 1200, 9.75, 56, "30.00", "6.00", "Credit Card", None),
    ("z9", None, 100, 1.0, 8, "4.00", "0.00", "Cash", None),  # no timestamp: in no interval
]


@pytest.fixture(scope="module")
def pg(postgres_uri: str) -> Iterator[tuple[str, str]]:
    """(URI with a password, schema name) with tables ``trips``, ``trips_tz``, ``legacy`` and ``bare``."""
    schema = f"src_{uuid.uuid4().hex[:8]}"
    uri = sa.engine.make_url(postgres_uri).set(password=PASSWORD).render_as_string(hide_password=False)
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        conn.execute(
            sa.text(f"""
            CREATE TABLE {schema}.trips (
                trip_id text PRIMARY KEY, taxi_id text, trip_start_timestamp timestamp,
                trip_end_timestamp timestamp, trip_seconds integer, trip_miles double precision,
                pickup_community_area smallint, fare numeric(10, 2), tips numeric(10, 2),
                payment_type text, company text, pickup_centroid_location jsonb,
                loaded_at timestamptz DEFAULT now())""")
        )
        for tid, start, secs, miles, area, fare, tips, pay, company in TRIPS:
            conn.execute(
                sa.text(
                    f"INSERT INTO {schema}.trips (trip_id, taxi_id, trip_start_timestamp, trip_end_timestamp,"
                    " trip_seconds, trip_miles, pickup_community_area, fare, tips, payment_type, company,"
                    " pickup_centroid_location) VALUES (:tid, 'taxi', CAST(:start AS timestamp),"
                    " CAST(:start AS timestamp) + make_interval(secs => coalesce(:secs, 0)), :secs, :miles,"
                    " :area, CAST(:fare AS numeric), CAST(:tips AS numeric), :pay, :company,"
                    """ '{"type": "Point", "coordinates": [-87.6, 41.8]}')"""
                ),
                {"tid": tid, "start": start, "secs": secs, "miles": miles, "area": area, "fare": fare,
                 "tips": tips, "pay": pay, "company": company},
            )  # fmt: skip
        conn.execute(
            sa.text(f"""
            CREATE TABLE {schema}.trips_tz (
                trip_id text, trip_start_timestamp timestamptz, trip_seconds int, trip_miles float8,
                fare float8, tips float8, payment_type text, pickup_community_area int)""")
        )
        conn.execute(
            sa.text(f"""
            INSERT INTO {schema}.trips_tz VALUES
                ('t1', '2024-03-10 12:00:00-05', 60, 1, 5, 1, 'Cash', 8),   -- 12:00 CDT
                ('t2', '2024-03-11 04:30:00+00', 60, 1, 5, 1, 'Cash', 8),   -- 23:30 on the 10th in Chicago
                ('t3', '2024-03-11 05:30:00+00', 60, 1, 5, 1, 'Cash', 8)    -- 00:30 on the 11th""")
        )
        conn.execute(
            sa.text(f"""
            CREATE TABLE {schema}.legacy (
                id int PRIMARY KEY, started_at timestamp, secs int, miles real, fare_cents int, tip real,
                pay text, area int)""")
        )
        conn.execute(
            sa.text(f"""
            INSERT INTO {schema}.legacy VALUES
                (2, '2024-03-10 08:00', 120, 0.5, 450, 0, 'Cash', 3),
                (1, '2024-03-10 08:00', 600, 2.5, 1250, 2.5, 'Credit Card', 77),
                (3, '2024-03-11 08:00', 600, 2.5, 1250, 2.5, 'Credit Card', 77)""")
        )
        conn.execute(sa.text(f"CREATE TABLE {schema}.bare (trip_id text, fare float8)"))
    yield uri, schema
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


def read(source: PostgresSource, start: dt.date, end: dt.date) -> tuple[pa.Table, list[tuple[str, ...]]]:
    batches = list(source.read(Interval(start, end)))
    extras = [b.extra_columns for b in batches]
    return pa.concat_tables([b.table for b in batches]), extras


def test_table_mode_types_nulls_order_and_interval(pg: tuple[str, str]) -> None:
    uri, schema = pg
    source = PostgresSource(uri, table=f"{schema}.trips")
    table, extras = read(source, D9, D10)

    assert table.schema == RAW_SCHEMA
    # 00:00 is in, 23:45 is in (tie broken by trip_id), next midnight and the null timestamp are out
    assert table["trip_id"].to_pylist() == ["a1", "a0", "a2"]
    rows = table.to_pylist()
    assert rows[0]["trip_start_timestamp"] == dt.datetime(2024, 3, 9, 0, 0)
    assert rows[0]["trip_end_timestamp"] == dt.datetime(2024, 3, 9, 0, 10)
    assert (rows[0]["fare"], rows[0]["tips"], rows[0]["trip_seconds"]) == (12.5, 3.0, 600)
    assert rows[0]["pickup_community_area"] == 8 and rows[0]["trip_miles"] == 2.5
    assert rows[2]["trip_seconds"] is None and rows[2]["pickup_community_area"] is None
    assert rows[2]["company"] is None and rows[2]["trip_miles"] == 0.0
    assert [r["_source_row"] for r in rows] == [0, 1, 2]
    assert {r["_source"] for r in rows} == {f"postgres:postgres/{schema}.trips"}
    assert all(r["_parse_errors"] is None for r in rows)
    assert set(extras[0]) == {"pickup_centroid_location", "loaded_at"}

    whole, _ = read(source, D9, D12)
    assert whole["trip_id"].to_pylist() == ["a1", "a0", "a2", "b1", "b2", "c1"]


def test_batches_are_bounded_and_positions_continue(pg: tuple[str, str]) -> None:
    uri, schema = pg
    batches = list(PostgresSource(uri, table=f"{schema}.trips", batch_rows=2).read(Interval(D9, D12)))

    assert [b.table.num_rows for b in batches] == [2, 2, 2]
    assert pa.concat_tables(b.table for b in batches)["_source_row"].to_pylist() == list(range(6))


def test_timestamptz_columns_become_local_wall_clock(pg: tuple[str, str]) -> None:
    uri, schema = pg
    table, _ = read(PostgresSource(uri, table=f"{schema}.trips_tz"), D10, D11)

    assert table["trip_id"].to_pylist() == ["t1", "t2"]
    assert table["trip_start_timestamp"].to_pylist() == [
        dt.datetime(2024, 3, 10, 12),
        dt.datetime(2024, 3, 10, 23, 30),
    ]


def test_query_mode_maps_another_layout(pg: tuple[str, str]) -> None:
    uri, schema = pg
    query = (
        "SELECT id AS trip_id, started_at AS trip_start_timestamp, secs AS trip_seconds, miles AS trip_miles,"
        " fare_cents / 100.0 AS fare, tip AS tips, pay AS payment_type, area AS pickup_community_area"
        f" FROM {schema}.legacy WHERE started_at >= :start AND started_at < :end ORDER BY started_at, id"
    )
    source = PostgresSource(uri, query=query)
    table, _ = read(source, D10, D11)

    assert table["trip_id"].to_pylist() == ["1", "2"]
    assert table["fare"].to_pylist() == [12.5, 4.5]
    assert table["trip_start_timestamp"].to_pylist() == [dt.datetime(2024, 3, 10, 8)] * 2
    assert table["payment_type"].to_pylist() == ["Credit Card", "Cash"]
    described = source.describe(Interval(D10, D11))
    assert described["query_sha256"] == source.query_sha256 and described["rows"] == 2
    assert table["_source"][0].as_py() == f"postgres:postgres/query:{source.query_sha256[:12]}"


def test_query_must_use_the_interval() -> None:
    with pytest.raises(SourceError, match=r":start and :end"):
        PostgresSource("postgresql://u@localhost/db", query="SELECT * FROM trips WHERE ts >= :start")
    with pytest.raises(SourceError, match="exactly one of"):
        PostgresSource("postgresql://u@localhost/db", table="t", query="SELECT :start, :end")


def test_query_without_required_columns_is_a_schema_error(pg: tuple[str, str]) -> None:
    uri, schema = pg
    query = f"SELECT trip_id, fare FROM {schema}.trips WHERE trip_start_timestamp BETWEEN :start AND :end"
    with pytest.raises(SchemaError, match="trip_start_timestamp"):
        read(PostgresSource(uri, query=query), D9, D10)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT * FROM {schema}.nope WHERE trip_start_timestamp >= :start AND trip_start_timestamp < :end",
         r"cannot query .*relation .*nope.* does not exist"),
        ("SELEC * FROM {schema}.trips WHERE trip_start_timestamp >= :start AND trip_start_timestamp < :end",
         r"cannot query .*syntax error"),
    ],
)  # fmt: skip
def test_bad_query_is_a_clear_error(pg: tuple[str, str], query: str, message: str) -> None:
    uri, schema = pg
    with pytest.raises(SourceError, match=message) as err:
        read(PostgresSource(uri, query=query.format(schema=schema)), D9, D10)
    assert PASSWORD not in str(err.value)


def test_missing_table_and_missing_timestamp_column(pg: tuple[str, str]) -> None:
    uri, schema = pg
    with pytest.raises(SourceError, match=rf"table postgres/{schema}.nope does not exist"):
        read(PostgresSource(uri, table=f"{schema}.nope"), D9, D10)
    with pytest.raises(SourceError, match=r"no trip_start_timestamp column"):
        read(PostgresSource(uri, table=f"{schema}.bare"), D9, D10)


def test_table_name_is_quoted_not_injected(pg: tuple[str, str]) -> None:
    uri, schema = pg
    with pytest.raises(SourceError, match="does not exist"):
        read(PostgresSource(uri, table=f'{schema}.trips"; DROP SCHEMA {schema} CASCADE; --'), D9, D10)
    with sa.create_engine(uri, poolclass=sa.pool.NullPool).connect() as conn:
        assert sa.inspect(conn).has_table("bare", schema=schema)


def test_unreachable_server_fails_fast_without_the_password() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = PostgresSource(f"postgresql://flywheel:{PASSWORD}@127.0.0.1:{port}/trips", table="trips")
    started = time.monotonic()
    with pytest.raises(SourceError, match=rf"cannot connect to 127.0.0.1/trips/trips: .*{port}") as err:
        read(source, D9, D10)
    assert time.monotonic() - started < 5
    assert PASSWORD not in str(err.value)


def test_describe_and_options_never_show_the_password(pg: tuple[str, str]) -> None:
    uri, schema = pg
    settings = Settings(postgres_uri=uri)
    source = get_source("postgres", settings, {"table": f"{schema}.trips", "batch_rows": "3"})
    assert isinstance(source, PostgresSource) and source.batch_rows == 3
    list(source.read(Interval(D9, D10)))
    described = source.describe(Interval(D9, D10))

    assert described["table"] == f"{schema}.trips" and described["database"] == "postgres"
    assert described["rows"] == 3 and described["start"] == "2024-03-09T00:00:00"
    assert PASSWORD not in json.dumps(described)
    with pytest.raises(SourceError, match="FLYWHEEL_POSTGRES_URI"):
        get_source("postgres", Settings(), {"table": "trips"})


def test_cli_extract_from_postgres(pg: tuple[str, str], data_root: Path) -> None:
    uri, schema = pg
    out = run_cli(
        "extract", "--source", "postgres", "--table", f"{schema}.trips", "--start", "2024-03-09",
        "--end", "2024-03-12", env={"FLYWHEEL_POSTGRES_URI": uri},
    )  # fmt: skip

    assert {p["dt"]: p["rows"] for p in out["partitions"]} == {
        "2024-03-09": 3,
        "2024-03-10": 2,
        "2024-03-11": 1,
    }
    assert out["rows_read"] == out["rows_written"] == 6
    manifest = (data_root / "raw/trips/dt=2024-03-10/_manifest.json").read_text()
    assert PASSWORD not in manifest
    assert json.loads(manifest)["inputs"][0]["rows"] == 2
    written = pq.read_table(data_root / "raw/trips/dt=2024-03-10/part-00000.parquet")
    assert written["trip_id"].to_pylist() == ["b1", "b2"] and written["fare"].to_pylist() == [40.0, 3.25]
