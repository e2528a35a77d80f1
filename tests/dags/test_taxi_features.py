"""taxi_features: structure, Asset schedule and outlet, params, the plan task, mapped steps, a run."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.dags._taxi_features import argv, extra
from tests.dags.conftest import DAGS, run_python

DAG_ID = "taxi_features"
TASKS = ["features-pending", "plan_intervals", "build-features", "materialize"]
CURATED = ("flywheel-curated-trips", "flywheel://curated/trips")
# Airflow normalises a URI without path to a trailing slash
FEATURES = ("flywheel-features", "flywheel://features/")


@pytest.fixture(scope="module")
def dag(dagbag: Any) -> Any:
    return dagbag.dags[DAG_ID]


# -- structure -------------------------------------------------------------------------------------------
def test_structure_plan_then_mapped_build_then_mapped_materialize(dag: Any) -> None:
    from _lib import MlStepOperator
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert sorted(dag.task_ids) == sorted(TASKS)
    pending, plan, build, materialize = (dag.get_task(t) for t in TASKS)
    assert isinstance(pending, MlStepOperator) and pending.step == "features-pending"
    assert pending.upstream_task_ids == set()
    assert plan.upstream_task_ids == {"features-pending"}
    assert build.upstream_task_ids == {"plan_intervals"}
    assert materialize.upstream_task_ids == {"plan_intervals", "build-features"}
    assert build.downstream_task_ids == {"materialize"}
    assert materialize.downstream_task_ids == set()
    for task, step in ((build, "build-features"), (materialize, "materialize")):
        assert isinstance(task, MappedOperator), f"{task.task_id} must be mapped over the intervals"
        assert task.operator_class is MlStepOperator
        assert task.partial_kwargs["step"] == step
        assert task.partial_kwargs["profile"] == "cpu"
        # mapped over exactly plan_intervals' return value
        expand = task.expand_input.value
        assert list(expand) == ["argv"]
        assert expand["argv"].operator.task_id == "plan_intervals"
        assert expand["argv"].key == "return_value"


def test_schedule_is_the_curated_asset_of_taxi_ingest(dag: Any, dagbag: Any) -> None:
    from airflow.sdk import Asset
    from airflow.sdk.definitions.asset import AssetAll
    from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable

    assert isinstance(dag.timetable, AssetTriggeredTimetable)
    condition = dag.timetable.asset_condition
    assert isinstance(condition, AssetAll)
    assert [(a.name, a.uri) for a in condition.objects if isinstance(a, Asset)] == [CURATED]
    assert len(condition.objects) == 1
    # the same Asset ingest's publish emits (one shared definition: _lib.assets)
    publish_outlets = dagbag.dags["taxi_ingest"].get_task("publish").outlets
    assert [(o.name, o.uri) for o in publish_outlets if isinstance(o, Asset)] == [CURATED]
    # runs are created as soon as events arrive (an event arriving while a run waits to be created is
    # left to the next run); materialize is serialized across runs instead
    assert dag.max_active_runs > 1
    assert dag.catchup is False


def test_materialize_emits_the_features_asset(dag: Any) -> None:
    from airflow.sdk import Asset

    materialize = dag.get_task("materialize")
    outlets = materialize.partial_kwargs["outlets"]
    assert [(o.name, o.uri, o.group) for o in outlets if isinstance(o, Asset)] == [(*FEATURES, "flywheel")]
    assert materialize.partial_kwargs["max_active_tis_per_dag"] == 1, (
        "materialize of two runs must not interleave"
    )
    assert not dag.get_task("build-features").partial_kwargs.get("outlets")
    assert not dag.get_task("plan_intervals").outlets


def test_params_are_typed(dag: Any) -> None:
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    params = dag.params
    assert params["interval_start"] is None and params["interval_end"] is None
    assert params["max_days_per_task"] == 31
    for key, value in {"interval_start": "2024-13-01", "max_days_per_task": 0}.items():
        with pytest.raises(ParamValidationError):
            copy.deepcopy(params.get_param(key)).resolve(value)
    assert copy.deepcopy(params.get_param("interval_end")).resolve("2024-03-12") == "2024-03-12"


def _event(asset: tuple[str, str], extra_: dict[str, Any], run_id: str) -> Any:
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult

    return AssetEventDagRunReferenceResult(
        asset={"name": asset[0], "uri": asset[1], "extra": {}},
        extra=extra_,
        source_task_id="publish",
        source_dag_id="taxi_ingest",
        source_run_id=run_id,
        source_map_index=-1,
        source_aliases=[],
        timestamp=dt.datetime(2024, 6, 1, tzinfo=dt.UTC),
    )


def test_plan_task_reads_the_curated_events_of_the_run_context(dag: Any) -> None:
    """The task body against Airflow's own accessor type, as the task runner builds it."""
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    plan = dag.get_task("plan_intervals").python_callable
    accessor = TriggeringAssetEventsAccessor.build(
        [
            _event(CURATED, extra("2024-01-04", "2024-01-05"), "backfill__04"),
            _event(CURATED, extra("2024-01-02", "2024-01-03"), "backfill__02"),
            _event(CURATED, extra("2024-01-03", "2024-01-04"), "backfill__03"),
            # an event of another Asset in the same accessor is not ours
            _event(("something-else", "flywheel://else"), extra("2023-01-01", "2023-01-02"), "x"),
        ]
    )
    defaults = dag.params.dump()
    assert plan(triggering_asset_events=accessor, params=defaults) == argv(("2024-01-02", "2024-01-05"))
    assert plan(triggering_asset_events=accessor, params={**defaults, "max_days_per_task": 2}) == argv(
        ("2024-01-02", "2024-01-04"), ("2024-01-04", "2024-01-05")
    )
    # a manual run: an empty accessor, params name the interval
    empty = TriggeringAssetEventsAccessor.build([])
    manual = {**defaults, "interval_start": "2024-02-01", "interval_end": "2024-02-03"}
    assert plan(triggering_asset_events=empty, params=manual) == argv(("2024-02-01", "2024-02-03"))
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="not triggered by asset events"):
        plan(triggering_asset_events=empty, params=defaults)


def test_mapped_instance_renders_its_argv(dag: Any) -> None:
    """One mapped instance, unmapped as the task runner does, renders the command line of its interval."""
    materialize = dag.get_task("materialize")
    task = materialize.unmap({"argv": ["--start", "2024-01-02", "--end", "2024-01-05"]})
    task.render_template_fields({"params": dag.params.dump()}, jinja_env=dag.get_template_env())
    assert task.argv == ["materialize", "--start", "2024-01-02", "--end", "2024-01-05"]
    assert task.command()[1:] == task.argv
    assert task.step == "materialize" and task.task_id == "materialize"
    assert [o.name for o in task.outlets] == [FEATURES[0]]
    label = dag.get_template_env().from_string(materialize.map_index_template).render(task=task)
    assert label == "--start 2024-01-02 --end 2024-01-05"


# -- the step helper ---------------------------------------------------------------------------------------
def test_helper_maps_and_refuses_bad_combinations(clean_runner_env: None) -> None:
    from _lib import ml_step
    from airflow.sdk import DAG, task
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    @task
    def plan() -> list[list[str]]:
        return [["--x", "1"]]

    with DAG("helper_map_check", schedule=None):
        out = plan()
        mapped = ml_step("train", expand_argv=out, profile="gpu", task_id="train_all")
        with pytest.raises(TypeError, match="argv or expand_argv, not both"):
            ml_step("train", ["--x"], expand_argv=out)
        with pytest.raises(ValueError, match="profile 'tpu'"):
            ml_step("train", expand_argv=out, profile="tpu")  # type: ignore[call-overload]
    assert isinstance(mapped, MappedOperator)
    assert (mapped.task_id, mapped.partial_kwargs["step"], mapped.partial_kwargs["profile"]) == (
        "train_all",
        "train",
        "gpu",
    )


# -- one in-process run (dag.test): the mapped instances run the real CLI ------------------------------------
DAG_TEST = """
import json, sys, time
from pathlib import Path
from airflow.utils.db import initdb
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.models.renderedtifields import RenderedTaskInstanceFields
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
dags = Path({dags!r})
initdb()
dag = BundleDagBag(dag_folder=str(dags / "taxi_features.py"), bundle_path=dags).dags["taxi_features"]
t = time.perf_counter()
# a manual run: no logical date, the params name the interval; materialize (Feast) is marked success
run = dag.test(logical_date=None, run_conf={conf!r}, mark_success_pattern="^materialize$")
seconds = time.perf_counter() - t
tis = []
with create_session() as session:
    for ti in run.get_task_instances(session=session):
        key = dict(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index)
        rendered = session.query(RenderedTaskInstanceFields).filter_by(**key).one_or_none()
        xcom = session.query(XComModel).filter_by(**key, key="return_value").one_or_none()
        tis.append({{
            "task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state),
            "label": ti.rendered_map_index,
            "argv": (rendered.rendered_fields or {{}}).get("argv") if rendered else None,
            "xcom": XComModel.deserialize_value(xcom) if xcom else None,
        }})
print(json.dumps({{"state": str(run.state), "seconds": seconds, "tis": tis}}, default=str))
"""


@pytest.fixture(scope="module")
def curated_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with curated trips for 2024-01-02 and 2024-01-03 (the real CLI chain, 300 trips/day)."""
    root = tmp_path_factory.mktemp("features-dagtest") / "data"
    env = {"FLYWHEEL_DATA_ROOT": str(root)}
    interval = ["--start", "2024-01-02", "--end", "2024-01-04"]
    run_cli("extract", *interval, "--trips-per-day", "300", env=env)
    for step in ("transform", "validate", "publish"):
        run_cli(step, *interval, env=env)
    return root


def test_dag_test_maps_one_instance_per_interval(curated_root: Path, tmp_path: Path) -> None:
    env = {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "FLYWHEEL_DATA_ROOT": str(curated_root),
        "FLYWHEEL_RUNNER": "local",
        "FLYWHEEL_TASK_RETRIES": "0",
    }
    conf = {"interval_start": "2024-01-02", "interval_end": "2024-01-04", "max_days_per_task": 1}
    result = run_python(DAG_TEST.format(dags=str(DAGS), conf=conf), env=env, timeout=600)
    assert result["state"] == "success", result
    tis = {(ti["task_id"], ti["map_index"]): ti for ti in result["tis"]}
    days = [("2024-01-02", "2024-01-03"), ("2024-01-03", "2024-01-04")]
    assert sorted(tis) == [
        ("build-features", 0), ("build-features", 1), ("features-pending", -1), ("materialize", 0),
        ("materialize", 1), ("plan_intervals", -1),
    ]  # fmt: skip
    # no feature partition yet: both curated days are pending (a manual run's params still win)
    pending = tis[("features-pending", -1)]["xcom"]
    assert (pending["missing"], pending["stale"]) == (["2024-01-02", "2024-01-03"], [])
    assert pending["intervals"] == [{"start": "2024-01-02", "end": "2024-01-04"}]
    assert tis[("plan_intervals", -1)]["xcom"] == argv(*days)
    for index, (start, end) in enumerate(days):
        ti = tis[("build-features", index)]
        assert ti["state"] == "success"
        assert ti["argv"] == ["build-features", "--start", start, "--end", end]
        assert ti["label"] == f"--start {start} --end {end}"
        summary = ti["xcom"]
        assert summary["interval"] == {"start": start, "end": end}
        # the two instances run concurrently: when 2024-01-02 is built after 2024-01-03, it also rebuilds
        # 2024-01-03 (a later day whose window includes it), and says so
        rebuilt = summary["rebuilt_later_days"]
        assert rebuilt in ([], ["2024-01-03"] if start == "2024-01-02" else [])
        assert sorted((p["view"], p["dt"]) for p in summary["partitions"]) == sorted(
            (view, day) for view in ("company_stats", "pickup_area_stats") for day in [start, *rebuilt]
        )
        for part in summary["partitions"]:
            manifest = json.loads((Path(part["uri"]) / "_manifest.json").read_text())
            assert manifest["row_counts"]["rows"] > 0
            assert manifest["partition"] == part["dt"]
    # the trailing window of 2024-01-03 covers both curated days
    second = tis[("build-features", 1)]["xcom"]
    assert {p["window_days"] for p in second["partitions"] if p["dt"] == "2024-01-03"} == {2}
    assert sorted(p.name for p in (curated_root / "features" / "pickup_area_stats").iterdir()) == [
        "dt=2024-01-02",
        "dt=2024-01-03",
    ]


def test_plan_task_reads_the_pending_step_summary(dag: Any) -> None:
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    plan = dag.get_task("plan_intervals")
    assert plan.upstream_task_ids == {"features-pending"}
    accessor = TriggeringAssetEventsAccessor.build([_event(CURATED, extra("2024-01-04", "2024-01-05"), "r4")])
    summary = {"step": "features-pending", "intervals": [{"start": "2024-01-02", "end": "2024-01-03"}]}
    got = plan.python_callable(triggering_asset_events=accessor, params=dag.params.dump(), pending=summary)
    assert got == argv(("2024-01-02", "2024-01-03"), ("2024-01-04", "2024-01-05"))
