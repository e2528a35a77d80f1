"""Drift alerts: a WARNING line in the task log, and a webhook POST (the http provider's ``HttpHook``) when
the Airflow connection ``flywheel_alerts`` exists. Best effort: a webhook problem is logged and reported in
the result, never raised. Webhook URLs often embed a secret token: logs and results show only
``scheme://host[:port]``. Connection forms and the body: ``docs/dags.md`` (taxi_monitoring).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import Connection
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "flywheel_alerts"
DEFAULT_TIMEOUT_SECONDS = 10.0
EVENT = "flywheel.drift"
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


#: headers that carry a credential, besides the connection's own ``extra.headers``
CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


@functools.cache
def _hook_class() -> Any:
    # the http provider imports requests and aiohttp: only when an alert is sent, never at DAG parse time
    import requests
    from airflow.providers.http.hooks.http import HttpHook

    class SameOriginSession(requests.Session):
        """Sends the connection's headers and credentials only to the webhook's own origin: requests drops
        ``Authorization`` on a redirect to another host but keeps custom headers (``extra.headers``)."""

        home: str = ""
        private: tuple[str, ...] = CREDENTIAL_HEADERS

        def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
            super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]
            if _origin(str(prepared_request.url)) != _origin(self.home):
                for name in self.private:
                    prepared_request.headers.pop(name, None)

    class WebhookHook(HttpHook):
        """HttpHook over the connection as this module reads it: the URL is :func:`webhook_url` and the
        headers come from ``extra.headers`` (HttpHook would send every extra key as a header and read the
        path of a URI-form connection, stored in ``schema``, as the URL scheme)."""

        def __init__(self, conn: Any, url: str, private_headers: tuple[str, ...] = ()) -> None:
            super().__init__(method="POST", http_conn_id=conn.conn_id)
            self._private = (*CREDENTIAL_HEADERS, *private_headers)
            # host as a whole URL: HttpHook takes it as the base URL, as is
            self._conn = Connection(conn_id=conn.conn_id, conn_type="http", host=url, login=conn.login,
                                    password=conn.password)  # fmt: skip

        def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]  # this one connection
            return self._conn

        def get_conn(self, headers: dict[Any, Any] | None = None, extra_options: Any = None) -> Any:
            session: Any = super().get_conn(headers, extra_options)
            session.__class__ = SameOriginSession  # the same session, with the redirect rule above
            session.home = self._conn.host
            session.private = self._private
            return session

    return WebhookHook


def _scrub(text: str, url: str) -> str:
    """``text`` without the URL's secret parts (path, query, credentials)."""
    parts = urlsplit(url)
    secrets = [url, parts.path + ("?" + parts.query if parts.query else ""), parts.path, parts.query,
               parts.password or ""]  # fmt: skip
    for secret in sorted((s for s in secrets if len(s.strip("/")) > 0), key=len, reverse=True):
        text = text.replace(secret, redact(url) if secret == url else "/...")
    return text


def post_json(url: str, payload: Mapping[str, Any], conn: Any, timeout: float) -> dict[str, Any]:
    """POST ``payload`` with the http provider's HttpHook; the outcome as a dict (never raises for HTTP
    or network errors; the URL's path, query and password never reach the log or the result)."""
    import requests  # the http provider's client: imported when an alert is sent, not at DAG parse time

    extra = conn.extra_dejson or {}
    headers = {"Content-Type": "application/json", "User-Agent": "flywheel-alerts/1"}
    private = (
        {str(k): str(v) for k, v in extra["headers"].items()}
        if isinstance(extra.get("headers"), Mapping)
        else {}
    )
    headers.update(private)
    target = redact(url)
    # Airflow's secrets masker hides the URL's path (whole, with its query) in task logs, the hook's own
    # lines included (a refused connection is logged with the path)
    parts = urlsplit(url)
    for secret in {parts.path, f"{parts.path}?{parts.query}" if parts.query else ""}:
        if secret.strip("/"):
            mask_secret(secret)
    hook = _hook_class()(conn, url, tuple(private))
    try:
        response = hook.run(
            data=json.dumps(payload, sort_keys=True, default=str),
            headers=headers,
            extra_options={"timeout": timeout, "check_response": False},
        )
    except (requests.RequestException, OSError, ValueError) as exc:  # refused, unreachable, timeout
        reason = _scrub(f"{type(exc).__name__}: {exc}", url)
        return {"status": "failed", "target": target, "http_status": None, "error": reason}
    status = int(response.status_code)
    if status >= 400:
        error = _scrub(f"HTTP {status} {response.reason}", url)
        return {"status": "failed", "target": target, "http_status": status, "error": error}
    return {"status": "sent", "target": target, "http_status": status}


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
        ``{"summary", "decision", "conn_id", "webhook": {"status": "sent" |
        "not_configured" | "failed", "target", "http_status", "error"}}``. Never raises for a webhook
        problem (logged at WARNING): the alert is best effort.
    """
    summary = summarize(decision)
    log.warning("%s", summary)
    result: dict[str, Any] = {
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
