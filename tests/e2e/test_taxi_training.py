"""taxi_training under the real scheduler: a champion, a worse candidate kept out, a corrupt ONNX blocked.

Setup: the curated trips and feature tables of 8 days (synthetic) are seeded through the CLI, the steps the
ingest and features DAGs run (their runs under the scheduler are the subject of test_taxi_ingest.py,
test_taxi_features.py and the loop). Then three manual taxi_training runs over the same windows (train 6
days, eval the 2 later days):

1. default config, with the form's ``force_promote`` (and its reason): on this synthetic data the network and
   the gradient-boosted-tree baseline are within a few thousandths of ROC-AUC, so whether the gate alone
   would promote the first model is not fixed. The run records the gate's reasons (checked against the
   evaluation's numbers) and the forced promotion; it becomes ``champion`` and emits the champion Asset.
   (The unforced path is covered by tests/integration/test_training_pipeline.py and the gate's unit tests.)
2. a deliberately bad config (1 epoch at a learning rate of 1e-6): not promoted, alias ``challenger``,
   the decision names the baselines/champion it lost to; the champion alias does not move;
3. default config with ``inject_fault=corrupt-onnx`` (export-onnx corrupts its own output, which the
   platform allows only because FLYWHEEL_ALLOW_FAULT_INJECTION=true): check-onnx fails the hash and load
   checks and the gate blocks the promotion.

The registry is read directly (MlflowClient on the platform's SQLite store), not through the DAG's XCom.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_local import AirflowApi, Platform
from tests.e2e.conftest import TIMINGS, registry, seed_curated_and_features

DAG_ID = "taxi_training"
CHAMPION_ASSET = "flywheel-champion-model"
MODEL = "taxi_tips"
# the module fixture trains three models before the first test (setup counts against the timeout)
pytestmark = pytest.mark.timeout(3600)
TRIPS = 2500
# apart from the other e2e modules' days (ingest 2024-01-02..04 and 10, features 2024-01-15..17)
FIRST, DAYS = dt.date(2024, 1, 20), 8
WINDOWS = {"window_end": (FIRST + dt.timedelta(days=DAYS)).isoformat(), "train_days": 6, "eval_days": 2}
TASKS = [
    "plan_windows", "training_set_train", "training_set_eval", "train", "evaluate", "export-onnx",
    "check-onnx", "register", "promote", "announce_champion",
]  # fmt: skip


@pytest.fixture(scope="module")
def features_ready(airflow_platform: Platform) -> None:
    """Curated trips and features for the 8 days, seeded through ``ml-tasks`` (no DAG runs, no Asset
    events): one command per step over the whole range instead of 8 ingest runs and a features run."""
    started = time.monotonic()
    seed_curated_and_features(airflow_platform, FIRST, DAYS, TRIPS)
    TIMINGS[f"training: seed curated + features for {DAYS} days (CLI)"] = time.monotonic() - started


def run_training(api: AirflowApi, conf: dict[str, Any], label: str) -> dict[str, Any]:
    started = time.monotonic()
    run_id = api.trigger(DAG_ID, conf={**WINDOWS, **conf})
    run = api.wait_runs(DAG_ID, [run_id], timeout=1500)[run_id]
    TIMINGS[f"training: run '{label}'"] = time.monotonic() - started
    states = {t: ti["state"] for t, ti in api.task_instances(DAG_ID, run_id).items()}
    return {"run_id": run_id, "run": run, "states": states}


def alias_version(client: Any, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(MODEL, alias).version)
    except MlflowException:
        return None


@pytest.fixture(scope="module")
def runs(features_ready: None, api: AirflowApi, airflow_platform: Platform) -> Iterator[dict[str, Any]]:
    api.set_paused(DAG_ID, False)
    try:
        out: dict[str, Any] = {}
        out["first"] = run_training(
            api,
            {"force_promote": True, "force_reason": "e2e: bootstrap the first champion"},
            "first (forced)",
        )
        client = registry(airflow_platform)
        out["champion_after_first"] = alias_version(client, "champion")
        out["worse"] = run_training(
            api, {"trials": 1, "max_epochs": 1, "learning_rate": 1e-6}, "worse config"
        )
        out["champion_after_worse"] = alias_version(client, "champion")
        out["challenger_after_worse"] = alias_version(client, "challenger")
        out["corrupt"] = run_training(api, {"trials": 1, "inject_fault": "corrupt-onnx"}, "corrupt ONNX")
        out["champion_after_corrupt"] = alias_version(client, "champion")
        out["challenger_after_corrupt"] = alias_version(client, "challenger")
        yield out
    finally:
        api.set_paused(DAG_ID, True)


def promote_summary(api: AirflowApi, run_id: str) -> dict[str, Any]:
    return dict(api.xcom(DAG_ID, run_id, "promote"))


def test_first_run_trains_and_promotes_a_champion(
    runs: dict[str, Any], api: AirflowApi, airflow_platform: Platform
) -> None:
    first = runs["first"]
    assert first["run"]["state"] == "success", first["states"]
    assert first["states"] == dict.fromkeys(TASKS, "success")
    windows = api.xcom(DAG_ID, first["run_id"], "plan_windows")
    assert windows == {
        "train_start": "2024-01-20", "train_end": "2024-01-26", "eval_start": "2024-01-26",
        "eval_end": "2024-01-28", "window_source": "param",
    }  # fmt: skip
    decision = promote_summary(api, first["run_id"])
    assert decision["promoted"] is True and decision["forced"] is True
    assert decision["force_reason"] == "e2e: bootstrap the first champion"
    assert runs["champion_after_first"] == decision["version"]
    # the gate's own verdict is recorded: exactly the baselines the candidate did not beat
    evaluation = api.xcom(DAG_ID, first["run_id"], "evaluate")
    assert evaluation["champion"] is None  # nothing to compare with yet
    auc = evaluation["candidate"]["roc_auc"]
    assert set(evaluation["baselines"]) == {"majority_class", "payment_type_rule", "gradient_boosted_tree"}
    assert auc > evaluation["baselines"]["majority_class"] + 0.3
    blockers = {name for name, value in evaluation["baselines"].items() if not auc > value}
    assert {n for n in evaluation["baselines"] if any(n in r for r in decision["reasons"])} == blockers
    # the bundle on disk: model, ONNX, reports, the model card
    bundle = Path(api.xcom(DAG_ID, first["run_id"], "train")["bundle"])
    for name in ("model.pt", "model.json", "preprocessing.json", "model.onnx", "evaluation.json",
                 "model_card.md", "decision.json"):  # fmt: skip
        assert (bundle / name).is_file(), name
    check = api.xcom(DAG_ID, first["run_id"], "check-onnx")
    assert check["passed"] is True and check["parity_max_abs_diff"] <= 1e-5
    # one MLflow run per task, children of the train run, tagged with the DAG run
    client = registry(airflow_platform)
    version = client.get_model_version(MODEL, decision["version"])
    train_run = client.get_run(decision["run_id"])
    if airflow_platform.mlflow_url:  # the server stores the artifacts it is sent under the data root
        assert train_run.info.artifact_uri.startswith("mlflow-artifacts:/"), train_run.info.artifact_uri
        stored = airflow_platform.mlflow_artifacts / train_run.info.experiment_id / train_run.info.run_id
        assert (stored / "artifacts").is_dir(), f"no artifacts of the train run under {stored}"
    assert train_run.data.tags["flywheel.dag_run_id"] == first["run_id"]
    assert train_run.data.tags["flywheel.training_set.sha256"]
    children = client.search_runs(
        [train_run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{train_run.info.run_id}'"
    )
    tasks = sorted(r.data.tags.get("flywheel.task_id", "trial") for r in children)
    assert tasks == sorted(["evaluate", "export-onnx", "check-onnx", "register", "promote", "trial", "trial"])
    assert version.tags.get("flywheel.promotion.decision") == "champion"
    assert version.tags.get("flywheel.promotion.forced") == "true"
    # and the champion Asset carries the version
    events = [
        e for e in api.asset_events(CHAMPION_ASSET, source_dag_id=DAG_ID)
        if e["source_run_id"] == first["run_id"]
    ]  # fmt: skip
    assert len(events) == 1 and events[0]["extra"]["version"] == decision["version"]


def test_worse_config_stays_challenger_and_says_why(runs: dict[str, Any], api: AirflowApi) -> None:
    worse = runs["worse"]
    assert worse["run"]["state"] == "success", worse["states"]
    assert worse["states"]["announce_champion"] == "skipped"
    decision = promote_summary(api, worse["run_id"])
    assert decision["promoted"] is False and decision["alias"] == "challenger"
    assert decision["reasons"], decision
    text = " ".join(decision["reasons"])
    assert "baseline" in text or "champion" in text, text
    assert runs["champion_after_worse"] == runs["champion_after_first"]
    assert runs["challenger_after_worse"] == decision["version"] != runs["champion_after_first"]
    # the champion was scored on the same eval rows as the candidate
    evaluation = api.xcom(DAG_ID, worse["run_id"], "evaluate")
    assert evaluation["champion_version"]["version"] == runs["champion_after_first"]
    assert evaluation["champion"]["rows"] == evaluation["candidate"]["rows"] == evaluation["rows"]


def test_corrupted_onnx_blocks_promotion(
    runs: dict[str, Any], api: AirflowApi, airflow_platform: Platform
) -> None:
    corrupt = runs["corrupt"]
    assert corrupt["run"]["state"] == "success", corrupt["states"]
    export = api.xcom(DAG_ID, corrupt["run_id"], "export-onnx")
    assert export["fault_injected"] == "corrupt-onnx"
    check = api.xcom(DAG_ID, corrupt["run_id"], "check-onnx")
    assert check["passed"] is False
    assert any("sha256" in r for r in check["reasons"]), check["reasons"]
    decision = promote_summary(api, corrupt["run_id"])
    assert decision["promoted"] is False
    assert any("onnx" in r.lower() for r in decision["reasons"]), decision["reasons"]
    assert runs["champion_after_corrupt"] == runs["champion_after_first"]
    version = registry(airflow_platform).get_model_version(MODEL, decision["version"])
    assert version.tags["flywheel.promotion.decision"] == "challenger"
    assert "onnx" in version.tags["flywheel.promotion.reasons"].lower()
    assert json.loads((Path(api.xcom(DAG_ID, corrupt["run_id"], "train")["bundle"]) / "decision.json")
                      .read_text())["promoted"] is False  # fmt: skip
