"""A small, real HTTP server speaking enough Socrata SODA 2.1 for the chicago source's tests.

It serves ``/resource/<dataset>.json`` over an in-memory list of rows (dicts of strings, nulls as
absent keys, as the portal sends them) and implements the parts of SoQL the source uses:
``$where`` on a ``trip_start_timestamp`` range, ``$order`` over fields, ``$limit`` / ``$offset``
paging and ``$select=count(*) [AS alias]``. Fault modes make the next request(s) fail in the ways the
real portal and networks do: 429 with Retry-After, 202, 5xx, a slow answer, a cut body, broken JSON,
a permanent 400, a wrong count.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

WHERE = re.compile(r"^trip_start_timestamp >= '([^']+)' AND trip_start_timestamp < '([^']+)'$")
COUNT = re.compile(r"^count\(\*\)(?:\s+AS\s+(\w+))?$", re.IGNORECASE)


@dataclass
class RecordedRequest:
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    at: float

    @property
    def is_count(self) -> bool:
        return "$select" in self.params


@dataclass
class SodaServer:
    """Serve ``datasets`` (id -> rows) on 127.0.0.1; see the module docstring for the fault modes.

    ``faults`` are consumed one per request, first in first out: ``"429:<retry_after>"``, ``"429bare"``,
    ``"202"``, ``"500"`` (any 5xx number), ``"sleep:<seconds>"``, ``"truncate"``, ``"badjson"``, ``"400"``,
    ``"403echo"`` (the request headers echoed in the body), ``"html"`` (200 with an HTML page),
    ``"redirect:<base url>"`` (302 there), ``"trickle:<seconds>"`` (the body in slow pieces).
    ``sticky_fault`` applies to every request. ``count_deltas`` are added to successive count(*) answers.
    """

    datasets: dict[str, list[dict[str, Any]]]
    faults: list[str] = field(default_factory=list)
    sticky_fault: str | None = None
    count_deltas: list[int] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> SodaServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="soda-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def data_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if not r.is_count]

    def count_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.is_count]

    # -- request handling --------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        with self._lock:
            self.requests.append(
                RecordedRequest(parts.path, params, dict(h.headers.items()), time.monotonic())
            )
            fault = self.faults.pop(0) if self.faults else self.sticky_fault
        try:
            if fault and self._fault(h, fault):
                return
            status, body = self._answer(parts.path, params)
            self._send(h, status, body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (read timeout): fine
            h.close_connection = True

    def _fault(self, h: BaseHTTPRequestHandler, fault: str) -> bool:
        """Apply ``fault``; True when the response has been sent (or deliberately not sent)."""
        kind, _, arg = fault.partition(":")
        if kind == "429":
            self._send(h, 429, {"code": "too_many_requests", "error": True, "message": "Throttled"},
                       {"Retry-After": arg or "1"})  # fmt: skip
            return True
        if kind == "202":
            self._send(h, 202, {"message": "Processing, try again later"})
            return True
        if kind.isdigit() and int(kind) >= 500:
            self._send(h, int(kind), {"code": "internal_error", "error": True, "message": "Boom"})
            return True
        if kind == "400":
            self._send(h, 400, {"code": "query.soql.no-such-column", "error": True,
                                "message": "No such column: tip_amount"})  # fmt: skip
            return True
        if kind == "403echo":  # an API gateway that echoes the request headers in its error body
            headers = json.dumps(dict(h.headers.items()))
            self._send(h, 403, {"code": "forbidden", "error": True,
                                "message": f"Invalid app token; request headers were {headers}"})  # fmt: skip
            return True
        if kind == "429bare":  # throttled without a Retry-After header
            self._send(h, 429, {"code": "too_many_requests", "error": True, "message": "Throttled"})
            return True
        if kind == "html":  # a proxy's or maintenance page, with status 200
            data = b"<html><body><h1>Down for maintenance</h1></body></html>"
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return True
        if kind == "redirect":  # 302 to ``arg`` (another server), same path and query
            h.send_response(302)
            h.send_header("Location", arg.rstrip("/") + h.path)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return True
        if kind == "trickle":  # the right body, a few bytes at a time over ``arg`` seconds
            status, body = self._answer(urlsplit(h.path).path, dict(parse_qsl(urlsplit(h.path).query)))
            data = json.dumps(body).encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/json;charset=utf-8")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            pieces = [data[i : i + 64] for i in range(0, len(data), 64)]
            for piece in pieces:
                h.wfile.write(piece)
                h.wfile.flush()
                time.sleep(float(arg) / len(pieces))
            return True
        if kind == "sleep":
            time.sleep(float(arg))
            return False  # then answer normally (to a client that may be gone)
        if kind == "truncate":
            status, body = self._answer(urlsplit(h.path).path, dict(parse_qsl(urlsplit(h.path).query)))
            data = json.dumps(body).encode()
            h.send_response(status)
            h.send_header("Content-Type", "application/json;charset=utf-8")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return True
        if kind == "badjson":
            data = b'[{"trip_id": "abc", "fare": "1'
            h.send_response(200)
            h.send_header("Content-Type", "application/json;charset=utf-8")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return True
        raise AssertionError(f"unknown fault {fault!r}")

    def _answer(self, path: str, params: dict[str, str]) -> tuple[int, Any]:
        match = re.fullmatch(r"/resource/([a-z0-9]{4}-[a-z0-9]{4})\.json", path)
        if not match or match.group(1) not in self.datasets:
            return 404, {"code": "not_found", "error": True, "message": f"Dataset not found: {path}"}
        rows = self.datasets[match.group(1)]
        where = WHERE.match(params.get("$where", ""))
        if "$where" in params and not where:
            return 400, {"code": "query.compiler.malformed", "error": True,
                         "message": f"Could not parse SoQL query: {params['$where']}"}  # fmt: skip
        if where:
            low, high = (w + ".000" if len(w) == 19 else w for w in where.groups())
            rows = [r for r in rows if low <= r["trip_start_timestamp"] < high]
        if "$select" in params:
            count = COUNT.match(params["$select"].strip())
            if not count:
                return 400, {"code": "query.compiler.malformed", "error": True, "message": "bad $select"}
            with self._lock:
                delta = self.count_deltas.pop(0) if self.count_deltas else 0
            return 200, [{count.group(1) or "count": str(len(rows) + delta)}]
        if "$order" in params:
            fields = [f.strip() for f in params["$order"].split(",")]
            rows = sorted(rows, key=lambda r: tuple(r.get(f, "") for f in fields))
        offset = int(params.get("$offset", 0))
        limit = int(params.get("$limit", 1000))
        return 200, rows[offset : offset + limit]

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json;charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(data)
