"""The local step server: the local runner's steps served by forked children give the subprocess's results.

A real server process (scripts/airflow_local/stepserver.py) on a temporary socket, with a light preload
(the full one costs ~25 s; the e2e platform runs it); real ``ml-tasks`` steps through the real client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from scripts.airflow_local.stepserver import stepserver_argv
from tests.conftest import run_cli_process

DAY = ["--start", "2024-01-02", "--end", "2024-01-03"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    """A step server on a socket in ``tmp_path``; stopped (SIGTERM) after the test."""
    sock = tmp_path / "steps.sock"
    env = {**os.environ, "FLYWHEEL_STEP_SERVER_PRELOAD": "pyarrow.parquet,pandas"}
    proc = subprocess.Popen(stepserver_argv(sock), env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "step server not ready after 60 s"
        time.sleep(0.1)
    yield sock
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not sock.exists(), "the server removes its socket when it stops"


def served(sock: Path, argv: list[str]) -> tuple[int, str, str, int]:
    """Run ``ml-tasks argv`` in the server: exit status, stdout, stderr, the child's pid."""
    from _lib import stepclient

    step, why = stepclient.start(argv, str(sock))
    assert step is not None, why
    with step:
        err = step.stderr.read()
        out = step.stdout.read()
    return step.wait(), out, err, step.pid


def without_timings(summary: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in summary.items() if k != "seconds"}


def test_a_served_step_writes_what_a_subprocess_writes(
    server: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served_root, plain_root = tmp_path / "served", tmp_path / "plain"
    argv = ["extract", "--source", "synthetic", *DAY, "--trips-per-day", "400"]
    # the request carries the caller's environment: the data root chosen here is the child's
    monkeypatch.setenv("FLYWHEEL_DATA_ROOT", str(served_root))
    code, out, err, pid = served(server, argv)
    assert code == 0, err
    assert pid != os.getpid()
    summary = json.loads(out.strip().splitlines()[-1])
    plain = run_cli_process(*argv, env={"FLYWHEEL_DATA_ROOT": str(plain_root)})
    assert summary["rows_written"] == plain["rows_written"] > 0
    assert without_timings(summary) == without_timings(
        json.loads(json.dumps(plain).replace(str(plain_root), str(served_root)))
    )
    part = Path("raw/trips/dt=2024-01-02")
    served_files = sorted(p.relative_to(served_root) for p in (served_root / part).rglob("*.parquet"))
    assert served_files == sorted(p.relative_to(plain_root) for p in (plain_root / part).rglob("*.parquet"))
    for rel in served_files:
        assert (served_root / rel).read_bytes() == (plain_root / rel).read_bytes()
    assert "extract synthetic" in err  # the step's log lines reach the caller's stderr


def test_a_failing_step_gives_the_cli_error_line_and_status(server: Path, tmp_path: Path) -> None:
    code, out, err, _ = served(server, ["transform", "--start", "not-a-day"])
    assert code != 0
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no error output"
    assert "not-a-day" in err
    assert "Traceback" not in err


def test_a_step_stops_when_its_caller_goes_away(
    server: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed Airflow task closes its connection: the server terminates that step (even a paused one)."""
    from _lib import stepclient

    monkeypatch.setenv("FLYWHEEL_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("FLYWHEEL_PAUSE_AT", "staged")
    step, why = stepclient.start(
        ["extract", "--source", "synthetic", *DAY, "--trips-per-day", "50"], str(server)
    )
    assert step is not None, why
    for line in step.stderr:
        if "paused at" in line:
            break
    else:
        pytest.fail("the step never reached its pause point")
    child = psutil.Process(step.pid)
    deadline = time.monotonic() + 10  # it says so on stderr just before it stops itself
    while child.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.status() == psutil.STATUS_STOPPED
    assert "ml-tasks extract" in " ".join(child.cmdline())  # named as the step in ps / pgrep
    step._replies.close()  # what a SIGKILLed task leaves behind: its end of the connection closed
    step._conn.close()
    child.wait(timeout=15)
    assert not psutil.pid_exists(step.pid) or child.status() == psutil.STATUS_ZOMBIE


def test_the_local_runner_uses_the_server_and_falls_back_without_it(
    server: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_runner_env: None
) -> None:
    from _lib import MlStepOperator

    monkeypatch.setenv("FLYWHEEL_DATA_ROOT", str(tmp_path / "data"))
    op = MlStepOperator(task_id="extract", step="extract", argv=[])
    cmd = [*op.command()[:1], "extract", "--source", "synthetic", *DAY, "--trips-per-day", "300"]
    monkeypatch.setenv("FLYWHEEL_STEP_SERVER", str(server))
    via_server = op.run_cli(cmd)
    monkeypatch.setenv("FLYWHEEL_STEP_SERVER", str(tmp_path / "no-such.sock"))
    via_subprocess = op.run_cli(cmd)
    assert via_server["rows_written"] == via_subprocess["rows_written"] > 0
    assert without_timings(via_server) == without_timings(via_subprocess)


def test_the_platform_points_its_tasks_at_the_server(tmp_path: Path) -> None:
    from scripts.airflow_local.config import PlatformConfig

    on = PlatformConfig(home=tmp_path / "home", data_root=tmp_path / "data")
    assert on.env()["FLYWHEEL_STEP_SERVER"] == str(on.step_server_socket)
    assert "step-server" in on.components()
    off = PlatformConfig(home=tmp_path / "home", data_root=tmp_path / "data", step_server=False)
    assert "FLYWHEEL_STEP_SERVER" not in off.env()
    assert "step-server" not in off.components()
    deep = PlatformConfig(home=tmp_path / ("x" * 120), data_root=tmp_path / "data")
    assert len(str(deep.step_server_socket)) < 108  # a unix socket address is at most 108 bytes
    assert sys.executable in " ".join(stepserver_argv(on.step_server_socket))
