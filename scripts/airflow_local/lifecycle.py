"""The platform's lifecycle: start (DB migration, components, deploy steps), readiness, stop, status."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from typing import Any

import requests
import urllib3

from scripts.airflow_local import deploy, processes
from scripts.airflow_local.config import BIN, COMPONENTS, REPO, PlatformConfig, PlatformError, log, port_free
from scripts.airflow_local.waits import AirflowApi, poll_until


class Platform(PlatformConfig):
    """One local Airflow installation (see :class:`PlatformConfig`) and its three processes."""

    # -- processes -------------------------------------------------------------------------------------
    def pids(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for component in COMPONENTS:
            path = self.pid_file(component)
            out[component] = int(path.read_text()) if path.is_file() else None
        return out

    def alive(self) -> dict[str, bool]:
        return {c: pid is not None and processes.pid_alive(pid) for c, pid in self.pids().items()}

    def running(self) -> bool:
        return all(self.alive().values())

    def orphans(self) -> list[int]:
        """Our own processes (any name) whose environment has this AIRFLOW_HOME."""
        return processes.orphans(self.home)

    def api(self) -> AirflowApi:
        return AirflowApi(self.url, self.username, self.password)

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
        """Start the three components (idempotent) and wait until the API answers and DAGs are registered;
        run the deploy steps (``ml-tasks feature-apply``) meanwhile. On a running platform they run again
        only when their inputs changed since the last deploy.

        Returns:
            seconds until ready.

        Raises:
            PlatformError: a component exited, DAG import errors, a deploy step failed, or timeout.
        """
        started = time.monotonic()
        if self.running() and self._healthy():
            log(f"already running at {self.url} (home {self.home})")
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
        self.stop(quiet=True)  # a partial platform (crashed component, stale pids) restarts whole
        busy = [p for p in (self.port, self.port + 1, self.port + 2) if not port_free(p)]
        if busy:
            raise PlatformError(f"ports {busy} are in use: choose another --port (API uses P, logs P+1, P+2)")
        for folder in (self.home, self.log_dir, self.home / "pids", self.data_root):
            folder.mkdir(parents=True, exist_ok=True)
        env = self.env()
        # deploy steps need no Airflow: they run while the DB migrates and the components start
        fingerprint = self._deploy_fingerprint(env)
        deploys = [self._start_deploy_step(step, env) for step in deploy.DEPLOY_STEPS]
        log(f"migrating the metadata DB {self.home / 'airflow.db'}")
        migrate_started = time.monotonic()
        migrate = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=env, cwd=self.home, capture_output=True, text=True
        )
        (self.log_dir / "db-migrate.log").write_text(migrate.stdout + migrate.stderr)
        if migrate.returncode != 0:
            deploy.terminate(deploys)
            raise PlatformError(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
        self._use_wal()
        log(f"DB ready in {time.monotonic() - migrate_started:.1f} s; starting {', '.join(COMPONENTS)}")
        for component in COMPONENTS:
            pid = processes.spawn(component, env, self.home, self.component_log(component))
            self.pid_file(component).write_text(str(pid))
        self.write_state()
        try:
            self.wait_ready(timeout - (time.monotonic() - started))
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
            dead = [c for c, ok in self.alive().items() if not ok]
            if dead:
                tails = "\n".join(f"--- {c}:\n{processes.tail(self.component_log(c))}" for c in dead)
                raise PlatformError(f"{', '.join(dead)} exited during start:\n{tails}")
            try:
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

    # -- stop / status -------------------------------------------------------------------------------------
    def stop(self, timeout: float = 30, quiet: bool = False) -> None:
        """SIGTERM each component (scheduler first), wait, then kill what is left of our processes."""
        pids = self.pids()
        for component in reversed(COMPONENTS):
            pid = pids[component]
            if pid is not None:
                processes.stop_component(component, pid, timeout, quiet)
        for component in COMPONENTS:
            self.pid_file(component).unlink(missing_ok=True)
        left = self.orphans()
        if left:
            log(f"terminating {len(left)} leftover process(es) of {self.home}: {left}")
            processes.terminate_all(left)
        if not quiet:
            log("stopped")

    def status(self) -> dict[str, Any]:
        pids = self.pids()
        info: dict[str, Any] = {
            "home": str(self.home),
            "url": self.url,
            "data_root": str(self.data_root),
            "processes": {c: {"pid": pids[c], "alive": ok} for c, ok in self.alive().items()},
        }
        try:
            info["health"] = self.api().health()
        except (urllib3.exceptions.HTTPError, PlatformError) as exc:
            info["health"] = f"unreachable: {exc.__class__.__name__}"
        return info
