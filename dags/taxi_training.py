"""
### taxi_training: train, evaluate, export and (maybe) promote the big-tipper model

`plan_windows -> training-set (train, eval) -> train -> evaluate -> export-onnx -> check-onnx -> register ->
promote -> announce_champion`:

* **plan_windows** trains on `[eval_start - train_days, eval_start)` and evaluates on the LATER window
  `[eval_start, window_end)`; `window_end` is the param, else the newest drift event's interval end, else
  the run's data interval end.
* **training-set** (twice): point-in-time snapshots of both windows from Feast (`feature_service`).
* **train** (`gpu` profile on Kubernetes): hyperparameter trials as MLflow child runs; the best on
  validation is the candidate bundle. **evaluate**: metrics, calibration, slices, baselines, behavioural
  tests and the champion, on the eval window.
* **export-onnx** / **check-onnx**: ONNX with a dynamic batch, hash, parity and latency checked.
* **register** a new version; **promote** applies the gate (`champion` only if it beats the baselines and
  the champion within `promotion_margin` and passed the ONNX checks; `force_promote` overrides, recorded).
* **announce_champion** emits the Asset `flywheel-champion-model` when the champion changed.

**Schedule**: weekly (Monday 04:00 America/Chicago), on the drift Asset `flywheel-drift`, and by hand with
the params form. More: `docs/dags.md`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from _lib import (
    CHAMPION_MODEL,
    DAG_DEFAULTS,
    DRIFT,
    LOCAL_TZ,
    START_DATE,
    DagSettings,
    local_datetime,
    ml_step,
    opt,
    optional,
    result,
    switch,
)
from _lib.argv import Arg
from _lib.windows import training_windows, window_end_for_run
from airflow.sdk import DAG, AssetOrTimeSchedule, CronDataIntervalTimetable, Param, task
from airflow.sdk.exceptions import AirflowSkipException

settings = DagSettings()
log = logging.getLogger(__name__)

#: every tracked step names its MLflow run by (dag, run, task): a retry replaces the previous run
TRACKING = ["--dag-id", "{{ dag.dag_id }}", "--dag-run-id", "{{ run_id }}", "--task-id", "{{ task.task_id }}"]
#: a test hook (FLYWHEEL_ALLOW_FAULT_INJECTION=true): export-onnx corrupts its output, the checks catch it
FAULT_PARAMS = {
    "inject_fault": Param(
        None,
        type=["null", "string"],
        enum=[None, "corrupt-onnx"],
        title="Inject fault (tests)",
        description="Fault injection: this platform allows it (FLYWHEEL_ALLOW_FAULT_INJECTION=true).",
    )
}
FAULT_ARGV = [opt("--inject-fault", "params.inject_fault")] if settings.allow_fault_injection else []


@task(multiple_outputs=True)
def plan_windows(
    params: Any = None, triggering_asset_events: Any = None, data_interval_end: Any = None
) -> dict[str, str]:
    """The train and eval windows of this run (see the DAG doc)."""
    events = list(triggering_asset_events.get(DRIFT, [])) if triggering_asset_events else []
    end, source = window_end_for_run(params, [e.extra for e in events], data_interval_end, LOCAL_TZ)
    windows = training_windows(end, int(params["train_days"]), int(params["eval_days"]))
    log.info("window end %s (from %s): %s", end, source, windows)
    return {**windows, "window_source": source}


@task(outlets=[CHAMPION_MODEL])
def announce_champion(decision: dict[str, Any], outlet_events: Any = None) -> dict[str, Any]:
    """Emit the champion-model Asset when the promote step moved the alias; skip otherwise."""
    if not decision.get("promoted"):
        raise AirflowSkipException(f"no new champion: {'; '.join(decision.get('reasons') or ['(none)'])}")
    extra = {k: decision.get(k) for k in ("model", "version", "run_id", "forced", "metric", "value")}
    outlet_events[CHAMPION_MODEL].extra.update(extra)
    return extra


with DAG(
    dag_id=Path(__file__).stem,
    description="Train, evaluate, export and gate the big-tipper model (weekly, on drift, or by hand)",
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable("0 4 * * 1", timezone=LOCAL_TZ), assets=DRIFT
    ),
    start_date=START_DATE,
    # no weekly runs after this date: laptops and tests whose data lies in the past set it
    end_date=local_datetime(settings.training_end_date),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=2,
    dagrun_timeout=dt.timedelta(hours=12),
    default_args={**DAG_DEFAULTS, "execution_timeout": dt.timedelta(hours=6)},
    tags=["flywheel", "taxi", "training"],
    params={
        "window_end": optional(
            "string",
            "Eval window end",
            "Exclusive end of the eval window (YYYY-MM-DD); default: drift event or schedule.",
            format="date",
        ),
        "train_days": Param(
            settings.train_days,
            type="integer",
            minimum=1,
            maximum=3660,
            title="Training days",
            description="Days of trips before the evaluation window to train on.",
        ),
        "eval_days": Param(
            settings.eval_days,
            type="integer",
            minimum=1,
            maximum=366,
            title="Evaluation days",
            description="Evaluation window, days (the gate judges the candidate on them).",
        ),
        "feature_service": Param(
            "taxi_tips_v1", type="string", title="Feature service", description="Feast feature service."
        ),
        "trials": Param(
            settings.train_trials,
            type="integer",
            minimum=1,
            maximum=50,
            title="Trials",
            description="Hyperparameter trials (each an MLflow child run).",
        ),
        "max_epochs": optional("integer", "Max epochs", "Cap on epochs per trial.", minimum=1),
        "learning_rate": optional("number", "Learning rate", "Same for all trials.", exclusiveMinimum=0),
        "promotion_margin": optional(
            "number",
            "Promotion margin",
            "Tolerated loss vs the champion on the gate metric (default: settings, 0.005).",
            minimum=0,
            maximum=1,
        ),
        "force_promote": Param(
            False,
            type="boolean",
            title="Force promotion",
            description="Promote even if the gate says no (recorded on the version).",
        ),
        "force_reason": optional(
            "string", "Force reason", "Why the promotion is forced (required with force)."
        ),
        # a test hook: only in the forms of platforms that allow fault injection (tests), never in production
        **(FAULT_PARAMS if settings.allow_fault_injection else {}),
    },
) as dag:
    windows = plan_windows()
    service = ["--feature-service", "{{ params.feature_service }}"]
    train_set = ml_step(
        "training-set",
        ["--start", result(windows, "train_start"), "--end", result(windows, "train_end"), *service],
        task_id="training_set_train",
        multiple_outputs=True,
        doc_md="Point-in-time snapshot of the training window.",
    )
    eval_set = ml_step(
        "training-set",
        ["--start", result(windows, "eval_start"), "--end", result(windows, "eval_end"), *service],
        task_id="training_set_eval",
        multiple_outputs=True,
        doc_md="Point-in-time snapshot of the (later) evaluation window.",
    )
    train = ml_step(
        "train",
        ["--training-set", result(train_set, "uri"), opt("--trials", "params.trials"),
         opt("--max-epochs", "params.max_epochs"), opt("--learning-rate", "params.learning_rate"), *TRACKING],
        profile="gpu",
        multiple_outputs=True,
        doc_md="Hyperparameter trials (MLflow child runs); the best on validation is the candidate bundle.",
    )  # fmt: skip
    bundle: list[Arg] = ["--bundle", result(train, "bundle")]
    eval_uri = result(eval_set, "uri")
    evaluate = ml_step(
        "evaluate",
        [*bundle, "--training-set", result(train_set, "uri"), "--eval-set", eval_uri, *TRACKING],
        doc_md="Metrics, calibration, slices, baselines, behavioural tests, champion: on the eval window.",
    )
    export = ml_step(
        "export-onnx",
        [*bundle, "--eval-set", eval_uri, *FAULT_ARGV, *TRACKING],
        doc_md="ONNX export (dynamic batch, pinned opset); its hash is recorded.",
    )
    check = ml_step(
        "check-onnx",
        [*bundle, "--eval-set", eval_uri, *TRACKING],
        doc_md="The exported file: hash, loads in onnxruntime, parity with torch on eval rows, latency.",
    )
    register = ml_step(
        "register", [*bundle, *TRACKING], doc_md="Register the ONNX model as a new version (no alias yet)."
    )
    promote = ml_step(
        "promote",
        [*bundle, opt("--margin", "params.promotion_margin"), switch("--force", "params.force_promote"),
         opt("--force-reason", "params.force_reason"), *TRACKING],
        doc_md="The gate: champion if it beats the baselines and the champion and passed the ONNX checks.",
    )  # fmt: skip
    evaluate >> export >> check >> register >> promote
    announce_champion(promote.output)  # type: ignore[arg-type]  # an XComArg, resolved at run time
