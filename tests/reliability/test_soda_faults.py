"""The chicago source under the faults of a real local SODA server: each fault's exact outcome via the CLI.

Transient faults end in the day's exact rows (and the retries they cost); the others in one
``ml-tasks: error:`` line naming the endpoint and the problem, without the app token.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration._servers.soda import SodaServer
from tests.integration.test_chicago_source import NEW, TOKEN, portal_rows
from tests.reliability.conftest import outcome

DAY = "2024-01-01"  # 7 trips in the NEW dataset
ROWS = 7
FAST = [
    "--option", "retry_initial=0.001", "--option", "retry_max=0.01", "--option", "max_attempts=3",
    "--option", "read_timeout=0.5", "--option", "connect_timeout=1", "--option", "page_size=10",
]  # fmt: skip


@dataclass(frozen=True)
class Fault:
    name: str
    faults: list[str] = field(default_factory=list)
    sticky: str | None = None
    count_deltas: list[int] = field(default_factory=list)
    error: str | None = None  # None: the day's rows arrive whole
    requests: int | None = None  # requests the server saw (data pages + counts, retries included)


FAULTS = [
    Fault("500 once", faults=["500"], requests=3),
    Fault("flaky 500 502", faults=["500", "502"], requests=4),
    Fault("500 always", sticky="503", error=r"failed 3 times; last failure: HTTP 503", requests=3),
    Fault("202 processing", faults=["202"], requests=3),
    Fault("429 with Retry-After", faults=["429:0.05"], requests=3),
    Fault("429 without Retry-After", faults=["429bare"], requests=3),
    Fault("hang past the read timeout", faults=["sleep:1.5"], requests=3),
    Fault("body cut short", faults=["truncate"], requests=3),
    Fault("truncated JSON", faults=["badjson"], requests=3),
    Fault("trickled body", faults=["trickle:0.3"], requests=2),
    Fault("count mismatch once", count_deltas=[2], requests=4),
    Fault(
        "count mismatch twice",
        count_deltas=[2, 2],
        error=r"fetched 7 rows but count\(\*\) is 9, twice; the dataset is changing",
        requests=4,
    ),
    Fault(
        "HTML with 200", sticky="html", error=r"HTTP 200 with invalid JSON .*Down for maintenance", requests=3
    ),
    Fault("400 bad query", sticky="400", error=r"HTTP 400 from .*No such column: tip_amount", requests=1),
    Fault(
        "403 echoing the request headers",
        sticky="403echo",
        error=r"HTTP 403 from .*Invalid app token.*\(check FLYWHEEL_CHICAGO_APP_TOKEN\)",
        requests=1,
    ),
]


@pytest.fixture
def soda() -> Iterator[SodaServer]:
    server = SodaServer(portal_rows()).start()
    yield server
    server.stop()


def _env(url: str) -> dict[str, str]:
    return {"FLYWHEEL_CHICAGO_BASE_URL": url, "FLYWHEEL_CHICAGO_APP_TOKEN": TOKEN}


def _extract(url: str) -> list[str]:
    return ["extract", "--source", "chicago", "--start", DAY, "--dataset-id", NEW, *FAST]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fault: Fault, soda: SodaServer, data_root: Path) -> None:
    soda.faults, soda.sticky_fault, soda.count_deltas = (
        list(fault.faults),
        fault.sticky,
        list(fault.count_deltas),
    )
    result = outcome(*_extract(soda.url), env=_env(soda.url))

    if fault.error is None:
        assert result.summary is not None, result.error
        assert result.summary["rows_read"] == result.summary["rows_written"] == ROWS
        assert [p["rows"] for p in result.summary["partitions"]] == [ROWS]
    else:
        assert result.error is not None and result.summary is None
        assert __import__("re").search(fault.error, result.error), result.error
        assert f"/resource/{NEW}.json" in result.error  # names the endpoint
        assert not (data_root / "raw" / "trips" / f"dt={DAY}").exists()  # nothing half-written
    assert TOKEN not in result.stderr + (result.error or "")
    assert len(soda.requests) == fault.requests, [r.params for r in soda.requests]


def test_refused_connection(data_root: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = outcome(*_extract(url), env=_env(url))
    assert result.error is not None
    assert "failed 3 times; last failure: connection failed" in result.error
    assert TOKEN not in result.stderr


def test_the_token_is_not_sent_to_another_host_on_a_redirect(data_root: Path) -> None:
    """Finding 2: requests keeps custom headers across hosts; the source drops every credential header."""
    here, there = SodaServer(portal_rows()).start(), SodaServer(portal_rows()).start()
    try:
        other = there.url.replace("127.0.0.1", "localhost")  # the same server under another host name
        here.sticky_fault = f"redirect:{other}"
        result = outcome(*_extract(here.url), env=_env(here.url))
    finally:
        here.stop()
        there.stop()

    assert result.summary is not None and result.summary["rows_written"] == ROWS
    assert len(there.requests) == 2  # the page and the count, both redirected there
    assert [r.headers.get("X-App-Token") for r in here.requests] == [TOKEN, TOKEN]
    assert [r.headers.get("X-App-Token") for r in there.requests] == [None, None]


def test_the_token_is_not_sent_to_another_port_of_the_same_host(data_root: Path) -> None:
    here = SodaServer(portal_rows()).start()
    there = SodaServer(portal_rows()).start()
    try:
        here.sticky_fault = (
            f"redirect:{there.url}"  # same host (127.0.0.1), another port: not the same origin
        )
        result = outcome(*_extract(here.url), env=_env(here.url))
    finally:
        here.stop()
        there.stop()
    assert result.summary is not None
    assert [r.headers.get("X-App-Token") for r in there.requests] == [None, None]
