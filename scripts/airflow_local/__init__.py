"""The local Airflow 3 platform: api-server, scheduler and dag-processor as separate processes
(LocalExecutor, SQLite, low parallelism), state in a git-ignored AIRFLOW_HOME (``.flywheel/airflow``).

``python -m scripts.airflow_local start|stop|status|wait|backfill|airflow``; tests and the demo use
:class:`Platform` and :class:`AirflowApi`. Design notes: docs/local-platform.md.
"""

from scripts.airflow_local.api import ApiError
from scripts.airflow_local.cli import main
from scripts.airflow_local.config import (
    REPO,
    SETTINGS_FILE,
    PlatformError,
    free_port,
    load_settings,
    port_free,
    settings_env,
)
from scripts.airflow_local.lifecycle import Platform
from scripts.airflow_local.waits import AirflowApi, poll_until

__all__ = [
    "REPO",
    "SETTINGS_FILE",
    "AirflowApi",
    "ApiError",
    "Platform",
    "PlatformError",
    "free_port",
    "load_settings",
    "main",
    "poll_until",
    "port_free",
    "settings_env",
]
