"""taxi_ingest: structure, schedule, params, rendered argv, the runner helper, and one dag.test() run."""

from __future__ import annotations

import copy
import datetime as dt
import importlib.util
import itertools
import json
from pathlib import Path
from typing import Any

import pendulum
import pytest

from tests.dags.conftest import DAGS, run_python

DAG_ID = "taxi_ingest"
STEPS = ["extract", "transform", "validate", "publish"]


@pytest.fixture(scope="module")
def dag(dagbag: Any) -> Any:
    return dagbag.dags[DAG_ID]


def render(task: Any, dag: Any, **context: Any) -> list[str]:
    """The command line a task would run, rendered against ``context`` (params default to the DAG's)."""
    task = copy.deepcopy(task)
    params = {**dag.params.dump(), **context.pop("params", {})}
    task.render_template_fields({"params": params, **context}, jinja_env=dag.get_template_env())
    # the rendered argv (what the UI shows) is exactly the command line, without the executable path
    assert task.command()[1:] == task.argv
    return list(task.argv)


def interval(day: dt.date) -> dict[str, Any]:
    start = pendulum.datetime(day.year, day.month, day.day, tz="America/Chicago")
    return {
        "data_interval_start": start.in_timezone("UTC"),
        "data_interval_end": start.add(days=1).in_timezone("UTC"),
    }


def test_structure(dag: Any) -> None:
    assert sorted(dag.task_ids) == sorted(STEPS)
    for upstream, downstream in itertools.pairwise(STEPS):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    assert dag.get_task("publish").downstream_task_ids == set()
    assert dag.get_task("extract").upstream_task_ids == set()


def test_schedule_is_daily_chicago_with_real_intervals(dag: Any) -> None:
    from airflow.sdk import CronDataIntervalTimetable

    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 0 * * *"
    assert str(dag.timetable.timezone) == "America/Chicago"
    # laptop safety: unpausing must not create a run for every day since start_date
    assert dag.catchup is False
    assert dag.max_active_runs <= 2
    assert dag.start_date == pendulum.datetime(2024, 1, 1, tz="America/Chicago")


def test_publish_emits_the_curated_asset(dag: Any) -> None:
    from airflow.sdk import Asset

    outlets = dag.get_task("publish").outlets
    assert [(o.name, o.uri) for o in outlets if isinstance(o, Asset)] == [
        ("flywheel-curated-trips", "flywheel://curated/trips")
    ]
    assert all(not dag.get_task(t).outlets for t in ("extract", "transform", "validate"))


def test_params_are_typed(dag: Any) -> None:
    params = dag.params
    assert params["source"] == "synthetic"
    assert params.get_param("source").schema["enum"] == ["synthetic", "file", "chicago", "postgres"]
    assert params["interval_start"] is None and params["interval_end"] is None
    from airflow.sdk.exceptions import ParamValidationError

    bad = {"source": "ftp", "trips_per_day": -1, "interval_start": "2024-13-01"}
    for key, value in bad.items():
        with pytest.raises(ParamValidationError):
            copy.deepcopy(params.get_param(key)).resolve(value)
    assert copy.deepcopy(params.get_param("trips_per_day")).resolve(2000) == 2000


def test_rendered_argv_for_a_scheduled_interval(dag: Any) -> None:
    ctx = interval(dt.date(2024, 1, 2))
    assert render(dag.get_task("extract"), dag, **ctx) == [
        "extract",
        "--start", "2024-01-02T06:00:00+00:00",
        "--end", "2024-01-03T06:00:00+00:00",
        "--source", "synthetic",
    ]  # fmt: skip
    assert render(dag.get_task("transform"), dag, **ctx) == [
        "transform", "--start", "2024-01-02T06:00:00+00:00", "--end", "2024-01-03T06:00:00+00:00",
    ]  # fmt: skip
    assert render(dag.get_task("validate"), dag, **ctx) == [
        "validate", "--start", "2024-01-02T06:00:00+00:00", "--end", "2024-01-03T06:00:00+00:00",
    ]  # fmt: skip
    assert render(dag.get_task("publish"), dag, **ctx)[0] == "publish"


def test_rendered_argv_with_params(dag: Any) -> None:
    params = {
        "interval_start": "2024-03-10",
        "interval_end": "2024-03-12",
        "trips_per_day": 2000,
        "dirty_rate": 0.25,
        "seed": 0,
        "max_reject_rate": 0.5,
        "allow_empty": True,
    }
    # explicit params win over the run's data interval
    ctx = {"params": params, **interval(dt.date(2024, 1, 2))}
    assert render(dag.get_task("extract"), dag, **copy.deepcopy(ctx)) == [
        "extract", "--start", "2024-03-10", "--end", "2024-03-12", "--source", "synthetic",
        "--trips-per-day=2000", "--option=dirty_rate=0.25", "--option=seed=0",
    ]  # fmt: skip
    assert render(dag.get_task("validate"), dag, **copy.deepcopy(ctx)) == [
        "validate", "--start", "2024-03-10", "--end", "2024-03-12", "--max-reject-rate=0.5", "--allow-empty",
    ]  # fmt: skip
    file_params = {
        "source": "file",
        "interval_start": "2024-03-10",
        "file_uri": "/x/a b.csv",
        "file_mapping": "tfx",
    }
    assert render(dag.get_task("extract"), dag, params=file_params) == [
        "extract", "--start", "2024-03-10", "--end", "2024-03-11", "--source", "file",
        "--uri=/x/a b.csv", "--mapping=tfx",
    ]  # fmt: skip


def test_a_run_without_interval_fails_clearly_without_retries(dag: Any) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    # a manual run with logical_date null has no data_interval_* in its context at all
    with pytest.raises(AirflowFailException, match=r"no data interval.*interval_start"):
        render(dag.get_task("extract"), dag)
    with pytest.raises(AirflowFailException, match="interval_end is set without interval_start"):
        render(dag.get_task("transform"), dag, params={"interval_end": "2024-01-02"})
    with pytest.raises(AirflowFailException, match="must be after"):
        render(
            dag.get_task("transform"),
            dag,
            params={"interval_start": "2024-01-02", "interval_end": "2024-01-02"},
        )


def test_runner_env_selects_the_runner(monkeypatch: pytest.MonkeyPatch, clean_runner_env: None) -> None:
    from airflow.dag_processing.dagbag import BundleDagBag

    path = DAGS / f"{DAG_ID}.py"
    monkeypatch.setenv("FLYWHEEL_RUNNER", "kubernetes")
    monkeypatch.delenv("FLYWHEEL_K8S_IMAGE", raising=False)
    bag = BundleDagBag(dag_folder=str(path), bundle_path=DAGS)
    assert list(bag.import_errors.values()), "the kubernetes runner needs an image: refused at parse time"
    error = next(iter(bag.import_errors.values()))
    assert "FLYWHEEL_RUNNER=kubernetes needs FLYWHEEL_K8S_IMAGE" in error
    monkeypatch.setenv("FLYWHEEL_RUNNER", "docker")
    bag = BundleDagBag(dag_folder=str(path), bundle_path=DAGS)
    assert "FLYWHEEL_RUNNER='docker' is not a runner" in next(iter(bag.import_errors.values()))


def test_helper_rejects_bad_arguments(clean_runner_env: None) -> None:
    from _lib import ml_step, opt
    from airflow.sdk import DAG

    with DAG("helper_check", schedule=None):
        with pytest.raises(ValueError, match="profile 'tpu'"):
            ml_step("train", [], profile="tpu")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="list of strings"):
            ml_step("train", "--start x")
        task = ml_step("train", ["--x", "1"], profile="gpu")
    with pytest.raises(ValueError, match="quotes are not allowed"):
        opt("--name", "params.x", prefix="it's=")
    assert (task.task_id, task.argv, task.profile) == ("train", ["train", "--x", "1"], "gpu")


# -- the local runner against the real CLI -------------------------------------------------------------
def test_local_runner_returns_the_cli_summary(data_root: Path, clean_runner_env: None) -> None:
    from _lib import MlStepOperator

    op = MlStepOperator(task_id="extract", step="extract", argv=[])
    result = op.run_cli([*op.command()[:1], "extract", "--start", "2024-01-02", "--trips-per-day", "300"])
    assert result["step"] == "extract"
    assert result["interval"] == {"start": "2024-01-02", "end": "2024-01-03"}
    assert result["rows_written"] == result["partitions"][0]["rows"] > 0
    assert (data_root / "raw" / "trips" / "dt=2024-01-02" / "_manifest.json").is_file()


def test_local_runner_fails_with_the_cli_error_line(data_root: Path, clean_runner_env: None) -> None:
    from _lib import MlStepOperator
    from airflow.sdk.exceptions import AirflowException

    op = MlStepOperator(task_id="transform", step="transform", argv=[])
    with pytest.raises(AirflowException) as info:
        op.run_cli([*op.command()[:1], "transform", "--start", "not-a-day"])
    message = str(info.value)
    assert message.startswith("ml-tasks transform failed (exit status 1")
    assert "ml-tasks: error: interval boundary 'not-a-day' is neither a date nor an ISO datetime" in message


def test_error_line_prefers_the_cli_error() -> None:
    from _lib.local import error_line

    assert error_line(["INFO x", "ml-tasks: error: bad", "Traceback", "  File x"]) == "ml-tasks: error: bad"
    assert error_line(["Traceback (most recent call last):", "KeyError: 'x'", ""]) == "KeyError: 'x'"
    assert error_line([]) == "(no output on stderr)"


# -- one in-process run (no scheduler) -----------------------------------------------------------------
DAG_TEST = """
import json, os, time
from pathlib import Path
from airflow.utils.db import initdb
from airflow.dag_processing.dagbag import BundleDagBag
dags = Path({dags!r})
initdb()
dag = BundleDagBag(dag_folder=str(dags / "taxi_ingest.py"), bundle_path=dags).dags["taxi_ingest"]
import pendulum
t = time.perf_counter()
# dag.test() infers a manual data interval: the complete interval that ENDS at logical_date
run = dag.test(
    logical_date=pendulum.datetime(2024, 1, 3, tz="America/Chicago"), run_conf={{"trips_per_day": 1500}}
)
seconds = time.perf_counter() - t
states = {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
print(json.dumps({{"state": str(run.state), "states": states, "seconds": seconds,
                   "interval": [str(run.data_interval_start), str(run.data_interval_end)]}}))
"""


def _steps_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("ml_tasks.validation", "ml_tasks.publish"))


@pytest.mark.skipif(not _steps_available(), reason="ml_tasks.validation / ml_tasks.publish not written yet")
def test_dag_test_runs_one_interval(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "FLYWHEEL_DATA_ROOT": str(data),
        "FLYWHEEL_RUNNER": "local",
    }
    result = run_python(DAG_TEST.format(dags=str(DAGS)), env=env, timeout=600)
    assert result["state"] == "success", result
    assert result["states"] == dict.fromkeys(STEPS, "success"), result["states"]
    assert result["interval"] == ["2024-01-02 06:00:00+00:00", "2024-01-03 06:00:00+00:00"]
    for layer in ("raw", "staging", "curated", "quarantine"):
        manifest = data / layer / "trips" / "dt=2024-01-02" / "_manifest.json"
        assert manifest.is_file(), f"{layer} partition missing"
    raw = json.loads((data / "raw" / "trips" / "dt=2024-01-02" / "_manifest.json").read_text())
    curated = json.loads((data / "curated" / "trips" / "dt=2024-01-02" / "_manifest.json").read_text())
    quarantine = json.loads((data / "quarantine" / "trips" / "dt=2024-01-02" / "_manifest.json").read_text())
    assert raw["row_counts"]["rows"] == curated["row_counts"]["raw"] > 1000
    assert curated["row_counts"]["curated"] + quarantine["row_counts"]["rows"] == raw["row_counts"]["rows"]
    assert quarantine["row_counts"]["rows"] > 0  # the synthetic source plants 0.5 % dirty rows
