"""
### taxi_batch_predict: score each new day of trips with the champion model, sharded

`plan_intervals -> resolve-model -> plan_shards / plan_commits -> predict (mapped: intervals x shards) ->
predict-commit (mapped: one per interval) -> publish`:

* **resolve-model** resolves `model` (default `taxi_tips@champion`) to a version ONCE per run; no champion
  yet: the run's tasks are skipped with the reason.
* **predict** scores one shard of one interval (point-in-time features, the registered ONNX file) into a
  staging area; **predict-commit** checks every shard of the interval and writes
  `predictions/<model>/dt=D` atomically (optionally upserting into PostgreSQL).
* **publish** emits the Asset `flywheel-predictions` ONCE per run, listing every committed interval.

**Schedule**: on `flywheel-features`, one run at a time (monitoring judges days in order). **Manual runs**:
params `interval_start` / `interval_end`, `model` (`taxi_tips/3`, `taxi_tips@challenger`), `shards`.
More: `docs/dags.md`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from _lib import (
    DAG_DEFAULTS,
    FEATURES,
    PREDICTIONS,
    START_DATE,
    DagSettings,
    interval_params,
    ml_step,
    plan_intervals_task,
)
from _lib.prediction import predictions_event, shard_plan
from airflow.sdk import DAG, Param, task

settings = DagSettings()
log = logging.getLogger(__name__)


@task
def plan_shards(intervals: list[list[str]], resolved: dict[str, Any], params: Any = None,
                run_id: Any = None) -> list[list[str]]:  # fmt: skip
    """Pin the resolved model version and fan the intervals out over ``shards`` shards each."""
    plan = shard_plan(intervals, resolved, int(params["shards"]), str(run_id))
    log.info("model %s/%s: %d shard task(s) over %d interval(s)", resolved["name"], resolved["version"],
             len(plan["shards"]), len(plan["commits"]))  # fmt: skip
    return plan["shards"]


@task
def plan_commits(intervals: list[list[str]], resolved: dict[str, Any], params: Any = None,
                 run_id: Any = None) -> list[list[str]]:  # fmt: skip
    """One commit per interval, for the same model version and shards as ``plan_shards``."""
    return shard_plan(intervals, resolved, int(params["shards"]), str(run_id))["commits"]


@task(outlets=[PREDICTIONS])
def publish(commits: Any, outlet_events: Any = None, run_id: Any = None) -> dict[str, Any]:
    """Every interval committed: emit ``flywheel-predictions`` once, listing them (for taxi_monitoring)."""
    extra = predictions_event(commits, str(run_id))
    outlet_events[PREDICTIONS].extra.update(extra)
    log.info("published %d interval(s), %d partition(s) scored by %s", len(extra["intervals"]),
             len(extra["partitions"]), extra["models"])  # fmt: skip
    return extra


with DAG(
    dag_id=Path(__file__).stem,
    description="Score each new day of trips with the champion model (ONNX), sharded; commit once",
    doc_md=__doc__,
    schedule=[FEATURES],
    start_date=START_DATE,
    catchup=False,
    # one run at a time: runs publish in the order of the features events, monitoring judges days in order
    max_active_runs=1,
    max_active_tasks=4,
    dagrun_timeout=dt.timedelta(hours=4),
    default_args={**DAG_DEFAULTS, "execution_timeout": dt.timedelta(hours=2)},
    tags=["flywheel", "taxi", "prediction"],
    params={
        **interval_params(settings.predict_max_days, "Longest interval one shard task scores."),
        "model": Param(
            "taxi_tips@champion",
            type="string",
            pattern=r"^(models:/)?[A-Za-z0-9_.-]+([@/][A-Za-z0-9_.-]+)$",
            title="Model",
            description="NAME@ALIAS (resolved once per run) or NAME/VERSION.",
        ),
        "shards": Param(
            settings.predict_shards,
            type="integer",
            minimum=1,
            maximum=256,
            title="Shards",
            description="Parallel scoring tasks per interval.",
        ),
    },
) as dag:
    intervals = plan_intervals_task(FEATURES)
    resolved = ml_step(
        "resolve-model",
        ["--model", "{{ params.model }}", "--allow-missing"],
        doc_md="The model version this run scores with (the alias is resolved once, here).",
    )
    # XComArgs, resolved at run time
    shard_argv = plan_shards(intervals, resolved.output)  # type: ignore[arg-type]
    commit_argv = plan_commits(intervals, resolved.output)  # type: ignore[arg-type]
    shards = ml_step(
        "predict",
        expand_argv=shard_argv,
        doc_md="One shard of one interval: features, ONNX scores, into the staging area.",
    )
    commit = ml_step(
        "predict-commit",
        expand_argv=commit_argv,
        doc_md="All shards done: write predictions/<model>/dt=D atomically (and upsert).",
    )
    shards >> commit
    publish(commit.output)
