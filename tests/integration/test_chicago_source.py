"""The chicago source against a real local HTTP server that speaks enough SODA 2.1 (see _servers/soda.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import SecretStr

from ml_tasks.intervals import Interval
from ml_tasks.schema import RAW_SCHEMA
from ml_tasks.settings import Settings
from ml_tasks.sources import get_source
from ml_tasks.sources.base import SourceError
from ml_tasks.sources.chicago import ChicagoSource, RetryPolicy
from tests.conftest import run_cli
from tests.integration._servers.soda import SodaServer

TOKEN = "tok-3f9a-not-a-real-token"
OLD, NEW = "wrvz-psew", "ajtu-isnz"
# rows per day: 23 -> pages of 10, 10, 3; 20 -> 10, 10 and an empty page
DAY_ROWS = {
    dt.date(2023, 12, 30): 23,
    dt.date(2023, 12, 31): 20,
    dt.date(2024, 1, 1): 7,
    dt.date(2024, 1, 2): 0,
}
FAST = RetryPolicy(max_attempts=4, initial=0.001, maximum=0.01, max_retry_after=5.0)


def trip_row(day: dt.date, i: int) -> dict[str, Any]:
    """One portal row: strings everywhere, nulls as absent keys, a point as a GeoJSON object."""
    # two trips share each 15-minute slot: $order must break the tie on trip_id
    start = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=15 * (i // 2))
    row: dict[str, Any] = {
        "trip_id": hashlib.sha1(f"{day}-{i}".encode()).hexdigest(),
        "taxi_id": f"taxi-{i % 3}",
        "trip_start_timestamp": start.strftime("%Y-%m-%dT%H:%M:%S.000"),
        "trip_end_timestamp": (start + dt.timedelta(minutes=15)).strftime("%Y-%m-%dT%H:%M:%S.000"),
        "trip_seconds": str(300 + i),
        "trip_miles": f"{1.5 + i / 10:.1f}",
        "pickup_community_area": str(1 + i % 77),
        "fare": f"{10 + i}.25",
        "tips": f"{i % 4}.5",
        "tolls": "0",
        "extras": "1",
        "trip_total": f"{12 + i}.75",
        "payment_type": "Credit Card" if i % 2 else "Cash",
        "company": "Flash Cab",
        "pickup_centroid_latitude": "41.880994471",
        "pickup_centroid_longitude": "-87.632746489",
        "pickup_centroid_location": {"type": "Point", "coordinates": [-87.632746489, 41.880994471]},
    }
    if i % 5 == 0:  # nulls are absent keys
        del row["company"], row["pickup_community_area"]
    return row


def portal_rows() -> dict[str, list[dict[str, Any]]]:
    datasets: dict[str, list[dict[str, Any]]] = {OLD: [], NEW: []}
    for day, n in DAY_ROWS.items():
        datasets[OLD if day.year < 2024 else NEW].extend(trip_row(day, i) for i in range(n))
    for rows in datasets.values():
        random.Random(7).shuffle(rows)  # stored unordered: only $order gives the order
    return datasets


def expected(day: dt.date) -> list[dict[str, Any]]:
    rows = [trip_row(day, i) for i in range(DAY_ROWS[day])]
    return sorted(rows, key=lambda r: (r["trip_start_timestamp"], r["trip_id"]))


@pytest.fixture
def soda() -> Iterator[SodaServer]:
    server = SodaServer(portal_rows()).start()
    yield server
    server.stop()


def make_source(server: SodaServer, token: str | None = TOKEN, **kwargs: Any) -> ChicagoSource:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("page_size", 10)
    return ChicagoSource(server.url, app_token=SecretStr(token) if token else None, **kwargs)


def read_all(source: ChicagoSource, start: dt.date, end: dt.date) -> tuple[pa.Table, list[Any]]:
    batches = list(source.read(Interval(start, end)))
    return pa.concat_tables([b.table for b in batches]), batches


D1, D2, D3, D4 = sorted(DAY_ROWS)


def test_one_day_is_paged_ordered_typed_and_counted(soda: SodaServer) -> None:
    table, batches = read_all(make_source(soda), D1, D2)

    assert table.schema == RAW_SCHEMA
    assert table.num_rows == 23
    assert [b.table.num_rows for b in batches] == [10, 10, 3]
    want = expected(D1)
    assert table["trip_id"].to_pylist() == [r["trip_id"] for r in want]  # ts then trip_id
    assert table["_source_row"].to_pylist() == list(range(23))
    assert set(table["_source"].to_pylist()) == {f"chicago:{OLD}"}
    assert table["_parse_errors"].null_count == 23
    first = table.slice(0, 1).to_pylist()[0]
    row = want[0]
    assert first["trip_start_timestamp"] == dt.datetime(2023, 12, 30, 0, 0)
    assert first["fare"] == float(row["fare"]) and first["trip_seconds"] == int(row["trip_seconds"])
    assert first["pickup_centroid_latitude"] == pytest.approx(41.880994471)
    # absent keys are nulls
    nulls = [r for r in want if "company" not in r]
    assert table["company"].null_count == len(nulls) > 0
    assert table["pickup_community_area"].null_count == len(nulls)
    assert "pickup_centroid_location" in batches[0].extra_columns

    data, counts = soda.data_requests(), soda.count_requests()
    assert [int(r.params["$offset"]) for r in data] == [0, 10, 20]
    assert {r.path for r in soda.requests} == {f"/resource/{OLD}.json"}
    assert all(r.params["$limit"] == "10" for r in data)
    assert all(r.params["$order"] == "trip_start_timestamp,trip_id" for r in data)
    where = "trip_start_timestamp >= '2023-12-30T00:00:00' AND trip_start_timestamp < '2023-12-31T00:00:00'"
    assert all(r.params["$where"] == where for r in soda.requests)
    assert len(counts) == 1 and counts[0].params["$select"].lower().startswith("count(*)")
    assert all(r.headers.get("X-App-Token") == TOKEN for r in soda.requests)


def test_full_last_page_reads_one_empty_page(soda: SodaServer) -> None:
    table, _ = read_all(make_source(soda), D2, D3)

    assert table.num_rows == 20
    assert [int(r.params["$offset"]) for r in soda.data_requests()] == [0, 10, 20]


def test_interval_across_new_year_uses_both_datasets(soda: SodaServer) -> None:
    source = make_source(soda)
    table, _ = read_all(source, D1, D4 + dt.timedelta(days=1))

    assert table.num_rows == 23 + 20 + 7 + 0
    assert table["_source"].value_counts().to_pylist() == [
        {"values": f"chicago:{OLD}", "counts": 43},
        {"values": f"chicago:{NEW}", "counts": 7},
    ]
    assert table["_source_row"].to_pylist() == list(range(50))  # positions in what the source returned
    paths = [r.path for r in soda.requests]
    assert paths.count(f"/resource/{NEW}.json") == 2 + 2  # D3: one page + count; D4: empty page + count
    described = source.describe(Interval(D1, D4 + dt.timedelta(days=1)))
    assert described["dataset_id"] == sorted([OLD, NEW]) and described["rows"] == 50
    assert TOKEN not in json.dumps(described)


def test_dataset_id_overrides_the_year_rule(soda: SodaServer) -> None:
    soda.datasets["npd7-ywjz"] = soda.datasets[NEW]
    table, _ = read_all(make_source(soda, dataset_id="npd7-ywjz"), D3, D4)

    assert table.num_rows == 7
    assert {r.path for r in soda.requests} == {"/resource/npd7-ywjz.json"}


def test_no_token_sends_no_header(soda: SodaServer) -> None:
    read_all(make_source(soda, token=None), D3, D4)

    assert soda.requests and all("X-App-Token" not in r.headers for r in soda.requests)


@pytest.mark.parametrize(
    ("faults", "failed"),
    [
        (["500"], 1),
        (["502", "503"], 2),
        (["202"], 1),
        (["truncate"], 1),
        (["badjson"], 1),
    ],
)
def test_transient_failures_are_retried(soda: SodaServer, faults: list[str], failed: int) -> None:
    soda.faults = list(faults)
    table, _ = read_all(make_source(soda), D1, D2)

    assert table["trip_id"].to_pylist() == [r["trip_id"] for r in expected(D1)]
    assert len(soda.requests) == 3 + 1 + failed  # pages + count + the failed attempts


def test_429_waits_for_retry_after(soda: SodaServer) -> None:
    soda.faults = ["429:0.4"]
    table, _ = read_all(make_source(soda), D3, D4)

    assert table.num_rows == 7
    first, second = soda.requests[0], soda.requests[1]
    assert first.params == second.params
    assert second.at - first.at >= 0.4  # the backoff alone would be 0.001 s


def test_read_timeout_is_retried(soda: SodaServer) -> None:
    soda.faults = ["sleep:1.5"]
    started = time.monotonic()
    table, _ = read_all(make_source(soda, read_timeout=0.3), D3, D4)

    assert table.num_rows == 7
    assert len(soda.requests) == 1 + 1 + 1  # the timed-out attempt, the page, the count
    assert time.monotonic() - started < 1.4  # it did not wait for the slow answer


def test_retries_are_bounded(soda: SodaServer) -> None:
    soda.sticky_fault = "500"
    with pytest.raises(SourceError) as err:
        read_all(make_source(soda), D3, D4)

    message = str(err.value)
    assert "failed 4 times" in message and "HTTP 500" in message and "Boom" in message
    assert "$where" in message and "2024-01-01T00:00:00" in message
    assert len(soda.requests) == 4


def test_client_error_fails_at_once_with_the_api_message(soda: SodaServer) -> None:
    soda.sticky_fault = "400"
    with pytest.raises(SourceError) as err:
        read_all(make_source(soda), D3, D4)

    message = str(err.value)
    assert "HTTP 400" in message
    assert "query.soql.no-such-column" in message and "No such column: tip_amount" in message
    assert len(soda.requests) == 1


def test_unknown_dataset_is_a_clear_error(soda: SodaServer) -> None:
    with pytest.raises(SourceError, match=r"HTTP 404 .*zzzz-zzzz.*not_found"):
        read_all(make_source(soda, dataset_id="zzzz-zzzz"), D3, D4)
    assert len(soda.requests) == 1


def test_count_mismatch_is_fetched_again(soda: SodaServer) -> None:
    soda.count_deltas = [1]  # the first count(*) says 24 for 23 rows
    table, _ = read_all(make_source(soda), D1, D2)

    assert table.num_rows == 23  # the second pass replaced the first: no duplicates
    assert table["trip_id"].to_pylist() == [r["trip_id"] for r in expected(D1)]
    assert len(soda.data_requests()) == 2 * 3 and len(soda.count_requests()) == 2


def test_persistent_count_mismatch_fails_with_both_numbers(soda: SodaServer) -> None:
    soda.count_deltas = [1, 1]
    with pytest.raises(SourceError, match=r"fetched 23 rows but count\(\*\) is 24"):
        read_all(make_source(soda), D1, D2)
    assert len(soda.count_requests()) == 2


def test_connection_refused_gives_up_quickly() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = ChicagoSource(f"http://127.0.0.1:{port}", retry=RetryPolicy(3, 0.001, 0.01), connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"failed 3 times.*connection failed"):
        list(source.read(Interval(D1, D2)))
    assert time.monotonic() - started < 5


def test_token_stays_out_of_logs_errors_and_describe(
    soda: SodaServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    soda.faults = ["500"]
    source = make_source(soda)
    read_all(source, D1, D2)
    soda.sticky_fault = "400"
    with pytest.raises(SourceError) as err:
        read_all(source, D1, D2)

    assert "retrying" in caplog.text  # the retry was logged...
    assert TOKEN not in caplog.text  # ...without the token
    assert TOKEN not in str(err.value)
    described = source.describe(Interval(D1, D2))
    assert TOKEN not in json.dumps(described) and described["app_token"] == "set"


def test_from_options_reads_settings_and_string_options(soda: SodaServer) -> None:
    settings = Settings(chicago_base_url=soda.url, chicago_app_token=SecretStr(TOKEN))
    source = get_source(
        "chicago",
        settings,
        {"dataset_id": NEW, "page_size": "5", "retry_initial": "0.001", "max_attempts": "2"},
    )
    assert isinstance(source, ChicagoSource)
    table = pa.concat_tables(b.table for b in source.read(Interval(D3, D4)))

    assert table.num_rows == 7
    assert [int(r.params["$limit"]) for r in soda.data_requests()] == [5, 5]
    assert source.retry.max_attempts == 2
    with pytest.raises(SourceError, match="does not understand option"):
        get_source("chicago", settings, {"page_sise": "5"})


def test_cli_extract_writes_verified_days(soda: SodaServer, data_root: Path) -> None:
    env = {"FLYWHEEL_CHICAGO_BASE_URL": soda.url, "FLYWHEEL_CHICAGO_APP_TOKEN": TOKEN}
    out = run_cli(
        "extract", "--source", "chicago", "--start", "2023-12-30", "--end", "2024-01-03",
        "--option", "page_size=10", env=env,
    )  # fmt: skip

    assert out["rows_read"] == out["rows_written"] == 50 and out["rows_other_intervals"] == 0
    assert {p["dt"]: p["rows"] for p in out["partitions"]} == {
        "2023-12-30": 23, "2023-12-31": 20, "2024-01-01": 7, "2024-01-02": 0,
    }  # fmt: skip
    manifest_text = (data_root / "raw/trips/dt=2024-01-01/_manifest.json").read_text()
    assert TOKEN not in manifest_text
    manifest = json.loads(manifest_text)
    (inp,) = manifest["inputs"]
    assert inp["dataset_id"] == NEW and inp["rows"] == 7 and len(inp["sha256"]) == 64
    assert all(r.headers.get("X-App-Token") == TOKEN for r in soda.requests)
