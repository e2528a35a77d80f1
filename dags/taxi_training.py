"""
### taxi_training: train, evaluate, export and (maybe) promote the big-tipper model

`plan_windows -> training-set (train, eval) -> train -> evaluate -> export-onnx -> check-onnx -> register ->
promote -> announce_champion`; every step but the first and last is an `ml-tasks` command (see
`ml_tasks/cli.py`) run by the project's step helper (`dags/_lib`): a local subprocess by default, a
Kubernetes pod with `FLYWHEEL_RUNNER=kubernetes` (`train` asks for the `gpu` profile there).

* **plan_windows** picks the windows: train on `[eval_start - train_days, eval_start)`, evaluate on the
  LATER window `[eval_start, window_end)` (`eval_days` long). `window_end` is the param when set, else the
  newest drift event's interval end, else the run's data interval end (weekly schedule).
* **training-set** (twice): point-in-time correct snapshots of both windows from Feast (feature service
  `feature_service`); the features must have been built for those days (`taxi_features`).
* **train**: PyTorch tabular model (categorical embeddings, normalisation inside the model), a small
  hyperparameter search (`trials`, MLflow child runs; the best on the validation split is the candidate),
  time-based split, early stopping, checkpoints under the data root (a restarted task resumes).
  Writes the candidate bundle `models/<model>/candidates/<dag>/<run>/` and the MLflow run.
* **evaluate**: on the eval window: ROC-AUC, PR-AUC, log loss, calibration, slices, baselines
  (majority class, payment-type rule, gradient-boosted tree), behavioural tests, leakage warnings, the
  current champion scored on the same rows; model card logged with the run.
* **export-onnx** / **check-onnx**: ONNX with a dynamic batch dimension, checked against the recorded hash,
  parity with torch on the eval rows and latency.
* **register** the ONNX model as a new version of the registered model; **promote** applies the gate: the
  candidate becomes `champion` only if it beats every baseline, is not worse than the champion beyond
  `promotion_margin`, and passed the ONNX checks; otherwise it becomes `challenger` and the version's tags
  say why. `force_promote` (with `force_reason`) overrides the gate and is recorded on the version.
* **announce_champion** emits the Asset `flywheel-champion-model` when (and only when) the champion changed.

**Schedule.** Weekly (Monday 04:00 America/Chicago) and on the drift Asset `flywheel-drift` (emitted by
monitoring, which applies the retraining cooldown and hysteresis before it emits), and manual runs with the
params form. `FLYWHEEL_TRAINING_END_DATE` stops the weekly runs after a date (a laptop whose data lies in
the past); `FLYWHEEL_TRAIN_TRIALS`, `FLYWHEEL_TRAIN_DAYS` (28) and `FLYWHEEL_EVAL_DAYS` (7) set the
defaults of `trials`, `train_days` and `eval_days`.

**MLflow.** One run per DAG run and task: `train` owns the model's run, the later steps make child runs
of it; a retry replaces the task's previous run (no ghost runs). Tags carry dag_id, run_id, data interval,
code version, training-set uri and hash, feature service. `MLFLOW_TRACKING_URI` picks the server (default:
SQLite under the data root).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

import pendulum
from _lib import CHAMPION_MODEL, DRIFT, default_args, ml_step, opt, switch
from _lib.windows import training_windows, window_end_for_run
from airflow.sdk import DAG, AssetOrTimeSchedule, CronDataIntervalTimetable, Param, task
from airflow.sdk.exceptions import AirflowSkipException

TZ = "America/Chicago"
TRIALS = int(os.environ.get("FLYWHEEL_TRAIN_TRIALS", "2"))
# defaults of the windows (drift- and schedule-triggered runs use them; the form can change them)
TRAIN_DAYS = int(os.environ.get("FLYWHEEL_TRAIN_DAYS", "28"))
EVAL_DAYS = int(os.environ.get("FLYWHEEL_EVAL_DAYS", "7"))
# no scheduled (weekly) runs after this date: laptops and tests whose data lies in the past set it, so
# unpausing the DAG does not start a run for the current week, which has no features
END_DATE = (
    pendulum.instance(dt.datetime.fromisoformat(os.environ["FLYWHEEL_TRAINING_END_DATE"]), tz=TZ)
    if os.environ.get("FLYWHEEL_TRAINING_END_DATE")
    else None
)

log = logging.getLogger(__name__)


def pulled(task_id: str, key: str) -> str:
    """Argv template: field ``key`` of the JSON summary (XCom) of the upstream task ``task_id``."""
    return f"{{{{ ti.xcom_pull(task_ids='{task_id}')['{key}'] }}}}"


#: every tracked step names its MLflow run by (dag, run, task): a retry replaces the previous run
TRACKING = ["--dag-id", "{{ dag.dag_id }}", "--dag-run-id", "{{ run_id }}", "--task-id", "{{ task.task_id }}"]
BUNDLE = ["--bundle", pulled("train", "bundle")]
TRAIN_SET = pulled("training_set_train", "uri")
EVAL_SET = pulled("training_set_eval", "uri")


@task(task_id="plan_windows")
def plan_windows(
    params: Any = None, triggering_asset_events: Any = None, data_interval_end: Any = None
) -> dict[str, str]:
    """The train and eval windows of this run (see the DAG doc)."""
    events = list(triggering_asset_events.get(DRIFT, [])) if triggering_asset_events else []
    end, source = window_end_for_run(params, [e.extra for e in events], data_interval_end, TZ)
    windows = training_windows(end, int(params["train_days"]), int(params["eval_days"]))
    log.info("window end %s (from %s): %s", end, source, windows)
    return {**windows, "window_source": source}


@task(task_id="announce_champion", outlets=[CHAMPION_MODEL])
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
    schedule=AssetOrTimeSchedule(timetable=CronDataIntervalTimetable("0 4 * * 1", timezone=TZ), assets=DRIFT),
    start_date=pendulum.datetime(2024, 1, 1, tz=TZ),
    end_date=END_DATE,
    catchup=False,
    max_active_runs=1,
    max_active_tasks=2,
    dagrun_timeout=dt.timedelta(hours=12),
    default_args=default_args(execution_timeout=dt.timedelta(hours=6)),
    tags=["flywheel", "taxi", "training"],
    params={
        "window_end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Exclusive end of the eval window (YYYY-MM-DD); default: drift event or schedule.",
        ),
        "train_days": Param(
            TRAIN_DAYS, type="integer", minimum=1, maximum=3660, description="Training days."
        ),
        "eval_days": Param(
            EVAL_DAYS, type="integer", minimum=1, maximum=366, description="Evaluation window, days."
        ),
        "feature_service": Param("taxi_tips_v1", type="string", description="Feast feature service."),
        "trials": Param(TRIALS, type="integer", minimum=1, maximum=50, description="Hyperparameter trials."),
        "max_epochs": Param(
            None, type=["null", "integer"], minimum=1, description="Cap on epochs per trial."
        ),
        "learning_rate": Param(
            None, type=["null", "number"], exclusiveMinimum=0, description="Learning rate, all trials."
        ),
        "promotion_margin": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            description="Tolerated loss vs the champion on the gate metric (default: settings, 0.005).",
        ),
        "force_promote": Param(
            False, type="boolean", description="Promote even if the gate says no (recorded on the version)."
        ),
        "force_reason": Param(
            None, type=["null", "string"], description="Why the promotion is forced (required with force)."
        ),
        "inject_fault": Param(
            None,
            type=["null", "string"],
            enum=[None, "corrupt-onnx"],
            description="Fault injection (honoured only where FLYWHEEL_ALLOW_FAULT_INJECTION=true).",
        ),
    },
) as dag:
    windows = plan_windows()
    train_set = ml_step(
        "training-set",
        ["--start", pulled("plan_windows", "train_start"), "--end", pulled("plan_windows", "train_end"),
         "--feature-service", "{{ params.feature_service }}"],
        task_id="training_set_train",
        doc_md="Point-in-time snapshot of the training window.",
    )  # fmt: skip
    eval_set = ml_step(
        "training-set",
        ["--start", pulled("plan_windows", "eval_start"), "--end", pulled("plan_windows", "eval_end"),
         "--feature-service", "{{ params.feature_service }}"],
        task_id="training_set_eval",
        doc_md="Point-in-time snapshot of the (later) evaluation window.",
    )  # fmt: skip
    train = ml_step(
        "train",
        ["--training-set", TRAIN_SET, opt("--trials", "params.trials"),
         opt("--max-epochs", "params.max_epochs"), opt("--learning-rate", "params.learning_rate"), *TRACKING],
        profile="gpu",
        doc_md="Hyperparameter trials (MLflow child runs); the best on validation is the candidate bundle.",
    )  # fmt: skip
    evaluate = ml_step(
        "evaluate",
        [*BUNDLE, "--training-set", TRAIN_SET, "--eval-set", EVAL_SET, *TRACKING],
        doc_md="Metrics, calibration, slices, baselines, behavioural tests, champion: on the eval window.",
    )
    export = ml_step(
        "export-onnx",
        [*BUNDLE, "--eval-set", EVAL_SET, opt("--inject-fault", "params.inject_fault"), *TRACKING],
        doc_md="ONNX export (dynamic batch, pinned opset); its hash is recorded.",
    )
    check = ml_step(
        "check-onnx",
        [*BUNDLE, "--eval-set", EVAL_SET, *TRACKING],
        doc_md="The exported file: hash, loads in onnxruntime, parity with torch on eval rows, latency.",
    )
    register = ml_step(
        "register", [*BUNDLE, *TRACKING], doc_md="Register the ONNX model as a new version (no alias yet)."
    )
    promote = ml_step(
        "promote",
        [*BUNDLE, opt("--margin", "params.promotion_margin"), switch("--force", "params.force_promote"),
         opt("--force-reason", "params.force_reason"), *TRACKING],
        doc_md="The gate: champion if it beats the baselines and the champion and passed the ONNX checks.",
    )  # fmt: skip
    windows >> [train_set, eval_set]
    train_set >> train
    [train, eval_set] >> evaluate >> export >> check >> register >> promote
    announce_champion(promote.output)  # type: ignore[arg-type]  # an XComArg, resolved at run time
