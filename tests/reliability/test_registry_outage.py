"""The MLflow server goes away in the middle of ``register`` and of ``promote``: one clear error line, no
version without its tags, no ghost run or stray logged model once the retry (server back, same store) has
run, and the retry completes the step (docs/reliability.md).

MLflow writes a version's tags with the version (one call) but a promotion's tags and its alias in
separate calls: an interrupted promotion leaves the decision recorded and the old alias in place; the
test asserts exactly that state, then that the retry completes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ml_tasks.contract import (
    CHALLENGER,
    CHAMPION,
    EXPERIMENT,
    REGISTERED_MODEL,
    TAG_DECISION,
    TAG_FORCE_REASON,
    TAG_FORCED,
    TAG_METRIC,
    TAG_ONNX_SHA256,
    TAG_TASK_ID,
)
from ml_tasks.models import tracking
from ml_tasks.settings import Settings
from tests.conftest import run_cli
from tests.integration._servers.mlflow import MlflowServer
from tests.reliability._kill import fails_while_down

RUN = ["--dag-id", "reliability", "--dag-run-id", "registry__1"]


@dataclass
class Candidate:
    """A trained, evaluated, exported and checked bundle whose runs live on ``server``."""

    server: MlflowServer
    env: dict[str, str]
    bundle: str
    train_run: str

    def client(self) -> Any:
        return tracking.client(Settings(data_root=self.env["FLYWHEEL_DATA_ROOT"]))


@pytest.fixture(scope="module")
def candidate(pipeline_root: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Candidate]:
    base = tmp_path_factory.mktemp("registry-outage")
    server = MlflowServer(base / "mlflow-server").start()
    try:
        root = pipeline_root.copy_to(base / "data")
        env = {
            **root.env,
            "MLFLOW_TRACKING_URI": server.url,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # fail in seconds, not after MLflow's 4 minutes
            "FLYWHEEL_TRAIN_THREADS": "1",
        }
        train, evals = root.training_set["uri"], root.eval_set["uri"]
        trained = run_cli("train", "--training-set", train, "--trials", "1", "--max-epochs", "1",
                          *RUN, "--task-id", "train", env=env)  # fmt: skip
        bundle = ["--bundle", trained["bundle"]]
        run_cli("evaluate", *bundle, "--training-set", train, "--eval-set", evals, *RUN, "--task-id",
                "evaluate", env=env)  # fmt: skip
        for step in ("export-onnx", "check-onnx"):
            run_cli(step, *bundle, "--eval-set", evals, *RUN, "--task-id", step, env=env)
        yield Candidate(server, env, trained["bundle"], trained["run_id"])
    finally:
        server.stop()


def _interrupted(candidate: Candidate, point: str, argv: list[str], task: str) -> None:
    """Run the step paused at ``point``, stop the server, let the step go on: it fails with the one line;
    then start the server again (same port, same store)."""
    fails_while_down(point, argv, candidate.env, candidate.server, task)
    candidate.server.start()


def _task_runs(candidate: Candidate, task: str) -> list[tuple[str, str]]:
    """(status, lifecycle stage) of every run of ``task`` on the server, deleted ones included."""
    from mlflow.entities import ViewType

    mlf = candidate.client()
    exp = tracking.experiment_id(mlf, EXPERIMENT, Settings(data_root=candidate.env["FLYWHEEL_DATA_ROOT"]))
    runs = mlf.search_runs([exp], f"tags.`{TAG_TASK_ID}` = '{task}'", run_view_type=ViewType.ALL)
    return sorted((r.info.status, r.info.lifecycle_stage) for r in runs)


def _our_logged_models(candidate: Candidate) -> list[Any]:
    mlf = candidate.client()
    experiment = mlf.get_run(candidate.train_run).info.experiment_id
    models = mlf.search_logged_models([experiment], f"source_run_id = '{candidate.train_run}'")
    return [m for m in models if TAG_ONNX_SHA256 in (m.tags or {})]


def test_register_interrupted_leaves_no_version_and_its_retry_registers_once(
    candidate: Candidate, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["register", "--bundle", candidate.bundle, *RUN, "--task-id", "register"]
    # the model and its files are logged, the version not yet created
    _interrupted(candidate, "model-logged", argv, "register")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", candidate.server.url)
    mlf = candidate.client()
    assert mlf.search_model_versions(f"name = '{REGISTERED_MODEL}'") == []  # no half-made version
    logged = _our_logged_models(candidate)
    assert [str(m.status) for m in logged] == ["READY"]
    assert _task_runs(candidate, "register") == [("RUNNING", "active")]  # nothing could end it

    summary = run_cli(*argv, env=candidate.env)

    versions = mlf.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert [str(v.version) for v in versions] == [summary["version"]] == ["1"], versions
    version = versions[0]
    # the retry registered the interrupted try's logged model: one logged model, one version, the same
    # lineage tags (the logged model's now name the retry's runs)
    after = _our_logged_models(candidate)
    assert [m.model_id for m in after] == [logged[0].model_id]
    assert version.source == f"models:/{logged[0].model_id}"
    assert version.run_id == candidate.train_run
    assert version.tags[TAG_ONNX_SHA256] == logged[0].tags[TAG_ONNX_SHA256] == summary["onnx_sha256"]
    lineage = {k: v for k, v in after[0].tags.items() if k.startswith("flywheel.")}
    assert lineage == {k: v for k, v in version.tags.items() if k.startswith("flywheel.")}
    assert any(k.startswith(f"{TAG_METRIC}.") for k in version.tags), version.tags
    # no ghost: the interrupted try's run deleted, the retry's finished
    assert _task_runs(candidate, "register") == [("FINISHED", "active"), ("RUNNING", "deleted")]
    # a second retry reuses the version
    again = run_cli(*argv, env=candidate.env)
    assert again["version"] == "1" and again["reused"] is True
    assert len(mlf.search_model_versions(f"name = '{REGISTERED_MODEL}'")) == 1


def test_promote_interrupted_keeps_the_old_alias_and_its_retry_completes_it(
    candidate: Candidate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", candidate.server.url)
    version = run_cli("register", "--bundle", candidate.bundle, *RUN, "--task-id", "register",
                      env=candidate.env)["version"]  # fmt: skip
    argv = ["promote", "--bundle", candidate.bundle, "--force", "--force-reason", "outage test",
            *RUN, "--task-id", "promote"]  # fmt: skip
    mlf = candidate.client()
    assert mlf.get_registered_model(REGISTERED_MODEL).aliases == {}

    # the decision's tags are set, the alias not yet moved
    _interrupted(candidate, "decision-recorded", argv, "promote")
    half = mlf.get_model_version(REGISTERED_MODEL, version)
    assert half.aliases == [] and mlf.get_registered_model(REGISTERED_MODEL).aliases == {}
    assert half.tags[TAG_DECISION] == CHAMPION

    summary = run_cli(*argv, env=candidate.env)

    assert summary["promoted"] is True and summary["version"] == version
    aliases = mlf.get_registered_model(REGISTERED_MODEL).aliases
    assert {alias: str(v) for alias, v in aliases.items()} == {CHAMPION: version}
    promoted = mlf.get_model_version(REGISTERED_MODEL, version)
    assert promoted.aliases == [CHAMPION] and CHALLENGER not in promoted.aliases
    assert promoted.tags[TAG_DECISION] == CHAMPION
    assert promoted.tags[TAG_FORCED] == "true"
    assert promoted.tags[TAG_FORCE_REASON] == "outage test"
    assert _task_runs(candidate, "promote") == [("FINISHED", "active"), ("RUNNING", "deleted")]
