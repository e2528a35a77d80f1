"""Where a local platform lives and the environment of its processes (settings file, keys, ports)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

REPO = Path(__file__).resolve().parents[2]
DEFAULT_HOME = REPO / ".flywheel" / "airflow"
DEFAULT_DATA_ROOT = REPO / ".flywheel" / "data"
SETTINGS_FILE = REPO / "config" / "airflow.local.yaml"
BIN = Path(sys.executable).parent
#: Airflow's processes in start order; stop goes in reverse (the scheduler stops before the API it reports to)
COMPONENTS = ("api-server", "dag-processor", "scheduler")
#: the servers the PostgreSQL platform runs beside PostgreSQL itself, started before Airflow
SERVERS = ("redis", "mlflow")
#: the local step server (stepserver.py): heavy imports paid once, a forked child per ``ml-tasks`` run
STEP_SERVER = "step-server"
#: every process a home may have a pid file for, in start order
ALL_COMPONENTS = (*SERVERS, STEP_SERVER, *COMPONENTS)
#: metadata databases: ``postgres`` (default: PostgreSQL, MLflow server, Redis) or ``sqlite`` (the lightest)
DATABASES = ("postgres", "sqlite")
#: ports from the API port P: P API, P+1 / P+2 worker / trigger log servers, P+3 MLflow, P+4 Redis
PORT_NAMES = ("Airflow API", "worker log server", "trigger log server", "MLflow server", "Redis")
STATE_FILE = "platform.json"
SETTINGS_KEYS = {"airflow", "env", "connections", "variables"}


class PlatformError(RuntimeError):
    """The platform cannot start, is unhealthy, or an API call failed."""


def log(message: str) -> None:
    print(f"[airflow-local] {message}", file=sys.stderr, flush=True)


def free_port(count: int = len(PORT_NAMES)) -> int:
    """A port P such that P .. P+count-1 are free on 127.0.0.1 (see :data:`PORT_NAMES`)."""
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


def load_settings(path: Path = SETTINGS_FILE) -> dict[str, Any]:
    """The checked-in local settings (``airflow`` options, ``env``, ``connections``, ``variables``)."""
    if not path.is_file():
        raise PlatformError(f"local Airflow settings file {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise PlatformError(f"{path}: expected a mapping at the top level")
    unknown = set(data) - SETTINGS_KEYS
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


def no_proxy(current: str | None) -> str:
    """``current`` plus the loopback names: task -> API calls on 127.0.0.1 never go through a proxy."""
    hosts = [h for h in (current or "").split(",") if h]
    return ",".join(dict.fromkeys([*hosts, "127.0.0.1", "localhost"]))


@dataclass
class PlatformConfig:
    """One local Airflow installation: its home, API port and data root, and the environment they imply."""

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
    #: the metadata database (:data:`DATABASES`); ``sqlite`` runs no server besides Airflow's three
    db: str = "postgres"
    #: run the local step server (FLYWHEEL_LOCAL_STEP_SERVER=0 turns it off: every step a fresh process)
    step_server: bool = True

    def __post_init__(self) -> None:
        if self.db not in DATABASES:
            raise PlatformError(f"FLYWHEEL_AIRFLOW_DB={self.db!r}: expected one of {', '.join(DATABASES)}")
        self.home = Path(self.home).expanduser().resolve()
        self.data_root = Path(self.data_root).expanduser().resolve()
        self.dags_folder = Path(self.dags_folder).resolve()
        self.plugins_folder = Path(self.plugins_folder).resolve()

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """A platform configured by, in order of precedence: ``overrides`` (CLI flags), the environment
        (FLYWHEEL_AIRFLOW_HOME / FLYWHEEL_AIRFLOW_PORT / FLYWHEEL_DATA_ROOT / FLYWHEEL_AIRFLOW_DB), the
        port, data root and database a platform was last started with in that home (so ``stop`` /
        ``status`` find it), the defaults."""
        values: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        values.setdefault("home", Path(os.environ.get("FLYWHEEL_AIRFLOW_HOME", DEFAULT_HOME)))
        state = cls(home=values["home"]).read_state() or {}
        env_port, env_root = os.environ.get("FLYWHEEL_AIRFLOW_PORT"), os.environ.get("FLYWHEEL_DATA_ROOT")
        values.setdefault("port", int(env_port or state.get("port") or 8080))
        values.setdefault("data_root", Path(env_root or state.get("data_root") or DEFAULT_DATA_ROOT))
        values.setdefault("db", os.environ.get("FLYWHEEL_AIRFLOW_DB") or state.get("db") or DATABASES[0])
        values.setdefault("step_server", os.environ.get("FLYWHEEL_LOCAL_STEP_SERVER", "1") != "0")
        return cls(**values)

    # -- layout ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mlflow_port(self) -> int:
        return self.port + 3

    @property
    def redis_port(self) -> int:
        return self.port + 4

    @property
    def mlflow_url(self) -> str | None:
        """The MLflow tracking server's address (its UI too); None on SQLite (an MLflow SQLite file)."""
        return f"http://127.0.0.1:{self.mlflow_port}" if self.db == "postgres" else None

    def tracking_uri(self) -> str:
        """Where the steps track runs: the server, or the MLflow SQLite file of the data root (the CLI's
        default, ``ml_tasks.models.tracking``)."""
        return self.mlflow_url or f"sqlite:///{self.data_root / 'mlflow' / 'mlflow.db'}"

    @property
    def ports(self) -> dict[int, str]:
        """The TCP ports this platform listens on, and what on each."""
        count = len(PORT_NAMES) if self.db == "postgres" else 3
        return {self.port + i: PORT_NAMES[i] for i in range(count)}

    @property
    def pgdata(self) -> Path:
        """PostgreSQL's data directory (its unix socket lives there too)."""
        return self.home / "postgres"

    @property
    def redis_dir(self) -> Path:
        """Where Redis saves the online store (beside the SQLite online store of the other option)."""
        return self.data_root / "feast" / "redis"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.data_root / "mlflow" / "artifacts"

    def components(self) -> tuple[str, ...]:
        """The processes this platform spawns (pid files), in start order."""
        servers = SERVERS if self.db == "postgres" else ()
        return (*servers, *((STEP_SERVER,) if self.step_server else ()), *COMPONENTS)

    @property
    def step_server_socket(self) -> Path:
        """The step server's unix socket: in the home, or in the temp folder when that path is too long
        for a socket address (108 bytes)."""
        path = self.home / "step-server.sock"
        if len(str(path)) < 100:
            return path
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"flywheel-step-server-{digest}.sock"

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

    def write_state(self) -> None:
        """Remember the port and data root in the home (read back by :meth:`from_env`)."""
        state: dict[str, Any] = {"port": self.port, "data_root": str(self.data_root), "url": self.url}
        state.update(db=self.db, mlflow_url=self.mlflow_url, dags=str(self.dags_folder))
        (self.home / STATE_FILE).write_text(json.dumps(state, indent=2))

    def expected_dag_ids(self) -> set[str]:
        """DAG ids by convention: the stems of the DAG files in the dags folder (helpers excluded)."""
        return {p.stem for p in self.dags_folder.glob("*.py") if not p.name.startswith("_")}

    # -- environment -----------------------------------------------------------------------------------
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
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_uri(),
                "FLYWHEEL_DATA_ROOT": str(self.data_root),
                "NO_PROXY": no_proxy(env.get("NO_PROXY")),
                "no_proxy": no_proxy(env.get("no_proxy")),
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            }
        )
        env.update(self.server_env())
        if self.step_server:
            env["FLYWHEEL_STEP_SERVER"] = str(self.step_server_socket)
        env.update(self.extra_env)
        return env

    def metadata_uri(self) -> str:
        """Airflow's metadata DB: PostgreSQL over its unix socket, or the SQLite file with a 30 s busy timeout
        (writers wait for the lock instead of failing at once)."""
        if self.db == "postgres":
            from scripts.airflow_local.servers import database_uri

            return database_uri(self.pgdata, "airflow")
        return f"sqlite:///{self.home / 'airflow.db'}?timeout=30"

    def server_env(self) -> dict[str, str]:
        """What tells the steps where the servers are (the standard and the FLYWHEEL_* names the Helm chart
        sets too): MLFLOW_TRACKING_URI, FLYWHEEL_FEAST_ENV=redis, FLYWHEEL_REDIS_CONNECTION. On SQLite the
        steps keep their defaults (an MLflow SQLite file and the SQLite online store in the data root)."""
        if self.db != "postgres":
            return {}
        return {
            "MLFLOW_TRACKING_URI": str(self.mlflow_url),
            "FLYWHEEL_FEAST_ENV": "redis",
            "FLYWHEEL_REDIS_CONNECTION": f"127.0.0.1:{self.redis_port}",
        }
