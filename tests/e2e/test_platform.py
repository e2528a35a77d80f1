"""scripts/airflow_local: the settings it derives (fast, no Airflow) and the running platform (e2e)."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import signal
import stat
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from scripts.airflow_local import (
    SETTINGS_FILE,
    AirflowApi,
    Platform,
    PlatformError,
    load_settings,
    poll_until,
    processes,
    settings_env,
)
from tests.e2e.conftest import TIMINGS


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
    # the default: PostgreSQL over the unix socket in its data directory, the MLflow server, Redis
    socket_dir = tmp_path / "home" / "postgres"
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        == f"postgresql+psycopg://postgres@/airflow?host={socket_dir}"
    )
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:18558" == platform.mlflow_url
    assert (env["FLYWHEEL_FEAST_ENV"], env["FLYWHEEL_REDIS_CONNECTION"]) == ("redis", "127.0.0.1:18559")
    assert platform.ports == {
        18555: "Airflow API", 18556: "worker log server", 18557: "trigger log server",
        18558: "MLflow server", 18559: "Redis",
    }  # fmt: skip
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


def test_the_sqlite_option_runs_no_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "FLYWHEEL_FEAST_ENV", "FLYWHEEL_REDIS_CONNECTION"):
        monkeypatch.delenv(name, raising=False)
    platform = Platform(home=tmp_path / "home", port=18555, data_root=tmp_path / "data", db="sqlite")
    env = platform.env()
    assert (
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        == f"sqlite:///{tmp_path / 'home' / 'airflow.db'}?timeout=30"
    )
    # the steps keep the plain CLI's defaults: an MLflow SQLite file and the SQLite online store
    assert not {"MLFLOW_TRACKING_URI", "FLYWHEEL_FEAST_ENV", "FLYWHEEL_REDIS_CONNECTION"} & set(env)
    assert platform.mlflow_url is None
    assert platform.tracking_uri() == f"sqlite:///{tmp_path / 'data' / 'mlflow' / 'mlflow.db'}"
    assert sorted(platform.ports) == [18555, 18556, 18557]
    # no database, tracking or online-store server: Airflow's three and the local step server
    assert platform.components() == ("step-server", "api-server", "dag-processor", "scheduler")
    lightest = Platform(home=tmp_path / "home", data_root=tmp_path / "data", db="sqlite", step_server=False)
    assert lightest.components() == ("api-server", "dag-processor", "scheduler")
    with pytest.raises(PlatformError, match=r"FLYWHEEL_AIRFLOW_DB='mysql': expected one of postgres, sqlite"):
        Platform(home=tmp_path / "home", db="mysql")


def test_from_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYWHEEL_AIRFLOW_PORT", raising=False)
    monkeypatch.delenv("FLYWHEEL_DATA_ROOT", raising=False)
    monkeypatch.delenv("FLYWHEEL_AIRFLOW_DB", raising=False)
    monkeypatch.setenv("FLYWHEEL_AIRFLOW_HOME", str(tmp_path / "home"))
    fresh = Platform.from_env()
    assert (fresh.home, fresh.port, fresh.db) == (tmp_path / "home", 8080, "postgres")
    # a platform started there remembers its port and data root, so `stop` / `status` find it
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "platform.json").write_text(
        json.dumps({"port": 18600, "data_root": str(tmp_path / "d1"), "db": "sqlite"})
    )
    started = Platform.from_env()
    assert (started.port, started.data_root, started.db) == (18600, tmp_path / "d1", "sqlite")
    monkeypatch.setenv("FLYWHEEL_AIRFLOW_DB", "postgres")
    assert Platform.from_env().db == "postgres"
    monkeypatch.setenv("FLYWHEEL_DATA_ROOT", str(tmp_path / "d2"))
    assert Platform.from_env().data_root == tmp_path / "d2"
    flagged = Platform.from_env(port=18700, data_root=tmp_path / "d3")
    assert (flagged.port, flagged.data_root) == (18700, tmp_path / "d3")


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


def test_start_refuses_a_busy_port_naming_it_and_its_process(
    airflow_platform: Platform, tmp_path: Path
) -> None:
    other = Platform(home=tmp_path / "other", port=airflow_platform.port, data_root=tmp_path / "data")
    with pytest.raises(PlatformError) as info:
        other.start(timeout=30)
    message = str(info.value)
    port = airflow_platform.port
    assert f"port {port} (Airflow API) is in use by pid " in message
    assert f"port {port + 3} (MLflow server) is in use by pid " in message
    assert f"port {port + 4} (Redis) is in use by pid " in message
    # the pid named is a process of the running platform (the API server or one of its workers)
    named = int(message.split(f"port {port} (Airflow API) is in use by pid ")[1].split()[0])
    api_server = psutil.Process(airflow_platform.pids()["api-server"])
    assert named in {api_server.pid, *(c.pid for c in api_server.children(recursive=True))}
    assert not (tmp_path / "other" / "pids" / "scheduler.pid").exists()
    assert not (tmp_path / "other" / "postgres").exists(), "nothing was started"


def test_api_login_and_checked_in_connection(airflow_platform: Platform, api: AirflowApi) -> None:
    with pytest.raises(PlatformError, match="login as admin failed"):
        AirflowApi(airflow_platform.url, "admin", "wrong").dag_ids()
    assert "taxi_ingest" in api.dag_ids()
    assert api.import_errors() == []
    # the connection from config/airflow.local.yaml reaches Airflow through the environment
    proc = airflow_platform.airflow("connections", "get", "flywheel_chicago_portal", "-o", "json")
    [conn] = json.loads(proc.stdout)
    assert (conn["conn_type"], conn["host"], conn["schema"]) == ("http", "data.cityofchicago.org", "https")


def test_the_servers_answer_and_hold_the_metadata(airflow_platform: Platform) -> None:
    import redis
    from mlflow import MlflowClient

    assert airflow_platform.db == "postgres"
    alive = airflow_platform.alive()
    assert set(alive) == {
        "postgres",
        "redis",
        "mlflow",
        "step-server",
        "api-server",
        "dag-processor",
        "scheduler",
    }
    assert all(alive.values()), alive
    # Airflow's metadata is in PostgreSQL: the DAG files are rows of its airflow database
    uri = airflow_platform.env()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert uri.startswith("postgresql+psycopg://postgres@/airflow?host=")
    with psycopg.connect(uri.replace("postgresql+psycopg", "postgresql")) as conn:
        dags = {row[0] for row in conn.execute("SELECT dag_id FROM dag")}
        databases = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    assert dags == airflow_platform.expected_dag_ids()
    assert {"airflow", "mlflow"} <= databases
    assert not (airflow_platform.home / "airflow.db").exists(), "no SQLite metadata DB on PostgreSQL"
    # the MLflow tracking server answers (its UI and REST API), on the tasks' tracking URI
    assert airflow_platform.mlflow_url is not None
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        airflow_platform.mlflow_url
    ) as page:
        assert page.status == 200 and b"MLflow" in page.read()
    assert airflow_platform.env()["MLFLOW_TRACKING_URI"] == airflow_platform.mlflow_url
    client = MlflowClient(tracking_uri=airflow_platform.mlflow_url)
    experiment = client.get_experiment_by_name("Default")
    assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
    # Redis answers on the port the steps are given
    host, port = airflow_platform.env()["FLYWHEEL_REDIS_CONNECTION"].split(":")
    assert redis.Redis(host=host, port=int(port)).ping() is True


def test_a_backfill_made_with_the_plain_cli_runs_every_day(
    airflow_platform: Platform, api: AirflowApi
) -> None:
    """On PostgreSQL ``airflow backfill create`` as a user types it creates the backfill on the first call,
    and max_active_runs above 1 is honoured: runs overlap. (Its dates are UTC midnights: the daily runs
    at Chicago midnight in [Jan 6, Jan 9) are those of Jan 6, 7 and 8.)"""
    days = [dt.date(2024, 1, 6) + dt.timedelta(days=i) for i in range(3)]
    airflow_platform.airflow("dags", "unpause", "taxi_ingest")
    started = time.monotonic()
    runs: list[dict[str, Any]] = []

    def finished() -> list[dict[str, Any]] | None:
        nonlocal runs
        listed = api.dag_runs("taxi_ingest", run_type="backfill", order_by="logical_date")
        runs = [r for r in listed if dt.date.fromisoformat(r["logical_date"][:10]) in days]
        done = len(runs) == len(days) and all(r["state"] in ("success", "failed") for r in runs)
        return runs if done else None

    try:
        proc = airflow_platform.airflow(
            "backfill", "create", "--dag-id", "taxi_ingest", "--from-date", "2024-01-06",
            "--to-date", "2024-01-09", "--max-active-runs", "3",
            "--dag-run-conf", json.dumps({"trips_per_day": 500}),
        )  # fmt: skip
        assert proc.returncode == 0
        [backfill] = api.active_backfills("taxi_ingest")
        assert backfill["max_active_runs"] == 3
        poll_until(finished, timeout=600, interval=2, failure=lambda: f"backfill runs not finished: {runs}")
    finally:
        airflow_platform.airflow("dags", "pause", "taxi_ingest")
    TIMINGS["backfill by the plain CLI (PostgreSQL), 3 days x 500 trips"] = time.monotonic() - started
    assert [r["logical_date"][:10] for r in runs] == [d.isoformat() for d in days]
    assert [r["state"] for r in runs] == ["success"] * 3, [r["dag_run_id"] for r in runs]
    spans = sorted((r["start_date"], r["end_date"]) for r in runs)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), (
        f"max_active_runs=3 but no two runs overlapped: {spans}"
    )


def test_a_platform_killed_with_sigkill_starts_again(airflow_platform: Platform, api: AirflowApi) -> None:
    """Every process of the platform SIGKILLed (no clean shutdown, pid files and PostgreSQL's
    ``postmaster.pid`` left behind, their pids reused by another process): start() comes back, with the
    metadata of before, and leaves the process that reuses the pids alone."""
    backfilled = {r["dag_run_id"]: r["state"] for r in api.dag_runs("taxi_ingest", run_type="backfill")}
    api.set_paused("taxi_monitoring", False)  # a metadata write just before the kill
    records = airflow_platform.pid_records()
    postmaster = airflow_platform.pgdata / "postmaster.pid"
    pg_pid = int(postmaster.read_text().split()[0])
    leaders = {record[0] for record in records.values() if record is not None}
    assert len(leaders) == len(records)
    # each component leads its own session (its children too); a member may have left its process group
    members = processes.session_members(leaders)
    for pid in [*leaders, *members, pg_pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert processes.wait_gone([pg_pid, *leaders, *members], timeout=30)
    poll_until(
        lambda: True if not any(airflow_platform.alive().values()) else None,
        timeout=30,
        interval=0.2,
        failure=lambda: f"still alive after SIGKILL: {airflow_platform.alive()}",
    )
    stranger = subprocess.Popen(["sleep", "120"])  # a process that got a killed process's pid
    try:
        (airflow_platform.pid_file("scheduler")).write_text(f"{stranger.pid} {records['scheduler'][1]}\n")  # type: ignore[index]
        lines = postmaster.read_text().splitlines()
        postmaster.write_text("\n".join([str(stranger.pid), *lines[1:]]) + "\n")
        started = time.monotonic()
        airflow_platform.start(timeout=300)
        TIMINGS["platform start after SIGKILL (PostgreSQL)"] = time.monotonic() - started
        assert stranger.poll() is None, "start() must not touch a process that is not the platform's"
    finally:
        stranger.kill()
        stranger.wait()
    alive = airflow_platform.alive()
    assert all(alive.values()) and len(alive) == 7, alive
    assert set(airflow_platform.pids().values()).isdisjoint(r[0] for r in records.values() if r)
    # the metadata of before the kill is there: PostgreSQL recovered it
    after = {r["dag_run_id"]: r["state"] for r in api.dag_runs("taxi_ingest", run_type="backfill")}
    assert after == backfilled
    assert api.dag("taxi_monitoring")["is_paused"] is False, "a write committed before the kill survived"
    api.set_paused("taxi_monitoring", True)
    assert airflow_platform.status()["health"]["scheduler"]["status"] == "healthy"
