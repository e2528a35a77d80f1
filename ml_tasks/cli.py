"""``ml-tasks``: one subcommand per pipeline step. The argv is the contract.

The same argv runs in a test, as a local subprocess launched by a DAG, and as the command of a
Kubernetes pod. Logs go to stderr; each subcommand ends by printing ONE JSON line on stdout.
Heavy libraries are imported inside the commands, so ``ml-tasks --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from ml_tasks.errors import FlywheelError
from ml_tasks.jsonout import emit

app = typer.Typer(
    name="ml-tasks",
    help="Flywheel pipeline steps. Each prints one JSON summary line on stdout.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Start = Annotated[
    str, typer.Option("--start", help="Interval start: a local date or ISO datetime (inclusive).")
]
End = Annotated[
    str | None,
    typer.Option(
        "--end", help="Interval end: a local date or ISO datetime (exclusive; default start + 1 day)."
    ),
]
DataRootOpt = Annotated[
    str | None, typer.Option("--data-root", help="Override FLYWHEEL_DATA_ROOT (folder or URI).")
]


class StepError(FlywheelError):
    """Raised by steps for an expected failure: reported as one clear line, exit status 1."""


def _settings(data_root: str | None, **overrides: Any) -> Any:
    from ml_tasks.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if data_root:
        values["data_root"] = data_root
    return Settings(**values)


def _root(settings: Any) -> Any:
    from ml_tasks.storage import DataRoot

    return DataRoot(settings.resolved_data_root())


def _interval(start: str, end: str | None, settings: Any) -> Any:
    from ml_tasks.intervals import make_interval

    return make_interval(start, end, settings.timezone)


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--option expects key=value, got {pair!r}")
        options[key.strip().replace("-", "_")] = value
    return options


@app.command()
def extract(
    start: Start,
    end: End = None,
    source: Annotated[str, typer.Option(help="Source: synthetic | file | chicago | postgres.")] = "synthetic",
    uri: Annotated[
        list[str] | None,
        typer.Option(help="file: path, URI or glob (repeatable). CSV, Parquet or JSON (lines or array)."),
    ] = None,
    mapping: Annotated[
        str | None, typer.Option(help="file: column layout, 'portal' (API names) or 'tfx' (TFX sample).")
    ] = None,
    dataset_id: Annotated[
        str | None, typer.Option(help="chicago: dataset id (default: chosen by year, wrvz-psew / ajtu-isnz).")
    ] = None,
    table: Annotated[str | None, typer.Option(help="postgres: table name (schema.table).")] = None,
    query: Annotated[
        str | None,
        typer.Option(help="postgres: SQL with :start and :end bind parameters (instead of --table)."),
    ] = None,
    trips_per_day: Annotated[int | None, typer.Option(help="synthetic: trips per day.")] = None,
    drift_from: Annotated[
        str | None, typer.Option(help="synthetic: ISO date from which the drift scenario applies.")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="Extra source option key=value (repeatable).")
    ] = None,
    data_root: DataRootOpt = None,
) -> None:
    """Extract one interval from a source into raw/trips/dt=YYYY-MM-DD partitions."""
    from ml_tasks.extract import extract as run
    from ml_tasks.sources import get_source

    settings = _settings(data_root, synthetic_trips_per_day=trips_per_day, synthetic_drift_from=drift_from)
    options: dict[str, Any] = _parse_options(option or [])
    for key, value in {
        "uri": uri,
        "mapping": mapping,
        "dataset_id": dataset_id,
        "table": table,
        "query": query,
    }.items():
        if value:
            options[key] = value
    src = get_source(source, settings, options)
    emit(run(_root(settings), src, _interval(start, end, settings)))


@app.command()
def transform(start: Start, end: End = None, data_root: DataRootOpt = None) -> None:
    """Type, derive and de-duplicate raw partitions into staging/trips/dt=YYYY-MM-DD."""
    from ml_tasks.transform import transform as run

    settings = _settings(data_root)
    emit(run(_root(settings), _interval(start, end, settings), settings))


@app.command()
def validate(
    start: Start,
    end: End = None,
    max_reject_rate: Annotated[
        float | None, typer.Option(help="Fail the batch above this rejected share (default from settings).")
    ] = None,
    allow_empty: Annotated[
        bool | None, typer.Option("--allow-empty/--no-allow-empty", help="Accept days with no trips.")
    ] = None,
    max_fare: Annotated[float | None, typer.Option(help="Reject fares above this (default 1000).")] = None,
    data_root: DataRootOpt = None,
) -> None:
    """Validate staged partitions (GX suite): accepted rows staged, rejects to quarantine/, reports/."""
    from ml_tasks.validation import validate as run

    settings = _settings(
        data_root, max_reject_rate=max_reject_rate, allow_empty=allow_empty, max_fare=max_fare
    )
    emit(run(_root(settings), _interval(start, end, settings), settings))


@app.command()
def publish(start: Start, end: End = None, data_root: DataRootOpt = None) -> None:
    """Check row accounting and move accepted rows into curated/trips/dt=YYYY-MM-DD."""
    from ml_tasks.publish import publish as run

    settings = _settings(data_root)
    emit(run(_root(settings), _interval(start, end, settings), settings))


FeatureServiceOpt = Annotated[
    str, typer.Option("--feature-service", help="Feast feature service (one per model version).")
]


def _store(settings: Any, check: bool = True) -> Any:
    from ml_tasks.features.store import check_registry, open_store

    handle = open_store(settings)
    if check:
        check_registry(handle)
    return handle


@app.command("feature-apply")
def feature_apply(
    check: Annotated[
        bool,
        typer.Option("--check", help="Only compare (feast plan): exit 1 when the registry is out of date."),
    ] = False,
    data_root: DataRootOpt = None,
) -> None:
    """Register the feature_repo/ declarations in the Feast registry (feast apply), or --check them."""
    from ml_tasks.features.store import apply_declarations, check_registry

    settings = _settings(data_root)
    handle = _store(settings, check=False)
    if check:
        check_registry(handle)
        emit({"step": "feature-apply", "check": True, "changes": [], **handle.describe()})
        return
    emit({"step": "feature-apply", **apply_declarations(handle)})


Dependents = Annotated[
    bool,
    typer.Option(
        "--dependents/--no-dependents",
        help="Also take the existing later days whose trailing windows include the interval (late data).",
    ),
]


@app.command("build-features")
def build_features(
    start: Start, end: End = None, dependents: Dependents = True, data_root: DataRootOpt = None
) -> None:
    """Trailing-window entity aggregates from curated trips into features/<view>/dt=YYYY-MM-DD."""
    from ml_tasks.features.build import build_features as run

    settings = _settings(data_root)
    emit(run(_root(settings), _interval(start, end, settings), settings, dependents))


@app.command()
def materialize(
    start: Start,
    end: End = None,
    view: Annotated[
        list[str] | None, typer.Option("--view", help="Feature view to load (repeatable; default all).")
    ] = None,
    batch_rows: Annotated[int | None, typer.Option(help="Rows per online write batch.")] = None,
    dependents: Dependents = True,
    data_root: DataRootOpt = None,
) -> None:
    """Load the interval's feature rows (latest per entity) into the Feast online store, in batches."""
    from ml_tasks.features.materialize import materialize as run

    settings = _settings(data_root)
    handle = _store(settings)
    emit(
        run(handle, _root(settings), _interval(start, end, settings), settings, view, batch_rows, dependents)
    )


@app.command("training-set")
def training_set(
    start: Start,
    end: End = None,
    feature_service: FeatureServiceOpt = "taxi_tips_v1",
    name: Annotated[
        str | None, typer.Option(help="Snapshot name under training_sets/<service>/ (default START_END).")
    ] = None,
    data_root: DataRootOpt = None,
) -> None:
    """Point-in-time correct training snapshot of the window's trips (Feast historical features)."""
    from ml_tasks.features.training_set import build_training_set

    settings = _settings(data_root)
    handle = _store(settings)
    emit(
        build_training_set(
            handle, _root(settings), _interval(start, end, settings), settings, feature_service, name
        )
    )


@app.command("online-features")
def online_features(
    entity: Annotated[
        list[str],
        typer.Option(
            "--entity", "-e", help="key=value of an entity row, e.g. pickup_community_area=8 (repeatable)."
        ),
    ],
    feature_service: FeatureServiceOpt = "taxi_tips_v1",
    data_root: DataRootOpt = None,
) -> None:
    """Read the feature service's features for entity rows from the online store (SQLite or Redis)."""
    from ml_tasks.features.online import online_features as run

    settings = _settings(data_root)
    handle = _store(settings)
    emit(run(handle, feature_service, entity))


# -- training, evaluation, ONNX and the registry ----------------------------------------------------------
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


def _run_key(step: str, dag_id: str | None, dag_run_id: str | None, task_id: str | None) -> Any:
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

    settings = _settings(data_root)
    key = _run_key("train", dag_id, dag_run_id, task_id)
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

    settings = _settings(data_root)
    key = _run_key("evaluate", dag_id, dag_run_id, task_id)
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

    settings = _settings(data_root)
    key = _run_key("export-onnx", dag_id, dag_run_id, task_id)
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

    settings = _settings(data_root)
    key = _run_key("check-onnx", dag_id, dag_run_id, task_id)
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
    from ml_tasks.training import pipeline

    settings = _settings(data_root)
    emit(pipeline.register(settings, bundle, _run_key("register", dag_id, dag_run_id, task_id)))


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
    from ml_tasks.training import pipeline

    settings = _settings(data_root)
    key = _run_key("promote", dag_id, dag_run_id, task_id)
    emit(pipeline.promote(settings, bundle, key, margin=margin, force=force, force_reason=force_reason))


# -- batch prediction, monitoring, lineage ------------------------------------------------------------
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", help="Model to use: NAME@ALIAS (resolved once, recorded), NAME/VERSION or models:/..."
    ),
]
RunKeyOpt = Annotated[
    str | None,
    typer.Option("--run-key", help="Sharded runs: names the shards' staging area (e.g. the DAG run id)."),
]


def _with_partitions(summary: dict[str, Any]) -> dict[str, Any]:
    """Add the ``partitions`` list the Asset-event contract expects (``dags/_lib/assets.py``)."""
    if "partitions" not in summary:
        summary["partitions"] = [
            {k: p[k] for k in ("dt", "uri", "rows") if k in p} for p in summary.get("written", [])
        ]
    return summary


@app.command("resolve-model")
def resolve_model(
    model: ModelOpt = "taxi_tips@champion",
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing",
            help="No such alias yet: print version null and the reason (exit 0) instead of failing.",
        ),
    ] = False,
    data_root: DataRootOpt = None,
) -> None:
    """Resolve a model alias to its version once (what a sharded prediction run pins)."""
    from ml_tasks.prediction.resolve import NoModelError
    from ml_tasks.prediction.resolve import resolve_model as resolve

    settings = _settings(data_root)
    try:
        emit({"step": "resolve-model", "spec": model, **resolve(settings, model).to_dict()})
    except NoModelError as exc:
        if not allow_missing:
            raise
        emit({"step": "resolve-model", "spec": model, "version": None, "reason": str(exc)})


@app.command()
def predict(
    start: Start,
    end: End = None,
    model: ModelOpt = "taxi_tips@champion",
    shard: Annotated[
        int | None,
        typer.Option(help="Score only this shard (0-based) into the staging area; needs --shards."),
    ] = None,
    shards: Annotated[int | None, typer.Option(help="Number of shards of a sharded run.")] = None,
    run_key: RunKeyOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Score the interval's trips with the model (ONNX, same features as training); write predictions.

    Without --shard: the whole interval, committed at once. With --shard I --shards N --run-key K: one
    shard into the staging area; ``predict-commit`` then writes the partitions once all N succeeded.
    """
    from ml_tasks.prediction.commit import predict_interval
    from ml_tasks.prediction.resolve import resolve_model as resolve
    from ml_tasks.prediction.score import predict_shard

    settings = _settings(data_root)
    interval = _interval(start, end, settings)
    if shard is None:
        if shards not in (None, 1):
            raise StepError("--shards N needs --shard I (a sharded run scores one shard per task)")
        emit(_with_partitions(predict_interval(settings, interval, model)))
        return
    if shards is None or not run_key:
        raise StepError("--shard needs --shards and --run-key")
    resolved = resolve(settings, model)
    emit(predict_shard(settings, interval, resolved, shard, shards, run_key))


@app.command("predict-commit")
def predict_commit(
    start: Start,
    end: End = None,
    model: ModelOpt = "taxi_tips@champion",
    shards: Annotated[int, typer.Option(help="Number of shards the run scored.")] = 1,
    run_key: RunKeyOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Check every shard of a sharded run succeeded, then write the interval's partitions (and upsert)."""
    from ml_tasks.prediction.commit import commit_predictions
    from ml_tasks.prediction.resolve import resolve_model as resolve

    if not run_key:
        raise StepError("predict-commit needs --run-key (the one the shards used)")
    settings = _settings(data_root)
    interval = _interval(start, end, settings)
    resolved = resolve(settings, model)
    emit(_with_partitions(commit_predictions(settings, interval, resolved, shards, run_key)))


@app.command()
def monitor(
    start: Start,
    end: End = None,
    model_name: Annotated[
        str, typer.Option(help="Registered model whose predictions are monitored.")
    ] = "taxi_tips",
    data_root: DataRootOpt = None,
) -> None:
    """Drift (inputs and predictions) against the model's training reference, quality, performance; decide."""
    from ml_tasks.monitoring.monitor import run_monitoring

    settings = _settings(data_root)
    emit(run_monitoring(settings, _interval(start, end, settings), model_name=model_name))


@app.command()
def lineage(
    target: Annotated[
        str,
        typer.Argument(
            help="A predictions partition (path, URI or predictions/<model>/dt=D), a model version"
            " (taxi_tips/3, models:/taxi_tips/3, taxi_tips@champion) or a training-set path/URI."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the chain as one JSON document.")] = False,
    data_root: DataRootOpt = None,
) -> None:
    """Which data and which model produced this: the chain down to the raw source partitions."""
    from ml_tasks.lineage import render_text, trace

    chain = trace(_settings(data_root), target)
    if as_json:
        emit(chain)
    else:
        print(render_text(chain), flush=True)


def _one_line(exc: BaseException) -> str:
    """The error as one line (the DAG helper reads the line after ``ml-tasks: error:``)."""
    return " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: logs to stderr, one clear line and exit 1 on expected errors."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app(args=argv, standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        from pydantic import ValidationError

        if isinstance(exc, FlywheelError | ValidationError):
            print(f"ml-tasks: error: {_one_line(exc)}", file=sys.stderr)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
