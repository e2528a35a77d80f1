"""A task killed (kill -9) under the real scheduler is retried by Airflow to the same bytes (issue 16).

The platform of this module has the pause hook in every process's environment
(``FLYWHEEL_PAUSE_AT=staged``: each ``ml-tasks`` step stops itself, SIGSTOP, after writing a partition's
data into its staging folder, before its manifest and the rename). While one ``taxi_ingest`` run of one
small day goes, the test resumes every paused step except the first try of ``publish``, which it kills
with SIGKILL mid-write. Airflow records the failed try and retries it (the e2e platforms retry once after
1 s: ``FLYWHEEL_TASK_RETRIES`` / ``FLYWHEEL_RETRY_DELAY_SECONDS``, the DAGs' own settings); the run ends
``success`` on try 2, no staging or moved-aside folder is left, and the data root holds the bytes an
uninterrupted ``publish`` (the task's rendered command, the platform's environment without the hook)
writes.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from scripts.airflow_local import REPO, AirflowApi, Platform
from tests.e2e.conftest import TIMINGS
from tests.reliability._kill import leftovers

DAG_ID = "taxi_ingest"
DAY = dt.date(2024, 1, 20)
TRIPS = 300
KILLED = "publish"
STEPS = ["extract", "transform", "validate", "publish"]
#: the platform of this module: SQLite (the lightest) with the pause hook in every process's environment
PLATFORM_DB = "sqlite"
PLATFORM_ENV = {"FLYWHEEL_PAUSE_AT": "staged"}
# GX's own result and data docs hold its run time and ids (docs/ingest.md): everything else must match
VOLATILE = ("gx_result.json", "data_docs.html")


@dataclass
class Watch:
    """What the watcher did while the run went: the steps it found paused, the leftovers the kill left."""

    paused: list[str] = field(default_factory=list)
    killed_leftovers: list[str] = field(default_factory=list)


def _step_name(cmdline: list[str]) -> str | None:
    """``ml-tasks STEP ...`` (a console script under Python, or a step server's child named so) -> STEP."""
    cmdline = [arg for arg in cmdline if arg]  # a setproctitle title is padded with empty items
    if len(cmdline) == 1:  # a title set with setproctitle: one item, spaces inside
        cmdline = cmdline[0].split()
    names = [Path(arg).name for arg in cmdline[:3]]
    return cmdline[names.index("ml-tasks") + 1] if "ml-tasks" in names else None


def _paused_steps(platform: Platform) -> list[tuple[psutil.Process, str]]:
    """This platform's ``ml-tasks`` processes stopped by the pause hook (their ancestors include one of
    its components: the scheduler's task processes, or a step server), with their step names."""
    components = {pid for pid in platform.pids().values() if pid}
    found = []
    for proc in psutil.process_iter(["status", "cmdline"]):
        try:
            if proc.info["status"] != psutil.STATUS_STOPPED:
                continue
            step = _step_name(proc.info["cmdline"] or [])
            if step is None or not components & {p.pid for p in proc.parents()}:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        found.append((proc, step))
    return found


def _watch(platform: Platform, api: AirflowApi, run_id: str, timeout: float = 600) -> dict[str, Any]:
    """Resume every paused step but kill the first try of :data:`KILLED`; the run's final state."""
    watch = Watch()
    deadline = time.monotonic() + timeout
    next_poll = 0.0
    while time.monotonic() < deadline:
        for proc, step in _paused_steps(platform):
            watch.paused.append(step)
            if step == KILLED and not watch.killed_leftovers:
                watch.killed_leftovers = leftovers(platform.data_root) or ["(none)"]
                proc.send_signal(signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGCONT)
        if time.monotonic() >= next_poll:
            run = api.dag_run(DAG_ID, run_id)
            if run["state"] in ("success", "failed"):
                return {"run": run, "watch": watch}
            next_poll = time.monotonic() + 1.0
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not end in {timeout:.0f} s; steps paused: {watch.paused}")


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in VOLATILE
    }


@pytest.fixture(scope="module")
def killed_run(airflow_platform: Platform, api: AirflowApi) -> dict[str, Any]:
    started = time.monotonic()
    api.set_paused(DAG_ID, False)
    try:
        run_id = api.trigger(
            DAG_ID, {"interval_start": DAY.isoformat(), "trips_per_day": TRIPS}, logical_date=None
        )
        result = _watch(airflow_platform, api, run_id)
    finally:
        api.set_paused(DAG_ID, True)
    TIMINGS["taxi_ingest run with publish killed and retried"] = time.monotonic() - started
    return {"run_id": run_id, **result}


def test_airflow_retries_the_killed_task_and_the_run_succeeds(
    killed_run: dict[str, Any], api: AirflowApi
) -> None:
    run_id, watch = killed_run["run_id"], killed_run["watch"]
    assert killed_run["run"]["state"] == "success"
    # every step paused once, the killed one twice (its retry), in the DAG's order
    assert watch.paused == ["extract", "transform", "validate", KILLED, KILLED]
    # the kill landed mid-write: the partition's staging folder (and its writer lock) were there
    assert any(".staging-" in entry for entry in watch.killed_leftovers), watch.killed_leftovers
    tis = api.task_instances(DAG_ID, run_id)
    assert {t: (ti["state"], ti["try_number"]) for t, ti in tis.items()} == {
        **{step: ("success", 1) for step in STEPS},
        KILLED: ("success", 2),
    }
    tries = api.read(api.tasks.get_task_instance_tries_without_preload_content, DAG_ID, run_id, KILLED)
    assert [(t["try_number"], t["state"]) for t in tries["task_instances"]] == [
        (1, "failed"),
        (2, "success"),
    ]
    first_log = api.task_log(DAG_ID, run_id, KILLED, try_number=1)
    assert f"ml-tasks {KILLED} failed (exit status -9" in first_log, first_log[-2000:]


def test_the_retry_leaves_the_bytes_of_an_uninterrupted_run(
    killed_run: dict[str, Any], airflow_platform: Platform, api: AirflowApi
) -> None:
    root = airflow_platform.data_root
    assert leftovers(root) == []
    published = api.xcom(DAG_ID, killed_run["run_id"], KILLED)
    assert [p["dt"] for p in published["partitions"]] == [DAY.isoformat()]
    retried = _snapshot(root)
    curated = root / "curated" / "trips" / f"dt={DAY.isoformat()}"
    assert str((curated / "_manifest.json").relative_to(root)) in retried
    inode = curated.stat().st_ino

    # an uninterrupted publish: the task's rendered command, the platform's environment without the hook
    rendered = api.task_instances(DAG_ID, killed_run["run_id"])[KILLED]["rendered_fields"]["argv"]
    assert rendered[0] == KILLED and "--start" in rendered, rendered
    env = {k: v for k, v in airflow_platform.env().items() if k != "FLYWHEEL_PAUSE_AT"}
    cmd = airflow_platform.ml_tasks_command(*(arg for arg in rendered if arg != ""))
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "flywheel: paused" not in proc.stderr
    assert curated.stat().st_ino != inode, "the uninterrupted publish did not rewrite the partition"

    again = _snapshot(root)
    assert leftovers(root) == []
    assert sorted(again) == sorted(retried)
    differ = [name for name in retried if again[name] != retried[name]]
    assert differ == [], differ
