"""MLflow tracking on a real SQLite store and a real local ``mlflow server``: one run per task, no ghosts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_tasks.contract import (
    EXPERIMENT,
    TAG_DATA_INTERVAL_END,
    TAG_DATA_INTERVAL_START,
    TAG_FEATURE_SERVICE,
    TAG_TRAINING_SET_SHA256,
    TAG_TRAINING_SET_URI,
)
from ml_tasks.models import tracking
from ml_tasks.models.tracking import RunKey, child_run, task_run
from ml_tasks.settings import Settings
from tests.integration._servers.mlflow import mlflow_server as start_mlflow_server


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    import mlflow

    from ml_tasks.storage import code_version

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FLYWHEEL_CODE_VERSION", "test-1.2.3")
    code_version.cache_clear()  # read once per process: an earlier test of the session may have cached it
    yield Settings(data_root=str(tmp_path / "data"))
    code_version.cache_clear()
    if mlflow.active_run():
        mlflow.end_run()


def _active_runs(settings: Settings, key: RunKey) -> list[str]:
    mlf = tracking.client(settings)
    exp = tracking.experiment_id(mlf, EXPERIMENT, settings)
    return [r.info.run_id for r in tracking.find_runs(mlf, exp, key)]


def test_default_store_is_sqlite_under_the_data_root(settings: Settings) -> None:
    root = Path(settings.resolved_data_root())
    assert tracking.tracking_uri(settings) == f"sqlite:///{root}/mlflow/mlflow.db"
    assert not (root / "mlflow").exists()  # nothing is created until a client is needed
    mlf = tracking.client(settings)
    exp = mlf.get_experiment(tracking.experiment_id(mlf, EXPERIMENT, settings))
    assert exp.name == "flywheel-taxi-tips"
    assert exp.artifact_location == (root / "mlflow" / "artifacts").as_uri()
    assert (root / "mlflow" / "mlflow.db").is_file()
    # a second lookup reuses the experiment
    assert tracking.experiment_id(mlf, EXPERIMENT, settings) == exp.experiment_id


def test_env_tracking_uri_wins(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri(settings) == "http://127.0.0.1:5999"


def test_remote_data_root_without_tracking_uri_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match="set MLFLOW_TRACKING_URI"):
        tracking.tracking_uri(Settings(data_root="s3://bucket/flywheel"))


def test_run_key_validation_and_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"RunKey.dag_run_id must be a non-empty string"):
        RunKey("taxi_training", " ", "train")
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_RUN_ID", raising=False)
    a, b = RunKey.resolve("train"), RunKey.resolve("train")
    assert a.dag_id == "cli" and a.dag_run_id.startswith("cli__") and a.dag_run_id != b.dag_run_id
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "taxi_training")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__2024-01-01T00:00:00+00:00")
    assert RunKey.resolve("train") == RunKey("taxi_training", "manual__2024-01-01T00:00:00+00:00", "train")


def test_task_run_tags_status_and_retry_replaces_it(settings: Settings) -> None:
    import mlflow

    key = RunKey("taxi_training", "scheduled__2024-01-08T00:00:00+00:00", "train")
    extra = {
        TAG_DATA_INTERVAL_START: "2024-01-01",
        TAG_DATA_INTERVAL_END: "2024-01-08",
        TAG_TRAINING_SET_URI: "file:///x/part-00000.parquet",
        TAG_TRAINING_SET_SHA256: "ab" * 32,
        TAG_FEATURE_SERVICE: "taxi_tips_v1",
    }
    # first try: a trial child run, then the task fails
    with pytest.raises(RuntimeError, match="boom"), task_run(settings, key, tags=extra) as first:
        with child_run(first.info.run_id, "trial-0", tags={"trial": "0"}) as trial:
            mlflow.log_metric("val_auc", 0.9)
            grandchild_parent = trial.info.run_id
        with child_run(grandchild_parent, "inner"):
            pass
        raise RuntimeError("boom")
    mlf = tracking.client(settings)
    failed = mlf.get_run(first.info.run_id)
    assert failed.info.status == "FAILED"
    assert _active_runs(settings, key) == [first.info.run_id]

    # the retry deletes the failed run AND its descendants before starting
    with task_run(settings, key, tags=extra) as second:
        mlflow.log_metric("rows", 10_000)
        assert mlflow.active_run() is not None and mlflow.active_run().info.run_id == second.info.run_id
    assert _active_runs(settings, key) == [second.info.run_id]
    exp = tracking.experiment_id(mlf, EXPERIMENT, settings)
    alive = mlf.search_runs([exp])
    assert [r.info.run_id for r in alive] == [second.info.run_id]  # no ghost trials either
    assert mlf.get_run(first.info.run_id).info.lifecycle_stage == "deleted"
    assert mlf.get_run(grandchild_parent).info.lifecycle_stage == "deleted"

    done = mlf.get_run(second.info.run_id)
    assert done.info.status == "FINISHED"
    assert done.data.metrics["rows"] == 10_000
    tags = done.data.tags
    assert tags["flywheel.dag_id"] == "taxi_training"
    assert tags["flywheel.dag_run_id"] == "scheduled__2024-01-08T00:00:00+00:00"
    assert tags["flywheel.task_id"] == "train"
    assert tags["flywheel.code_version"] == "test-1.2.3"
    for k, v in extra.items():
        assert tags[k] == v


def test_children_nest_and_other_tasks_are_untouched(settings: Settings) -> None:
    key = RunKey("cli", "cli__run", "train")
    with task_run(settings, key, tags={TAG_FEATURE_SERVICE: "svc"}) as train:
        with child_run(train.info.run_id, "trial-0") as t0:
            pass
        with child_run(train.info.run_id, "trial-1") as t1:
            pass
    # evaluate: its own task run, nested under the (finished) train run
    eval_key = RunKey("cli", "cli__run", "evaluate")
    with task_run(settings, eval_key, parent_run_id=train.info.run_id) as ev:
        pass
    mlf = tracking.client(settings)
    for run_id in (t0.info.run_id, t1.info.run_id, ev.info.run_id):
        assert mlf.get_run(run_id).data.tags["mlflow.parentRunId"] == train.info.run_id
    trial_tags = mlf.get_run(t0.info.run_id).data.tags
    assert trial_tags[TAG_FEATURE_SERVICE] == "svc"  # descriptive tags are inherited
    assert "flywheel.task_id" not in trial_tags  # identifying ones are not: a retry finds only the task run

    # retrying evaluate replaces only the evaluate run
    with task_run(settings, eval_key, parent_run_id=train.info.run_id) as ev2:
        pass
    assert _active_runs(settings, eval_key) == [ev2.info.run_id]
    assert _active_runs(settings, key) == [train.info.run_id]
    assert mlf.get_run(t1.info.run_id).info.lifecycle_stage == "active"
    assert mlf.get_run(ev.info.run_id).info.lifecycle_stage == "deleted"


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend and artifacts in tmp)."""
    with start_mlflow_server(tmp_path) as url:
        yield url


def test_tracking_server_via_env(
    settings: Settings, mlflow_server: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    capfd.readouterr()
    key = RunKey("taxi_training", "manual__1", "train")
    with task_run(settings, key) as first:
        mlflow.log_metric("x", 1.0)
    with task_run(settings, key) as second:
        mlflow.log_text("hello", "note.txt")
    assert _active_runs(settings, key) == [second.info.run_id]
    mlf = tracking.client(settings)
    assert mlf.tracking_uri == mlflow_server
    assert mlf.get_run(first.info.run_id).info.lifecycle_stage == "deleted"
    # artifacts go through the server (proxied), not to the local data root
    assert [a.path for a in mlf.list_artifacts(second.info.run_id)] == ["note.txt"]
    assert not (Path(settings.resolved_data_root()) / "mlflow").exists()
    # MLflow prints run URLs to stdout for server runs: suppressed, the CLI's stdout is one JSON line
    assert "View run" not in capfd.readouterr().out
