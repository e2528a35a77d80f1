"""A real local platform for e2e tests: Airflow (api-server + scheduler + dag-processor, LocalExecutor)
on PostgreSQL with the MLflow tracking server and Redis, as ``make demo`` runs it; a module that sets
``PLATFORM_DB = "sqlite"`` gets the SQLite option instead (those modules run last), one that sets
``PLATFORM_ENV`` (extra environment of every platform process, e.g. a test hook) a platform of its own
(run after the modules of its database without one).

One platform at a time, on free ports, with a temporary AIRFLOW_HOME and data root; stopped when the
session ends or another kind is needed, and checked to leave no process behind. Nothing restarts a
crashed scheduler, so every test checks that all processes are still alive before and after it runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_local import REPO, AirflowApi, Platform, free_port

#: wall times measured by the e2e tests, printed in the terminal summary
TIMINGS: dict[str, float] = {}
#: the last session's component logs (api-server, scheduler, ...), kept for diagnosis (git-ignored)
KEPT_LOGS = REPO / ".flywheel" / "e2e-logs"


class AlertSink:
    """A real HTTP server on loopback that records the JSON bodies POSTed to it (the alert webhook)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.received.append({"path": self.path, "body": json.loads(body or b"null")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def connection_uri(self) -> str:
        """The Airflow connection (``AIRFLOW_CONN_FLYWHEEL_ALERTS``) pointing at this server."""
        return f"http://127.0.0.1:{self.port}/alerts"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def alert_sink() -> Iterator[AlertSink]:
    sink = AlertSink()
    try:
        yield sink
    finally:
        sink.close()


#: environment of the e2e platforms: tasks retry once after 1 s (tests see retries without waiting minutes);
#: the DAGs' end dates keep the scheduler from creating runs of its own: tests create every run
E2E_ENV = {
    "FLYWHEEL_TASK_RETRIES": "1",
    "FLYWHEEL_RETRY_DELAY_SECONDS": "1",
    "FLYWHEEL_INGEST_END_DATE": "2024-02-01",
    "FLYWHEEL_TRAINING_END_DATE": "2024-02-01",
    # the training e2e corrupts an ONNX export on purpose (export-onnx --inject-fault)
    "FLYWHEEL_ALLOW_FAULT_INJECTION": "true",
    # the retraining loop: one drifted day is enough, a drift-triggered run trains on 6 days and
    # evaluates on 1
    "FLYWHEEL_DRIFT_HYSTERESIS": "1",
    "FLYWHEEL_TRAIN_DAYS": "6",
    "FLYWHEEL_EVAL_DAYS": "1",
}


class Platforms:
    """At most one running platform per session (two cores carry one): the kind a module asks for,
    started on first use, stopped when another kind is needed and at the end."""

    def __init__(self, base: Path, alert_sink: AlertSink) -> None:
        self.base = base
        self.alert_sink = alert_sink
        self.current: Platform | None = None
        self.kind = ""

    def get(self, db: str, env: dict[str, str] | None = None) -> Platform:
        """The platform on ``db`` whose processes also have ``env`` (a module's ``PLATFORM_ENV``)."""
        kind = platform_kind(db, env)
        if self.current is not None and self.kind == kind:
            if not self.current.running():  # a module broke it: the next one starts with a whole platform
                TIMINGS[f"platform restart ({kind}): a process had died"] = self.current.start(timeout=300)
            return self.current
        self.stop()
        platform = Platform(
            home=self.base / kind / "airflow",
            port=free_port(),
            data_root=self.base / kind / "data",
            db=db,
            # alerts go to a real HTTP server of the test session
            extra_env={
                **E2E_ENV,
                "AIRFLOW_CONN_FLYWHEEL_ALERTS": self.alert_sink.connection_uri,
                **(env or {}),
            },
        )
        self.current, self.kind = platform, kind
        TIMINGS[f"platform start ({kind})"] = platform.start(timeout=300)
        return platform

    def stop(self) -> None:
        platform, self.current = self.current, None
        if platform is None:
            return
        started = time.monotonic()
        platform.stop()
        TIMINGS[f"platform stop ({self.kind})"] = time.monotonic() - started
        _keep_logs(platform)
        assert not any(platform.alive().values()), f"a process survived stop(): {platform.alive()}"
        assert platform.orphans() == [], f"processes left behind: {platform.orphans()}"


@pytest.fixture(scope="session")
def platforms(alert_sink: AlertSink) -> Iterator[Platforms]:
    # Not under pytest's temporary root: every pytest session (of any user on the machine) makes that
    # 0700 again, and as root PostgreSQL runs as another user that must traverse the path to its data.
    base = Path(tempfile.mkdtemp(prefix="flywheel-e2e-"))
    pool = Platforms(base, alert_sink)
    try:
        yield pool
    finally:
        pool.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def airflow_platform(request: pytest.FixtureRequest, platforms: Platforms) -> Platform:
    """The running platform of the module's kind (``PLATFORM_DB``, default ``postgres``, and any
    ``PLATFORM_ENV``: extra environment of every platform process, so a platform of its own)."""
    return platforms.get(
        getattr(request.module, "PLATFORM_DB", "postgres"), getattr(request.module, "PLATFORM_ENV", None)
    )


@pytest.fixture(scope="module")
def api(airflow_platform: Platform) -> AirflowApi:
    """REST client of the platform (admin token, renewed when it expires)."""
    return airflow_platform.api()


def platform_kind(db: str, env: dict[str, str] | None) -> str:
    """A name per (database, extra environment): ``postgres``, ``sqlite``, ``sqlite-<hash of env>``."""
    if not env:
        return db
    return f"{db}-{hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:8]}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules run grouped by platform kind: PostgreSQL first, then the SQLite option, each kind without a
    ``PLATFORM_ENV`` before those with one: one start per kind in a session."""

    def rank(item: pytest.Item) -> tuple[bool, bool]:
        module = getattr(item, "module", None)
        return (
            getattr(module, "PLATFORM_DB", "postgres") != "postgres",
            bool(getattr(module, "PLATFORM_ENV", None)),
        )

    e2e = [i for i in items if "tests/e2e/" in i.nodeid]
    last = sorted((i for i in e2e if rank(i) != (False, False)), key=rank)  # stable: modules keep order
    if last:
        first = [i for i in items if i not in last]
        items[:] = first + last


def registry(platform: Platform) -> Any:
    """An MlflowClient of the platform's tracking store (its server, or the SQLite file of the option)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=platform.tracking_uri())


@pytest.fixture(autouse=True)
def components_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test when any component (the scheduler above all) is not running before or after it."""
    if "airflow_platform" not in request.fixturenames:
        yield
        return
    platform: Platform = request.getfixturevalue("airflow_platform")
    _assert_alive(platform, "before the test")
    yield
    _assert_alive(platform, "after the test")


@pytest.fixture(scope="module")
def data_root_e2e(airflow_platform: Platform) -> Path:
    return airflow_platform.data_root


def seed_curated_and_features(
    platform: Platform, first: dt.date, days: int, trips: int
) -> dict[str, dict[str, Any]]:
    """Curated trips and feature tables of ``days`` days from ``first`` in the platform's data root, through
    the CLI steps the ingest and features DAGs run (synthetic source), one command per step over the whole
    range. No DAG runs and no Asset events: for modules that need the data, not the runs that made it.

    Returns:
        each step's JSON summary.
    """
    start, end = first.isoformat(), (first + dt.timedelta(days=days)).isoformat()
    interval = ("--start", start, "--end", end)
    steps = {
        "extract": platform.ml_tasks(
            "extract", *interval, "--source", "synthetic", "--trips-per-day", str(trips)
        )
    }
    for step in ("transform", "validate", "publish", "build-features"):
        steps[step] = platform.ml_tasks(step, *interval)
    wanted = [(first + dt.timedelta(days=i)).isoformat() for i in range(days)]
    assert [p["dt"] for p in steps["publish"]["partitions"]] == wanted, steps["publish"]
    for view in ("pickup_area_stats", "company_stats"):
        for day in wanted:
            assert (platform.data_root / "features" / view / f"dt={day}" / "_manifest.json").is_file(), (
                view,
                day,
            )
    return steps


def _keep_logs(platform: Platform) -> None:
    """Copy the component logs (not the task logs) where they outlive pytest's temporary folders."""
    target = KEPT_LOGS
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for path in platform.log_dir.glob("*.log"):
        shutil.copy2(path, target / path.name)


def _assert_alive(platform: Platform, when: str) -> None:
    dead = [name for name, ok in platform.alive().items() if not ok]
    if dead:
        logs = {name: platform.component_log(name) for name in dead}
        pytest.fail(f"{', '.join(dead)} not running {when}; logs: {logs}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS:
        return
    terminalreporter.section(f"e2e wall times (component logs kept in {KEPT_LOGS})")
    for name, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{name:<48} {seconds:7.1f} s")
