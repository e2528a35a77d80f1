"""Serving-side steps: resolve-model, predict, predict-commit, monitor, lineage."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ml_tasks.cli.app import (
    DataRootOpt,
    End,
    Start,
    StepError,
    app,
    make_settings,
    parse_interval,
)
from ml_tasks.contract import CHAMPION_SPEC, REGISTERED_MODEL
from ml_tasks.jsonout import emit

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


def with_partitions(summary: dict[str, Any]) -> dict[str, Any]:
    """Add the ``partitions`` list the Asset-event contract expects (``dags/_lib/assets.py``)."""
    if "partitions" not in summary:
        summary["partitions"] = [
            {k: p[k] for k in ("dt", "uri", "rows") if k in p} for p in summary.get("written", [])
        ]
    return summary


@app.command("resolve-model")
def resolve_model(
    model: ModelOpt = CHAMPION_SPEC,
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

    settings = make_settings(data_root)
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
    model: ModelOpt = CHAMPION_SPEC,
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

    settings = make_settings(data_root)
    interval = parse_interval(start, end, settings)
    if shard is None:
        if shards not in (None, 1):
            raise StepError("--shards N needs --shard I (a sharded run scores one shard per task)")
        emit(with_partitions(predict_interval(settings, interval, model)))
        return
    if shards is None or not run_key:
        raise StepError("--shard needs --shards and --run-key")
    resolved = resolve(settings, model)
    emit(predict_shard(settings, interval, resolved, shard, shards, run_key))


@app.command("predict-commit")
def predict_commit(
    start: Start,
    end: End = None,
    model: ModelOpt = CHAMPION_SPEC,
    shards: Annotated[int, typer.Option(help="Number of shards the run scored.")] = 1,
    run_key: RunKeyOpt = None,
    data_root: DataRootOpt = None,
) -> None:
    """Check every shard of a sharded run succeeded, then write the interval's partitions (and upsert)."""
    from ml_tasks.prediction.commit import commit_predictions
    from ml_tasks.prediction.resolve import resolve_model as resolve

    if not run_key:
        raise StepError("predict-commit needs --run-key (the one the shards used)")
    settings = make_settings(data_root)
    interval = parse_interval(start, end, settings)
    resolved = resolve(settings, model)
    emit(with_partitions(commit_predictions(settings, interval, resolved, shards, run_key)))


@app.command()
def monitor(
    start: Start,
    end: End = None,
    model_name: Annotated[
        str, typer.Option(help="Registered model whose predictions are monitored.")
    ] = REGISTERED_MODEL,
    data_root: DataRootOpt = None,
) -> None:
    """Drift (inputs and predictions) against the model's training reference, quality, performance; decide."""
    from ml_tasks.monitoring.monitor import run_monitoring

    settings = make_settings(data_root)
    emit(run_monitoring(settings, parse_interval(start, end, settings), model_name=model_name))


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

    chain = trace(make_settings(data_root), target)
    if as_json:
        emit(chain)
    else:
        print(render_text(chain), flush=True)
