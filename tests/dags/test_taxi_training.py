"""taxi_training: structure, schedule (weekly + drift Asset), params, windows, argv, the announce."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from tests.dags.conftest import DAGS

DAG_ID = "taxi_training"
STEPS = {
    "training_set_train": "training-set",
    "training_set_eval": "training-set",
    "train": "train",
    "evaluate": "evaluate",
    "export-onnx": "export-onnx",
    "check-onnx": "check-onnx",
    "register": "register",
    "promote": "promote",
}
DRIFT = ("flywheel-drift", "flywheel://monitoring/drift")
CHAMPION = ("flywheel-champion-model", "flywheel://models/champion")


@pytest.fixture(scope="module")
def dag(dagbag: Any) -> Any:
    return dagbag.dags[DAG_ID]


@pytest.fixture
def fault_dag(monkeypatch: pytest.MonkeyPatch) -> Any:
    """taxi_training parsed on a platform that allows fault injection (the e2e platform does)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    monkeypatch.setenv("FLYWHEEL_ALLOW_FAULT_INJECTION", "true")
    bag = BundleDagBag(dag_folder=str(DAGS / f"{DAG_ID}.py"), bundle_path=DAGS)
    assert not bag.import_errors, bag.import_errors
    return bag.dags[DAG_ID]


def reduced_upstream(dag: Any, task_id: str) -> set[str]:
    """The direct upstreams of ``task_id`` that no other upstream already depends on."""
    direct = dag.get_task(task_id).upstream_task_ids
    implied = {a for u in direct for a in dag.get_task(u).get_flat_relative_ids(upstream=True)}
    return set(direct - implied)


def test_structure(dag: Any) -> None:
    from _lib import MlStepOperator

    assert sorted(dag.task_ids) == sorted([*STEPS, "plan_windows", "announce_champion"])
    for task_id, step in STEPS.items():
        task = dag.get_task(task_id)
        assert isinstance(task, MlStepOperator) and task.step == step
    # XComArgs add direct edges that other paths already imply (train -> promote): the structure is the
    # transitive reduction of the graph, and no task may lose an edge of it
    upstream = {t: reduced_upstream(dag, t) for t in dag.task_ids}
    assert upstream["training_set_train"] == upstream["training_set_eval"] == {"plan_windows"}
    assert upstream["train"] == {"training_set_train"}
    assert upstream["evaluate"] == {"train", "training_set_eval"}
    assert upstream["export-onnx"] == {"evaluate"}
    assert upstream["check-onnx"] == {"export-onnx"}
    assert upstream["register"] == {"check-onnx"}
    assert upstream["promote"] == {"register"}
    assert upstream["announce_champion"] == {"promote"}
    # the training step asks for the GPU profile (a GPU pod on Kubernetes); the others run on CPU
    assert dag.get_task("train").profile == "gpu"
    assert {dag.get_task(t).profile for t in STEPS if t != "train"} == {"cpu"}


def test_schedule_is_weekly_or_drift(dag: Any) -> None:
    from airflow.sdk import Asset
    from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule

    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    condition = dag.timetable.asset_condition
    assert isinstance(condition, Asset) and (condition.name, condition.uri) == DRIFT
    assert dag.timetable.timetable.expression == "0 4 * * 1"
    announce = dag.get_task("announce_champion")
    assert [(o.name, o.uri) for o in announce.outlets] == [CHAMPION]
    assert not any(dag.get_task(t).outlets for t in STEPS)
    assert dag.max_active_runs == 1 and dag.catchup is False


def test_params_are_typed(dag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = dag.params
    assert params["train_days"] == 28 and params["eval_days"] == 7 and params["force_promote"] is False
    bad = {"window_end": "2024-02-30", "train_days": 0, "trials": 0, "promotion_margin": 2,
           "learning_rate": 0}  # fmt: skip
    for key, value in bad.items():
        with pytest.raises(ParamValidationError):
            copy.deepcopy(params.get_param(key)).resolve(value)
    assert "inject_fault" not in params  # a test hook: not in a production trigger form


def test_the_fault_param_exists_only_where_fault_injection_is_allowed(fault_dag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = fault_dag.params
    with pytest.raises(ParamValidationError):
        copy.deepcopy(params.get_param("inject_fault")).resolve("delete-data")
    assert copy.deepcopy(params.get_param("inject_fault")).resolve("corrupt-onnx") == "corrupt-onnx"


def test_windows_are_adjacent_and_the_eval_window_is_later() -> None:
    from _lib.windows import training_windows

    assert training_windows(dt.date(2024, 3, 1), 28, 7) == {
        "train_start": "2024-01-26", "train_end": "2024-02-23",
        "eval_start": "2024-02-23", "eval_end": "2024-03-01",
    }  # fmt: skip


def test_window_end_comes_from_param_then_drift_then_schedule() -> None:
    from _lib.windows import window_end_for_run
    from airflow.sdk.exceptions import AirflowFailException

    tz = "America/Chicago"
    drift = [{"interval": {"start": "2024-03-01", "end": "2024-03-02"}},
             {"interval": {"start": "2024-03-04", "end": "2024-03-05"}}]  # fmt: skip
    # 2024-03-11 04:00 Chicago = 09:00 UTC
    scheduled = dt.datetime(2024, 3, 11, 9, tzinfo=dt.UTC)
    assert window_end_for_run({"window_end": "2024-02-01"}, drift, scheduled, tz) == (
        dt.date(2024, 2, 1),
        "param",
    )
    assert window_end_for_run({}, drift, scheduled, tz) == (dt.date(2024, 3, 5), "drift events")
    assert window_end_for_run({}, [], scheduled, tz) == (dt.date(2024, 3, 11), "schedule")
    # 03:00 UTC is still the previous local day in Chicago
    late = dt.datetime(2024, 3, 11, 3, tzinfo=dt.UTC)
    assert window_end_for_run({}, [], late, tz) == (dt.date(2024, 3, 10), "schedule")
    with pytest.raises(AirflowFailException, match="window_end"):
        window_end_for_run({}, [], None, tz)
    with pytest.raises(AirflowFailException, match=r"no extra\.interval\.end"):
        window_end_for_run({}, [{"decision": {}}], None, tz)


def test_plan_windows_task(dag: Any) -> None:
    plan = dag.get_task("plan_windows").python_callable
    params = {**dag.params.dump(), "window_end": "2024-01-28", "train_days": 6, "eval_days": 2}
    assert plan(params=params, triggering_asset_events=None, data_interval_end=None) == {
        "train_start": "2024-01-20", "train_end": "2024-01-26", "eval_start": "2024-01-26",
        "eval_end": "2024-01-28", "window_source": "param",
    }  # fmt: skip


def _render(dag: Any, task_id: str, params: dict[str, Any], xcoms: dict[str, dict[str, Any]]) -> list[str]:
    """The task's argv rendered with a stand-in ``ti`` whose xcom_pull returns the given summaries."""

    class TI:
        def xcom_pull(self, task_ids: str, key: str = "return_value", **kwargs: Any) -> Any:
            # the upstream steps push each field of their summary (multiple_outputs)
            return xcoms[task_ids] if key == "return_value" else xcoms[task_ids][key]

    task = copy.deepcopy(dag.get_task(task_id))
    context = {"params": {**dag.params.dump(), **params}, "ti": TI(), "dag": dag, "run_id": "manual__1",
               "task": task}  # fmt: skip
    task.render_template_fields(context, jinja_env=dag.get_template_env())
    return list(task.argv)


def _xcoms() -> dict[str, dict[str, Any]]:
    return {
        "plan_windows": {"train_start": "2024-01-20", "train_end": "2024-01-26", "eval_start": "2024-01-26",
                         "eval_end": "2024-01-28"},
        "training_set_train": {"uri": "/d/training_sets/s/2024-01-20_2024-01-26"},
        "training_set_eval": {"uri": "/d/training_sets/s/2024-01-26_2024-01-28"},
        "train": {"bundle": "/d/models/taxi_tips/candidates/taxi_training/manual__1"},
    }  # fmt: skip


def test_argv_rendering(dag: Any) -> None:
    xcoms = _xcoms()
    key = ["--dag-id", DAG_ID, "--dag-run-id", "manual__1"]
    assert _render(dag, "training_set_eval", {}, xcoms) == [
        "training-set", "--start", "2024-01-26", "--end", "2024-01-28", "--feature-service", "taxi_tips_v1",
    ]  # fmt: skip
    # optional flags are dropped unless set
    assert _render(dag, "train", {"trials": 2}, xcoms) == [
        "train", "--training-set", "/d/training_sets/s/2024-01-20_2024-01-26", "--trials=2",
        *key, "--task-id", "train",
    ]  # fmt: skip
    assert _render(dag, "train", {"trials": 1, "max_epochs": 1, "learning_rate": 1e-6}, xcoms)[3:6] == [
        "--trials=1", "--max-epochs=1", "--learning-rate=1e-06",
    ]  # fmt: skip
    bundle = ["--bundle", xcoms["train"]["bundle"]]
    assert _render(dag, "promote", {}, xcoms) == ["promote", *bundle, *key, "--task-id", "promote"]
    forced = _render(dag, "promote", {"force_promote": True, "force_reason": "hotfix"}, xcoms)
    assert forced == ["promote", *bundle, "--force", "--force-reason=hotfix", *key, "--task-id", "promote"]
    assert not any("inject" in a for a in _render(dag, "export-onnx", {}, xcoms))
    # a production parse has no fault flag even if a run's conf carries the key
    conf_only = _render(dag, "export-onnx", {"inject_fault": "corrupt-onnx"}, xcoms)
    assert not any("inject" in a for a in conf_only)


def test_the_fault_flag_renders_where_fault_injection_is_allowed(fault_dag: Any) -> None:
    xcoms = _xcoms()
    assert "--inject-fault=corrupt-onnx" in _render(
        fault_dag, "export-onnx", {"inject_fault": "corrupt-onnx"}, xcoms
    )
    assert not any("inject" in a for a in _render(fault_dag, "export-onnx", {}, xcoms))


def test_announce_emits_only_a_new_champion(dag: Any) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    announce = dag.get_task("announce_champion").python_callable

    class Events(dict[Any, Any]):
        def __missing__(self, key: Any) -> Any:
            class Event:
                def __init__(self) -> None:
                    self.extra: dict[str, Any] = {}

            self[key] = Event()
            return self[key]

    events = Events()
    decision = {"promoted": True, "model": "taxi_tips", "version": "3", "run_id": "abc", "forced": False,
                "metric": "roc_auc", "value": 0.95, "reasons": []}  # fmt: skip
    extra = announce(decision=decision, outlet_events=events)
    assert extra == {"model": "taxi_tips", "version": "3", "run_id": "abc", "forced": False,
                     "metric": "roc_auc", "value": 0.95}  # fmt: skip
    assert next(iter(events.values())).extra == extra
    with pytest.raises(AirflowSkipException, match="beat"):
        announce(decision={"promoted": False, "reasons": ["roc_auc 0.7 does not beat baseline x 0.8"]},
                 outlet_events=Events())  # fmt: skip
