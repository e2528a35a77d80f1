"""The training steps through the CLI, as a DAG runs them, without Airflow: train -> evaluate ->
export-onnx -> check-onnx -> register -> promote, on synthetic trips with real Feast features.

One data root for the module: 8 days of synthetic trips (2,000 a day) through ingest and build-features,
a training set of days 1-6 and an eval set of days 7-8 (Feast point-in-time join). Then:

* run A (default config, 2 trials): the gate's decision follows the numbers (promoted exactly when it beats
  the three baselines; otherwise the reasons name each baseline it did not beat). On this synthetic data the
  network and the gradient-boosted tree are within a few thousandths of ROC-AUC, so which one wins is not
  fixed: a forced promotion (recorded) then makes A the champion either way;
* run B (1 epoch at lr 1e-6) is evaluated against the champion on the same rows and stays challenger;
* run C's export is corrupted (fault injection, allowed by the environment): check-onnx fails and the gate
  blocks it; without the environment switch the fault flag is refused;
* a retried train task (same DAG run key) leaves one MLflow run, not two.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli

# the module fixture trains three models before the first test (setup counts against the timeout)
pytestmark = pytest.mark.timeout(2400)
FIRST = dt.date(2024, 3, 4)
DAYS = 8
TRIPS = 2000


def _day(offset: int) -> str:
    return (FIRST + dt.timedelta(days=offset)).isoformat()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("training_pipeline") / "data"
    return {
        "FLYWHEEL_DATA_ROOT": str(data),
        "FLYWHEEL_CODE_VERSION": "test",
        "FLYWHEEL_ALLOW_FAULT_INJECTION": "true",
        "MLFLOW_TRACKING_URI": "",
    }


@pytest.fixture(scope="module")
def sets(env: dict[str, str]) -> dict[str, str]:
    """Curated trips and features for 8 days; the train (days 1-6) and eval (7-8) snapshots."""
    start, end = _day(0), _day(DAYS)
    run_cli(
        "extract",
        "--source",
        "synthetic",
        "--start",
        start,
        "--end",
        end,
        "--trips-per-day",
        str(TRIPS),
        env=env,
    )
    for step in ("transform", "validate", "publish", "build-features"):
        run_cli(step, "--start", start, "--end", end, env=env)
    run_cli("feature-apply", env=env)
    train = run_cli("training-set", "--start", start, "--end", _day(6), env=env)
    evaluation = run_cli("training-set", "--start", _day(6), "--end", end, env=env)
    assert train["rows"] > 10_000 and evaluation["rows"] > 3_000
    return {"train": train["uri"], "eval": evaluation["uri"]}


def key(run: str, task: str) -> list[str]:
    return ["--dag-id", "taxi_training", "--dag-run-id", run, "--task-id", task]


def chain(
    env: dict[str, str], sets: dict[str, str], run: str, *train_args: str, fault: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["train"] = run_cli("train", "--training-set", sets["train"], *train_args, *key(run, "train"), env=env)
    bundle = ["--bundle", out["train"]["bundle"]]
    out["evaluate"] = run_cli(
        "evaluate",
        *bundle,
        "--training-set",
        sets["train"],
        "--eval-set",
        sets["eval"],
        *key(run, "evaluate"),
        env=env,
    )
    faults = ["--inject-fault", "corrupt-onnx"] if fault else []
    out["export"] = run_cli(
        "export-onnx", *bundle, "--eval-set", sets["eval"], *faults, *key(run, "export-onnx"), env=env
    )
    out["check"] = run_cli(
        "check-onnx", *bundle, "--eval-set", sets["eval"], *key(run, "check-onnx"), env=env
    )
    out["register"] = run_cli("register", *bundle, *key(run, "register"), env=env)
    out["promote"] = run_cli("promote", *bundle, *key(run, "promote"), env=env)
    return out


@pytest.fixture(scope="module")
def runs(env: dict[str, str], sets: dict[str, str]) -> Iterator[dict[str, Any]]:
    out = {"A": chain(env, sets, "run_A")}
    out["A_forced"] = run_cli("promote", "--bundle", out["A"]["train"]["bundle"], "--force", "--force-reason",
                              "bootstrap the first champion", *key("run_A", "promote"), env=env)  # fmt: skip
    out["B"] = chain(env, sets, "run_B", "--trials", "1", "--max-epochs", "1", "--learning-rate", "1e-6")
    out["C"] = chain(env, sets, "run_C", "--trials", "1", fault=True)
    yield out


def client(env: dict[str, str]) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{env['FLYWHEEL_DATA_ROOT']}/mlflow/mlflow.db")


def expected_blockers(evaluation: dict[str, Any]) -> set[str]:
    """The baselines the candidate did not beat on the eval window (from the evaluate summary): the lower
    bound of the paired interval of candidate minus baseline is not above -promotion_margin (0.005)."""
    intervals = evaluation["comparisons"]["baselines"]
    assert set(intervals) == set(evaluation["baselines"])
    for name, value in evaluation["baselines"].items():
        assert intervals[name]["delta"] == pytest.approx(evaluation["candidate"]["roc_auc"] - value, abs=1e-9)
    return {name for name, ci in intervals.items() if not ci["low"] > -0.005}


def test_first_model_decision_follows_the_numbers_and_force_is_recorded(
    runs: dict[str, Any], env: dict[str, str]
) -> None:
    a = runs["A"]
    evaluation = a["evaluate"]
    assert evaluation["champion"] is None
    assert set(evaluation["baselines"]) == {"majority_class", "payment_type_rule", "gradient_boosted_tree"}
    assert evaluation["candidate"]["roc_auc"] > evaluation["baselines"]["majority_class"] + 0.3
    assert a["check"]["passed"] is True and a["check"]["parity_max_abs_diff"] <= 1e-5
    blockers = expected_blockers(evaluation)
    decision = a["promote"]
    assert decision["promoted"] is (not blockers) and decision["forced"] is False
    blocking = [r for r in decision["reasons"] if "does not beat" in r]
    named = {name for name in evaluation["baselines"] if any(name in r for r in blocking)}
    assert named == blockers, decision["reasons"]
    # the forced promotion: champion whatever the gate said, recorded with its reason (forced only when
    # something blocked: a candidate the gate promoted needs no force)
    forced = runs["A_forced"]
    assert forced["promoted"] is True and forced["forced"] is bool(blockers)
    assert forced["force_reason"] == "bootstrap the first champion"
    if blockers:
        assert {n for n in evaluation["baselines"] if any(n in r for r in forced["reasons"])} == blockers
    mlflow = client(env)
    version = mlflow.get_model_version_by_alias("taxi_tips", "champion")
    assert str(version.version) == forced["version"] == a["register"]["version"]
    assert version.tags["flywheel.promotion.forced"] == str(bool(blockers)).lower()
    meta = json.loads((Path(a["train"]["bundle"]) / "model.json").read_text())
    assert meta["training_set_uri"] == a["train"]["training_set"]
    assert meta["train_window"] == {"start": _day(0), "end": _day(6)}
    assert meta["mlflow_run_id"] == a["train"]["run_id"] == a["promote"]["run_id"]


def test_worse_candidate_is_compared_with_the_champion_and_stays_challenger(
    runs: dict[str, Any], env: dict[str, str]
) -> None:
    a, b = runs["A"], runs["B"]
    assert b["evaluate"]["champion_version"]["version"] == runs["A_forced"]["version"]
    assert b["evaluate"]["champion"]["rows"] == b["evaluate"]["candidate"]["rows"]
    # the champion scored through its registered ONNX model equals its own evaluation on the same rows
    assert b["evaluate"]["champion"]["roc_auc"] == pytest.approx(
        a["evaluate"]["candidate"]["roc_auc"], abs=1e-6
    )
    assert b["promote"]["promoted"] is False and b["promote"]["alias"] == "challenger"
    assert any("baseline" in r or "champion" in r for r in b["promote"]["reasons"]), b["promote"]["reasons"]
    mlflow = client(env)
    assert (
        str(mlflow.get_model_version_by_alias("taxi_tips", "champion").version) == runs["A_forced"]["version"]
    )
    # run C was marked challenger after B (the fixture runs all three first): B's own tags say challenger
    version = mlflow.get_model_version("taxi_tips", b["promote"]["version"])
    assert version.tags["flywheel.promotion.decision"] == "challenger"
    assert json.loads(version.tags["flywheel.promotion.reasons"]) == b["promote"]["reasons"]


def test_corrupted_onnx_blocks_promotion(runs: dict[str, Any], env: dict[str, str]) -> None:
    c = runs["C"]
    assert c["export"]["fault_injected"] == "corrupt-onnx"
    assert c["check"]["passed"] is False and any("sha256" in r for r in c["check"]["reasons"])
    assert c["promote"]["promoted"] is False
    assert any("onnx" in r.lower() for r in c["promote"]["reasons"])
    champion = client(env).get_model_version_by_alias("taxi_tips", "champion")
    assert str(champion.version) == runs["A_forced"]["version"]


def test_fault_injection_is_refused_unless_allowed(
    runs: dict[str, Any], env: dict[str, str], sets: dict[str, str]
) -> None:
    bundle = runs["A"]["train"]["bundle"]
    result = run_cli(
        "export-onnx",
        "--bundle",
        bundle,
        "--eval-set",
        sets["eval"],
        "--inject-fault",
        "corrupt-onnx",
        env={**env, "FLYWHEEL_ALLOW_FAULT_INJECTION": "false"},
        check=False,
    )
    assert result["returncode"] == 1
    assert "FLYWHEEL_ALLOW_FAULT_INJECTION" in result["stderr"]


def test_retried_task_replaces_its_run(
    runs: dict[str, Any], env: dict[str, str], sets: dict[str, str]
) -> None:
    mlflow = client(env)
    exp = mlflow.get_experiment_by_name("flywheel-taxi-tips")
    query = "tags.`flywheel.dag_run_id` = 'run_B' and tags.`flywheel.task_id` = 'evaluate'"
    before = mlflow.search_runs([exp.experiment_id], filter_string=query)
    assert len(before) == 1
    b = runs["B"]
    run_cli(
        "evaluate",
        "--bundle",
        b["train"]["bundle"],
        "--training-set",
        sets["train"],
        "--eval-set",
        sets["eval"],
        *key("run_B", "evaluate"),
        env=env,
    )
    after = mlflow.search_runs([exp.experiment_id], filter_string=query)
    assert len(after) == 1 and after[0].info.run_id != before[0].info.run_id


def test_train_with_two_processes_runs_ddp_under_torchrun(env: dict[str, str], sets: dict[str, str]) -> None:
    """FLYWHEEL_TRAIN_PROCESSES=2: each trial is a torchrun job (2 gloo processes); one bundle, one run."""
    ddp_env = {**env, "FLYWHEEL_TRAIN_PROCESSES": "2", "FLYWHEEL_TRAIN_THREADS": "1"}
    out = run_cli("train", "--training-set", sets["train"], "--trials", "1", "--max-epochs", "4",
                  *key("run_ddp", "train"), env=ddp_env)  # fmt: skip
    assert out["processes"] == 2
    meta = json.loads((Path(out["bundle"]) / "model.json").read_text())
    assert meta["world_size"] == 2 and meta["mlflow_run_id"] == out["run_id"]
    # a wiring test (identical weights across ranks: tests/integration/test_ddp.py): 4 short epochs learn
    # something, not everything
    assert meta["epochs_run"] <= 4 and out["validation"]["roc_auc"] > 0.6
    run = client(env).get_run(out["run_id"])
    assert run.data.tags["flywheel.dag_run_id"] == "run_ddp"
    assert run.data.metrics["val_roc_auc"] == pytest.approx(out["validation"]["roc_auc"])
