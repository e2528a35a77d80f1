"""Reads and writes on the Airflow 3 REST API through the official client (``apache-airflow-client``).

Reads hand back the server's JSON as dicts (callers index its field names; the generated models drop
null fields and turn timestamps into objects); writes build the client's typed request bodies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import tenacity
import urllib3
from airflow_client import client
from airflow_client.client.exceptions import ApiException

from scripts.airflow_local.config import PlatformError, log

T = TypeVar("T")
#: how often a call that is safe to repeat (a read, PATCH, PUT) is tried when the server fails transiently
ATTEMPTS = 3
TRANSIENT_STATUSES = {500, 502, 503, 504}
#: query parameters the API takes as lists (callers may pass one value)
LIST_PARAMS = ("run_type", "state", "order_by")


class ApiError(PlatformError):
    """An API call answered with an HTTP error (``status``), or the server could not be reached (0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _transient(exc: BaseException) -> bool:
    """5xx, a timeout or a refused connection: on SQLite under load a request can wait out the busy
    timeout while the scheduler holds the write lock."""
    if isinstance(exc, ApiError):
        return exc.status in TRANSIENT_STATUSES
    return isinstance(exc, (urllib3.exceptions.HTTPError, requests.ConnectionError, requests.Timeout))


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log(f"{exc.__class__.__name__}: {str(exc)[:200]}; retrying ({state.attempt_number}/{ATTEMPTS})")


class AirflowClient:
    """REST v2 of one Airflow with the simple auth manager: a token from ``POST /auth/token``, renewed
    once when a call answers 401."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies for 127.0.0.1
        config = client.Configuration(host=self.base_url, no_proxy="127.0.0.1,localhost", retries=False)
        self.client = client.ApiClient(config)
        self.dags = client.DAGApi(self.client)
        self.runs = client.DagRunApi(self.client)
        self.tasks = client.TaskInstanceApi(self.client)
        self.xcoms = client.XComApi(self.client)
        self.assets = client.AssetApi(self.client)
        self.backfills = client.BackfillApi(self.client)
        self.errors = client.ImportErrorApi(self.client)
        self.monitor = client.MonitorApi(self.client)

    def _login(self) -> str:
        resp = self.session.post(
            f"{self.base_url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=self.timeout,
        )
        if resp.status_code >= 400:
            raise PlatformError(f"login as {self.username} failed: {resp.status_code} {resp.text[:300]}")
        token = str(resp.json()["access_token"])
        self.client.configuration.access_token = token
        return token

    def call(self, method: Callable[..., T], *args: Any, idempotent: bool = True, **kwargs: Any) -> T:
        """``method(*args, **kwargs)`` of one of the client's API classes, logged in.

        Idempotent calls are tried up to :data:`ATTEMPTS` times on transient failures (tenacity); the
        last failure is raised. An HTTP error raises :class:`ApiError` with the server's detail; a
        ``*_without_preload_content`` method's error status too.
        """

        def once() -> T:
            if self.client.configuration.access_token is None:
                self._login()
            try:
                return self._checked(method, *args, **kwargs)
            except ApiError as exc:
                if exc.status != 401:
                    raise
            self._login()  # expired: log in again once
            return self._checked(method, *args, **kwargs)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(ATTEMPTS if idempotent else 1),
            wait=tenacity.wait_incrementing(start=2, increment=2),
            retry=tenacity.retry_if_exception(_transient),
            before_sleep=_log_retry,
            reraise=True,
        )
        return retrying(once)

    def _checked(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        name = getattr(method, "__name__", "call").removesuffix("_without_preload_content")
        try:
            result = method(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body)
            raise ApiError(f"{name} -> {exc.status}: {body[:1000]}", int(exc.status or 0)) from None
        status = getattr(result, "status", None)
        if isinstance(result, urllib3.BaseHTTPResponse) and status is not None and status >= 400:
            text = result.data.decode(errors="replace")
            raise ApiError(f"{name} -> {status}: {text[:1000]}", status)
        return result

    def read(self, method: Callable[..., Any], *args: Any, **params: Any) -> Any:
        """The JSON the server answered to a ``*_without_preload_content`` read, as it came."""
        for key in LIST_PARAMS:
            if isinstance(params.get(key), str):
                params[key] = [params[key]]
        return json.loads(self.call(method, *args, **params).data)

    # -- reads ----------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``/monitor/health`` (no login needed)."""
        resp = self.monitor.get_health_without_preload_content(_request_timeout=5)
        if resp.status >= 400:
            raise ApiError(f"get_health -> {resp.status}", resp.status)
        return dict(json.loads(resp.data))

    def dag_ids(self) -> list[str]:
        return [d.dag_id for d in self.call(self.dags.get_dags, limit=1000).dags]

    def import_errors(self) -> list[dict[str, Any]]:
        return list(
            self.read(self.errors.get_import_errors_without_preload_content, limit=100)["import_errors"]
        )

    def dag(self, dag_id: str) -> dict[str, Any]:
        return dict(self.read(self.dags.get_dag_without_preload_content, dag_id))

    def dag_runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        params.setdefault("limit", 1000)
        return list(self.read(self.runs.get_dag_runs_without_preload_content, dag_id, **params)["dag_runs"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.read(self.runs.get_dag_run_without_preload_content, dag_id, run_id))

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        data = self.read(self.tasks.get_task_instances_without_preload_content, dag_id, run_id, limit=1000)
        return {ti["task_id"]: ti for ti in data["task_instances"]}

    def mapped_task_instances(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """The instances of a mapped task, by map index (``task_instances`` keeps one per task id)."""
        method = self.tasks.get_mapped_task_instances_without_preload_content
        data = self.read(method, dag_id, run_id, task_id, limit=1000)
        return sorted(data["task_instances"], key=lambda ti: int(ti["map_index"]))

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int | None = None
    ) -> Any:
        method = self.xcoms.get_xcom_entry_without_preload_content
        params: dict[str, Any] = {"deserialize": True}
        if map_index is not None:
            params["map_index"] = map_index
        value = self.read(method, dag_id, task_id, run_id, key, **params)["value"]
        return json.loads(value) if isinstance(value, str) else value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        method = self.tasks.get_log_without_preload_content
        data = self.read(
            method, dag_id, run_id, task_id, try_number, full_content=True, accept="application/json"
        )
        content = data.get("content", "")
        if not isinstance(content, list):
            return str(content)
        lines = []
        for entry in content:  # structured log lines: event text plus any exception details
            if not isinstance(entry, dict):
                lines.append(str(entry))
                continue
            lines.append(str(entry.get("event", "")))
            for err in entry.get("error_detail") or []:
                if isinstance(err, dict):
                    lines.append(f"{err.get('exc_type')}: {err.get('exc_value')}")
        return "\n".join(lines)

    def asset_id(self, asset_name: str) -> int | None:
        """The id of the Asset named ``asset_name`` (None until a DAG declaring it was parsed)."""
        assets = self.call(self.assets.get_assets, name_pattern=asset_name, limit=100).assets
        ids = [int(a.id) for a in assets if a.name == asset_name]
        return ids[0] if ids else None

    def asset_events(self, asset_name: str, **filters: Any) -> list[dict[str, Any]]:
        """Events of an Asset, oldest first; ``filters`` are the REST filters (``source_run_id``,
        ``source_dag_id``, ``timestamp_gte``, ...). Each event lists the runs that consumed it
        (``created_dagruns``)."""
        asset_id = self.asset_id(asset_name)
        if asset_id is None:
            return []
        filters.setdefault("limit", 1000)
        method = self.assets.get_asset_events_without_preload_content
        return list(self.read(method, asset_id=asset_id, **filters)["asset_events"])

    def upstream_asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The asset events an asset-triggered run consumed."""
        method = self.runs.get_upstream_asset_events_without_preload_content
        return list(self.read(method, dag_id, run_id)["asset_events"])

    def queued_events(self, dag_id: str) -> list[dict[str, Any]]:
        """The asset events queued for ``dag_id`` that no run has taken yet (Airflow creates the run once the
        DAG's asset condition holds and it is below ``max_active_runs``)."""
        method = self.assets.get_dag_asset_queued_events_without_preload_content
        return list(self.read(method, dag_id)["queued_events"])

    # -- writes ---------------------------------------------------------------------------------------
    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.call(self.dags.patch_dag, dag_id, client.DAGPatchBody(is_paused=paused))

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, logical_date: str | None = None
    ) -> str:
        """Trigger a run (``logical_date`` None: a run without data interval) and return its run id."""
        body = client.TriggerDAGRunPostBody.from_dict(
            {"logical_date": logical_date, "conf": dict(conf or {})}
        )
        assert body is not None
        return str(self.call(self.runs.trigger_dag_run, dag_id, body, idempotent=False).dag_run_id)

    def clear_run(self, dag_id: str, run_id: str) -> None:
        """Clear every task of a run: the scheduler runs it again."""
        body = client.DAGRunClearBody(dry_run=False)
        self.call(self.runs.clear_dag_run, dag_id, run_id, body, idempotent=False)
