"""The platform's OS processes (psutil): spawn a component, is it alive, stop it with its group, find
what is left of a home, and read the JSON summary of an ``ml-tasks`` subprocess."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil

from ml_tasks.jsonout import read_summary
from scripts.airflow_local.config import BIN, PlatformError, log
from scripts.airflow_local.waits import poll_until


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by its parent) is not alive."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def send_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for every pid to exit; True when none is left."""
    pids = list(pids)
    try:
        poll_until(
            lambda: True if not any(pid_alive(p) for p in pids) else None,
            timeout=timeout,
            interval=0.1,
            failure=lambda: "still running",
        )
    except PlatformError:
        return False
    return True


def started_at(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), None when no such process lives."""
    try:
        return float(psutil.Process(pid).create_time()) if pid_alive(pid) else None
    except psutil.Error:
        return None


def write_pid_file(path: Path, pid: int) -> None:
    """``pid`` and its start time: a pid file left by a killed platform is recognised as stale even when
    the pid is reused by another process (Redis rewrites its environment, so that cannot tell)."""
    path.write_text(f"{pid} {started_at(pid) or 0}\n")


def read_pid_file(path: Path) -> tuple[int, float] | None:
    try:
        pid, created = path.read_text().split()
        return int(pid), float(created)
    except (OSError, ValueError):
        return None


def owned(record: tuple[int, float] | None) -> bool:
    """Whether the process of a pid file record still runs: that pid, started at that time."""
    if record is None:
        return False
    created = started_at(record[0])
    return created is not None and abs(created - record[1]) < 0.5


def port_user(port: int) -> str:
    """Who listens on 127.0.0.1:``port`` (pid and command line), as far as this user may see."""
    for conn in psutil.net_connections(kind="inet"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            if conn.pid is None:
                return "a process this user cannot see (of another user, or exiting)"
            try:
                cmdline = " ".join(psutil.Process(conn.pid).cmdline())[:160]
            except psutil.Error:
                cmdline = "?"
            if not cmdline:  # a killed process whose memory is gone but whose sockets are still closing
                return f"a process exiting (pid {conn.pid})"
            return f"pid {conn.pid} ({cmdline})"
    return "a process this user cannot see (not listening yet, of another user, or exiting)"


def spawn(
    component: str, env: Mapping[str, str], cwd: Path, log_path: Path, argv: list[str] | None = None
) -> int:
    """Start ``argv`` (default ``airflow COMPONENT``) in its own session (so :func:`stop_component` reaches
    its children too), appending to ``log_path``; returns its pid."""
    with log_path.open("a") as out:
        out.write(f"\n==== {dt.datetime.now().isoformat(timespec='seconds')} starting {component}\n")
        out.flush()
        proc = subprocess.Popen(
            argv or [str(BIN / "airflow"), component],
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc.pid


def stop_component(component: str, pid: int, timeout: float, quiet: bool) -> None:
    """SIGTERM, wait up to ``timeout`` s, SIGKILL if it ignored that; then SIGTERM its process group
    (executor workers, uvicorn workers, running tasks share it)."""
    if not pid_alive(pid):
        return
    if not quiet:
        log(f"stopping {component} (pid {pid})")
    send(pid, signal.SIGTERM)
    if not wait_gone([pid], timeout):
        log(f"{component} ignored SIGTERM for {timeout:.0f} s: killing it")
        send_group(pid, signal.SIGKILL)
    send_group(pid, signal.SIGTERM)


def orphans(home: Path) -> list[int]:
    """Our own processes (any name) whose environment has AIRFLOW_HOME=``home``."""
    found = []
    me, uid = os.getpid(), os.getuid()
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.pid == me or proc.info["uids"] is None or proc.info["uids"].effective != uid:
                continue
            if proc.environ().get("AIRFLOW_HOME") != str(home):
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if pid_alive(proc.pid):
            found.append(proc.pid)
    return found


def session_members(sessions: set[int]) -> list[int]:
    """Our processes in one of ``sessions`` (session ids: the components' pids, each spawned as a session
    leader). Catches what left its leader's process group (executor workers, the steps they run), whose
    environment a process title may have overwritten (so :func:`orphans` cannot see them)."""
    found, me = [], os.getpid()
    for pid in psutil.pids():
        try:
            if pid != me and os.getsid(pid) in sessions and pid_alive(pid):
                found.append(pid)
        except OSError:
            continue
    return found


def terminate_all(pids: list[int]) -> None:
    """SIGTERM, up to 10 s, then SIGKILL what is left."""
    for pid in pids:
        send(pid, signal.SIGTERM)
    wait_gone(pids, 10)
    for pid in pids:
        if pid_alive(pid):
            send(pid, signal.SIGKILL)


def summary(args: Iterable[str], returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The JSON summary (last stdout line) of an ``ml-tasks`` run, or PlatformError with its error line."""
    command = f"ml-tasks {' '.join(args)}"
    if returncode != 0:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ml-tasks: error:")]
        reason = (errors or lines or ["(no output on stderr)"])[-1]
        raise PlatformError(f"{command} failed (exit status {returncode}): {reason}")
    try:
        result = read_summary(stdout)
    except ValueError:
        raise PlatformError(f"{command} printed no JSON summary: {stdout[-500:]!r}") from None
    return result


def tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
