"""Training steps: train (and its torchrun worker), evaluate, export-onnx, check-onnx, register, promote."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ml_tasks.cli.app import (
    DataRootOpt,
    StepError,
    app,
    make_settings,
)
from ml_tasks.jsonout import emit

DagIdOpt = Annotated[
    str | None,
    typer.Option("--dag-id", help="MLflow run key: the Airflow DAG id (default: a local CLI key)."),
]
DagRunIdOpt = Annotated[str | None, typer.Option("--dag-run-id", help="MLflow run key: the Airflow run id.")]
TaskIdOpt = Annotated[
    str | None, typer.Option("--task-id", help="MLflow run key: the task id (default: the step name).")
]
BundleOpt = Annotated[
    str, typer.Option("--bundle", help="Candidate bundle directory (the `bundle` of train's summary).")
]
EvalSetOpt = Annotated[
    str, typer.Option("--eval-set", help="Training-set snapshot URI of the (later) evaluation window.")
]


def run_key(step: str, dag_id: str | None, dag_run_id: str | None, task_id: str | None) -> Any:
    from ml_tasks.models.tracking import RunKey

    if bool(dag_id) != bool(dag_run_id):
        raise StepError("--dag-id and --dag-run-id go together (they name the MLflow run of a DAG run)")
    return RunKey.resolve(task_id or step, dag_id, dag_run_id)


@app.command()
def train(
    training_set: Annotated[
        str, typer.Option("--training-set", help="Training-set snapshot URI (the `uri` of training-set).")
    ],
    trials: Annotated[int | None, typer.Option(help="Hyperparameter trials (default from settings).")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="Cap on epochs, pinned in every trial.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate, pinned in every trial.")] = None,
    dag_id: DagIdOpt = None,
    dag_run_id: DagRunIdOpt = None,
    task_id: TaskIdOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Train the PyTorch model (time-based split, trials as MLflow child runs); write the candidate bundle."""
    from ml_tasks.training import pipeline

    settings = make_settings(data_root)
    key = run_key("train", dag_id, dag_run_id, task_id)
    emit(pipeline.train(settings, training_set, key, trials=trials, max_epochs=max_epochs,
                        learning_rate=learning_rate))  # fmt: skip


@app.command("train-worker", hidden=True)
def train_worker(
    training_set: Annotated[str, typer.Option(help="Training set parquet file (or a trips CSV).")],
    out: Annotated[str, typer.Option(help="Bundle directory to write (rank 0 only).")],
    checkpoint_dir: Annotated[
        str | None, typer.Option(help="Checkpoint directory (default: <out>.checkpoints beside it).")
    ] = None,
    config: Annotated[str | None, typer.Option(help="ModelConfig overrides as a JSON object.")] = None,
    epochs: Annotated[int | None, typer.Option(help="max_epochs override.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Per-process batch size override.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed override.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Validation share (by time).")] = 0.1,
    test_fraction: Annotated[float, typer.Option(help="Test share (newest).")] = 0.1,
    device: Annotated[str | None, typer.Option(help="auto (default), cpu, cuda or cuda:N.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads per process.")] = None,
    mapping: Annotated[str, typer.Option(help="Column mapping when --training-set is a CSV.")] = "tfx",
) -> None:
    """One rank of a torchrun job (what `train` launches with FLYWHEEL_TRAIN_PROCESSES > 1); rank 0 prints."""
    from ml_tasks.training.worker import train_worker as run

    overrides = {"max_epochs": epochs, "batch_size": batch_size, "seed": seed}
    summary = run(training_set, out, checkpoint_dir=checkpoint_dir, config_json=config, overrides=overrides,
                  device=device, threads=threads, val_fraction=val_fraction, test_fraction=test_fraction,
                  mapping=mapping)  # fmt: skip
    if summary is not None:
        emit(summary)


@app.command()
def evaluate(
    bundle: BundleOpt,
    training_set: Annotated[
        str, typer.Option("--training-set", help="The candidate's training set (the baselines train on it).")
    ],
    eval_set: EvalSetOpt,
    champion_alias: Annotated[str, typer.Option(help="Alias of the model to compare with.")] = "champion",
    dag_id: DagIdOpt = None,
    dag_run_id: DagRunIdOpt = None,
    task_id: TaskIdOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Metrics, calibration, slices, baselines, behavioural tests and the champion on the eval window."""
    from ml_tasks.training import pipeline

    settings = make_settings(data_root)
    key = run_key("evaluate", dag_id, dag_run_id, task_id)
    emit(pipeline.evaluate(settings, bundle, training_set, eval_set, key, champion_alias=champion_alias))


@app.command("export-onnx")
def export_onnx(
    bundle: BundleOpt,
    eval_set: EvalSetOpt,
    inject_fault: Annotated[
        str | None,
        typer.Option(help="Tests only: corrupt-onnx (needs FLYWHEEL_ALLOW_FAULT_INJECTION=true)."),
    ] = None,
    dag_id: DagIdOpt = None,
    dag_run_id: DagRunIdOpt = None,
    task_id: TaskIdOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Export the candidate to ONNX (dynamic batch dimension, pinned opset) and record its hash."""
    from ml_tasks.training import pipeline

    settings = make_settings(data_root)
    key = run_key("export-onnx", dag_id, dag_run_id, task_id)
    emit(pipeline.export_onnx(settings, bundle, eval_set, key, inject_fault=inject_fault))


@app.command("check-onnx")
def check_onnx(
    bundle: BundleOpt,
    eval_set: EvalSetOpt,
    dag_id: DagIdOpt = None,
    dag_run_id: DagRunIdOpt = None,
    task_id: TaskIdOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Check the exported file: hash, onnxruntime load, signature, parity with torch, latency."""
    from ml_tasks.training import pipeline

    settings = make_settings(data_root)
    key = run_key("check-onnx", dag_id, dag_run_id, task_id)
    emit(pipeline.check_onnx(settings, bundle, eval_set, key))


@app.command()
def register(
    bundle: BundleOpt,
    dag_id: DagIdOpt = None,
    dag_run_id: DagRunIdOpt = None,
    task_id: TaskIdOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Register the candidate's ONNX model as a new version in the MLflow registry (no alias)."""
    from ml_tasks.training import release

    settings = make_settings(data_root)
    emit(release.register(settings, bundle, run_key("register", dag_id, dag_run_id, task_id)))


@app.command()
def promote(
    bundle: BundleOpt,
    margin: Annotated[
        float | None, typer.Option(help="Tolerated loss vs the champion on the gate metric (default 0.005).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if the gate says no (recorded).")
    ] = False,
    force_reason: Annotated[str | None, typer.Option(help="Why the promotion is forced.")] = None,
    dag_id: DagIdOpt = None,
    dag_run_id: DagRunIdOpt = None,
    task_id: TaskIdOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """The gate: move the champion alias to the candidate, or mark it challenger with the reasons."""
    from ml_tasks.training import release

    settings = make_settings(data_root)
    key = run_key("promote", dag_id, dag_run_id, task_id)
    emit(release.promote(settings, bundle, key, margin=margin, force=force, force_reason=force_reason))
