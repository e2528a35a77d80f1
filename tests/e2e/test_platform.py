"""scripts/airflow_local: the settings it derives (fast, no Airflow) and the running platform (e2e)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_local import (
    SETTINGS_FILE,
    AirflowApi,
    ApiError,
    Platform,
    PlatformError,
    free_port,
    load_settings,
    poll_until,
    port_free,
    processes,
    settings_env,
)


def test_checked_in_settings_have_no_secrets_and_map_to_env() -> None:
    settings = load_settings(SETTINGS_FILE)
    env = settings_env(settings)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 4
    assert float(env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"]) <= 0.2
    assert int(env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"]) <= 10
    conn = json.loads(env["AIRFLOW_CONN_FLYWHEEL_CHICAGO_PORTAL"])
    assert conn == {
        "conn_type": "http",
        "host": "data.cityofchicago.org",
        "schema": "https",
        "description": conn["description"],
    }
    text = SETTINGS_FILE.read_text().lower()
    for word in ("password:", "secret_key:", "jwt_secret:", "fernet_key:", "token:"):
        assert word not in text, f"{SETTINGS_FILE} must not hold {word}"


def test_settings_env_variables_and_refusals(tmp_path: Path) -> None:
    env = settings_env({"variables": {"flag": True, "name": "x", "n": 3}, "env": {"A": 1}})
    assert env == {"AIRFLOW_VAR_FLAG": "true", "AIRFLOW_VAR_NAME": "x", "AIRFLOW_VAR_N": "3", "A": "1"}
    with pytest.raises(PlatformError, match="no passwords"):
        settings_env({"connections": {"db": {"conn_type": "postgres", "password": "x"}}})
    with pytest.raises(PlatformError, match="conn_type"):
        settings_env({"connections": {"db": {"host": "x"}}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("airflow: {}\nsurprise: 1\n")
    with pytest.raises(PlatformError, match="unknown top-level keys"):
        load_settings(bad)


def test_platform_env_is_consistent_and_keys_are_generated_once(tmp_path: Path) -> None:
    platform = Platform(home=tmp_path / "home", port=18555, data_root=tmp_path / "data")
    env = platform.env()
    assert env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert env["AIRFLOW__API__PORT"] == "18555"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18555/execution/"
    assert (
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"],
        env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"],
    ) == (
        "18556",
        "18557",
    )
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        == f"sqlite:///{tmp_path / 'home' / 'airflow.db'}?timeout=30"
    )
    assert env["FLYWHEEL_DATA_ROOT"] == str(tmp_path / "data")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags")
    assert "127.0.0.1" in env["NO_PROXY"].split(",")
    secrets_file = tmp_path / "home" / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    again = platform.env()
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"):
        assert env[key] == again[key] and len(env[key]) >= 32, f"{key} must be generated once and kept"
    passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
    assert passwords == {"admin": "admin"}
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    # overrides come last
    override = Platform(home=tmp_path / "home", port=18555, extra_env={"AIRFLOW__CORE__PARALLELISM": "1"})
    assert override.env()["AIRFLOW__CORE__PARALLELISM"] == "1"


def test_from_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYWHEEL_AIRFLOW_PORT", raising=False)
    monkeypatch.delenv("FLYWHEEL_DATA_ROOT", raising=False)
    monkeypatch.setenv("FLYWHEEL_AIRFLOW_HOME", str(tmp_path / "home"))
    fresh = Platform.from_env()
    assert (fresh.home, fresh.port) == (tmp_path / "home", 8080)
    # a platform started there remembers its port and data root, so `stop` / `status` find it
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "platform.json").write_text(
        json.dumps({"port": 18600, "data_root": str(tmp_path / "d1")})
    )
    started = Platform.from_env()
    assert (started.port, started.data_root) == (18600, tmp_path / "d1")
    monkeypatch.setenv("FLYWHEEL_DATA_ROOT", str(tmp_path / "d2"))
    assert Platform.from_env().data_root == tmp_path / "d2"
    flagged = Platform.from_env(port=18700, data_root=tmp_path / "d3")
    assert (flagged.port, flagged.data_root) == (18700, tmp_path / "d3")


def test_free_port_returns_three_free_ports() -> None:
    port = free_port()
    assert all(port_free(port + i) for i in range(3))


# -- against the running platform ----------------------------------------------------------------------------
def test_start_is_idempotent(airflow_platform: Platform) -> None:
    pids = airflow_platform.pids()
    started = time.monotonic()
    airflow_platform.start(timeout=60)
    assert time.monotonic() - started < 15, "start() on a running platform must not restart it"
    assert airflow_platform.pids() == pids
    status = airflow_platform.status()
    assert all(p["alive"] for p in status["processes"].values())
    assert status["health"]["scheduler"]["status"] == "healthy"
    assert status["health"]["dag_processor"]["status"] == "healthy"


def test_start_refuses_a_busy_port(airflow_platform: Platform, tmp_path: Path) -> None:
    other = Platform(home=tmp_path / "other", port=airflow_platform.port, data_root=tmp_path / "data")
    with pytest.raises(PlatformError, match="in use"):
        other.start(timeout=30)
    assert not (tmp_path / "other" / "pids" / "scheduler.pid").exists()


def test_api_login_and_checked_in_connection(airflow_platform: Platform, api: AirflowApi) -> None:
    with pytest.raises(PlatformError, match="login as admin failed"):
        AirflowApi(airflow_platform.url, "admin", "wrong").dag_ids()
    assert "taxi_ingest" in api.dag_ids()
    assert api.import_errors() == []
    # the connection from config/airflow.local.yaml reaches Airflow through the environment
    proc = airflow_platform.airflow("connections", "get", "flywheel_chicago_portal", "-o", "json")
    [conn] = json.loads(proc.stdout)
    assert (conn["conn_type"], conn["host"], conn["schema"]) == ("http", "data.cityofchicago.org", "https")


# -- the helpers under the client (fast: no Airflow) -------------------------------------------------------
def test_poll_until_returns_the_first_value_times_out_clearly_and_propagates_errors() -> None:
    answers = iter([None, None, {"done": 1}])
    assert poll_until(lambda: next(answers), timeout=5, interval=0.01, failure=lambda: "x") == {"done": 1}
    calls = []
    with pytest.raises(PlatformError, match=r"^still waiting after \d+ calls$"):
        poll_until(
            lambda: calls.append(1),
            timeout=0.05,
            interval=0.01,
            failure=lambda: f"still waiting after {len(calls)} calls",
        )
    assert len(calls) >= 2, "polled again until the timeout"

    def broken() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        poll_until(broken, timeout=5, interval=0.01, failure=lambda: "x")


def test_api_calls_retry_only_transient_failures_of_idempotent_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # tenacity's waits
    api = AirflowApi("http://127.0.0.1:1", "admin", "admin")
    api.client.configuration.access_token = "token"
    calls: list[int] = []

    def failing(status: int) -> Any:
        def method(**kwargs: Any) -> None:
            calls.append(status)
            raise ApiError(f"failing -> {status}", status)

        return method

    with pytest.raises(ApiError, match="-> 503"):
        api.call(failing(503))
    assert calls == [503, 503, 503]
    calls.clear()
    with pytest.raises(ApiError, match="-> 503"):
        api.call(failing(503), idempotent=False)
    assert calls == [503]
    calls.clear()
    with pytest.raises(ApiError, match="-> 400"):
        api.call(failing(400))
    assert calls == [400]
    # an expired token: log in again once, then the call's own error
    logins: list[int] = []
    monkeypatch.setattr(api, "_login", lambda: logins.append(1) or "fresh")
    calls.clear()
    with pytest.raises(ApiError, match="-> 401"):
        api.call(failing(401), idempotent=False)
    assert (calls, logins) == ([401, 401], [1])


def test_orphans_finds_our_processes_of_a_home_and_zombies_are_not_alive(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = subprocess.Popen(["sleep", "30"], env={**os.environ, "AIRFLOW_HOME": str(home)})
    try:
        platform = Platform(home=home, data_root=tmp_path / "data")
        assert platform.orphans() == [proc.pid]
        assert Platform(home=tmp_path / "other", data_root=tmp_path / "data").orphans() == []
        proc.terminate()
        deadline = time.monotonic() + 10
        while processes.pid_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not processes.pid_alive(proc.pid), "an exited child not yet reaped (zombie) is not alive"
        assert platform.orphans() == []
    finally:
        proc.kill()
        proc.wait()
