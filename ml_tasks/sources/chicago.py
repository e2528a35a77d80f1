"""Trips from the City of Chicago data portal: the Socrata SODA 2.1 JSON API (CHICAGO_PORTAL.md).

One paged query per local day, checked against the portal's count (refetched once, then an error);
transient failures retried with backoff; the app token only ever in the ``X-App-Token`` header.
See ``docs/ingest.md``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Self

import pyarrow as pa
import requests
import tenacity
from pydantic import SecretStr

import ml_tasks
from ml_tasks.intervals import Interval
from ml_tasks.schema import PORTAL_MAPPING, RAW_COLUMNS, to_canonical
from ml_tasks.settings import Settings
from ml_tasks.sources._options import check_known, opt_float, opt_int, opt_str
from ml_tasks.sources.base import SourceBatch, SourceError
from ml_tasks.sources.credential_session import CredentialSession

log = logging.getLogger(__name__)

DATASET_BEFORE_2024 = "wrvz-psew"  # Taxi Trips (2013-2023)
DATASET_FROM_2024 = "ajtu-isnz"  # Taxi Trips (2024-)
FIRST_YEAR_OF_NEW_DATASET = 2024
ORDER = "trip_start_timestamp,trip_id"  # paging without a total order is unstable on Socrata
DEFAULT_PAGE_SIZE = 50_000
_SNIPPET = 300
_KNOWN_OPTIONS = {
    "dataset_id",
    "base_url",
    "page_size",
    "connect_timeout",
    "read_timeout",
    "max_attempts",
    "retry_initial",
    "retry_max",
    "max_retry_after",
}


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``initial * 2**(n-1)`` seconds (at most ``maximum``), or the server's Retry-After."""

    max_attempts: int = 6
    initial: float = 1.0
    maximum: float = 60.0
    max_retry_after: float = 300.0  # a longer Retry-After is cut to this (then the next attempt decides)


class _Transient(Exception):
    """A failure worth another attempt (throttled, server busy or broken, network, truncated body)."""

    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.retry_after = retry_after


@dataclass
class _Day:
    """One day's verified rows, held until its count check passes."""

    dataset_id: str
    tables: list[pa.Table]
    rows: int
    sha256: str
    requests: int


#: headers that carry a credential: sent only to the configured host (also across redirects)
def dataset_for(day: dt.date) -> str:
    """The portal dataset holding trips that start on ``day``."""
    return DATASET_FROM_2024 if day.year >= FIRST_YEAR_OF_NEW_DATASET else DATASET_BEFORE_2024


def where_clause(start: dt.datetime, end: dt.datetime) -> str:
    """SoQL condition for ``[start, end)`` on the floating (local) trip start timestamp."""
    return (
        f"trip_start_timestamp >= '{start:%Y-%m-%dT%H:%M:%S}'"
        f" AND trip_start_timestamp < '{end:%Y-%m-%dT%H:%M:%S}'"
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds (fractions accepted) or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."


def _text(value: Any) -> str | None:
    """A JSON value as text: the portal sends strings; points and other objects are kept as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def page_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A page of SODA rows as a table of strings.

    Nulls are absent keys, so a column may be missing from a whole page: every portal column is
    present (null) anyway, and keys beyond them (centroid points, computed columns) are kept as
    extra columns.
    """
    keys = dict.fromkeys(RAW_COLUMNS)
    for row in rows:
        for key in row:
            keys.setdefault(key)
    return pa.table({k: pa.array([_text(r.get(k)) for r in rows], pa.string()) for k in keys})


class ChicagoSource:
    """The City of Chicago Taxi Trips datasets over SODA 2.1 (see the module docstring)."""

    name = "chicago"
    server_side_filter = True

    def __init__(
        self,
        base_url: str,
        *,
        app_token: SecretStr | None = None,
        dataset_id: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise SourceError(f"chicago base URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = app_token
        self.dataset_id = dataset_id
        self.page_size = page_size
        self.timeout = (connect_timeout, read_timeout)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._days: dict[dt.date, _Day] = {}
        self.requests_made = 0

    @classmethod
    def from_options(cls, settings: Settings, options: dict[str, Any]) -> Self:
        """Build from settings (base URL, app token) and options (``dataset_id``, paging, retries)."""
        check_known(options, "chicago", _KNOWN_OPTIONS)
        defaults = RetryPolicy()
        return cls(
            opt_str(options, "base_url", settings.chicago_base_url) or settings.chicago_base_url,
            app_token=settings.chicago_app_token,
            dataset_id=opt_str(options, "dataset_id"),
            page_size=opt_int(options, "page_size", DEFAULT_PAGE_SIZE, minimum=1),
            connect_timeout=opt_float(options, "connect_timeout", 10.0, minimum=0.001),
            read_timeout=opt_float(options, "read_timeout", 120.0, minimum=0.001),
            retry=RetryPolicy(
                max_attempts=opt_int(options, "max_attempts", defaults.max_attempts, minimum=1),
                initial=opt_float(options, "retry_initial", defaults.initial, minimum=0.0),
                maximum=opt_float(options, "retry_max", defaults.maximum, minimum=0.0),
                max_retry_after=opt_float(options, "max_retry_after", defaults.max_retry_after, minimum=0.0),
            ),
        )

    def dataset(self, day: dt.date) -> str:
        return self.dataset_id or dataset_for(day)

    def endpoint(self, dataset_id: str) -> str:
        return f"{self.base_url}/resource/{dataset_id}.json"

    # -- reading -------------------------------------------------------------------------------
    def read(self, interval: Interval) -> Iterator[SourceBatch]:
        """The interval's trips, day by day, each day's pages verified by a count before release."""
        offset = 0
        with CredentialSession(self.base_url) as session:
            session.headers.update(
                {"Accept": "application/json", "User-Agent": f"flywheel/{ml_tasks.__version__}"}
            )
            if self._token is not None and self._token.get_secret_value():
                session.headers["X-App-Token"] = self._token.get_secret_value()
            for day in interval.days():
                fetched = self._read_day(session, day)
                source = f"chicago:{fetched.dataset_id}"
                for table in fetched.tables:
                    typed = to_canonical(table, source, PORTAL_MAPPING, offset)
                    offset += table.num_rows
                    yield SourceBatch(
                        typed.table,
                        typed.missing_optional,
                        typed.extra_columns,
                        notes={"dataset_id": fetched.dataset_id},
                    )
                fetched.tables = []  # released: describe() needs only the counts and hash

    def _read_day(self, session: requests.Session, day: dt.date) -> _Day:
        dataset_id = self.dataset(day)
        url = self.endpoint(dataset_id)
        start = dt.datetime.combine(day, dt.time())
        where = where_clause(start, start + dt.timedelta(days=1))
        started = time.perf_counter()
        before = self.requests_made
        for attempt in (1, 2):
            tables: list[pa.Table] = []
            digest = hashlib.sha256()
            rows = 0
            page_offset = 0
            while True:
                params = {"$where": where, "$order": ORDER, "$limit": self.page_size, "$offset": page_offset}
                body, raw = self._get(session, url, params)
                page = _rows(body, url, params)
                digest.update(raw)
                if page:
                    tables.append(page_table(page))
                rows += len(page)
                log.info("chicago %s %s: %d rows at offset %d", dataset_id, day, len(page), page_offset)
                if len(page) < self.page_size:
                    break
                page_offset += self.page_size
            count_params: dict[str, Any] = {"$select": "count(*) AS row_count", "$where": where}
            expected = _count(self._get(session, url, count_params)[0], url, count_params)
            if rows == expected:
                break
            log.warning(
                "chicago %s %s: fetched %d rows but count(*) says %d (attempt %d of 2)",
                dataset_id, day, rows, expected, attempt,
            )  # fmt: skip
        else:
            raise SourceError(
                f"chicago: {url} where {where!r}: fetched {rows} rows but count(*) is {expected},"
                " twice; the dataset is changing or paging is unstable"
            )
        log.info(
            "chicago %s %s: %d rows verified in %.2f s (%d requests)",
            dataset_id, day, rows, time.perf_counter() - started, self.requests_made - before,
        )  # fmt: skip
        fetched = _Day(dataset_id, tables, rows, digest.hexdigest(), self.requests_made - before)
        self._days[day] = fetched
        return fetched

    def _get(self, session: requests.Session, url: str, params: dict[str, Any]) -> tuple[Any, bytes]:
        """GET ``url`` with retries; returns the decoded JSON body and its raw bytes."""

        def attempt() -> tuple[Any, bytes]:
            self.requests_made += 1
            try:
                response = session.get(url, params=params, timeout=self.timeout)
            except requests.Timeout as exc:
                raise _Transient(f"timeout ({type(exc).__name__}): {exc}") from exc
            except (
                requests.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                raise _Transient(
                    f"connection failed or body cut short ({type(exc).__name__}): {exc}"
                ) from exc
            except requests.RequestException as exc:
                raise SourceError(f"chicago: cannot GET {url} with {params}: {exc}") from exc
            status = response.status_code
            if status == 200:
                try:
                    return response.json(), response.content
                except ValueError as exc:  # requests' JSONDecodeError; a cut or garbled body
                    raise _Transient(
                        f"HTTP 200 with invalid JSON ({len(response.content)} bytes: {exc}):"
                        f" {_snippet(response.text)}"
                    ) from exc
            if status in (202, 429) or status >= 500:
                raise _Transient(
                    f"HTTP {status}: {_snippet(response.text)}",
                    _retry_after(response.headers.get("Retry-After")),
                )
            raise SourceError(f"chicago: HTTP {status} from {url} with {params}: {_api_error(response)}")

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Transient),
            before_sleep=lambda state: self._log_retry(state, url, params),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Transient as exc:
            raise SourceError(
                f"chicago: GET {url} with {params} failed {self.retry.max_attempts} times;"
                f" last failure: {exc}"
            ) from exc

    def _log_retry(self, state: tenacity.RetryCallState, url: str, params: dict[str, Any]) -> None:
        log.warning(
            "chicago: GET %s %s attempt %d of %d failed (%s); retrying in %.2f s",
            url, params, state.attempt_number, self.retry.max_attempts,
            state.outcome.exception() if state.outcome else "?",
            state.next_action.sleep if state.next_action else 0.0,
        )  # fmt: skip

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Seconds before the next attempt: the server's Retry-After when given, else exponential backoff."""
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry.max_retry_after)
        return float(min(self.retry.initial * 2 ** (state.attempt_number - 1), self.retry.maximum))

    # -- lineage -------------------------------------------------------------------------------
    def describe(self, interval: Interval) -> dict[str, Any]:
        """Endpoint(s), the query, and what was fetched (rows, hash of the response bodies)."""
        days = list(interval.days())
        datasets = sorted({self.dataset(d) for d in days})
        described: dict[str, Any] = {
            "source": "chicago",
            "base_url": self.base_url,
            "dataset_id": datasets[0] if len(datasets) == 1 else datasets,
            "endpoints": [self.endpoint(d) for d in datasets],
            "where": where_clause(interval.start_local(), interval.end_local()),
            "order": ORDER,
            "page_size": self.page_size,
            "app_token": "set" if self._token is not None and self._token.get_secret_value() else "none",
        }
        if all(d in self._days for d in days):
            fetched = [self._days[d] for d in days]
            described["rows"] = sum(f.rows for f in fetched)
            described["sha256"] = (
                fetched[0].sha256
                if len(fetched) == 1
                else hashlib.sha256("".join(f.sha256 for f in fetched).encode()).hexdigest()
            )
        return described


def _rows(body: Any, url: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(body, list) or not all(isinstance(r, dict) for r in body):
        raise SourceError(
            f"chicago: {url} with {params} did not return a JSON array of objects:"
            f" {_snippet(json.dumps(body))}"
        )
    return body


def _count(body: Any, url: str, params: dict[str, Any]) -> int:
    try:
        (row,) = body
        (value,) = row.values()
        return int(value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise SourceError(
            f"chicago: {url} with {params}: unexpected count(*) answer {_snippet(json.dumps(body))}"
        ) from exc


def _api_error(response: requests.Response) -> str:
    """The SODA error body ``{code, error, message}`` as one line (raw text when it is not JSON)."""
    try:
        body = response.json()
    except ValueError:
        return _snippet(response.text) or "(empty body)"
    if isinstance(body, dict):
        parts = [f"{k}={body[k]!r}" for k in ("code", "error", "message") if k in body]
        detail = "; ".join(parts) if parts else _snippet(json.dumps(body))
    else:
        detail = _snippet(json.dumps(body))
    if response.status_code in (401, 403):
        detail += " (check FLYWHEEL_CHICAGO_APP_TOKEN)"
    return detail
