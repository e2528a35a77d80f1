"""scripts/airflow_local's process handling without Airflow (seconds each): PostgreSQL killed and started
again, pid files and ports, the start-up refusals, polling, the API client's retries and orphan search."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from scripts.airflow_local import (
    AirflowApi,
    ApiError,
    Platform,
    PlatformError,
    free_port,
    poll_until,
    port_free,
    processes,
    servers,
)


def test_start_refuses_the_other_database_while_a_platform_of_the_home_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "pids").mkdir(parents=True)
    (home / "platform.json").write_text(json.dumps({"port": 18600, "db": "sqlite"}))
    proc = subprocess.Popen(["sleep", "30"])  # stands for the running SQLite platform's scheduler
    try:
        processes.write_pid_file(home / "pids" / "scheduler.pid", proc.pid)
        platform = Platform(home=home, port=free_port(), data_root=tmp_path / "data", db="postgres")
        with pytest.raises(
            PlatformError, match=r"a platform on sqlite runs in .*: stop it first \(make stop\)"
        ):
            platform.start(timeout=30)
        assert proc.poll() is None, "the running platform is left alone"
        assert not platform.pgdata.exists()
    finally:
        proc.kill()
        proc.wait()


def test_postgres_starts_again_after_sigkill_and_stops_cleanly() -> None:
    """The server alone (no Airflow, seconds): killed with SIGKILL, its lock files left naming a reused pid
    and the killed postmaster (a zombie until reaped), it starts again with its databases."""
    base = Path(tempfile.mkdtemp(prefix="flywheel-pg-"))  # not under pytest's 0700 root (see conftest)
    pgdata = base / "postgres"
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        pid, _ = servers.start_postgres(pgdata)
        assert servers.postmaster_pid(pgdata) == pid
        assert (
            servers.database_uri(pgdata, "mlflow") == f"postgresql+psycopg://postgres@/mlflow?host={pgdata}"
        )
        os.kill(pid, signal.SIGKILL)
        assert processes.wait_gone([pid], 10) and servers.postmaster_pid(pgdata) is None
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        (pgdata / "postmaster.pid").write_text("\n".join([str(stranger.pid), *lines[1:]]) + "\n")
        again, _ = servers.start_postgres(pgdata)
        assert again != pid and servers.postmaster_pid(pgdata) == again
        assert stranger.poll() is None
        with psycopg.connect(servers.database_uri(pgdata, "airflow", driver="postgresql")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("airflow",)
        assert servers.stop_postgres(pgdata) is True
        assert servers.postmaster_pid(pgdata) is None and not processes.pid_alive(again)
        assert servers.stop_postgres(pgdata) is False, "nothing to stop"
    finally:
        stranger.kill()
        stranger.wait()
        servers.stop_postgres(pgdata)
        shutil.rmtree(base, ignore_errors=True)


def test_free_port_returns_a_block_of_free_ports() -> None:
    port = free_port()
    assert all(port_free(port + i) for i in range(5))


def test_pid_files_know_a_reused_pid_and_ports_name_their_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        path = tmp_path / "x.pid"
        processes.write_pid_file(path, proc.pid)
        record = processes.read_pid_file(path)
        assert record is not None and record[0] == proc.pid
        assert processes.owned(record)
        # the pid of a killed platform, now used by another process: not ours (started at another time)
        assert not processes.owned((proc.pid, record[1] - 100))
        assert processes.read_pid_file(tmp_path / "missing.pid") is None
    finally:
        proc.kill()
        proc.wait()
    assert not processes.owned(record)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert processes.port_user(port).startswith(f"pid {os.getpid()} (")


def test_a_port_held_by_a_process_still_exiting_is_not_named_as_its_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGKILLed process frees its memory (its command line reads empty) before its sockets: start() waits
    for such a port instead of refusing at once (a restart right after ``kill -9`` failed on this)."""
    monkeypatch.setattr(psutil.Process, "cmdline", lambda self: [])
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert processes.port_user(port) == f"a process exiting (pid {os.getpid()})"


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
