"""A step's rows in batches: a day's entity rows, each batch's point-in-time features and encoding, its
prediction rows; and the bounded pipeline that scores them (:func:`score_batches`). Design:
``docs/prediction.md`` (the scoring pipeline)."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ml_tasks.contract import CURATED, EVENT_TIMESTAMP, LABEL, TRIP_KEY
from ml_tasks.features.retrieval import (
    ROW,
    entity_frame,
    feature_inputs,
    join_features,
    missing_views,
    sorted_order,
)
from ml_tasks.prediction import pit
from ml_tasks.prediction.pipeline import OneBehind, prefetch
from ml_tasks.prediction.schema import MISSING_VIEWS, POSITION
from ml_tasks.prediction.shards import shard_positions
from ml_tasks.storage import input_record

if TYPE_CHECKING:
    from ml_tasks.models.preprocess import Encoded
    from ml_tasks.prediction.score import ScoringContext

#: prepared (joined + encoded) batches waiting for onnxruntime: enough to cover the next day's first batch
PREFETCH_BATCHES = 2


def _constant(value: Any, typ: pa.DataType, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, typ), n)


@dataclass(frozen=True)
class DayRows:
    """A shard's entity rows of one day in the day's sorted order (features are joined per batch)."""

    day: dt.date
    day_rows: int  # the day's trips (all shards)
    table: pa.Table
    positions: pa.Array  # int64: each row's position in the day's sorted order
    inputs: list[dict[str, Any]]  # the manifest inputs the day is scored from


@dataclass(frozen=True)
class Batch:
    """Up to ``predict_batch_rows`` rows of a day with their point-in-time features, encoded for the model
    (None: the day has no rows)."""

    day: DayRows
    start: int
    rows: pa.Table
    encoded: Encoded | None
    missing: dict[str, int]  # per view, rows without a feature row
    per_row: pa.Array  # int8: per row, the views without a feature row

    @property
    def last(self) -> bool:
        """Whether this is the day's last batch."""
        return bool(self.start + self.rows.num_rows >= self.day.table.num_rows)


@dataclass
class DayTotals:
    """What a day's batches add up to (:meth:`add` each batch once)."""

    day_rows: int
    inputs: list[dict[str, Any]]
    missing: dict[str, int]
    rows: int = 0
    missing_features: int = 0  # rows missing at least one view

    @classmethod
    def tally(cls, totals: dict[dt.date, DayTotals], batch: Batch) -> DayTotals:
        """Add ``batch`` to its day's entry of ``totals``; the entry."""
        day = batch.day
        entry = totals.setdefault(day.day, cls(day.day_rows, day.inputs, dict.fromkeys(batch.missing, 0)))
        entry.rows += batch.rows.num_rows
        entry.missing_features += int(np.count_nonzero(batch.per_row.to_numpy(zero_copy_only=False)))
        for view, n in batch.missing.items():
            entry.missing[view] += n
        return entry


def day_rows(ctx: ScoringContext, day: dt.date, shard: int, shards: int) -> DayRows:
    """The shard's entity rows of ``day`` (label dropped), sorted."""
    root = ctx.root
    entities = entity_frame(root, day)
    if LABEL in entities.column_names:
        entities = entities.drop_columns([LABEL])  # labels arrive later; prediction never reads them
    positions = shard_positions(entities.num_rows, shard, shards)
    order = sorted_order(entities)
    rows = entities.take(order if shards == 1 else order.take(pa.array(positions)))
    curated = input_record(root, root.partition_path(*CURATED, day))
    inputs = [curated, *feature_inputs(root, ctx.views, ctx.interval.single(day))]
    return DayRows(day, entities.num_rows, rows, pa.array(positions, pa.int64()), inputs)


def join_batch(ctx: ScoringContext, day: DayRows, start: int, rows: int) -> Batch:
    """Rows ``start:start + rows`` of ``day`` with their point-in-time features, encoded."""
    fast = (
        functools.partial(pit.join, ctx.views, row=ROW, tables=ctx.feature_tables) if ctx.fast_join else None
    )
    table = join_features(
        ctx.handle,
        ctx.service,
        ctx.views,
        day.table.slice(start, rows),
        chunk_rows=ctx.chunk_rows,
        refusing="predictions",
        join=fast,
    )
    missing, per_row = missing_views(table, ctx.view_columns)
    encoded = ctx.scorer.preprocessor.encode(table) if table.num_rows else None
    return Batch(day, start, table, encoded, missing, per_row)


def prepared_batches(
    ctx: ScoringContext, days: Sequence[dt.date], shard: int, shards: int
) -> Iterator[Batch]:
    """Every day's rows in batches of ``predict_batch_rows``, joined and encoded (one empty batch for a day
    without rows), lazily: the first batch is ready after its own join, not the day's. Feast's join (the
    fallback) costs much per call: its batches are ``training_set_chunk_rows`` long (onnxruntime still
    scores ``predict_batch_rows`` at a time; the partitions' bytes do not depend on either)."""
    step = ctx.batch_rows if ctx.fast_join else max(ctx.batch_rows, ctx.chunk_rows)
    for day in days:
        rows = day_rows(ctx, day, shard, shards)
        for start in range(0, max(rows.table.num_rows, 1), step):
            yield join_batch(ctx, rows, start, step)


def output_table(
    ctx: ScoringContext, batch: Batch, scores: npt.NDArray[np.float64], *, staged: bool
) -> pa.Table:
    """The prediction rows of ``batch``: the partition's columns (and the position column when ``staged``)."""
    model, chunk, n = ctx.model, batch.rows, batch.rows.num_rows
    columns: dict[str, Any] = {
        TRIP_KEY: chunk[TRIP_KEY],
        EVENT_TIMESTAMP: chunk[EVENT_TIMESTAMP],
        "trip_date": chunk["trip_date"],
        "score": pa.array(scores, pa.float64()),
        "decision": pa.array(scores >= model.threshold, pa.bool_()),
        "threshold": _constant(model.threshold, pa.float64(), n),
        "model_name": _constant(model.name, pa.string(), n),
        "model_version": _constant(model.version, pa.string(), n),
        "model_run_id": _constant(model.run_id, pa.string(), n),
        "feature_service": _constant(model.feature_service, pa.string(), n),
        "interval_start": _constant(ctx.interval.start, pa.date32(), n),
        "interval_end": _constant(ctx.interval.end, pa.date32(), n),
        MISSING_VIEWS: batch.per_row,
    }
    for name in ctx.scorer.preprocessor.inputs.columns:
        columns[name] = chunk[name]
    if staged:
        columns[POSITION] = batch.day.positions.slice(batch.start, n)
    return pa.table(columns).cast(ctx.staged if staged else ctx.schema)


def score_batches(
    ctx: ScoringContext,
    days: Sequence[dt.date],
    shard: int,
    shards: int,
    write: Callable[[Batch, npt.NDArray[np.float64]], None],
) -> None:
    """Score every batch of ``days`` in order, handing each with its scores to ``write``.

    A bounded pipeline (:mod:`ml_tasks.prediction.pipeline`): the next batches are joined and encoded in
    one thread and ``write`` runs in another, in order, while this thread scores.
    """
    batches = prefetch(prepared_batches(ctx, days, shard, shards), PREFETCH_BATCHES, "predict-prepare")
    with OneBehind("predict-write") as writer, contextlib.closing(batches):
        for batch in batches:
            if batch.encoded is None:
                scores = np.empty(0, dtype=np.float64)
            else:
                scores = ctx.scorer.predict_encoded(batch.encoded.numeric, batch.encoded.categorical)
            writer.submit(write, batch, scores)
