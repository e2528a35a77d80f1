"""dags/_lib/alerts.py: the drift alert's log line, its webhook (HttpHook) against a real local HTTP server,
the failure modes (no connection, HTTP 500, nothing listening), the alert task, and a cheap import."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.dags.conftest import run_python
from tests.dags.test_dag_integrity import HEAVY_MODULES

# shaped like ml_tasks.monitoring.policy's decision (format_version 1)
DECISION: dict[str, Any] = {
    "model": {"name": "taxi_tips", "version": "3"},
    "interval": {"start": "2024-03-10", "end": "2024-03-11"},
    "verdict": "drift",
    "alert": True,
    "retrain": True,
    "reasons": ["drift on 2 consecutive interval(s) (hysteresis 2), no earlier retrain request: retrain"],
    "thresholds": {"drift_share": 0.2, "hysteresis": 2, "cooldown_days": 7},
    "drift": {"drift_share": 0.25, "drifted_columns": ["fare", "trip_miles", "speed_mph"]},
}


class _Server:
    """A real HTTP server on 127.0.0.1 (ephemeral port) recording every request; answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.redirect_to: str | None = None  # answer 307 to this base URL instead
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                outer.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)}
                )
                if outer.redirect_to:
                    self.send_response(307)
                    self.send_header("Location", outer.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    # a proxy from the environment must not intercept requests to 127.0.0.1
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = _Server()
    yield srv
    srv.close()


@pytest.fixture
def alerts() -> Any:
    from _lib import alerts as module

    return module


def test_webhook_receives_the_decision_and_the_log_says_what_happened(
    server: _Server, alerts: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLYWHEEL_ALERTS", f"http://user:s3cret-pass@127.0.0.1:{server.port}/hooks/T0KEN"
    )
    with caplog.at_level(logging.INFO, logger=alerts.__name__):
        result = alerts.send_drift_alert(DECISION)
    assert len(server.requests) == 1
    request = server.requests[0]
    assert request["path"] == "/hooks/T0KEN"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Authorization"].startswith("Basic ")
    body = json.loads(request["body"])
    assert body["decision"] == DECISION and body["event"] == "flywheel.drift"
    assert body["text"] == result["summary"] and body["airflow"] == {}
    summary = result["summary"]
    for part in (
        "model taxi_tips v3",
        "[2024-03-10, 2024-03-11)",
        "verdict drift",
        "3 drifted column(s): fare,",
        "drift share 0.250 (threshold 0.2)",
        "retrain yes (drift on 2 consecutive interval(s)",
    ):
        assert part in summary, (part, summary)
    assert result["webhook"] == {
        "status": "sent",
        "target": f"http://127.0.0.1:{server.port}/...",
        "http_status": 200,
    }
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [summary]
    # the URL's secret path and the password never reach the log
    assert not any("T0KEN" in r.getMessage() or "s3cret" in r.getMessage() for r in caplog.records)


def test_json_connection_with_endpoint_and_context_ids(
    server: _Server, alerts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": server.port,
        "schema": "http",
        "extra": {"endpoint": "/flywheel/drift", "headers": {"X-Team": "ml"}, "timeout": 3},
    }
    monkeypatch.setenv("AIRFLOW_CONN_FLYWHEEL_ALERTS_JSON", json.dumps(conn))

    class TI:
        dag_id, run_id, task_id = "taxi_monitoring", "asset_triggered__1", "alert"

    no_drift = {
        **DECISION,
        "verdict": "no_drift",
        "drift": {"drift_share": 0.0, "drifted_columns": []},
        "retrain": False,
        "reasons": ["no drift"],
    }
    result = alerts.send_drift_alert(no_drift, conn_id="flywheel_alerts_json", context={"ti": TI()})
    assert result["webhook"]["status"] == "sent"
    request = server.requests[0]
    assert request["path"] == "/flywheel/drift" and request["headers"]["X-Team"] == "ml"
    body = json.loads(request["body"])
    assert body["airflow"] == {
        "dag_id": "taxi_monitoring",
        "run_id": "asset_triggered__1",
        "task_id": "alert",
    }
    assert "0 drifted column(s);" in body["text"] and "retrain no (no drift)" in body["text"]


def test_missing_connection_logs_only(alerts: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=alerts.__name__):
        result = alerts.send_drift_alert(DECISION, conn_id="flywheel_alerts_not_defined")
    assert result["webhook"] == {"status": "not_configured", "target": None, "http_status": None}
    assert result["summary"].startswith("drift alert: model taxi_tips v3")
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("no Airflow connection 'flywheel_alerts_not_defined'" in m for m in infos)
    assert [r.levelno for r in caplog.records].count(logging.WARNING) == 1


def test_server_error_is_reported_not_raised(
    server: _Server, alerts: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server.status = 500
    monkeypatch.setenv("AIRFLOW_CONN_FLYWHEEL_ALERTS", f"http://127.0.0.1:{server.port}/hook")
    with caplog.at_level(logging.INFO, logger=alerts.__name__):
        result = alerts.send_drift_alert(DECISION)
    assert len(server.requests) == 1  # it was delivered, and refused
    assert result["webhook"]["status"] == "failed" and result["webhook"]["http_status"] == 500
    assert "HTTP 500" in result["webhook"]["error"]
    assert any(
        "webhook" in r.getMessage() and "HTTP 500" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    )


def test_unreachable_port_is_reported_not_raised(alerts: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_FLYWHEEL_ALERTS", f"http://127.0.0.1:{port}/hook?timeout=2")
    result = alerts.send_drift_alert(DECISION)
    webhook = result["webhook"]
    assert webhook["status"] == "failed" and webhook["http_status"] is None
    assert "ConnectionError" in webhook["error"] and "refused" in webhook["error"].lower()
    # the URL's path never reaches the result (it may hold the webhook's secret token)
    assert "/hook" not in webhook["error"], webhook["error"]


def test_bad_scheme_is_reported(alerts: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLYWHEEL_ALERTS_FTP", json.dumps({"conn_type": "http", "host": "ftp://x/y"})
    )
    result = alerts.send_drift_alert(DECISION, conn_id="flywheel_alerts_ftp")
    assert result["webhook"]["status"] == "failed" and "not http or https" in result["webhook"]["error"]


def test_webhook_url_forms(alerts: Any) -> None:
    from airflow.sdk import Connection

    def url(**kwargs: Any) -> str:
        return str(alerts.webhook_url(Connection(conn_id="c", **kwargs)))

    assert (
        url(uri="https://hooks.example.com/services/T0/B0/XYZ")
        == "https://hooks.example.com/services/T0/B0/XYZ"
    )
    assert url(conn_type="http", host="alerts", port=8080, schema="https", extra='{"endpoint": "drift"}') == (
        "https://alerts:8080/drift"
    )
    assert url(conn_type="http", host="https://hooks.example.com/x", extra='{"endpoint": "/y"}') == (
        "https://hooks.example.com/x/y"
    )
    with pytest.raises(alerts.WebhookConfigError, match="no host"):
        url(conn_type="http")


def test_the_alert_task_posts_each_alert_once(
    server: _Server, monkeypatch: pytest.MonkeyPatch, dagbag: Any
) -> None:
    """taxi_monitoring's alert task posts every decision that is not no_drift, once: no callback repeats
    what it sent (the DriftNotifier that only logged it again is gone)."""
    monkeypatch.setenv("AIRFLOW_CONN_FLYWHEEL_ALERTS", f"http://127.0.0.1:{server.port}/hook")

    class TI:
        dag_id, run_id, task_id = "taxi_monitoring", "r1", "alert"

    other = {**DECISION, "interval": {"start": "2024-03-11", "end": "2024-03-12"}}
    quiet = {**DECISION, "verdict": "no_drift"}
    summaries = [{"interval": d["interval"], "decision": d} for d in (other, DECISION, quiet)]
    task = dagbag.dags["taxi_monitoring"].get_task("alert")
    assert not task.on_success_callback and not task.on_execute_callback
    sent = task.python_callable(summaries, ti=TI())
    assert len(server.requests) == 2 == len(sent)  # the no_drift decision is not posted
    # in day order, to the default connection flywheel_alerts
    bodies = [json.loads(r["body"]) for r in server.requests]
    assert [b["decision"]["interval"]["start"] for b in bodies] == ["2024-03-10", "2024-03-11"]
    assert bodies[0]["airflow"] == {"dag_id": "taxi_monitoring", "run_id": "r1", "task_id": "alert"}
    assert {r["conn_id"] for r in sent} == {"flywheel_alerts"}
    assert [r["webhook"]["status"] for r in sent] == ["sent", "sent"]


def test_module_imports_nothing_heavy() -> None:
    # as the dag-processor imports it: airflow.sdk loaded already, dags/ on sys.path
    code = """
import json, sys, time
sys.path.append("dags")
import airflow.sdk
import airflow.sdk.exceptions
t0 = time.perf_counter()
import _lib.alerts
seconds = time.perf_counter() - t0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps({"heavy": heavy, "seconds": seconds}))
"""
    result = run_python(code.replace("{heavy!r}", repr({*HEAVY_MODULES, "numpy", "requests"})))
    assert result["heavy"] == [], result["heavy"]
    assert result["seconds"] < 0.5, result


def test_summary_of_a_flat_decision(alerts: Any) -> None:
    flat = {
        "model": "taxi_tips",
        "model_version": 5,
        "interval": {"start": "2024-03-12", "end": "2024-03-13"},
        "verdict": "performance_drop",
        "drifted_columns": [f"c{i}" for i in range(10)],
        "drift_share": 1,
        "retrain": {"retrain": False, "reasons": ["cooldown: last retrain 2 days before (cooldown 7)"]},
    }
    assert alerts.summarize(flat) == (
        "drift alert: model taxi_tips v5 interval [2024-03-12, 2024-03-13): verdict performance_drop;"
        " 10 drifted column(s): c0, c1, c2, c3, c4, c5, c6, c7, +2 more; drift share 1.000;"
        " retrain no (cooldown: last retrain 2 days before (cooldown 7))"
    )
    assert alerts.summarize({}) == (
        "drift alert: model ? interval ?: verdict None; 0 drifted column(s); drift share None; retrain no"
    )


def test_headers_and_credentials_do_not_follow_a_redirect_to_another_host(
    server: _Server, alerts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests drops Authorization on a cross-host redirect, not the connection's extra headers."""
    other = _Server()
    try:
        server.redirect_to = f"http://localhost:{other.port}"  # the same machine under another host name
        extra = json.dumps({"headers": {"X-Webhook-Secret": "hdr-s3cret"}})
        monkeypatch.setenv(
            "AIRFLOW_CONN_FLYWHEEL_ALERTS",
            json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{server.port}/hooks/T0KEN",
                        "login": "user", "password": "s3cret-pass", "extra": extra}),
        )  # fmt: skip
        result = alerts.send_drift_alert(DECISION)
    finally:
        other.close()
    assert result["webhook"]["status"] == "sent"
    first, second = server.requests[0]["headers"], other.requests[0]["headers"]
    assert first["X-Webhook-Secret"] == "hdr-s3cret" and first["Authorization"].startswith("Basic ")
    assert "X-Webhook-Secret" not in second and "Authorization" not in second
    assert json.loads(other.requests[0]["body"])["decision"] == DECISION  # 307: the same POST


def test_headers_follow_a_redirect_on_the_same_origin(
    server: _Server, alerts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.redirect_to = None
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLYWHEEL_ALERTS",
        json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{server.port}/a",
                    "extra": json.dumps({"headers": {"X-Webhook-Secret": "hdr-s3cret"}})}),
    )  # fmt: skip
    calls = {"n": 0}
    original = server.httpd.RequestHandlerClass.do_POST

    def once_redirected(handler: Any) -> None:
        calls["n"] += 1
        server.redirect_to = f"http://127.0.0.1:{server.port}/b" if calls["n"] == 1 else None
        original(handler)

    monkeypatch.setattr(server.httpd.RequestHandlerClass, "do_POST", once_redirected)
    result = alerts.send_drift_alert(DECISION)
    assert result["webhook"]["status"] == "sent"
    assert [r["path"] for r in server.requests] == ["/a", "/b/a"]
    assert [r["headers"].get("X-Webhook-Secret") for r in server.requests] == ["hdr-s3cret", "hdr-s3cret"]
