"""The local Airflow 3 platform: api-server, scheduler and dag-processor as separate processes.

LocalExecutor on SQLite, low parallelism for a 2-core laptop, the repo's ``dags/`` and ``plugins/``,
state (metadata DB, logs, PIDs, generated keys) in a git-ignored AIRFLOW_HOME (``.flywheel/airflow``).

Usage::

    python -m scripts.airflow_local start [--port 8080] [--home DIR] [--data-root DIR]
    python -m scripts.airflow_local status | wait | stop
    python -m scripts.airflow_local airflow -- dags list      # the airflow CLI against this platform

Tests and the demo use :class:`Platform` (start/stop/ready for a given home, port and data root) and
:class:`AirflowApi` (REST v2 client, backfills with the recipe that holds on SQLite).

Why separate processes rather than ``airflow standalone``: standalone left orphans on SIGTERM and
defaults to parallelism 32; here each component stops on SIGTERM and a harness can check the scheduler
is alive (nothing restarts a crashed one).

Deploy-time steps run by ``start`` (not DAG tasks): ``ml-tasks feature-apply`` registers the
``feature_repo/`` declarations in the Feast registry of the platform's data root (the feature steps
refuse an out-of-date registry). It runs while the components start; a failure fails ``start``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO / ".flywheel" / "airflow"
DEFAULT_DATA_ROOT = REPO / ".flywheel" / "data"
SETTINGS_FILE = REPO / "config" / "airflow.local.yaml"
BIN = Path(sys.executable).parent
#: start order; stop goes in reverse (the scheduler stops before the API it reports to)
COMPONENTS = ("api-server", "dag-processor", "scheduler")
STATE_FILE = "platform.json"
TERMINAL_RUN_STATES = {"success", "failed"}
#: REST calls safe to repeat, how often, and the statuses that mean "try again"
IDEMPOTENT_METHODS = {"GET", "PATCH", "PUT"}
ATTEMPTS = 3
TRANSIENT_STATUSES = {500, 502, 503, 504}
#: deploy-time commands run by Platform.start(), in order (argv after ``ml-tasks``)
DEPLOY_STEPS: tuple[tuple[str, ...], ...] = (("feature-apply",),)
#: what the deploy steps read: a running platform deploys again only when one of these changed
DEPLOY_INPUTS = (REPO / "feature_repo", REPO / "ml_tasks" / "features" / "spec.py")
DEPLOY_ENV = ("FLYWHEEL_DATA_ROOT", "FLYWHEEL_FEAST_ENV", "FLYWHEEL_FEAST_DIR", "FLYWHEEL_FEATURE_REPO")
DEPLOY_STATE_FILE = "deployed.json"


class PlatformError(RuntimeError):
    """The platform cannot start, is unhealthy, or an API call failed."""


def log(message: str) -> None:
    print(f"[airflow-local] {message}", file=sys.stderr, flush=True)


def free_port(count: int = 3) -> int:
    """A port P such that P .. P+count-1 are free on 127.0.0.1 (API, worker and trigger log servers)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count < 65535 and all(port_free(base + i) for i in range(count)):
            return base
    raise PlatformError(f"no run of {count} free ports found")


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def load_settings(path: Path = SETTINGS_FILE) -> dict[str, Any]:
    """The checked-in local settings (``airflow`` options, ``env``, ``connections``, ``variables``)."""
    if not path.is_file():
        raise PlatformError(f"local Airflow settings file {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise PlatformError(f"{path}: expected a mapping at the top level")
    unknown = set(data) - {"airflow", "env", "connections", "variables"}
    if unknown:
        raise PlatformError(f"{path}: unknown top-level keys {sorted(unknown)}")
    return data


def settings_env(settings: Mapping[str, Any]) -> dict[str, str]:
    """Environment variables for the settings: AIRFLOW__S__O, plain env, AIRFLOW_CONN_*, AIRFLOW_VAR_*."""
    env: dict[str, str] = {}
    for section, options in (settings.get("airflow") or {}).items():
        for option, value in (options or {}).items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            env[f"AIRFLOW__{section.upper()}__{option.upper()}"] = text
    for key, value in (settings.get("env") or {}).items():
        env[str(key)] = str(value)
    for conn_id, conn in (settings.get("connections") or {}).items():
        if not isinstance(conn, dict) or "conn_type" not in conn:
            raise PlatformError(f"connection {conn_id!r}: expected a mapping with conn_type")
        if "password" in conn:
            raise PlatformError(f"connection {conn_id!r}: no passwords in checked-in settings")
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn, sort_keys=True)
    for key, value in (settings.get("variables") or {}).items():
        env[f"AIRFLOW_VAR_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


@dataclass
class Platform:
    """One local Airflow installation: its home, API port and data root."""

    home: Path = DEFAULT_HOME
    port: int = 8080
    data_root: Path = DEFAULT_DATA_ROOT
    dags_folder: Path = REPO / "dags"
    plugins_folder: Path = REPO / "plugins"
    settings_file: Path = SETTINGS_FILE
    #: overrides applied last (tests: retries, start dates, ...)
    extra_env: dict[str, str] = field(default_factory=dict)
    username: str = "admin"
    password: str = "admin"

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser().resolve()
        self.data_root = Path(self.data_root).expanduser().resolve()
        self.dags_folder = Path(self.dags_folder).resolve()
        self.plugins_folder = Path(self.plugins_folder).resolve()

    @classmethod
    def from_env(cls, **overrides: Any) -> Platform:
        """A platform configured by, in order of precedence: ``overrides`` (CLI flags), the environment
        (FLYWHEEL_AIRFLOW_HOME / FLYWHEEL_AIRFLOW_PORT / FLYWHEEL_DATA_ROOT), the port and data root a
        platform was last started with in that home (so ``stop`` / ``status`` find it), the defaults."""
        values: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        values.setdefault("home", Path(os.environ.get("FLYWHEEL_AIRFLOW_HOME", DEFAULT_HOME)))
        state = cls(home=values["home"]).read_state() or {}
        env_port, env_root = os.environ.get("FLYWHEEL_AIRFLOW_PORT"), os.environ.get("FLYWHEEL_DATA_ROOT")
        values.setdefault("port", int(env_port or state.get("port") or 8080))
        values.setdefault("data_root", Path(env_root or state.get("data_root") or DEFAULT_DATA_ROOT))
        return cls(**values)

    # -- layout ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def pid_file(self, component: str) -> Path:
        return self.home / "pids" / f"{component}.pid"

    def component_log(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    def read_state(self) -> dict[str, Any] | None:
        path = self.home / STATE_FILE
        return dict(json.loads(path.read_text())) if path.is_file() else None

    # -- configuration -------------------------------------------------------------------------------
    def _secrets(self) -> dict[str, str]:
        """JWT secret, API secret key and Fernet key: generated once, kept in the home (0600)."""
        path = self.home / "secrets.json"
        if path.is_file():
            return dict(json.loads(path.read_text()))
        from cryptography.fernet import Fernet

        values = {
            "jwt_secret": secrets.token_urlsafe(48),
            "api_secret_key": secrets.token_urlsafe(48),
            "fernet_key": Fernet.generate_key().decode(),
        }
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(values, out)
        return values

    def _passwords_file(self) -> Path:
        path = self.home / "simple_auth_manager_passwords.json"
        path.write_text(json.dumps({self.username: self.password}))
        path.chmod(0o600)
        return path

    def env(self) -> dict[str, str]:
        """The environment of every Airflow process (and so of the tasks and the steps they run)."""
        keys = self._secrets()
        env = dict(os.environ)
        env.update(settings_env(load_settings(self.settings_file)))
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_folder),
                "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
                # tasks talk to the API server; the default assumes localhost:8080
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self._passwords_file()),
                # every process must share these, or tokens minted by one are refused by another
                "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
                "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.log_dir),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.port + 1),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.port + 2),
                # sqlite3 busy timeout: writers wait for the lock instead of failing at once
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}?timeout=30",
                "FLYWHEEL_DATA_ROOT": str(self.data_root),
                # task -> API calls on 127.0.0.1 must never go through a proxy
                "NO_PROXY": _no_proxy(env.get("NO_PROXY")),
                "no_proxy": _no_proxy(env.get("no_proxy")),
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            }
        )
        env.update(self.extra_env)
        return env

    # -- processes -------------------------------------------------------------------------------------
    def pids(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for component in COMPONENTS:
            path = self.pid_file(component)
            out[component] = int(path.read_text()) if path.is_file() else None
        return out

    def alive(self) -> dict[str, bool]:
        return {c: pid is not None and pid_alive(pid) for c, pid in self.pids().items()}

    def running(self) -> bool:
        return all(self.alive().values())

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

    def start(self, timeout: float = 180) -> float:
        """Start the three components (idempotent) and wait until the API answers and DAGs are registered;
        run the deploy steps (:data:`DEPLOY_STEPS`: ``ml-tasks feature-apply``) meanwhile. On a running
        platform they run again only when their inputs changed since the last deploy (fingerprint of
        :data:`DEPLOY_INPUTS` and the settings, kept in the home).

        Returns:
            seconds until ready.

        Raises:
            PlatformError: a component exited, DAG import errors, a deploy step failed, or timeout.
        """
        started = time.monotonic()
        if self.running() and self._healthy():
            log(f"already running at {self.url} (home {self.home})")
            self.wait_ready(timeout)
            # the declarations may have changed since the last deploy: deploy again if so (idempotent)
            env = self.env()
            fingerprint = self._deploy_fingerprint(env)
            if self._deployed_fingerprint() == fingerprint:
                log("deploy: feature_repo unchanged since the last feature-apply of this data root")
            else:
                for step in DEPLOY_STEPS:
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
        deploys = [self._start_deploy_step(step, env) for step in DEPLOY_STEPS]
        log(f"migrating the metadata DB {self.home / 'airflow.db'}")
        migrate_started = time.monotonic()
        migrate = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=env, cwd=self.home, capture_output=True, text=True
        )
        (self.log_dir / "db-migrate.log").write_text(migrate.stdout + migrate.stderr)
        if migrate.returncode != 0:
            _terminate(deploys)
            raise PlatformError(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
        self._use_wal()
        log(f"DB ready in {time.monotonic() - migrate_started:.1f} s; starting {', '.join(COMPONENTS)}")
        for component in COMPONENTS:
            out = self.component_log(component).open("a")
            out.write(f"\n==== {dt.datetime.now().isoformat(timespec='seconds')} starting {component}\n")
            out.flush()
            # own session = own process group: stop() can reach the component's children too
            proc = subprocess.Popen(
                [str(BIN / "airflow"), component],
                env=env,
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            out.close()
            self.pid_file(component).write_text(str(proc.pid))
        state = {
            "port": self.port,
            "data_root": str(self.data_root),
            "url": self.url,
            "dags": str(self.dags_folder),
        }
        (self.home / STATE_FILE).write_text(json.dumps(state, indent=2))
        try:
            self.wait_ready(timeout - (time.monotonic() - started))
            for deploy in deploys:
                self._finish_deploy_step(deploy, timeout - (time.monotonic() - started))
            self._record_deploy(fingerprint)
        except BaseException:
            log(f"start failed; logs in {self.log_dir}")
            _terminate(deploys)
            self.stop(quiet=True)
            raise
        seconds = time.monotonic() - started
        log(f"ready at {self.url} in {seconds:.1f} s (login {self.username}/{self.password})")
        return seconds

    # -- ml-tasks against this platform's data root ------------------------------------------------------
    def ml_tasks_command(self, *args: str) -> list[str]:
        """``ml-tasks ARGS`` of this Python environment (run it with :meth:`env`: the data root)."""
        return [str(BIN / "ml-tasks"), *args]

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
        return _summary(args, proc.returncode, proc.stdout, proc.stderr)

    def _start_deploy_step(self, args: tuple[str, ...], env: Mapping[str, str]) -> DeployStep:
        path = self.log_dir / f"{args[0]}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"deploy: ml-tasks {' '.join(args)} (data root {self.data_root}; log {path})")
        with path.open("w") as err:
            proc = subprocess.Popen(
                self.ml_tasks_command(*args),
                env=dict(env),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        return DeployStep(args, proc, path, time.monotonic())

    def _deploy_fingerprint(self, env: Mapping[str, str]) -> str:
        """sha256 over what the deploy steps read: the feature repo, the feature spec, the settings."""
        digest = hashlib.sha256(json.dumps({k: env.get(k) for k in DEPLOY_ENV}, sort_keys=True).encode())
        repo = Path(env["FLYWHEEL_FEATURE_REPO"]) if env.get("FLYWHEEL_FEATURE_REPO") else DEPLOY_INPUTS[0]
        for root in (repo, *DEPLOY_INPUTS[1:]):
            files = sorted(root.rglob("*")) if root.is_dir() else [root]
            for path in files:
                if path.is_file() and "__pycache__" not in path.parts:
                    digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    def _deployed_fingerprint(self) -> str | None:
        path = self.home / DEPLOY_STATE_FILE
        return str(json.loads(path.read_text()).get("fingerprint")) if path.is_file() else None

    def _record_deploy(self, fingerprint: str) -> None:
        record = {"fingerprint": fingerprint, "steps": [list(s) for s in DEPLOY_STEPS]}
        (self.home / DEPLOY_STATE_FILE).write_text(json.dumps(record, indent=2))

    def _finish_deploy_step(self, deploy: DeployStep, timeout: float) -> dict[str, Any]:
        """Wait for a deploy step; raise PlatformError (naming its log) when it fails or times out."""
        try:
            stdout, _ = deploy.proc.communicate(timeout=max(timeout, 60))
        except subprocess.TimeoutExpired:
            _terminate([deploy])
            raise PlatformError(
                f"deploy step ml-tasks {' '.join(deploy.args)} did not finish in {max(timeout, 60):.0f} s"
                f" (log {deploy.log})"
            ) from None
        stderr = deploy.log.read_text(errors="replace") if deploy.log.is_file() else ""
        try:
            summary = _summary(deploy.args, deploy.proc.returncode, stdout, stderr)
        except PlatformError as exc:
            raise PlatformError(f"deploy step failed: {exc} (log {deploy.log})") from None
        changes = summary.get("changes")
        detail = f"{len(changes)} registry change(s)" if isinstance(changes, list) else "done"
        seconds = time.monotonic() - deploy.started
        log(f"deploy: ml-tasks {' '.join(deploy.args)}: {detail} in {seconds:.1f} s")
        return summary

    def _use_wal(self) -> None:
        """Switch the metadata DB to WAL (persistent in the file).

        In the default rollback journal a reader blocks a writer's commit: with the API server, the
        scheduler and every task heartbeat sharing one file, requests waited out the whole busy timeout
        (30 s) and tasks were killed. In WAL mode readers never block the writer.
        """
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db", timeout=30)) as db:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise PlatformError(f"could not switch {self.home / 'airflow.db'} to WAL (journal_mode={mode})")

    def _healthy(self) -> bool:
        try:
            health = self.api().health()
        except (requests.RequestException, PlatformError):
            return False
        return all(health.get(k, {}).get("status") == "healthy" for k in ("metadatabase", "scheduler"))

    def expected_dag_ids(self) -> set[str]:
        """DAG ids by convention: the stems of the DAG files in the dags folder (helpers excluded)."""
        return {p.stem for p in self.dags_folder.glob("*.py") if not p.name.startswith("_")}

    def wait_ready(self, timeout: float = 180) -> None:
        """Wait until all components live, the API is healthy and every DAG file is registered."""
        deadline = time.monotonic() + max(timeout, 1)
        api = self.api()
        expected = self.expected_dag_ids()
        last = "nothing yet"
        while time.monotonic() < deadline:
            dead = [c for c, ok in self.alive().items() if not ok]
            if dead:
                tails = "\n".join(f"--- {c}:\n{_tail(self.component_log(c))}" for c in dead)
                raise PlatformError(f"{', '.join(dead)} exited during start:\n{tails}")
            try:
                if not self._healthy():
                    last = "API not healthy yet"
                else:
                    errors = api.import_errors()
                    if errors:
                        raise PlatformError(
                            "DAG import errors:\n"
                            + "\n".join(f"{e['filename']}: {e['stack_trace'][-1500:]}" for e in errors)
                        )
                    missing = expected - set(api.dag_ids())
                    if not missing:
                        return
                    last = f"DAGs not registered yet: {sorted(missing)}"
            except requests.RequestException as exc:
                last = f"API not answering: {exc.__class__.__name__}"
            time.sleep(0.5)
        raise PlatformError(f"platform not ready after {timeout:.0f} s: {last} (logs in {self.log_dir})")

    def stop(self, timeout: float = 30, quiet: bool = False) -> None:
        """SIGTERM each component (scheduler first), wait, then kill what is left of our processes."""
        pids = self.pids()
        for component in reversed(COMPONENTS):
            pid = pids[component]
            if pid is None or not pid_alive(pid):
                continue
            if not quiet:
                log(f"stopping {component} (pid {pid})")
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                log(f"{component} ignored SIGTERM for {timeout:.0f} s: killing it")
                _killpg(pid, signal.SIGKILL)
            # children (executor workers, uvicorn workers, running tasks) share the group
            _killpg(pid, signal.SIGTERM)
        for component in COMPONENTS:
            self.pid_file(component).unlink(missing_ok=True)
        orphans = self.orphans()
        if orphans:
            log(f"terminating {len(orphans)} leftover process(es) of {self.home}: {orphans}")
            for pid in orphans:
                _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while any(pid_alive(p) for p in orphans) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in orphans:
                if pid_alive(pid):
                    _signal(pid, signal.SIGKILL)
        if not quiet:
            log("stopped")

    def orphans(self) -> list[int]:
        """Our own processes (any name) whose environment has this AIRFLOW_HOME."""
        marker = f"AIRFLOW_HOME={self.home}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if entry.stat().st_uid != os.getuid():
                    continue
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ and pid_alive(int(entry.name)):
                found.append(int(entry.name))
        return found

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "home": str(self.home),
            "url": self.url,
            "data_root": str(self.data_root),
            "processes": {c: {"pid": self.pids()[c], "alive": ok} for c, ok in self.alive().items()},
        }
        try:
            info["health"] = self.api().health()
        except requests.RequestException as exc:
            info["health"] = f"unreachable: {exc.__class__.__name__}"
        return info


@dataclass
class DeployStep:
    """A deploy-time ``ml-tasks`` command running in the background during start."""

    args: tuple[str, ...]
    proc: subprocess.Popen[str]
    log: Path
    started: float


def _terminate(deploys: Iterable[DeployStep]) -> None:
    for deploy in deploys:
        if deploy.proc.poll() is None:
            deploy.proc.terminate()
            try:
                deploy.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                deploy.proc.kill()
                deploy.proc.wait()


def _summary(args: Iterable[str], returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The JSON summary (last stdout line) of an ``ml-tasks`` run, or PlatformError with its error line."""
    command = f"ml-tasks {' '.join(args)}"
    if returncode != 0:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ml-tasks: error:")]
        reason = (errors or lines or ["(no output on stderr)"])[-1]
        raise PlatformError(f"{command} failed (exit status {returncode}): {reason}")
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    try:
        summary = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        summary = None
    if not isinstance(summary, dict):
        raise PlatformError(f"{command} printed no JSON summary: {stdout[-500:]!r}")
    return summary


def _no_proxy(current: str | None) -> str:
    hosts = [h for h in (current or "").split(",") if h]
    return ",".join(dict.fromkeys([*hosts, "127.0.0.1", "localhost"]))


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class AirflowApi:
    """A small client for the Airflow 3 REST API (``/api/v2``) with the simple auth manager."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies for 127.0.0.1
        self._token: str | None = None

    def _login(self) -> str:
        resp = self.session.post(
            f"{self.base_url}/auth/token",
            json={"username": self.username, "password": self.password},
            timeout=self.timeout,
        )
        if resp.status_code >= 400:
            raise PlatformError(f"login as {self.username} failed: {resp.status_code} {resp.text[:300]}")
        self._token = str(resp.json()["access_token"])
        return self._token

    def request(self, method: str, path: str, ok: Iterable[int] = (), **kwargs: Any) -> requests.Response:
        """Call ``/api/v2{path}``; a 4xx/5xx not in ``ok`` raises PlatformError with the server's detail.

        Idempotent calls (GET, PATCH, PUT) are tried up to :data:`ATTEMPTS` times when the server fails
        transiently (5xx, timeout, refused connection): on SQLite under load, a request can wait out the
        busy timeout while the scheduler holds the write lock. The last failure is raised as it came.
        """
        url = f"{self.base_url}/api/v2{path}"
        ok = set(ok)
        attempts = ATTEMPTS if method.upper() in IDEMPOTENT_METHODS else 1
        for attempt in range(1, attempts + 1):
            try:
                resp = self._send(method, url, **kwargs)
            except (requests.Timeout, requests.ConnectionError) as exc:
                if attempt == attempts:
                    raise
                log(f"{method} {path}: {exc.__class__.__name__}; retrying ({attempt}/{attempts})")
                time.sleep(2 * attempt)
                continue
            if resp.status_code in TRANSIENT_STATUSES and resp.status_code not in ok and attempt < attempts:
                detail = resp.text[:200]
                log(f"{method} {path} -> {resp.status_code}: {detail}; retrying ({attempt}/{attempts})")
                time.sleep(2 * attempt)
                continue
            break
        if resp.status_code >= 400 and resp.status_code not in ok:
            raise PlatformError(f"{method} {path} -> {resp.status_code}: {resp.text[:1000]}")
        return resp

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        for attempt in range(2):
            token = self._token or self._login()
            resp = self.session.request(
                method, url, headers={"Authorization": f"Bearer {token}"}, timeout=self.timeout, **kwargs
            )
            if resp.status_code == 401 and attempt == 0:
                self._token = None  # expired: log in again once
                continue
            break
        return resp

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None).json()

    # -- reads ----------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        resp = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
        resp.raise_for_status()
        return dict(resp.json())

    def dag_ids(self) -> list[str]:
        return [d["dag_id"] for d in self.get("/dags", limit=1000)["dags"]]

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.get("/importErrors", limit=100)["import_errors"])

    def dag_runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        params.setdefault("limit", 1000)
        return list(self.get(f"/dags/{dag_id}/dagRuns", **params)["dag_runs"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        data = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=1000)
        return {ti["task_id"]: ti for ti in data["task_instances"]}

    def mapped_task_instances(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """The instances of a mapped task, by map index (``task_instances`` keeps one per task id)."""
        data = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/listMapped", limit=1000)
        return sorted(data["task_instances"], key=lambda ti: int(ti["map_index"]))

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int | None = None
    ) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        params: dict[str, Any] = {"deserialize": True}
        if map_index is not None:
            params["map_index"] = map_index
        value = self.get(path, **params)["value"]
        return json.loads(value) if isinstance(value, str) else value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        data = self.get(path, full_content=True)
        content = data.get("content", "")
        if not isinstance(content, list):
            return str(content)
        lines = []
        for entry in content:  # structured log lines: event text plus any exception details
            if not isinstance(entry, dict):
                lines.append(str(entry))
                continue
            lines.append(str(entry.get("event", "")))
            for err in entry.get("error_detail") or []:
                if isinstance(err, dict):
                    lines.append(f"{err.get('exc_type')}: {err.get('exc_value')}")
        return "\n".join(lines)

    def dag(self, dag_id: str) -> dict[str, Any]:
        return dict(self.get(f"/dags/{dag_id}"))

    def asset_id(self, asset_name: str) -> int | None:
        """The id of the Asset named ``asset_name`` (None until a DAG declaring it was parsed)."""
        assets = self.get("/assets", name_pattern=asset_name, limit=100)["assets"]
        ids = [int(a["id"]) for a in assets if a["name"] == asset_name]
        return ids[0] if ids else None

    def asset_events(self, asset_name: str, **filters: Any) -> list[dict[str, Any]]:
        """Events of an Asset, oldest first; ``filters`` are the REST filters (``source_run_id``,
        ``source_dag_id``, ``timestamp_gte``, ...). Each event lists the runs that consumed it
        (``created_dagruns``)."""
        asset_id = self.asset_id(asset_name)
        if asset_id is None:
            return []
        filters.setdefault("limit", 1000)
        return list(self.get("/assets/events", asset_id=asset_id, **filters)["asset_events"])

    def upstream_asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The asset events an asset-triggered run consumed."""
        return list(self.get(f"/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")["asset_events"])

    def queued_events(self, dag_id: str) -> list[dict[str, Any]]:
        """The asset events queued for ``dag_id`` that no run has taken yet (Airflow creates the run once the
        DAG's asset condition holds and it is below ``max_active_runs``)."""
        return list(self.get(f"/dags/{dag_id}/assets/queuedEvents")["queued_events"])

    def wait_consumer_runs(
        self,
        asset_name: str,
        consumer_dag_id: str,
        source_run_ids: Iterable[str],
        *,
        since: dt.datetime | None = None,
        timeout: float = 900,
        poll: float = 2.0,
    ) -> list[dict[str, Any]]:
        """Wait for the runs of ``consumer_dag_id`` that Airflow created from the events of ``asset_name``
        emitted by the producer runs ``source_run_ids``, until they finished.

        The scheduler consolidates queued events, so several producer runs may lead to one consumer
        run, and one consumer run may also carry events of other producer runs. Consumer runs are found
        from the consumer's side (its asset-triggered runs created at or after ``since``, and the events
        each consumed) because Airflow 3.3.2 answers 500 for any asset event one of whose consumer runs
        is still queued (its ``created_dagruns`` entry has no start date): a queued run is looked at
        once it has started.

        Returns:
            the consumer runs (finished), in the order they were created.

        Raises:
            PlatformError: the consumer is paused (Airflow queues no run for it), or no consumer run took
                the events of some producer runs, or the runs did not finish, within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        wanted = set(source_run_ids)
        filters: dict[str, Any] = {"run_type": "asset_triggered", "order_by": "run_after"}
        if since is not None:
            filters["run_after_gte"] = since.astimezone(dt.UTC).isoformat()
        consumed: dict[str, set[str]] = {}  # consumer run -> producer runs of the events it consumed
        while True:
            if self.dag(consumer_dag_id)["is_paused"]:
                raise PlatformError(
                    f"{consumer_dag_id} is paused: Airflow creates no run from {asset_name} events for a"
                    " paused DAG (unpause it before the producer runs)"
                )
            for run in self.dag_runs(consumer_dag_id, **filters):
                run_id = run["dag_run_id"]
                if run_id in consumed or run["state"] == "queued":
                    continue
                try:
                    events = self.upstream_asset_events(consumer_dag_id, run_id)
                except PlatformError as exc:
                    # the same 500 when another DAG's run that consumed one of these events is queued
                    if " -> 500" not in str(exc):
                        raise
                    continue
                consumed[run_id] = {str(e["source_run_id"]) for e in events if e["name"] == asset_name}
            missing = wanted - set().union(*consumed.values())
            if not missing:
                break
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"no {consumer_dag_id} run took the {asset_name} events of {sorted(missing)} within"
                    f" {timeout:.0f} s (did those runs publish? is the scheduler alive?)"
                )
            time.sleep(poll)
        consumers = [run_id for run_id, sources in consumed.items() if sources & wanted]
        done = self.wait_runs(consumer_dag_id, consumers, timeout=max(deadline - time.monotonic(), 1))
        return sorted(done.values(), key=lambda r: (r["run_after"], r["dag_run_id"]))

    # -- writes ---------------------------------------------------------------------------------------
    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def wait_settled(
        self,
        dag_id: str,
        since: dt.datetime,
        *,
        timeout: float = 900,
        quiet_polls: int = 2,
        poll: float = 5.0,
    ) -> list[dict[str, Any]]:
        """Every run of ``dag_id`` created at or after ``since``, once there is at least one, all are
        finished, no asset event is queued for the DAG, and that held for ``quiet_polls`` polls in a row.

        For asset chains where :meth:`wait_consumer_runs` is not enough: a consumer run takes every event
        since its DAG's previous run, including events of producer runs the caller does not know about; and
        while the DAG is at ``max_active_runs``, Airflow keeps new events queued and creates their run only
        after the active one finished (between the two, no run is active: only the queue tells).
        """
        deadline = time.monotonic() + timeout
        quiet = 0
        while True:
            runs = self.dag_runs(dag_id, run_after_gte=since.astimezone(dt.UTC).isoformat())
            busy = [r["dag_run_id"] for r in runs if r["state"] not in TERMINAL_RUN_STATES]
            queued = self.queued_events(dag_id)
            quiet = 0 if busy or queued or not runs else quiet + 1
            if quiet >= quiet_polls:
                return sorted(runs, key=lambda r: (r["run_after"], r["dag_run_id"]))
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"{dag_id}: runs since {since} not settled after {timeout:.0f} s: running {busy},"
                    f" {len(queued)} asset event(s) queued"
                )
            time.sleep(poll)

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any] | None = None, logical_date: str | None = None
    ) -> str:
        """Trigger a run (``logical_date`` None: a run without data interval) and return its run id."""
        body = {"logical_date": logical_date, "conf": dict(conf or {})}
        return str(self.request("POST", f"/dags/{dag_id}/dagRuns", json=body).json()["dag_run_id"])

    def clear_run(self, dag_id: str, run_id: str) -> None:
        """Clear every task of a run: the scheduler runs it again."""
        self.request("POST", f"/dags/{dag_id}/dagRuns/{run_id}/clear", json={"dry_run": False})

    def wait_runs(
        self, dag_id: str, run_ids: Iterable[str], timeout: float = 600, poll: float = 1.0
    ) -> dict[str, dict[str, Any]]:
        """Wait until every run is finished (success or failed); returns the runs by id."""
        pending = set(run_ids)
        done: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while pending:
            for run_id in sorted(pending):
                run = self.dag_run(dag_id, run_id)
                if run["state"] in TERMINAL_RUN_STATES:
                    done[run_id] = run
                    pending.discard(run_id)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"{dag_id}: runs still not finished after {timeout:.0f} s: {sorted(pending)}"
                )
            time.sleep(poll)
        return done

    def backfill(
        self,
        dag_id: str,
        from_date: dt.date | str,
        to_date: dt.date | str,
        *,
        tz: str = "America/Chicago",
        conf: Mapping[str, Any] | None = None,
        max_active_runs: int = 2,
        reprocess_behavior: str = "completed",
        timeout: float = 900,
        leave_unpaused: bool = False,
    ) -> list[dict[str, Any]]:
        """Backfill ``dag_id`` for logical dates in [from_date, to_date] and wait for every run.

        Dates (``datetime.date``) mean local midnight in ``tz``: for a daily timetable in that zone,
        ``from_date=D1, to_date=D2`` gives one run per day D1..D2 (both included). Strings are passed
        through as ISO datetimes.

        The recipe that holds on SQLite (ARCHITECTURE.md): pause, create (retry on 503 "database is
        locked" and on 409 "another backfill is running": the scheduler marks a finished backfill
        complete only on a ~30 s timer), unpause, poll the runs. The backfill is cancelled only when
        waiting fails: cancelling PAUSES the backfill, and a queued run of a paused backfill is never
        started, so clearing one of its runs later (a re-run from the UI) would leave it queued forever
        (measured on Airflow 3.3.2).

        Returns:
            the backfill's runs (finished), ordered by logical date.
        """
        body = {
            "dag_id": dag_id,
            "from_date": _local_midnight(from_date, tz),
            "to_date": _local_midnight(to_date, tz),
            "dag_run_conf": dict(conf or {}),
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess_behavior,
        }
        dry = self.request("POST", "/backfills/dry_run", json=body).json()
        expected = {b["logical_date"] for b in dry["backfills"]}
        if not expected:
            raise PlatformError(f"backfill {dag_id} [{from_date}, {to_date}] would create no runs")
        self.set_paused(dag_id, True)
        backfill: dict[str, Any] | None = None
        for attempt in range(45):  # 409 lasts up to the scheduler's ~30 s completion timer
            resp = self.request("POST", "/backfills", json=body, ok=(409, 503))
            if resp.status_code < 400:
                backfill = resp.json()
                break
            log(f"backfill create: {resp.status_code} {resp.text[:200]} (retry {attempt + 1})")
            time.sleep(2)
        if backfill is None:
            raise PlatformError(f"could not create a backfill of {dag_id} after 45 attempts (90 s)")
        self.set_paused(dag_id, False)
        ok = False
        try:
            deadline = time.monotonic() + timeout
            while True:
                runs = [
                    r
                    for r in self.dag_runs(dag_id, run_type="backfill", order_by="logical_date")
                    if r["logical_date"] in expected or _same_instant(r["logical_date"], expected)
                ]
                finished = [r for r in runs if r["state"] in TERMINAL_RUN_STATES]
                if len(finished) >= len(expected):
                    ok = True
                    return finished
                if time.monotonic() > deadline:
                    states = {r["logical_date"]: r["state"] for r in runs}
                    raise PlatformError(f"backfill of {dag_id} not finished after {timeout:.0f} s: {states}")
                time.sleep(1)
        finally:
            if not ok:  # stop what is left of it (its queued runs are failed)
                self.request("PUT", f"/backfills/{backfill['id']}/cancel", ok=(409,))
            if not leave_unpaused:
                self.set_paused(dag_id, True)


def _local_midnight(day: dt.date | str, tz: str) -> str:
    if isinstance(day, str):
        return day
    from zoneinfo import ZoneInfo

    return dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(tz)).isoformat()


def _same_instant(value: str, candidates: set[str]) -> bool:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return any(dt.datetime.fromisoformat(c.replace("Z", "+00:00")) == moment for c in candidates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.airflow_local",
        description="Local Airflow 3 platform (api-server, scheduler, dag-processor).",
        epilog=(
            "airflow: `python -m scripts.airflow_local airflow -- dags list` runs the airflow CLI here.\n"
            "backfill: `python -m scripts.airflow_local backfill taxi_ingest 2024-02-01 2024-02-07` runs one"
            " interval per Chicago day, both ends included, and waits for them (safe on SQLite)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["start", "stop", "status", "wait", "airflow", "backfill"])
    parser.add_argument("--home", type=Path, help="AIRFLOW_HOME (default .flywheel/airflow)")
    parser.add_argument("--port", type=int, help="API port (default 8080; log servers use port+1, port+2)")
    parser.add_argument(
        "--data-root", type=Path, help="FLYWHEEL_DATA_ROOT for the steps (default .flywheel/data)"
    )
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for readiness")
    parser.add_argument("--conf", default="{}", help="backfill: run conf (params) as JSON")
    ns, rest = parser.parse_known_args(argv)
    if rest and ns.command not in ("airflow", "backfill"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if ns.command == "backfill" and len(rest) != 3:
        parser.error("backfill takes DAG_ID FROM_DAY TO_DAY (YYYY-MM-DD, local days, both included)")
    platform = Platform.from_env(home=ns.home, port=ns.port, data_root=ns.data_root)
    try:
        if ns.command == "start":
            platform.start(ns.timeout)
            print(f"Airflow UI: {platform.url}  login: {platform.username} / {platform.password}")
            print("stop with: make stop  (or python -m scripts.airflow_local stop)")
        elif ns.command == "stop":
            platform.stop()
        elif ns.command == "status":
            print(json.dumps(platform.status(), indent=2))
            return 0 if platform.running() else 1
        elif ns.command == "wait":
            platform.wait_ready(ns.timeout)
            print(f"ready: {platform.url}")
        elif ns.command == "backfill":
            dag_id, first, last = rest
            runs = platform.api().backfill(
                dag_id,
                dt.date.fromisoformat(first),
                dt.date.fromisoformat(last),
                conf=json.loads(ns.conf),
                timeout=max(ns.timeout, 3600),
                leave_unpaused=True,
            )
            for run in runs:
                print(f"{run['logical_date']}  {run['state']:8s}  {run['dag_run_id']}")
            return 0 if all(r["state"] == "success" for r in runs) else 1
        elif ns.command == "airflow":
            args = rest[1:] if rest[:1] == ["--"] else rest
            if shutil.which("airflow", path=str(BIN)) is None:
                raise PlatformError(f"airflow CLI not found in {BIN}")
            return subprocess.call([str(BIN / "airflow"), *args], env=platform.env(), cwd=platform.home)
    except PlatformError as exc:
        print(f"airflow-local: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
