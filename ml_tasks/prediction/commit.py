"""Committing a run: the shards merged per day into the predictions partitions, once all are complete."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import PREDICTIONS_LAYER
from ml_tasks.features.retrieval import ROW_GROUP_ROWS, require_curated
from ml_tasks.intervals import Interval
from ml_tasks.prediction.batches import Batch, DayTotals, output_table, score_batches
from ml_tasks.prediction.resolve import ResolvedModel, model_identity, resolve_loaded
from ml_tasks.prediction.schema import POSITION, PredictionError
from ml_tasks.prediction.score import scoring_context
from ml_tasks.prediction.shards import (
    ShardDay,
    ShardRecord,
    interval_dict,
    read_shards,
    remove_empty_parents,
    shard_dir,
    staging_path,
)
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, PartitionWriter, file_sha256

if TYPE_CHECKING:
    from ml_tasks.features.store import StoreHandle
    from ml_tasks.models.scorer import OnnxScorer

log = logging.getLogger(__name__)


def _merge_day(
    root: DataRoot, base: str, day: str, records: list[ShardRecord]
) -> tuple[pa.Table, dict[str, Any]]:
    """The day's rows of all shards in the day's sorted order, checked complete; and the day's totals."""
    import pyarrow.parquet as pq

    entries: list[ShardDay] = []
    for shard, record in enumerate(records):
        if day not in record.days:
            raise PredictionError(f"shard {shard} has no output for {day}: re-run it")
        entries.append(record.days[day])
    day_rows = entries[0].day_rows
    for shard, entry in enumerate(entries):
        if entry.day_rows != day_rows or entry.inputs != entries[0].inputs:
            raise PredictionError(
                f"shards 0 and {shard} read different inputs for {day} ({entries[0].day_rows} vs"
                f" {entry.day_rows} trips, or other partition hashes): the data changed between shards;"
                " re-run all shards"
            )
    tables = []
    for shard, entry in enumerate(entries):
        name = entry.file.uri.rsplit("/", 1)[1]
        path = f"{base}/{shard_dir(shard, len(records))}/dt={day}/{name}"
        if not root.exists(path) or file_sha256(path, root.fs) != entry.file.sha256:
            raise PredictionError(
                f"staged file {root.uri(path)} is missing or changed since shard {shard} wrote it"
            )
        tables.append(pq.read_table(path, filesystem=root.fs))
    merged = pa.concat_tables(tables)
    merged = merged.take(pc.sort_indices(merged[POSITION]))
    expected = pa.chunked_array([pa.array(np.arange(day_rows, dtype=np.int64))], pa.int64())
    if merged.num_rows != day_rows or not merged[POSITION].combine_chunks().equals(expected.combine_chunks()):
        raise PredictionError(
            f"the shards of {day} hold {merged.num_rows} rows for {day_rows} trips (or repeat some):"
            " incomplete or overlapping shard outputs; re-run the shards"
        )
    totals = {
        "rows": day_rows,
        "missing": {v: sum(e.missing[v] for e in entries) for v in records[0].views},
        "missing_features": sum(e.missing_features for e in entries),
        "inputs": entries[0].inputs,
    }
    return merged.drop_columns([POSITION]), totals


class RowGroups:
    """Rows appended in order to a partition, written in row groups of exactly :data:`ROW_GROUP_ROWS` rows
    (the last one smaller), each one contiguous chunk: the file's bytes depend on the rows only, not on
    the batch size or the shard count (Parquet pages follow the chunks they are written from)."""

    def __init__(self, writer: PartitionWriter, schema: pa.Schema) -> None:
        self.writer = writer
        self.schema = schema
        self._pending: list[pa.Table] = []
        self._rows = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._rows += table.num_rows
        while self._rows >= ROW_GROUP_ROWS:
            self._write(ROW_GROUP_ROWS)

    def flush(self) -> None:
        """Write the rows left (the last, smaller row group); then a file carrying the schema if none."""
        if self._rows:
            self._write(self._rows)
        self.writer.write_empty(self.schema)

    def _write(self, rows: int) -> None:
        table = pa.concat_tables(self._pending)
        self.writer.write(table.slice(0, rows).combine_chunks(), schema=self.schema)
        rest = table.slice(rows)
        self._pending = [rest] if rest.num_rows else []
        self._rows -= rows


def _set_manifest(
    writer: PartitionWriter,
    day: dt.date,
    totals: dict[str, Any],
    model: ResolvedModel,
    interval: Interval,
    shards: int,
) -> dict[str, Any]:
    """The day's partition manifest (set on ``writer``, the rows written); its entry of the summary."""
    key = day.isoformat()
    writer.manifest = Manifest(
        dataset=f"{PREDICTIONS_LAYER}/{model.name}",
        partition=key,
        step="predict",
        inputs=[*totals["inputs"], model.record()],
        row_counts={
            "rows": totals["rows"],
            "missing_features": totals["missing_features"],
            **{f"missing_{v}": n for v, n in totals["missing"].items()},
        },
        params={
            "model": model.uri,
            "interval": interval_dict(interval),
            "shards": shards,
            "feature_service": model.feature_service,
            "threshold": model.threshold,
        },
    )
    outputs = writer.outputs()
    writer.manifest.outputs = outputs
    return {
        "dt": key,
        "uri": writer.root.uri(writer.final),
        "rows": totals["rows"],
        "sha256": outputs[0]["sha256"],
        "missing_features": totals["missing"],
    }


def _write_day(
    root: DataRoot,
    day: dt.date,
    table: pa.Table,
    totals: dict[str, Any],
    model: ResolvedModel,
    interval: Interval,
    shards: int,
) -> dict[str, Any]:
    """Write one day's partition atomically; its entry of the summary's ``partitions``."""
    with root.write_partition(root.partition_path(PREDICTIONS_LAYER, model.name, day)) as writer:
        groups = RowGroups(writer, table.schema)
        groups.add(table)
        groups.flush()
        return _set_manifest(writer, day, totals, model, interval, shards)


def _score_partitions(
    settings: Settings,
    interval: Interval,
    model: ResolvedModel,
    scorer: OnnxScorer,
    handle: StoreHandle | None,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Score every day of ``interval`` straight into its predictions partition (one shard, no staging):
    the bytes of a sharded run's commit. The partitions are committed together once every day is scored,
    so a failure while scoring changes none of them."""
    ctx = scoring_context(settings, model, interval, handle, scorer)
    root, days = ctx.root, list(interval.days())
    groups: dict[dt.date, RowGroups] = {}
    totals: dict[dt.date, DayTotals] = {}

    def write(batch: Batch, scores: npt.NDArray[np.float64]) -> None:
        DayTotals.tally(totals, batch)
        if batch.rows.num_rows:
            groups[batch.day.day].add(output_table(ctx, batch, scores, staged=False))
        if batch.last:
            groups[batch.day.day].flush()

    with contextlib.ExitStack() as stack:
        for day in reversed(days):  # entered last day first, so the stack commits them in day order
            writer = stack.enter_context(
                root.write_partition(root.partition_path(PREDICTIONS_LAYER, model.name, day))
            )
            groups[day] = RowGroups(writer, ctx.schema)
        score_batches(ctx, days, 0, 1, write)
        summed = {day: dataclasses.asdict(totals[day]) for day in days}
        return [(_set_manifest(groups[d].writer, d, summed[d], model, interval, 1), summed[d]) for d in days]


def commit_predictions(
    settings: Settings,
    interval: Interval,
    model: ResolvedModel | Mapping[str, Any] | str,
    shards: int,
    run_key: str,
) -> dict[str, Any]:
    """Merge the run's ``shards`` shard outputs into the interval's predictions partitions; clean up.

    Args:
        settings: Settings (data root; PostgreSQL upsert when ``predictions_postgres_uri`` is set).
        interval: The data interval the shards scored.
        model: The resolved model (or its dict, or a spec: only its name, and a pinned version if any, are
            checked; an alias is never re-resolved here).
        shards: How many shards the run had.
        run_key: The run key the shards used.

    Returns:
        The summary: model, interval, rows, missing features per view, partitions (uri, rows, sha256),
        empty days, shards, postgres rows upserted (None when not configured), seconds.

    Raises:
        PredictionError: a shard is missing or incomplete, or shards disagree (model, inputs, rows).
        ShardRecordError: a shard's ``_shard.json`` does not parse.
    """
    started = time.perf_counter()
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    root = DataRoot(settings.resolved_data_root())
    name, given, version = model_identity(model)
    base = staging_path(root, name, run_key, interval)
    records = read_shards(root, base, interval, shards, run_key)
    resolved = records[0].model
    if (given is not None and given != resolved) or (version is not None and version != resolved.version):
        raise PredictionError(
            f"the shards of {interval} were scored with {resolved.uri}, not {given.uri if given else version}"
        )
    names = records[0].columns
    written: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for day in interval.days():
        key = day.isoformat()
        table, totals = _merge_day(root, base, key, records)
        if table.column_names != names:
            raise PredictionError(f"the staged predictions of {key} have columns {table.column_names}")
        written.append((_write_day(root, day, table, totals, resolved, interval, shards), totals))
    summary = _summary(settings, root, resolved, interval, written, shards)
    root.fs.delete_dir(base)
    remove_empty_parents(root, base.rsplit("/", 1)[0], root.dataset_path(PREDICTIONS_LAYER, name))
    seconds = time.perf_counter() - started
    shard_seconds = sum(r.seconds for r in records)
    rows = summary["rows"]
    summary["rows_per_second"] = round(rows / (shard_seconds + seconds), 1) if rows else 0.0
    summary["shard_seconds"] = round(shard_seconds, 3)
    summary["commit_seconds"] = round(seconds, 3)
    summary["seconds"] = round(shard_seconds + seconds, 3)
    return summary


def _summary(
    settings: Settings,
    root: DataRoot,
    model: ResolvedModel,
    interval: Interval,
    written: list[tuple[dict[str, Any], dict[str, Any]]],
    shards: int,
) -> dict[str, Any]:
    """Upsert the written partitions into PostgreSQL when configured; the step's summary (no timings)."""
    missing = dict.fromkeys(written[0][1]["missing"] if written else (), 0)
    empty_days: list[str] = []
    for entry, totals in written:
        for view, n in totals["missing"].items():
            missing[view] += n
        if totals["rows"] == 0:
            empty_days.append(entry["dt"])
            log.warning("predict %s: no trips on %s: wrote an empty partition (schema kept)", model.name,
                        entry["dt"])  # fmt: skip
    postgres_rows = None
    if settings.predictions_postgres_uri is not None:
        from ml_tasks.prediction.postgres import upsert_partitions

        postgres_rows = upsert_partitions(
            settings.predictions_postgres_uri.get_secret_value(),
            settings.predictions_postgres_table,
            root,
            [root.partition_path(PREDICTIONS_LAYER, model.name, d) for d in interval.days()],
        )
    rows = sum(t["rows"] for _, t in written)
    log.info(
        "predict %s %s with %s: %d rows in %d partition(s) from %d shard(s), rows without features %s",
        model.name, interval, model.uri, rows, len(written), shards, missing,
    )  # fmt: skip
    return {
        "step": "predict",
        "model": model.to_dict(),
        "interval": interval_dict(interval),
        "rows": rows,
        "missing_features": missing,
        "rows_with_missing_features": sum(t["missing_features"] for _, t in written),
        "partitions": [entry for entry, _ in written],
        "empty_days": empty_days,
        "shards": shards,
        "postgres_rows": postgres_rows,
    }


def predict_interval(
    settings: Settings,
    interval: Interval,
    model_spec: str,
    *,
    run_key: str | None = None,
    handle: StoreHandle | None = None,
) -> dict[str, Any]:
    """Resolve ``model_spec`` once, score the interval as one shard straight into its partitions
    (``ml-tasks predict``): the bytes :func:`commit_predictions` writes for any shard count, without the
    staging round trip. ``run_key`` is accepted for the sharded API's sake; one shard stages nothing.

    Returns:
        :func:`commit_predictions`' summary; ``seconds`` and ``rows_per_second`` are wall clock end to end,
        ``shard_seconds`` the scoring (partitions committed), ``commit_seconds`` the rest (the upsert).
    """
    started = time.perf_counter()
    model, scorer = resolve_loaded(settings, model_spec)  # loaded once: the shard scores with it
    root = DataRoot(settings.resolved_data_root())
    require_curated(root, list(interval.days()), interval)
    written = _score_partitions(settings, interval, model, scorer, handle)
    scored = time.perf_counter()
    summary = _summary(settings, root, model, interval, written, 1)
    seconds = time.perf_counter() - started
    rows = summary["rows"]
    summary["shard_seconds"] = round(scored - started, 3)
    summary["commit_seconds"] = round(seconds - (scored - started), 3)
    summary["seconds"] = round(seconds, 3)
    summary["rows_per_second"] = round(rows / seconds, 1) if rows else 0.0
    summary["model_spec"] = model_spec
    return summary


def read_predictions(
    root: DataRoot, model_name: str, day: dt.date, columns: list[str] | None = None
) -> pa.Table:
    """A day's predictions partition (complete partitions only), optionally projected to ``columns``."""
    return root.read_partition(root.partition_path(PREDICTIONS_LAYER, model_name, day), columns=columns)
