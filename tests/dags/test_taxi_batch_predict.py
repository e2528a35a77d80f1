"""taxi_batch_predict: structure, schedule and outlet, the shard plan, a skipped run without champion."""

from __future__ import annotations

import copy
from typing import Any

import pytest

DAG_ID = "taxi_batch_predict"
FEATURES = ("flywheel-features", "flywheel://features/")
PREDICTIONS = ("flywheel-predictions", "flywheel://predictions/")
INTERVALS = [
    ["--start", "2024-01-02", "--end", "2024-01-04"],
    ["--start", "2024-01-06", "--end", "2024-01-07"],
]
RESOLVED = {"step": "resolve-model", "name": "taxi_tips", "version": "7", "spec": "taxi_tips@champion"}


@pytest.fixture(scope="module")
def dag(dagbag: Any) -> Any:
    return dagbag.dags[DAG_ID]


def test_structure_resolve_once_then_shards_then_one_commit_per_interval(dag: Any) -> None:
    from _lib import MlStepOperator
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    up = {t: dag.get_task(t).upstream_task_ids for t in dag.task_ids}
    assert up == {
        "plan_intervals": set(),
        "resolve-model": set(),
        "plan_shards": {"plan_intervals", "resolve-model"},
        "plan_commits": {"plan_intervals", "resolve-model"},
        "predict": {"plan_shards"},
        # the commit waits for EVERY shard instance (mapped -> mapped over different lists: no pairing)
        "predict-commit": {"plan_commits", "predict"},
        # one event per run, once every interval is committed
        "publish": {"predict-commit"},
    }
    resolve = dag.get_task("resolve-model")
    assert isinstance(resolve, MlStepOperator) and resolve.step == "resolve-model"
    assert resolve.argv == ["resolve-model", "--model", "{{ params.model }}", "--allow-missing"]
    for task_id, plan in (("predict", "plan_shards"), ("predict-commit", "plan_commits")):
        task = dag.get_task(task_id)
        assert isinstance(task, MappedOperator) and task.partial_kwargs["step"] == task_id
        assert task.expand_input.value["argv"].operator.task_id == plan


def test_schedule_is_the_features_asset_and_publish_emits_predictions(dag: Any, dagbag: Any) -> None:
    from airflow.sdk import Asset

    condition = dag.timetable.asset_condition
    assert [(a.name, a.uri) for a in condition.objects if isinstance(a, Asset)] == [FEATURES]
    materialize = dagbag.dags["taxi_features"].get_task("materialize").partial_kwargs["outlets"]
    assert [(o.name, o.uri) for o in materialize] == [FEATURES]
    outlets = dag.get_task("publish").outlets
    assert [(o.name, o.uri) for o in outlets] == [PREDICTIONS]
    for task_id in ("predict", "predict-commit"):
        assert not dag.get_task(task_id).partial_kwargs.get("outlets"), f"{task_id} must not announce data"
    # one run at a time: runs publish in the order of their features events
    assert dag.max_active_runs == 1
    # taxi_monitoring consumes exactly this Asset
    monitoring = dagbag.dags["taxi_monitoring"].timetable.asset_condition
    assert [(a.name, a.uri) for a in monitoring.objects if isinstance(a, Asset)] == [PREDICTIONS]


def test_params(dag: Any) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = dag.params
    assert params["model"] == "taxi_tips@champion" and params["shards"] == 2
    for key, value in {"shards": 0, "model": "taxi tips", "interval_start": "2024-02-30"}.items():
        with pytest.raises(ParamValidationError):
            copy.deepcopy(params.get_param(key)).resolve(value)
    assert copy.deepcopy(params.get_param("model")).resolve("taxi_tips/3") == "taxi_tips/3"


def test_shard_plan_pins_the_version_and_covers_intervals_times_shards() -> None:
    from _lib.prediction import shard_plan

    plan = shard_plan(INTERVALS, RESOLVED, 3, "scheduled__2024-01-02T00:00:00+00:00")
    key = "scheduled__2024-01-02T00_00_00_00_00"
    common = ["--model", "taxi_tips/7", "--shards", "3", "--run-key", key]
    assert plan["shards"] == [[*iv, "--shard", str(i), *common] for iv in INTERVALS for i in range(3)]
    assert len(plan["shards"]) == 6
    assert plan["commits"] == [[*iv, *common] for iv in INTERVALS]


def test_no_champion_skips_with_the_reason() -> None:
    from _lib.prediction import shard_plan
    from airflow.sdk.exceptions import AirflowSkipException

    missing = {"step": "resolve-model", "version": None, "reason": "no champion yet: run taxi_training"}
    with pytest.raises(AirflowSkipException, match="no champion yet"):
        shard_plan(INTERVALS, missing, 2, "manual__x")


def commit_summary(start: str, end: str, version: str = "7") -> dict[str, Any]:
    partition = {"dt": start, "uri": f"file:///p/dt={start}", "rows": 10, "sha256": "x"}
    return {"step": "predict", "model": {"name": "taxi_tips", "version": version},
            "interval": {"start": start, "end": end}, "rows": 10, "partitions": [partition]}  # fmt: skip


def test_publish_lists_every_committed_interval_in_day_order() -> None:
    from _lib.intervals import plan_intervals
    from _lib.prediction import predictions_event

    # mapped commits return in map-index order, not necessarily in day order
    commits = [commit_summary("2024-01-06", "2024-01-07"), commit_summary("2024-01-02", "2024-01-04")]
    extra = predictions_event(commits, "manual__r")
    assert extra["intervals"] == [{"start": "2024-01-02", "end": "2024-01-04"},
                                  {"start": "2024-01-06", "end": "2024-01-07"}]  # fmt: skip
    assert [p["dt"] for p in extra["partitions"]] == ["2024-01-02", "2024-01-06"]
    assert "sha256" not in extra["partitions"][0] and extra["models"] == ["taxi_tips/7"]
    assert extra["run_id"] == "manual__r" and "interval" not in extra
    # the consumer (taxi_monitoring, one day per task) plans exactly these days, gap kept
    assert plan_intervals([extra], {}, max_days=1) == [
        ["--start", "2024-01-02", "--end", "2024-01-03"],
        ["--start", "2024-01-03", "--end", "2024-01-04"],
        ["--start", "2024-01-06", "--end", "2024-01-07"],
    ]


def test_publish_skips_without_commits_and_fails_on_a_commit_without_summary() -> None:
    from _lib.prediction import predictions_event
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    for nothing in (None, []):
        with pytest.raises(AirflowSkipException, match="no interval committed"):
            predictions_event(nothing, "r")
    # a commit whose summary is lost: its days would go unmonitored, so nothing is announced
    good = commit_summary("2024-01-02", "2024-01-03")
    with pytest.raises(AirflowFailException, match=r"map index\(es\) \[1, 2\] returned no summary"):
        predictions_event([good, None, {"step": "predict"}], "r")


def test_mapped_shard_renders_its_argv(dag: Any) -> None:
    predict = dag.get_task("predict")
    one = ["--start", "2024-01-02", "--end", "2024-01-04", "--shard", "1", "--model", "taxi_tips/7",
           "--shards", "2", "--run-key", "k"]  # fmt: skip
    task = predict.unmap({"argv": one})
    task.render_template_fields({"params": dag.params.dump()}, jinja_env=dag.get_template_env())
    assert task.argv == ["predict", *one]
    assert task.command()[1:] == task.argv
