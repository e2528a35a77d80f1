"""Drift alerts: a WARNING line in the task log, and a webhook POST when an Airflow connection says where.

:func:`send_drift_alert` is the one place an alert is raised (the ``alert`` task of taxi_monitoring calls
it per decision; :class:`DriftNotifier` calls it from a callback). The alert is best effort: the drift
Asset is the contract that starts retraining, so a webhook that is missing, refuses, times out or answers
an error is logged and reported in the returned dict, and never fails the task.

Webhook target: the Airflow connection ``conn_id`` (default ``flywheel_alerts``), e.g. from the environment
``AIRFLOW_CONN_FLYWHEEL_ALERTS='https://hooks.example.com/services/T0/B0/XYZ'`` or
``'{"conn_type": "http", "host": "alerts.internal", "port": 8080, "schema": "https",
"extra": {"endpoint": "/flywheel/drift"}}'``:

* ``host`` may be a whole URL; otherwise the URL is ``<scheme>://<host>[:<port>]`` with the scheme from
  ``schema`` (``http``/``https``) or the connection type, and a URI-form connection's path (which Airflow
  stores in ``schema``) kept as the path; ``extra.endpoint`` is appended;
* ``login``/``password`` become HTTP basic auth; ``extra.headers`` (a JSON object) extra headers;
  ``extra.timeout`` the timeout in seconds (default 10).

The body is JSON: ``{"text": <the summary line>, "event": "flywheel.drift", "decision": {...},
"airflow": {dag_id, run_id, task_id}}`` (``text`` makes it readable by Slack-style incoming webhooks).
Webhook URLs often embed a secret token: logs and results show only ``scheme://host[:port]``.

Parse-time cost matters: this module imports only the standard library and ``airflow.sdk``.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseNotifier, Connection
from airflow.sdk.exceptions import AirflowNotFoundException

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "flywheel_alerts"
DEFAULT_TIMEOUT_SECONDS = 10.0
EVENT = "flywheel.drift"
#: the marker :func:`send_drift_alert` puts in its result, so a callback does not send the same alert twice
RESULT_MARKER = "flywheel_alert"
_MAX_COLUMNS_SHOWN = 8


class WebhookConfigError(ValueError):
    """A webhook connection that does not describe a usable http(s) URL."""


# -- the summary line ----------------------------------------------------------------------------------
def _model(decision: Mapping[str, Any]) -> str:
    model = decision.get("model")
    if isinstance(model, Mapping):
        name, version = model.get("name"), model.get("version")
    else:
        name, version = model, decision.get("model_version") or decision.get("version")
    if name is None:
        return "model ?"
    return f"model {name}" + (f" v{version}" if version not in (None, "") else "")


def _interval(decision: Mapping[str, Any]) -> str:
    interval = decision.get("interval")
    if isinstance(interval, Mapping):
        return f"[{interval.get('start')}, {interval.get('end')})"
    return str(interval) if interval else "?"


def _nested(decision: Mapping[str, Any], key: str) -> Any:
    """``key`` at the top level or in the decision's ``drift`` section (ml_tasks.monitoring.policy)."""
    if decision.get(key) is not None:
        return decision[key]
    for section in ("drift", "data_drift"):
        if isinstance(decision.get(section), Mapping) and decision[section].get(key) is not None:
            return decision[section][key]
    return None


def _drifted(decision: Mapping[str, Any]) -> list[str]:
    columns = _nested(decision, "drifted_columns")
    if isinstance(columns, Mapping):  # {column: score}
        columns = list(columns)
    return [str(c) for c in columns] if isinstance(columns, Sequence) and not isinstance(columns, str) else []


def _share(decision: Mapping[str, Any]) -> str:
    share = _nested(decision, "drift_share")
    threshold = decision.get("drift_share_threshold")
    if threshold is None and isinstance(decision.get("thresholds"), Mapping):
        threshold = decision["thresholds"].get("drift_share")
    text = f"{share:.3f}" if isinstance(share, int | float) and not isinstance(share, bool) else str(share)
    return text + (f" (threshold {threshold})" if threshold is not None else "")


def _retrain(decision: Mapping[str, Any]) -> str:
    retrain = decision.get("retrain")
    reasons = decision.get("reasons") or decision.get("retrain_reasons") or []
    if isinstance(retrain, Mapping):  # {"retrain": bool, "reasons": [...]}
        reasons = retrain.get("reasons") or reasons
        retrain = retrain.get("retrain")
    if isinstance(reasons, str):
        reasons = [reasons]
    answer = "yes" if retrain else "no"
    return f"retrain {answer}" + (f" ({'; '.join(str(r) for r in reasons)})" if reasons else "")


def summarize(decision: Mapping[str, Any]) -> str:
    """One line: model, interval, verdict, drifted columns, drift share, retrain yes/no and why."""
    drifted = _drifted(decision)
    shown = ", ".join(drifted[:_MAX_COLUMNS_SHOWN]) + (
        f", +{len(drifted) - _MAX_COLUMNS_SHOWN} more" if len(drifted) > _MAX_COLUMNS_SHOWN else ""
    )
    return (
        f"drift alert: {_model(decision)} interval {_interval(decision)}: verdict {decision.get('verdict')};"
        f" {len(drifted)} drifted column(s){': ' + shown if drifted else ''}; drift share {_share(decision)};"
        f" {_retrain(decision)}"
    )


# -- the webhook -----------------------------------------------------------------------------------------
def webhook_url(conn: Any) -> str:
    """The http(s) URL a connection describes (see the module doc).

    Raises:
        WebhookConfigError: no host, or a scheme other than http/https.
    """
    host = (conn.host or "").strip()
    extra = conn.extra_dejson or {}
    endpoint = str(extra.get("endpoint") or "").strip()
    schema = (conn.schema or "").strip()
    if not host:
        raise WebhookConfigError(f"connection {conn.conn_id!r} has no host")
    if "://" in host:
        url = host
    else:
        if schema.lower() in ("http", "https"):
            scheme = schema.lower()
        elif (conn.conn_type or "").lower() in ("http", "https"):
            scheme = conn.conn_type.lower()
        else:
            scheme = "http"
        url = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        if schema and schema.lower() not in ("http", "https"):
            # the URI form (http://host:port/path) stores the path in `schema`
            url += "/" + schema.lstrip("/")
    if endpoint:
        url = url.rstrip("/") + "/" + endpoint.lstrip("/")
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookConfigError(f"connection {conn.conn_id!r}: scheme {scheme!r} is not http or https")
    return url


def redact(url: str) -> str:
    """``scheme://host[:port]`` of a URL: its path and query may hold a secret token."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return (
        f"{parts.scheme}://{host}"
        + (f":{parts.port}" if parts.port else "")
        + ("/..." if parts.path.strip("/") else "")
    )


def _lookup(conn_id: str) -> tuple[Any | None, str | None]:
    """The connection, or None and why (a missing connection is normal: no webhook configured)."""
    try:
        return Connection.get(conn_id), None
    except AirflowNotFoundException:
        return None, None
    except Exception as exc:  # a secrets backend that fails must not fail the task
        return None, f"looking up connection {conn_id!r} failed: {type(exc).__name__}: {exc}"


def _airflow_ids(context: Mapping[str, Any] | None) -> dict[str, Any]:
    if not context:
        return {}
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    return {
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None),
        "run_id": getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None) or context.get("run_id"),
        "task_id": getattr(ti, "task_id", None),
    }


def post_json(url: str, payload: Mapping[str, Any], conn: Any, timeout: float) -> dict[str, Any]:
    """POST ``payload``; the outcome as a dict (never raises for HTTP or network errors)."""
    extra = conn.extra_dejson or {}
    headers = {"Content-Type": "application/json", "User-Agent": "flywheel-alerts/1"}
    if isinstance(extra.get("headers"), Mapping):
        headers.update({str(k): str(v) for k, v in extra["headers"].items()})
    if conn.login or conn.password:
        token = base64.b64encode(f"{conn.login or ''}:{conn.password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    body = json.dumps(payload, sort_keys=True, default=str).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    target = redact(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
        return {"status": "sent", "target": target, "http_status": status}
    except urllib.error.HTTPError as exc:
        return {
            "status": "failed",
            "target": target,
            "http_status": exc.code,
            "error": f"HTTP {exc.code} {exc.reason}",
        }
    except (urllib.error.URLError, OSError, ValueError) as exc:  # refused, unreachable, timeout, bad URL
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return {
            "status": "failed",
            "target": target,
            "http_status": None,
            "error": f"{type(exc).__name__}: {reason}",
        }


def send_drift_alert(
    decision: dict[str, Any], *, conn_id: str = DEFAULT_CONN_ID, context: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Raise the alert for one monitoring decision: a WARNING log line, and a webhook POST if configured.

    Args:
        decision: The monitoring decision (decision.json): model, interval, verdict, drifted columns,
            drift share, retrain and reasons.
        conn_id: Airflow connection of the webhook; a missing connection means no webhook.
        context: The Airflow context, when called from a task or callback (its ids go into the body).

    Returns:
        ``{"flywheel_alert": True, "summary", "decision", "conn_id", "webhook": {"status": "sent" |
        "not_configured" | "failed", "target", "http_status", "error"}}``. Never raises for a webhook
        problem (logged at WARNING): the alert is best effort.
    """
    summary = summarize(decision)
    log.warning("%s", summary)
    result: dict[str, Any] = {
        RESULT_MARKER: True,
        "summary": summary,
        "decision": decision,
        "conn_id": conn_id,
    }
    conn, lookup_error = _lookup(conn_id)
    if conn is None:
        if lookup_error:
            log.warning("drift alert webhook not sent: %s", lookup_error)
            result["webhook"] = {
                "status": "failed",
                "target": None,
                "http_status": None,
                "error": lookup_error,
            }
        else:
            log.info("no Airflow connection %r: drift alert webhook not configured (log only)", conn_id)
            result["webhook"] = {"status": "not_configured", "target": None, "http_status": None}
        return result
    try:
        url = webhook_url(conn)
        timeout = float((conn.extra_dejson or {}).get("timeout") or DEFAULT_TIMEOUT_SECONDS)
    except (WebhookConfigError, TypeError, ValueError) as exc:
        log.warning("drift alert webhook not sent: %s", exc)
        result["webhook"] = {"status": "failed", "target": None, "http_status": None, "error": str(exc)}
        return result
    payload = {"text": summary, "event": EVENT, "decision": decision, "airflow": _airflow_ids(context)}
    outcome = post_json(url, payload, conn, timeout)
    if outcome["status"] == "sent":
        log.info("drift alert posted to %s (HTTP %s)", outcome["target"], outcome["http_status"])
    else:
        log.warning(
            "drift alert webhook to %s failed (the alert is best effort): %s",
            outcome["target"],
            outcome["error"],
        )
    result["webhook"] = outcome
    return result


# -- the notifier ----------------------------------------------------------------------------------------
class DriftNotifier(BaseNotifier):
    """An Airflow notifier (task/DAG callback) for drift decisions.

    With ``decision`` (a dict, or a Jinja template rendering to JSON) it alerts on that decision. Without,
    it reads the task's return value (XCom): a decision, a list of decisions, or results of
    :func:`send_drift_alert` (the ``alert`` task's return value); decisions the task already alerted on
    are only logged again, not posted twice. Decisions whose verdict is ``no_drift`` are ignored.
    """

    template_fields = ("decision", "conn_id")

    def __init__(
        self, decision: dict[str, Any] | str | None = None, *, conn_id: str = DEFAULT_CONN_ID
    ) -> None:
        super().__init__()
        self.decision = decision
        self.conn_id = conn_id

    def _decisions(self, context: Mapping[str, Any]) -> list[dict[str, Any]]:
        value: Any = self.decision
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else None
        if value is None:
            ti = context.get("ti") or context.get("task_instance")
            value = ti.xcom_pull(task_ids=ti.task_id) if ti is not None else None
        items = value if isinstance(value, list) else [value] if value is not None else []
        return [i for i in items if isinstance(i, dict)]

    def notify(self, context: Any) -> None:
        """Alert on the decisions (see the class doc); never raises for a webhook problem."""
        sent = 0
        try:
            items = self._decisions(context)
        except Exception:  # a callback must not turn a succeeded task into an error: the alert is best effort
            log.exception("DriftNotifier: could not read the decisions to alert on")
            return
        for item in items:
            if item.get(RESULT_MARKER):
                log.warning(
                    "%s [webhook: %s]", item.get("summary"), (item.get("webhook") or {}).get("status")
                )
                continue
            if item.get("verdict") in (None, "no_drift"):
                continue
            send_drift_alert(item, conn_id=self.conn_id, context=context)
            sent += 1
        log.info("DriftNotifier: %d new alert(s) sent", sent)
