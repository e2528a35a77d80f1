"""The platform's lifecycle: start (DB migration, components, deploy steps), readiness, stop, status."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from typing import Any

import requests
import urllib3

from scripts.airflow_local import deploy, processes, servers
from scripts.airflow_local.config import (
    ALL_COMPONENTS,
    BIN,
    COMPONENTS,
    REPO,
    STEP_SERVER,
    PlatformConfig,
    PlatformError,
    log,
    port_free,
)
from scripts.airflow_local.stepserver import stepserver_argv
from scripts.airflow_local.waits import AirflowApi, poll_until


class Platform(PlatformConfig):
    """One local Airflow installation (see :class:`PlatformConfig`) and its three processes."""

    # -- processes -------------------------------------------------------------------------------------
    def pid_records(self, every: bool = False) -> dict[str, tuple[int, float] | None]:
        """Pid and start time from the pid files of this platform's processes (``every``: of any kind)."""
        names = ALL_COMPONENTS if every else self.components()
        return {c: processes.read_pid_file(self.pid_file(c)) for c in names}

    def pids(self) -> dict[str, int | None]:
        return {c: r[0] if r else None for c, r in self.pid_records().items()}

    def alive(self) -> dict[str, bool]:
        """Each process of the platform: running, and ours (a stale pid file of a killed platform may name
        a pid now used by another process). PostgreSQL is alive when its ``postmaster.pid`` says so."""
        out = {c: processes.owned(record) for c, record in self.pid_records().items()}
        if self.db == "postgres":
            out = {"postgres": servers.postmaster_pid(self.pgdata) is not None, **out}
        return out

    def running(self) -> bool:
        return all(self.alive().values())

    def orphans(self) -> list[int]:
        """Our own processes (any name) whose environment has this AIRFLOW_HOME."""
        return processes.orphans(self.home)

    def api(self) -> AirflowApi:
        return AirflowApi(self.url, self.username, self.password, sqlite=self.db == "sqlite")

    def airflow(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the ``airflow`` CLI against this platform."""
        proc = subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise PlatformError(
                f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        return proc

    # -- ml-tasks against this platform's data root ------------------------------------------------------
    def ml_tasks_command(self, *args: str) -> list[str]:
        """``ml-tasks ARGS`` of this Python environment (run it with :meth:`env`: the data root)."""
        return deploy.ml_tasks_command(*args)

    def ml_tasks(self, *args: str, timeout: float = 600) -> dict[str, Any]:
        """Run ``ml-tasks ARGS`` with the platform's environment and return its JSON summary.

        Raises:
            PlatformError: the command failed (with its error line) or printed no JSON summary.
        """
        proc = subprocess.run(
            self.ml_tasks_command(*args),
            env=self.env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return processes.summary(args, proc.returncode, proc.stdout, proc.stderr)

    def _start_deploy_step(self, args: tuple[str, ...], env: dict[str, str]) -> deploy.DeployStep:
        return deploy.start_step(args, env, self.log_dir, self.data_root)

    def _finish_deploy_step(self, step: deploy.DeployStep, timeout: float) -> dict[str, Any]:
        return deploy.finish_step(step, timeout)

    def _deploy_fingerprint(self, env: dict[str, str]) -> str:
        return deploy.fingerprint(env)

    def _deployed_fingerprint(self) -> str | None:
        return deploy.deployed_fingerprint(self.home)

    def _record_deploy(self, fingerprint: str) -> None:
        deploy.record(self.home, fingerprint)

    # -- start ------------------------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> float:
        """Start the platform (idempotent) and wait until the API answers and DAGs are registered: on
        PostgreSQL first the database server, Redis and the MLflow server, then Airflow's three processes;
        the deploy steps (``ml-tasks feature-apply``) run meanwhile. On a running platform they run again
        only when their inputs changed since the last deploy.

        Returns:
            seconds until ready.

        Raises:
            PlatformError: a port is in use (naming it and its process), a platform of the other database
                runs in this home, a process exited, DAG import errors, a deploy step failed, or timeout.
        """
        started = time.monotonic()
        self._refuse_other_kind()
        if self.running() and self._healthy():
            return self._already_running(started, timeout)
        self.stop(quiet=True)  # a partial platform (a crashed or killed process, stale pids) restarts whole
        self._check_ports()
        for folder in (self.home, self.log_dir, self.home / "pids", self.data_root):
            folder.mkdir(parents=True, exist_ok=True)
        deploys: list[deploy.DeployStep] = []
        try:
            if self.db == "postgres":
                pid, seconds = servers.start_postgres(self.pgdata)
                log(
                    f"postgres (pid {pid}) ready in {seconds:.1f} s: databases {', '.join(servers.DATABASES)}"
                )
            env = self.env()
            if self.db == "postgres":
                self._spawn_servers(env)
            # deploy steps need no Airflow: they run while the DB migrates and the components start
            fingerprint = self._deploy_fingerprint(env)
            deploys = [self._start_deploy_step(step, env) for step in deploy.DEPLOY_STEPS]
            self._migrate(env)
            for component in COMPONENTS:
                self._spawn(component, env)
            self.write_state()
            self.wait_ready(timeout - (time.monotonic() - started))
            if self.step_server:
                # after Airflow is up (its imports compete for the CPU): answers ~25 s later, and until
                # then the tasks start their steps themselves
                self._spawn(STEP_SERVER, env, stepserver_argv(self.step_server_socket))
            for running in deploys:
                self._finish_deploy_step(running, timeout - (time.monotonic() - started))
            self._record_deploy(fingerprint)
        except BaseException:
            log(f"start failed; logs in {self.log_dir}")
            deploy.terminate(deploys)
            self.stop(quiet=True)
            raise
        seconds = time.monotonic() - started
        log(f"ready at {self.url} in {seconds:.1f} s (login {self.username}/{self.password})")
        return seconds

    def _refuse_other_kind(self) -> None:
        """A home runs one platform: starting the other database's while a process of it lives is refused."""
        recorded = (self.read_state() or {}).get("db", "sqlite")  # homes of before the option ran SQLite
        if recorded != self.db and any(map(processes.owned, self.pid_records(every=True).values())):
            raise PlatformError(
                f"a platform on {recorded} runs in {self.home}: stop it first (make stop) to start one on"
                f" {self.db}"
            )

    def _already_running(self, started: float, timeout: float) -> float:
        log(f"already running at {self.url} (home {self.home}, {self.db})")
        self.wait_ready(timeout)
        env = self.env()
        fingerprint = self._deploy_fingerprint(env)
        if self._deployed_fingerprint() == fingerprint:
            log("deploy: feature_repo unchanged since the last feature-apply of this data root")
        else:
            for step in deploy.DEPLOY_STEPS:
                self._finish_deploy_step(self._start_deploy_step(step, env), timeout)
            self._record_deploy(fingerprint)
        return time.monotonic() - started

    def _check_ports(self) -> None:
        """Refuse to start when a port of the platform is taken, naming the port and who holds it (a second
        platform never starts beside the first, silently or not). A port whose holder cannot be named (a
        killed process still exiting) is waited for, up to 30 s."""

        def holders() -> dict[int, str] | None:
            busy = {port: processes.port_user(port) for port in self.ports if not port_free(port)}
            closing = [port for port, user in busy.items() if not user.startswith("pid ")]
            return None if closing else busy

        try:
            busy = poll_until(holders, timeout=30, interval=0.5, failure=lambda: "")
        except PlatformError:
            busy = {port: processes.port_user(port) for port in self.ports if not port_free(port)}
        if busy:
            span = f"{self.port}..{max(self.ports)}"
            named = "; ".join(
                f"port {port} ({self.ports[port]}) is in use by {user}" for port, user in busy.items()
            )
            raise PlatformError(
                f"{named}: stop that process or choose another --port (this platform uses {span})"
            )

    def _spawn(self, component: str, env: dict[str, str], argv: list[str] | None = None) -> None:
        pid = processes.spawn(component, env, self.home, self.component_log(component), argv)
        processes.write_pid_file(self.pid_file(component), pid)

    def _spawn_servers(self, env: dict[str, str]) -> None:
        """Redis (waited for: the deploy steps may use the online store) and the MLflow server (waited for
        by :meth:`wait_ready`; it creates its tables in the ``mlflow`` database on first start)."""
        self._spawn("redis", env, servers.redis_argv(self.redis_port, self.redis_dir))
        mlflow_db = servers.database_uri(self.pgdata, "mlflow")
        mlflow_env = {**env, **servers.MLFLOW_SERVER_ENV}
        self._spawn(
            "mlflow", mlflow_env, servers.mlflow_argv(self.mlflow_port, mlflow_db, self.mlflow_artifacts)
        )
        poll_until(
            lambda: True if servers.redis_ready(self.redis_port) else self._dead_check(("redis",)),
            timeout=30,
            interval=0.1,
            failure=lambda: f"Redis not answering on 127.0.0.1:{self.redis_port} after 30 s",
        )

    def _migrate(self, env: dict[str, str]) -> None:
        target = "database airflow (PostgreSQL)" if self.db == "postgres" else self.home / "airflow.db"
        log(f"migrating the metadata DB {target}")
        migrate_started = time.monotonic()
        migrate = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=env, cwd=self.home, capture_output=True, text=True
        )
        (self.log_dir / "db-migrate.log").write_text(migrate.stdout + migrate.stderr)
        if migrate.returncode != 0:
            raise PlatformError(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
        if self.db == "sqlite":
            self._use_wal()
        log(f"DB ready in {time.monotonic() - migrate_started:.1f} s; starting {', '.join(COMPONENTS)}")

    def _use_wal(self) -> None:
        """Switch the metadata DB to WAL (persistent in the file): in the rollback journal a reader blocks
        a writer's commit, and requests waited out the whole busy timeout (docs/local-platform.md)."""
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db", timeout=30)) as db:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise PlatformError(f"could not switch {self.home / 'airflow.db'} to WAL (journal_mode={mode})")

    def _healthy(self) -> bool:
        try:
            health = self.api().health()
        except (urllib3.exceptions.HTTPError, PlatformError):
            return False
        return all(health.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler"))

    def wait_ready(self, timeout: float = 180) -> None:
        """Wait until all components live, the API is healthy and every DAG file is registered."""
        api = self.api()
        expected = self.expected_dag_ids()
        last = "nothing yet"

        def ready() -> bool | None:
            nonlocal last
            self._dead_check(tuple(c for c in self.alive() if c != STEP_SERVER))  # spawned after
            try:
                if self.mlflow_url and not servers.mlflow_ready(self.mlflow_url):
                    last = f"MLflow server not answering at {self.mlflow_url}"
                    return None
                if not self._healthy():
                    last = "API not healthy yet"
                    return None
                errors = api.import_errors()
                if errors:
                    raise PlatformError(
                        "DAG import errors:\n"
                        + "\n".join(f"{e['filename']}: {e['stack_trace'][-1500:]}" for e in errors)
                    )
                missing = expected - set(api.dag_ids())
            except (urllib3.exceptions.HTTPError, requests.RequestException) as exc:
                last = f"API not answering: {exc.__class__.__name__}"
                return None
            last = f"DAGs not registered yet: {sorted(missing)}"
            return None if missing else True

        poll_until(
            ready,
            timeout=max(timeout, 1),
            interval=0.5,
            failure=lambda: f"platform not ready after {timeout:.0f} s: {last} (logs in {self.log_dir})",
        )

    def _dead_check(self, names: tuple[str, ...]) -> None:
        """Raise PlatformError with the log tails of the processes among ``names`` that are not running."""
        alive = self.alive()
        dead = [c for c in names if not alive.get(c, False)]
        if dead:
            logs = {c: self.pgdata / "log" if c == "postgres" else self.component_log(c) for c in dead}
            tails = "\n".join(f"--- {c} ({path}):\n{processes.tail(path)}" for c, path in logs.items())
            raise PlatformError(f"{', '.join(dead)} exited during start:\n{tails}")

    # -- stop / status -------------------------------------------------------------------------------------
    def stop(self, timeout: float = 30, quiet: bool = False) -> None:
        """SIGTERM each process (scheduler first, the servers after Airflow), wait, kill what is left of
        our processes, then shut PostgreSQL down. A pid file naming a process that is not ours (a stale
        file of a killed platform) is only removed."""
        records = self.pid_records(every=True)
        sessions = {r[0] for r in records.values() if r is not None and processes.owned(r)}
        for component in reversed(ALL_COMPONENTS):
            record = records[component]
            if record is not None and processes.owned(record):
                processes.stop_component(component, record[0], timeout, quiet)
            self.pid_file(component).unlink(missing_ok=True)
        left = sorted({*self.orphans(), *processes.session_members(sessions)})
        if left:
            log(f"terminating {len(left)} leftover process(es) of {self.home}: {left}")
            processes.terminate_all(left)
        if servers.stop_postgres(self.pgdata, timeout) and not quiet:
            log(f"stopped postgres ({self.pgdata})")
        if not quiet:
            log("stopped")

    def status(self) -> dict[str, Any]:
        pids: dict[str, int | None] = {**self.pids(), "postgres": servers.postmaster_pid(self.pgdata)}
        info: dict[str, Any] = {
            "home": str(self.home),
            "url": self.url,
            "data_root": str(self.data_root),
            "db": self.db,
            "mlflow_url": self.mlflow_url,
            "redis": f"127.0.0.1:{self.redis_port}" if self.db == "postgres" else None,
            "processes": {c: {"pid": pids.get(c), "alive": ok} for c, ok in self.alive().items()},
        }
        try:
            info["health"] = self.api().health()
        except (urllib3.exceptions.HTTPError, PlatformError) as exc:
            info["health"] = f"unreachable: {exc.__class__.__name__}"
        return info
