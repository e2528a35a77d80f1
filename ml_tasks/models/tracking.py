"""MLflow tracking: where runs go, and one run per (DAG, DAG run, task) with no ghost runs on retry.

mlflow is imported inside functions: importing this module is cheap. Design notes: ``docs/training.md``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ml_tasks.contract import (
    EXPERIMENT,
    PARENT_TAG,
    TAG_CODE_VERSION,
    TAG_DAG_ID,
    TAG_DAG_RUN_ID,
    TAG_TASK_ID,
)
from ml_tasks.errors import FlywheelError
from ml_tasks.settings import Settings, get_settings
from ml_tasks.writers import pause_point

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

log = logging.getLogger(__name__)

# Tags the callers are expected to pass (names shared with the registry's version tags).


class TrackingUnreachableError(FlywheelError, RuntimeError):
    """The MLflow tracking server did not answer (refused, reset, timed out) during a step."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def unreachable_reason(exc: BaseException) -> str | None:
    """Why the tracking server could not be reached, when that is what ``exc`` is (else None).

    MLflow wraps the ``requests`` error in an ``MlflowException`` (as context, not cause): the chain is
    searched for a connection error or a timeout; the reason is its innermost OS error when there is one.
    """
    import requests

    chain = list(_chain(exc))
    if not any(isinstance(e, requests.ConnectionError | requests.Timeout) for e in chain):
        return None
    os_errors = [e for e in chain if isinstance(e, OSError) and e.errno is not None]
    if os_errors:
        return f"{os_errors[-1].strerror or os_errors[-1]}"
    reason = next(e for e in chain if isinstance(e, requests.ConnectionError | requests.Timeout))
    text = str(reason)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return found.group(1).strip() if found else f"{type(reason).__name__}: {text[:300]}"


def _mlflow_dir(settings: Settings) -> str:
    return f"{settings.resolved_data_root()}/mlflow"


def tracking_uri(settings: Settings | None = None) -> str:
    """The MLflow tracking URI: ``MLFLOW_TRACKING_URI`` if set, else SQLite under the data root.

    Raises:
        ValueError: the data root is remote (an object store cannot hold a SQLite file) and
            ``MLFLOW_TRACKING_URI`` is not set.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    settings = settings or get_settings()
    folder = _mlflow_dir(settings)
    if "://" in folder:
        raise ValueError(
            f"data_root {settings.data_root!r} is remote: a SQLite tracking store needs a local path; "
            "set MLFLOW_TRACKING_URI to a tracking server"
        )
    return f"sqlite:///{folder}/mlflow.db"


def artifact_location(settings: Settings | None = None) -> str:
    """Where the experiment's artifacts live when the store is local: ``<data_root>/mlflow/artifacts``."""
    settings = settings or get_settings()
    folder = f"{_mlflow_dir(settings)}/artifacts"
    return folder if "://" in folder else Path(folder).as_uri()


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def client(settings: Settings | None = None) -> MlflowClient:
    """An MlflowClient on :func:`tracking_uri`, also set as the process's fluent tracking URI.

    Creates ``<data_root>/mlflow`` when the default SQLite store is used (lazily: only here), and turns
    off MLflow's run-URL printing to stdout and its progress bars unless the environment says otherwise.
    """
    import mlflow

    settings = settings or get_settings()
    uri = tracking_uri(settings)
    # With a tracking server MLflow prints "View run at ..." to STDOUT when a run ends, which would break
    # the CLI's one-JSON-line stdout contract; progress bars only clutter task logs. Callers may override.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    # the fluent API (log_metric, log_model) follows the global URI: keep both on the same store
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def experiment_id(client: MlflowClient, name: str = EXPERIMENT, settings: Settings | None = None) -> str:
    """The id of experiment ``name``, created on first use.

    With a local store (SQLite/file) the artifact location is pinned to ``<data_root>/mlflow/artifacts``
    (MLflow's default would be ``./mlruns`` relative to whatever the working directory is); a tracking
    server chooses its own artifact root.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)
    location = artifact_location(settings) if _is_local_store(client.tracking_uri) else None
    if location and location.startswith("file:"):
        Path(location.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:
        # another task created it between our lookup and our create
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


@dataclass(frozen=True)
class RunKey:
    """Identifies one task's run: one MLflow run per (dag_id, dag_run_id, task_id)."""

    dag_id: str
    dag_run_id: str
    task_id: str

    def __post_init__(self) -> None:
        for name in ("dag_id", "dag_run_id", "task_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"RunKey.{name} must be a non-empty string, got {value!r}")

    @classmethod
    def local(cls, task_id: str) -> RunKey:
        """A key for a local CLI run outside Airflow: dag_id ``cli`` and a fresh, sortable run id."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        return cls("cli", f"cli__{stamp}_{uuid.uuid4().hex[:8]}", task_id)

    @classmethod
    def resolve(cls, task_id: str, dag_id: str | None = None, dag_run_id: str | None = None) -> RunKey:
        """Explicit ids, else Airflow's ``AIRFLOW_CTX_*`` environment, else :meth:`local`."""
        dag_id = dag_id or os.environ.get("AIRFLOW_CTX_DAG_ID")
        dag_run_id = dag_run_id or os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
        if dag_id and dag_run_id:
            return cls(dag_id, dag_run_id, task_id)
        return cls.local(task_id)

    def tags(self) -> dict[str, str]:
        """The three identifying tags."""
        return {TAG_DAG_ID: self.dag_id, TAG_DAG_RUN_ID: self.dag_run_id, TAG_TASK_ID: self.task_id}


def filter_quote(value: str) -> str:
    """``value`` as a string literal of MLflow's search filter grammar."""
    # MLflow's filter grammar: single-quoted strings; an embedded quote is escaped by backslash
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_runs(client: MlflowClient, exp_id: str, key: RunKey) -> list[Run]:
    """The active runs tagged with ``key`` (normally zero or one)."""
    from mlflow.entities import ViewType

    flt = " and ".join(f"tags.`{k}` = {filter_quote(v)}" for k, v in key.tags().items())
    return list(client.search_runs([exp_id], filter_string=flt, run_view_type=ViewType.ACTIVE_ONLY))


def delete_run_tree(client: MlflowClient, exp_id: str, run_id: str) -> int:
    """Delete ``run_id`` and all its descendants (children first); returns how many runs were deleted."""
    from mlflow.entities import ViewType

    deleted = 0
    children = client.search_runs(
        [exp_id],
        filter_string=f"tags.`{PARENT_TAG}` = {filter_quote(run_id)}",
        run_view_type=ViewType.ACTIVE_ONLY,
    )
    for child in children:
        deleted += delete_run_tree(client, exp_id, child.info.run_id)
    client.delete_run(run_id)
    return deleted + 1


def _one_line(exc: BaseException) -> str:
    return " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:500]


@contextmanager
def _activate(client: MlflowClient, run_id: str) -> Iterator[Run]:
    """Make ``run_id`` the fluent active run; FINISHED on success, FAILED on exception."""
    import mlflow

    nested = mlflow.active_run() is not None
    mlflow.start_run(run_id=run_id, nested=nested)
    try:
        yield client.get_run(run_id)
    except BaseException:
        try:
            mlflow.end_run(status="FAILED")  # leaves the fluent stack first, then tells the server
        except Exception as end_exc:
            # the server is gone: the run stays RUNNING there until the task's retry deletes it
            log.warning("could not mark run %s FAILED: %s", run_id, _one_line(end_exc))
        raise
    mlflow.end_run(status="FINISHED")


@contextmanager
def task_run(
    settings: Settings | None,
    key: RunKey,
    *,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    experiment: str = EXPERIMENT,
) -> Iterator[Run]:
    """The MLflow run of one task try, replacing any earlier try's run of the same task.

    Args:
        settings: Flywheel settings (None: :func:`get_settings`).
        key: Which DAG / DAG run / task this run belongs to.
        parent_run_id: Nest the run under this one (the train run for evaluate/export/promote).
        tags: Extra tags (data interval, training-set URI and sha256, feature service, ...).
        run_name: Display name (default: the task id).
        experiment: Experiment name.

    Yields:
        The run (also the fluent active run, so ``mlflow.log_metric`` etc. land in it). The run ends
        FINISHED, or FAILED when the block raises (the exception propagates).
    """
    from ml_tasks.storage import code_version

    uri = tracking_uri(settings)
    try:
        mlf = client(settings)
        exp_id = experiment_id(mlf, experiment, settings)
        for old in find_runs(mlf, exp_id, key):
            n = delete_run_tree(mlf, exp_id, old.info.run_id)
            log.info(
                "replaced run %s of %s/%s/%s (%d run(s) deleted)", old.info.run_id, *key.tags().values(), n
            )
        all_tags = {
            **{k: str(v) for k, v in (tags or {}).items()},
            **key.tags(),
            TAG_CODE_VERSION: code_version(),
        }
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = mlf.create_run(exp_id, tags=all_tags, run_name=run_name or key.task_id)
        log.info("mlflow run %s for %s/%s/%s", run.info.run_id, key.dag_id, key.dag_run_id, key.task_id)
        pause_point("run-created")
        with _activate(mlf, run.info.run_id) as active:
            yield active
    except Exception as exc:
        reason = None if isinstance(exc, TrackingUnreachableError) else unreachable_reason(exc)
        if reason is None:
            raise
        raise TrackingUnreachableError(
            f"MLflow tracking server {uri} unreachable during {key.task_id}: {reason}; "
            "the step's results were not recorded: retry the task once the server is back"
        ) from exc


@contextmanager
def child_run(
    parent_run_id: str,
    name: str,
    *,
    tags: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> Iterator[Run]:
    """A child run (e.g. one hyperparameter trial) of ``parent_run_id``, active inside the block.

    Children inherit the parent's descriptive flywheel.* tags (data interval, training set, ...) but not
    the three identifying ones, so a retry's lookup finds only the task's own run; children are deleted
    with it.
    """
    mlf = client(settings)
    parent = mlf.get_run(parent_run_id)
    identifying = {TAG_DAG_ID, TAG_DAG_RUN_ID, TAG_TASK_ID}
    inherited = {
        k: v for k, v in parent.data.tags.items() if k.startswith("flywheel.") and k not in identifying
    }
    all_tags = {**inherited, **{k: str(v) for k, v in (tags or {}).items()}, PARENT_TAG: parent_run_id}
    run = mlf.create_run(parent.info.experiment_id, tags=all_tags, run_name=name)
    pause_point("run-created")
    with _activate(mlf, run.info.run_id) as active:
        yield active
