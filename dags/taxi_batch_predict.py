"""
### taxi_batch_predict: score each new day of trips with the champion model, sharded

`plan_intervals -> resolve-model -> plan_shards / plan_commits -> predict (mapped: intervals x shards) ->
predict-commit (mapped: one per interval) -> publish`; the steps are `ml-tasks` commands (see
`ml_tasks/cli.py`) run by the project's step helper (`dags/_lib`): a local subprocess by default, a
Kubernetes pod with `FLYWHEEL_RUNNER=kubernetes`.

* **plan_intervals** turns the triggering `flywheel-features` events (or the params of a manual run) into
  sorted, merged intervals of local days (end exclusive), like taxi_features.
* **resolve-model** resolves `model` (default `taxi_tips@champion`) to a version ONCE; every shard and the
  commit use that version, so a promotion during the run cannot mix two models in one interval. No
  champion yet: the run logs why and skips its tasks (no failure, no retry loop); train one with
  taxi_training, then re-run.
* **predict** scores one shard of one interval: the interval's curated trips, the same request-time
  features and the same Feast feature service as the model was trained with (point-in-time features), the
  registered ONNX file (sha-verified, cached), streamed in Arrow batches through onnxruntime, into a
  staging area. Trips without a feature row are counted and scored with the model's missing-value
  policy.
* **predict-commit** runs once ALL shards of the interval succeeded: it checks them (count, model
  version), writes `predictions/<model>/dt=D` per day atomically (bytes equal to an unsharded run),
  optionally upserts into PostgreSQL (`FLYWHEEL_PREDICTIONS_POSTGRES_URI`, key: trip + model version).
* **publish** runs once every commit succeeded and emits the Asset `flywheel-predictions` ONCE for the
  run, with every committed interval (`extra.intervals`) and partition: taxi_monitoring gets one run per
  prediction run and judges its days in order. One run at a time (`max_active_runs=1`), so the runs, and
  their events, follow each other in the order of the features events.

**Schedule.** On the Asset `flywheel-features` (taxi_features' materialize): daily, right after the day's
features. Manual runs: params `interval_start` / `interval_end` (YYYY-MM-DD, end exclusive), `model`
(e.g. `taxi_tips/3` to score with a fixed version, or `taxi_tips@challenger`) and `shards`.
The DAG must be unpaused before the features arrive (Airflow queues no run for a paused consumer).

**Settings** from the environment: `FLYWHEEL_PREDICT_SHARDS` (default of `shards`, 2),
`FLYWHEEL_PREDICT_MAX_DAYS` (default of `max_days_per_task`, 7), plus the steps' `FLYWHEEL_*` settings.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pendulum
from _lib import FEATURES, PREDICTIONS, default_args, interval_params, ml_step, plan_intervals_task
from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

TZ = "America/Chicago"
SHARDS = int(os.environ.get("FLYWHEEL_PREDICT_SHARDS", "2"))
MAX_DAYS = int(os.environ.get("FLYWHEEL_PREDICT_MAX_DAYS", "7"))

log = logging.getLogger(__name__)


def shard_plan(
    intervals: list[list[str]], resolved: dict[str, Any], shards: int, run_id: str
) -> dict[str, list[list[str]]]:
    """The argv of every shard task (intervals x shards) and of every commit task (one per interval).

    Raises:
        AirflowSkipException: the model alias does not exist yet (no champion): nothing to score with.
    """
    if resolved.get("version") is None:
        raise AirflowSkipException(f"nothing scored: {resolved.get('reason') or 'the model does not exist'}")
    model = f"{resolved['name']}/{resolved['version']}"
    # the staging key must be a path segment: run ids carry ':' and '+'
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    common = ["--model", model, "--shards", str(shards), "--run-key", key]
    return {
        "shards": [[*iv, "--shard", str(i), *common] for iv in intervals for i in range(shards)],
        "commits": [[*iv, *common] for iv in intervals],
    }


@task(task_id="plan_shards")
def plan_shards_task(
    intervals: list[list[str]], resolved: dict[str, Any], params: Any = None, run_id: Any = None
) -> list[list[str]]:
    """Pin the resolved model version and fan the intervals out over ``shards`` shards each."""
    plan = shard_plan(intervals, resolved, int(params["shards"]), str(run_id))
    log.info("model %s/%s: %d shard task(s) over %d interval(s)", resolved["name"], resolved["version"],
             len(plan["shards"]), len(plan["commits"]))  # fmt: skip
    return plan["shards"]


def predictions_event(commits: Any, run_id: str) -> dict[str, Any]:
    """The extra of the run's one ``flywheel-predictions`` event: every committed interval and partition,
    in day order, and the model version that scored them (see ``_lib.assets``).

    Args:
        commits: the summaries of the run's commit tasks (all succeeded: this task runs after all of them).

    Raises:
        AirflowSkipException: there were no commits (nothing to announce).
        AirflowFailException: a commit returned no summary with an interval: announcing the others alone
            would leave its days unmonitored, silently.
    """
    commits = list(commits or [])
    if not commits:
        raise AirflowSkipException("no interval committed: no flywheel-predictions event")
    bad = [
        i
        for i, c in enumerate(commits)
        if not (isinstance(c, Mapping) and isinstance(c.get("interval"), Mapping))
    ]
    if bad:
        raise AirflowFailException(
            f"predict-commit map index(es) {bad} returned no summary with an interval: which days they"
            " committed is unknown; nothing is announced (clear those tasks to re-run them)"
        )
    found = sorted(commits, key=lambda c: str(c["interval"].get("start")))
    partitions = [
        {k: p[k] for k in ("dt", "uri", "rows") if k in p}
        for c in found
        for p in c.get("partitions") or []
        if isinstance(p, Mapping)
    ]
    models = sorted({f"{c['model'].get('name')}/{c['model'].get('version')}"
                     for c in found if isinstance(c.get("model"), Mapping)})  # fmt: skip
    return {
        "step": "predict-commit",
        "intervals": [dict(c["interval"]) for c in found],
        "partitions": partitions,
        "models": models,
        "run_id": run_id,
    }


@task(task_id="publish", outlets=[PREDICTIONS])
def publish_task(commits: Any, outlet_events: Any = None, run_id: Any = None) -> dict[str, Any]:
    """Every interval committed: emit ``flywheel-predictions`` once, listing them (for taxi_monitoring)."""
    extra = predictions_event(commits, str(run_id))
    outlet_events[PREDICTIONS].extra.update(extra)
    log.info("published %d interval(s), %d partition(s) scored by %s", len(extra["intervals"]),
             len(extra["partitions"]), extra["models"])  # fmt: skip
    return extra


@task(task_id="plan_commits")
def plan_commits_task(
    intervals: list[list[str]], resolved: dict[str, Any], params: Any = None, run_id: Any = None
) -> list[list[str]]:
    """One commit per interval, for the same model version and shards as :func:`plan_shards_task`."""
    return shard_plan(intervals, resolved, int(params["shards"]), str(run_id))["commits"]


with DAG(
    dag_id=Path(__file__).stem,
    description="Score each new day of trips with the champion model (ONNX), sharded; commit once",
    doc_md=__doc__,
    schedule=[FEATURES],
    start_date=pendulum.datetime(2024, 1, 1, tz=TZ),
    catchup=False,
    # one run at a time: runs publish in the order of the features events, monitoring judges days in order
    max_active_runs=1,
    max_active_tasks=4,
    dagrun_timeout=dt.timedelta(hours=4),
    default_args=default_args(execution_timeout=dt.timedelta(hours=2)),
    tags=["flywheel", "taxi", "prediction"],
    params={
        **interval_params(MAX_DAYS, "Longest interval one shard task scores."),
        "model": Param(
            "taxi_tips@champion",
            type="string",
            pattern=r"^(models:/)?[A-Za-z0-9_.-]+([@/][A-Za-z0-9_.-]+)$",
            description="NAME@ALIAS (resolved once per run) or NAME/VERSION.",
        ),
        "shards": Param(SHARDS, type="integer", minimum=1, maximum=256, description="Shards per interval."),
    },
) as dag:
    intervals = plan_intervals_task(FEATURES)
    resolved = ml_step(
        "resolve-model",
        ["--model", "{{ params.model }}", "--allow-missing"],
        doc_md="The model version this run scores with (the alias is resolved once, here).",
    )
    # XComArgs, resolved at run time
    shard_argv = plan_shards_task(intervals, resolved.output)  # type: ignore[arg-type]
    commit_argv = plan_commits_task(intervals, resolved.output)  # type: ignore[arg-type]
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
    publish_task(commit.output)  # an XComArg, resolved at run time
