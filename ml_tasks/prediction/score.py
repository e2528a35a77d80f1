"""Scoring one shard: the day's entity rows, their point-in-time features, the ONNX model, staged output."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ml_tasks.contract import (
    PREDICTIONS_LAYER,
    SHARD_JSON,
    SHARDS_DIR,
)
from ml_tasks.features.retrieval import (
    feature_columns,
    feature_schema,
    require_curated,
    resolve_service,
    view_columns,
)
from ml_tasks.features.store import FeatureStoreError
from ml_tasks.intervals import Interval
from ml_tasks.prediction import checked_registry, pit
from ml_tasks.prediction.batches import Batch, DayTotals, output_table, score_batches
from ml_tasks.prediction.resolve import ResolvedModel, as_model, load_scorer
from ml_tasks.prediction.schema import POSITION, FeatureServiceMismatch, output_schema
from ml_tasks.prediction.shards import (
    ShardDay,
    ShardRecord,
    StagedFile,
    check_shard,
    interval_dict,
    shard_path,
)
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest

if TYPE_CHECKING:
    from feast import FeatureService, FeatureView

    from ml_tasks.features.store import StoreHandle
    from ml_tasks.models.preprocess import Inputs
    from ml_tasks.models.scorer import OnnxScorer

log = logging.getLogger(__name__)


@dataclass
class ScoringContext:
    """Everything scoring a shard's days needs, set up once per shard."""

    root: DataRoot
    model: ResolvedModel
    scorer: OnnxScorer
    #: the open store and the service; None when the views came from the checked registry without Feast
    handle: StoreHandle | None
    service: FeatureService | None
    views: Sequence[pit.View]
    view_columns: dict[str, list[str]]
    schema: pa.Schema  # the partition's schema
    staged: pa.Schema  # + the position column
    interval: Interval
    batch_rows: int
    chunk_rows: int
    #: the point-in-time join of :mod:`ml_tasks.prediction.pit` instead of Feast's
    fast_join: bool = False
    #: the views' feature rows, read once per step by :func:`ml_tasks.prediction.pit.join`
    feature_tables: dict[str, pa.Table] = dataclasses.field(default_factory=dict)


def check_service_columns(model: ResolvedModel, inputs: Inputs, provided: list[str]) -> None:
    """The model's ``<view>__<feature>`` inputs must all come from its feature service.

    Raises:
        FeatureServiceMismatch: naming the service and the missing columns.
    """
    from ml_tasks.models.preprocess import FEATURE_SEPARATOR

    needed = [c for c in inputs.columns if FEATURE_SEPARATOR in c]
    missing = [c for c in needed if c not in set(provided)]
    if missing:
        raise FeatureServiceMismatch(
            f"model {model.uri} needs feature column(s) {missing} that feature service"
            f" {model.feature_service!r} in the Feast registry does not provide (it provides {len(provided)}:"
            f" {provided[:8]}{' ...' if len(provided) > 8 else ''}): the registered service differs from the"
            " one the model was trained with; register the model's service version or retrain"
        )


def open_checked_store(settings: Settings) -> StoreHandle:
    """The environment's feature store, its registry checked against the declarations."""
    from ml_tasks.features.store import check_registry, open_store

    handle = open_store(settings)  # imports Feast without torch (features/feast_import.py)
    check_registry(handle)
    checked_registry.record(settings)
    return handle


def _service(handle: StoreHandle, model: ResolvedModel) -> tuple[FeatureService, list[FeatureView]]:
    try:
        return resolve_service(handle, model.feature_service)
    except FeatureStoreError as exc:
        raise FeatureServiceMismatch(
            f"model {model.uri} was trained with feature service {model.feature_service!r}, which is not in"
            f" the Feast registry: {exc}"
        ) from None


def scoring_context(
    settings: Settings,
    model: ResolvedModel,
    interval: Interval,
    handle: StoreHandle | None,
    scorer: OnnxScorer | None = None,
) -> ScoringContext:
    """Load the model (unless given), open the store (unless given) and check the service serves the
    model's inputs."""
    scorer = scorer or load_scorer(settings, model)
    service: FeatureService | None = None
    views: Sequence[pit.View] | None = None
    if handle is None:
        views = checked_registry.checked_views(settings, model.feature_service)
    if views is not None and pit.views_supported(views):
        fast_join = True
        log.info(
            "feature views of %s read from the checked registry (Feast not opened)", model.feature_service
        )
    else:
        handle = handle or open_checked_store(settings)
        service, views = _service(handle, model)
        fast_join = pit.supported(handle, views)
    inputs = scorer.preprocessor.inputs
    check_service_columns(model, inputs, feature_columns(views))
    schema = output_schema(inputs, {f.name: f.type for f in feature_schema(views)})
    return ScoringContext(
        root=DataRoot(settings.resolved_data_root()),
        model=model,
        scorer=scorer,
        handle=handle,
        service=service,
        views=views,
        view_columns=view_columns(views),
        schema=schema,
        staged=schema.append(pa.field(POSITION, pa.int64())),
        interval=interval,
        batch_rows=settings.predict_batch_rows,
        chunk_rows=settings.training_set_chunk_rows,
        fast_join=fast_join,
    )


def _score_shard_days(
    ctx: ScoringContext, days: Sequence[dt.date], shard: int, shards: int, target: str
) -> dict[str, ShardDay]:
    """Score the shard's rows of ``days`` into ``target/dt=<day>``; each day's entry of ``_shard.json``."""
    root = ctx.root
    totals: dict[dt.date, DayTotals] = {}

    def write(batch: Batch, scores: npt.NDArray[np.float64]) -> None:
        DayTotals.tally(totals, batch)
        if batch.rows.num_rows:
            writers[batch.day.day].write(output_table(ctx, batch, scores, staged=True), schema=ctx.staged)

    with contextlib.ExitStack() as stack:
        # entered last day first, so the days are committed (the stack unwinds) in order
        writers = {
            day: stack.enter_context(root.write_partition(f"{target}/dt={day.isoformat()}"))
            for day in reversed(days)
        }
        score_batches(ctx, days, shard, shards, write)
        scored: dict[str, ShardDay] = {}
        for day in days:
            writer, entry = writers[day], totals[day]
            writer.write_empty(ctx.staged)
            writer.manifest = Manifest(
                dataset=f"{PREDICTIONS_LAYER}/{ctx.model.name}/{SHARDS_DIR}",
                partition=day.isoformat(),
                step="predict-shard",
                inputs=[*entry.inputs, ctx.model.record()],
                row_counts={"rows": entry.rows, "day_rows": entry.day_rows},
                params={"shard": shard, "shards": shards},
            )
            outputs = writer.outputs()
            writer.manifest.outputs = outputs
            scored[day.isoformat()] = ShardDay(
                day_rows=entry.day_rows,
                rows=entry.rows,
                missing=entry.missing,
                missing_features=entry.missing_features,
                inputs=entry.inputs,
                file=StagedFile.model_validate(outputs[0]),
            )
    return scored


def predict_shard(
    settings: Settings,
    interval: Interval,
    model: ResolvedModel | Mapping[str, Any] | str,
    shard: int,
    shards: int,
    run_key: str,
    *,
    handle: StoreHandle | None = None,
    scorer: OnnxScorer | None = None,
) -> dict[str, Any]:
    """Score shard ``shard`` of ``shards`` of every day of ``interval`` into the run's staging area.

    Args:
        settings: Settings (data root, batch sizes, registry, feature store).
        interval: The data interval (whole local days).
        model: The resolved model (or its ``to_dict()``; or a spec, resolved here: pass a pinned
            ``name/version`` so every shard scores with the same version).
        shard: This shard, ``0 <= shard < shards``.
        shards: The number of shards of the run.
        run_key: Identifies the run (e.g. the DAG run id): the staging folder.
        handle: An open feature store (default: open and check it).
        scorer: ``model``'s scorer, already loaded by :func:`~ml_tasks.prediction.resolve.resolve_loaded`
            in this process (default: load and verify it against the registry).

    Returns:
        The shard's summary (rows, missing features per view, staging URI, seconds).

    Raises:
        PartitionError: a curated partition of the interval is missing.
        ModelLoadError / FeatureServiceMismatch / FeatureStoreError: the model does not load, its feature
            service is not registered or lacks its inputs, or Feast lost rows.
    """
    started = time.perf_counter()
    check_shard(shard, shards)
    resolved = as_model(settings, model)
    days = list(interval.days())
    require_curated(DataRoot(settings.resolved_data_root()), days, interval)
    ctx = scoring_context(settings, resolved, interval, handle, scorer)
    root = ctx.root
    target = shard_path(root, resolved.name, run_key, interval, shard, shards)
    if root.exists(target):
        root.fs.delete_dir(target)  # a re-run replaces the shard's output (and _shard.json goes first)
    days_scored = _score_shard_days(ctx, days, shard, shards, target)
    seconds = time.perf_counter() - started
    rows = sum(d.rows for d in days_scored.values())
    record = ShardRecord(
        model=resolved,
        interval=interval_dict(interval),
        shard=shard,
        shards=shards,
        run_key=run_key,
        views=list(ctx.view_columns),
        columns=ctx.schema.names,
        days=days_scored,
        rows=rows,
        seconds=round(seconds, 3),
    )
    root.write_json(f"{target}/{SHARD_JSON}", record.to_json())  # last: marks the shard complete
    missing = {v: sum(d.missing[v] for d in days_scored.values()) for v in ctx.view_columns}
    log.info(
        "predict shard %d/%d of %s with %s: %d rows in %.2f s, rows without features %s",
        shard, shards, interval, resolved.uri, rows, seconds, missing,
    )  # fmt: skip
    return {
        "step": "predict-shard",
        "model": resolved.to_dict(),
        "interval": interval_dict(interval),
        "shard": shard,
        "shards": shards,
        "rows": rows,
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
        "missing_features": missing,
        "rows_with_missing_features": sum(d.missing_features for d in days_scored.values()),
        "staging_uri": root.uri(target),
        "seconds": round(seconds, 3),
    }
