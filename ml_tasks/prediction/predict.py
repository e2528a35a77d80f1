"""``predict``: score an interval's trips with a registered ONNX model, sharded, committed atomically.

Flow (what ``ml-tasks predict`` and the ``taxi_batch_predict`` DAG run):

1. :func:`resolve_model` turns ``taxi_tips@champion`` (or ``taxi_tips/3``, ``models:/...``) into ONE fixed
   version, once; everything after uses that version (an alias moving mid-run changes nothing).
2. :func:`predict_shard` scores shard ``i`` of ``N`` of every local day of the interval: the day's entity
   rows are :func:`~ml_tasks.features.training_set.entity_frame` (curated trips + the request-time features,
   the same function as training; the label is dropped), sorted by (event timestamp, trip key); shard ``i``
   takes the rows at positions ``p`` with ``p % N == i`` of that order (deterministic, vectorised, balanced
   to one row). The model's own feature service (its version tag) attaches point-in-time features through
   Feast (the training-set join); rows then stream through the ONNX model in record batches of
   ``predict_batch_rows``. Output goes to a staging area
   ``predictions/<model>/_shards/<run key>/<start>_<end>/shard-000i-of-000N/dt=<day>/`` with a
   ``_shard.json`` written last (a shard without it is incomplete). A re-run replaces the shard's output.
3. :func:`commit_predictions` checks that all ``N`` shards are complete, scored the same days from the
   same inputs with the same model version, merges them per day back into the sorted order (each staged
   row carries its position), writes each day's partition ``predictions/<model>/dt=<day>/`` atomically in
   fixed row groups (so the file's bytes equal an unsharded run's), upserts into PostgreSQL when configured,
   and deletes the staging.

Missing features: a trip without a feature row of a view (all of the view's columns null) is counted per
view and scored with the model's missing-value policy (null -> NaN -> the model's missing indicator; the
ONNX graph handles it). The columns of a partition are the predictions contract (:data:`CORE_COLUMNS`,
then the model's raw input columns). Nothing depends on the wall clock: the same interval, inputs and
model give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from ml_tasks.contract import (
    CHAMPION,
    CURATED,
    EVENT_TIMESTAMP,
    LABEL,
    MANIFEST,
    PREDICTIONS_LAYER,
    SHARD_JSON,
    SHARDS_DIR,
    TAG_FEATURE_SERVICE,
    TRIP_KEY,
)
from ml_tasks.errors import FlywheelError
from ml_tasks.features.store import FeatureStoreError
from ml_tasks.features.training_set import (
    ROW_GROUP_ROWS,
    entity_frame,
    feature_columns,
    feature_inputs,
    feature_schema,
    historical_join,
    resolve_service,
)
from ml_tasks.intervals import Interval
from ml_tasks.models.registry import RegistryError
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, PartitionError, file_sha256, input_record

if TYPE_CHECKING:
    from feast import FeatureService, FeatureView

    from ml_tasks.features.store import StoreHandle
    from ml_tasks.models.preprocess import Inputs
    from ml_tasks.models.registry import VersionInfo
    from ml_tasks.models.scorer import OnnxScorer

log = logging.getLogger(__name__)

POSITION = "_pos"  # position of a row in its day's sorted order (staging only; the merge key)
MISSING_VIEWS = "missing_feature_views"
SORT_KEYS = [(EVENT_TIMESTAMP, "ascending"), (TRIP_KEY, "ascending")]
#: the predictions contract's leading columns, in order; the model's raw input columns follow
CORE_COLUMNS: dict[str, pa.DataType] = {
    TRIP_KEY: pa.string(),
    EVENT_TIMESTAMP: pa.timestamp("us", tz="UTC"),
    "trip_date": pa.date32(),
    "score": pa.float64(),
    "decision": pa.bool_(),
    "threshold": pa.float64(),
    "model_name": pa.string(),
    "model_version": pa.string(),
    "model_run_id": pa.string(),
    "feature_service": pa.string(),
    "interval_start": pa.date32(),
    "interval_end": pa.date32(),
    MISSING_VIEWS: pa.int8(),
}
_SPEC = re.compile(
    r"^(?:models:/)?(?P<name>[A-Za-z0-9_.-]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$"
)


class PredictionError(FlywheelError, RuntimeError):
    """Prediction cannot run on these inputs (names the input and the problem)."""


class NoModelError(RegistryError):
    """The model spec names no registered version (e.g. no champion has been promoted yet)."""


class ModelLoadError(RegistryError):
    """The version's ONNX file cannot be verified or loaded: nothing is scored or written."""


class FeatureServiceMismatch(PredictionError, FeatureStoreError):
    """The model's feature service is not registered in Feast, or lacks columns the model needs."""


# -- the model --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedModel:
    """One fixed registered model version, as prediction records it."""

    name: str
    version: str
    run_id: str | None
    uri: str
    onnx_sha256: str
    feature_service: str
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (for XCom between the resolve, shard and commit tasks)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResolvedModel:
        try:
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                run_id=None if data.get("run_id") is None else str(data["run_id"]),
                uri=str(data["uri"]),
                onnx_sha256=str(data["onnx_sha256"]),
                feature_service=str(data["feature_service"]),
                threshold=float(data["threshold"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a resolved model description: {dict(data)!r} ({exc!r})") from None

    def record(self) -> dict[str, Any]:
        """The manifest ``inputs`` entry of the model."""
        return {
            "model": {
                "name": self.name,
                "version": self.version,
                "run_id": self.run_id,
                "uri": self.uri,
                "onnx_sha256": self.onnx_sha256,
                "feature_service": self.feature_service,
            }
        }


def parse_model_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``(name, alias, version)`` of ``name@alias``, ``name/version`` or ``models:/<either>``.

    Raises:
        ValueError: any other form.
    """
    match = _SPEC.match(spec.strip())
    if match is None:
        raise ValueError(
            f"model spec {spec!r} is not NAME@ALIAS, NAME/VERSION or models:/NAME@ALIAS|VERSION"
            " (e.g. taxi_tips@champion, taxi_tips/3)"
        )
    return match["name"], match["alias"], match["version"]


def _version_info(settings: Settings, spec: str) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    from ml_tasks.models import registry, tracking

    name, alias, version = parse_model_spec(spec)
    client = tracking.client(settings)
    if alias is not None:
        info = registry.alias_version(client, name, alias)
        if info is None:
            if alias == CHAMPION:
                raise NoModelError(
                    f"no champion yet: run taxi_training first (model {name!r} has no {alias!r} alias in the"
                    " MLflow registry, so there is nothing to predict with)"
                )
            raise NoModelError(f"model {name!r} has no alias {alias!r} in the MLflow registry")
        return info
    assert version is not None  # the pattern matched one of the two
    try:
        return registry.get_version(client, name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            raise NoModelError(
                f"model version {name}/{version} does not exist in the MLflow registry"
            ) from None
        raise


def resolve_model(settings: Settings, spec: str) -> ResolvedModel:
    """Resolve ``spec`` to one fixed version, verify and load its ONNX file (cached), and describe it.

    The threshold is the exact one in the ONNX file's metadata (the version tag is rounded).

    Raises:
        ValueError: an unparseable spec.
        NoModelError: no such alias (no champion yet) or version.
        ModelLoadError: the version has no ONNX sha256 tag, or its file does not verify or load.
        RegistryError: the version has no feature service.
    """

    info = _version_info(settings, spec)
    if not info.onnx_sha256:
        raise ModelLoadError(
            f"{info.uri} has no {'flywheel.onnx_sha256'} tag: its ONNX file cannot be verified"
        )
    scorer = _load_scorer(settings, info)
    service = info.tags.get(TAG_FEATURE_SERVICE) or scorer.metadata.get("feature_service")
    if not service:
        raise RegistryError(f"{info.uri} records no feature service (tag {TAG_FEATURE_SERVICE})")
    model = ResolvedModel(
        name=info.name,
        version=info.version,
        run_id=info.run_id,
        uri=info.uri,
        onnx_sha256=info.onnx_sha256,
        feature_service=str(service),
        threshold=scorer.threshold,
    )
    log.info("model %s resolved to %s (run %s, feature service %s)", spec, model.uri, model.run_id, service)
    return model


def _load_scorer(settings: Settings, info: VersionInfo) -> OnnxScorer:
    from ml_tasks.models import registry, tracking
    from ml_tasks.models.scorer import OnnxScorer

    client = tracking.client(settings)
    cache = registry.model_cache_dir(settings)
    path = registry.download_onnx(client, info, cache_dir=cache)
    try:
        try:
            return OnnxScorer(
                path, batch_size=settings.predict_batch_rows, threads=settings.predict_threads or 1
            )
        except FileNotFoundError:
            # another process (a parallel shard) swapped the cached version folder in between: fetch again
            path = registry.download_onnx(client, info, cache_dir=cache)
            return OnnxScorer(
                path, batch_size=settings.predict_batch_rows, threads=settings.predict_threads or 1
            )
    except Exception as exc:  # onnxruntime raises its own types for a file it cannot parse
        raise ModelLoadError(f"{info.uri}: the ONNX file {path} cannot be loaded: {exc}") from exc


def load_scorer(settings: Settings, model: ResolvedModel) -> OnnxScorer:
    """The verified :class:`OnnxScorer` of ``model`` (from the local model cache; downloaded when needed).

    Raises:
        ModelLoadError: the version's sha256 tag or threshold changed since resolution, or the file
            does not verify / load.
    """
    from ml_tasks.models import registry, tracking

    info = registry.get_version(tracking.client(settings), model.name, model.version)
    if info.onnx_sha256 != model.onnx_sha256:
        raise ModelLoadError(
            f"{model.uri}: its ONNX sha256 tag is {info.onnx_sha256}, but it was resolved with"
            f" {model.onnx_sha256}: the version changed after resolution"
        )
    scorer = _load_scorer(settings, info)
    if scorer.threshold != model.threshold:
        raise ModelLoadError(
            f"{model.uri}: the ONNX threshold is {scorer.threshold}, resolved with {model.threshold}"
        )
    return scorer


# -- pure helpers (unit-tested) ---------------------------------------------------------------------------
def check_shard(shard: int, shards: int) -> None:
    """Raises ValueError unless ``0 <= shard < shards``."""
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: need shards >= 1 and 0 <= shard < shards")


def shard_positions(rows: int, shard: int, shards: int) -> npt.NDArray[np.int64]:
    """Positions (in the day's sorted order) of the rows shard ``shard`` of ``shards`` scores."""
    check_shard(shard, shards)
    return np.arange(shard, rows, shards, dtype=np.int64)


def sorted_order(table: pa.Table) -> pa.Array:
    """Row indices of ``table`` in (event_timestamp, trip_key) order (stable)."""
    return pc.sort_indices(table, sort_keys=SORT_KEYS)


def output_schema(inputs: Inputs, types: Mapping[str, pa.DataType]) -> pa.Schema:
    """The predictions contract: :data:`CORE_COLUMNS` then the model's raw input columns (typed by ``types``).

    Raises:
        PredictionError: an input column of unknown type.
    """
    unknown = [c for c in inputs.columns if c not in types]
    if unknown:
        raise PredictionError(f"no type known for the model input column(s) {unknown}")
    clash = [c for c in inputs.columns if c in CORE_COLUMNS]
    if clash:
        raise PredictionError(f"model input column(s) {clash} collide with prediction columns")
    return pa.schema(
        [pa.field(n, t) for n, t in CORE_COLUMNS.items()] + [pa.field(c, types[c]) for c in inputs.columns]
    )


def missing_views(table: pa.Table, view_columns: Mapping[str, list[str]]) -> tuple[dict[str, int], pa.Array]:
    """Per view, the rows with no feature row (all its columns null); per row, how many views are missing."""
    per_row = np.zeros(table.num_rows, dtype=np.int8)
    counts: dict[str, int] = {}
    for view, columns in view_columns.items():
        mask = np.ones(table.num_rows, dtype=bool)
        for column in columns:
            mask &= table[column].is_null().to_numpy(zero_copy_only=False)
        counts[view] = int(mask.sum())
        per_row += mask.astype(np.int8)
    return counts, pa.array(per_row, pa.int8())


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


def safe_key(run_key: str) -> str:
    """A path component from a run key (``scheduled__2024-01-01T00:00:00+00:00`` -> filesystem-safe)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_key).strip("._") or "_"


def staging_path(root: DataRoot, model_name: str, run_key: str, interval: Interval) -> str:
    """The staging folder of one run's shards of ``interval``."""
    span = f"{interval.start.isoformat()}_{interval.end.isoformat()}"
    return f"{root.dataset_path(PREDICTIONS_LAYER, model_name)}/{SHARDS_DIR}/{safe_key(run_key)}/{span}"


def shard_path(
    root: DataRoot, model_name: str, run_key: str, interval: Interval, shard: int, shards: int
) -> str:
    return f"{staging_path(root, model_name, run_key, interval)}/shard-{shard:04d}-of-{shards:04d}"


def _interval_dict(interval: Interval) -> dict[str, str]:
    return {"start": interval.start.isoformat(), "end": interval.end.isoformat()}


def _require_curated(root: DataRoot, days: list[dt.date], interval: Interval) -> None:
    missing = [
        d.isoformat() for d in days if not root.exists(f"{root.partition_path(*CURATED, d)}/{MANIFEST}")
    ]
    if missing:
        raise PartitionError(
            f"no curated trips for {len(missing)} day(s) of {interval}: {', '.join(missing[:10])};"
            " run taxi_ingest for them first"
        )


# -- scoring one shard ------------------------------------------------------------------------------------
@dataclass
class _Context:
    root: DataRoot
    model: ResolvedModel
    scorer: OnnxScorer
    handle: StoreHandle
    service: FeatureService
    views: list[FeatureView]
    view_columns: dict[str, list[str]]
    schema: pa.Schema  # the partition's schema
    staged: pa.Schema  # + the position column
    interval: Interval
    batch_rows: int
    chunk_rows: int


def _open_store(settings: Settings) -> StoreHandle:
    from ml_tasks.features.store import check_registry, open_store

    handle = open_store(settings)
    check_registry(handle)
    return handle


def _service(handle: StoreHandle, model: ResolvedModel) -> tuple[FeatureService, list[FeatureView]]:
    try:
        return resolve_service(handle, model.feature_service)
    except FeatureStoreError as exc:
        raise FeatureServiceMismatch(
            f"model {model.uri} was trained with feature service {model.feature_service!r}, which is not in"
            f" the Feast registry: {exc}"
        ) from None


def _context(
    settings: Settings, model: ResolvedModel, interval: Interval, handle: StoreHandle | None
) -> _Context:
    root = DataRoot(settings.resolved_data_root())
    scorer = load_scorer(settings, model)
    handle = handle or _open_store(settings)
    service, views = _service(handle, model)
    inputs = scorer.preprocessor.inputs
    check_service_columns(model, inputs, feature_columns(views))
    types = {f.name: f.type for f in feature_schema(views)}
    schema = output_schema(inputs, types)
    return _Context(
        root=root,
        model=model,
        scorer=scorer,
        handle=handle,
        service=service,
        views=views,
        view_columns={fv.name: [f"{fv.name}__{f.name}" for f in fv.features] for fv in views},
        schema=schema,
        staged=schema.append(pa.field(POSITION, pa.int64())),
        interval=interval,
        batch_rows=settings.predict_batch_rows,
        chunk_rows=settings.training_set_chunk_rows,
    )


def _with_features(ctx: _Context, rows: pa.Table) -> pa.Table:
    """``rows`` plus the service's feature columns (Feast point-in-time join, in chunks), row-aligned."""
    features = [c for cols in ctx.view_columns.values() for c in cols]
    types = {f.name: f.type for f in ctx.staged} | {f.name: f.type for f in feature_schema(ctx.views)}
    n = rows.num_rows
    indexed = rows.append_column("_row", pa.array(np.arange(n, dtype=np.int64)))
    parts: list[pa.Table] = []
    for start in range(0, n, ctx.chunk_rows):
        part = indexed.slice(start, ctx.chunk_rows)
        joined = historical_join(ctx.handle, ctx.service, ctx.views, part)
        if joined.num_rows != part.num_rows:
            raise FeatureStoreError(
                f"get_historical_features returned {joined.num_rows} rows for {part.num_rows} entity rows:"
                " refusing predictions that lost or duplicated trips"
            )
        # Feast returns rows in no particular order: put them back in ours, by the carried position
        joined = joined.take(pc.sort_indices(joined["_row"]))
        if not joined["_row"].equals(part["_row"]):
            raise FeatureStoreError("get_historical_features returned entity rows that were not sent")
        parts.append(joined.select(features))
    table = rows
    if parts:
        merged = pa.concat_tables(parts)
        for name in features:
            table = table.append_column(name, merged[name].cast(types.get(name, merged[name].type)))
    else:
        for name in features:
            table = table.append_column(name, pa.nulls(0, types.get(name, pa.float64())))
    return table


def _constant(value: Any, typ: pa.DataType, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, typ), n)


def _score_rows(ctx: _Context, table: pa.Table, missing: pa.Array, positions: pa.Array) -> Iterator[pa.Table]:
    """The staged prediction batches of ``table`` (record batches of ``predict_batch_rows``), lazily."""
    model, scorer = ctx.model, ctx.scorer
    inputs = scorer.preprocessor.inputs.columns
    for start in range(0, table.num_rows, ctx.batch_rows):
        chunk = table.slice(start, ctx.batch_rows)
        n = chunk.num_rows
        encoded = scorer.preprocessor.encode(chunk)
        scores = scorer.predict_encoded(encoded.numeric, encoded.categorical)
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
            MISSING_VIEWS: missing.slice(start, n),
        }
        for name in inputs:
            columns[name] = chunk[name]
        columns[POSITION] = positions.slice(start, n)
        yield pa.table(columns).cast(ctx.staged)


def _score_day(ctx: _Context, day: dt.date, shard: int, shards: int, target: str) -> dict[str, Any]:
    """Score the shard's rows of ``day`` into ``target/dt=<day>``; the day's record for _shard.json."""
    root = ctx.root
    entities = entity_frame(root, day)
    if LABEL in entities.column_names:
        entities = entities.drop_columns([LABEL])  # labels arrive later; prediction never reads them
    day_rows = entities.num_rows
    positions = shard_positions(day_rows, shard, shards)
    order = sorted_order(entities)
    rows = entities.take(order.take(pa.array(positions)))
    table = _with_features(ctx, rows)
    missing, per_row = missing_views(table, ctx.view_columns)
    curated = input_record(root, root.partition_path(*CURATED, day))
    inputs = [curated, *feature_inputs(root, ctx.views, ctx.interval.single(day))]
    path = f"{target}/dt={day.isoformat()}"
    with root.write_partition(path) as writer:
        for batch in _score_rows(ctx, table, per_row, pa.array(positions, pa.int64())):
            writer.write(batch, schema=ctx.staged)
        writer.write_empty(ctx.staged)
        writer.manifest = Manifest(
            dataset=f"{PREDICTIONS_LAYER}/{ctx.model.name}/{SHARDS_DIR}",
            partition=day.isoformat(),
            step="predict-shard",
            inputs=[*inputs, ctx.model.record()],
            row_counts={"rows": table.num_rows, "day_rows": day_rows},
            params={"shard": shard, "shards": shards},
        )
        outputs = writer.outputs()
        writer.manifest.outputs = outputs
    return {
        "day_rows": day_rows,
        "rows": table.num_rows,
        "missing": missing,
        "missing_features": int(np.count_nonzero(per_row.to_numpy(zero_copy_only=False))),
        "inputs": inputs,
        "file": outputs[0],
    }


def predict_shard(
    settings: Settings,
    interval: Interval,
    model: ResolvedModel | Mapping[str, Any] | str,
    shard: int,
    shards: int,
    run_key: str,
    *,
    handle: StoreHandle | None = None,
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

    Returns:
        The shard's summary (rows, missing features per view, staging URI, seconds).

    Raises:
        PartitionError: a curated partition of the interval is missing.
        ModelLoadError / FeatureServiceMismatch / FeatureStoreError: see the module docstring.
    """
    started = time.perf_counter()
    check_shard(shard, shards)
    resolved = _as_model(settings, model)
    days = list(interval.days())
    ctx_root = DataRoot(settings.resolved_data_root())
    _require_curated(ctx_root, days, interval)
    ctx = _context(settings, resolved, interval, handle)
    root = ctx.root
    target = shard_path(root, resolved.name, run_key, interval, shard, shards)
    if root.exists(target):
        root.fs.delete_dir(target)  # a re-run replaces the shard's output (and _shard.json goes first)
    records = {day.isoformat(): _score_day(ctx, day, shard, shards, target) for day in days}
    seconds = time.perf_counter() - started
    rows = sum(r["rows"] for r in records.values())
    record = {
        "model": resolved.to_dict(),
        "interval": _interval_dict(interval),
        "shard": shard,
        "shards": shards,
        "run_key": run_key,
        "views": list(ctx.view_columns),
        "schema": ctx.schema.names,
        "days": records,
        "rows": rows,
        "seconds": round(seconds, 3),
    }
    root.write_json(f"{target}/{SHARD_JSON}", record)  # last: marks the shard complete
    missing = {v: sum(r["missing"][v] for r in records.values()) for v in ctx.view_columns}
    log.info(
        "predict shard %d/%d of %s with %s: %d rows in %.2f s, rows without features %s",
        shard, shards, interval, resolved.uri, rows, seconds, missing,
    )  # fmt: skip
    return {
        "step": "predict-shard",
        "model": resolved.to_dict(),
        "interval": _interval_dict(interval),
        "shard": shard,
        "shards": shards,
        "rows": rows,
        "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
        "missing_features": missing,
        "rows_with_missing_features": sum(r["missing_features"] for r in records.values()),
        "staging_uri": root.uri(target),
        "seconds": round(seconds, 3),
    }


def _as_model(settings: Settings, model: ResolvedModel | Mapping[str, Any] | str) -> ResolvedModel:
    if isinstance(model, ResolvedModel):
        return model
    if isinstance(model, str):
        return resolve_model(settings, model)
    return ResolvedModel.from_dict(model)


# -- commit -------------------------------------------------------------------------------------------------
def _model_identity(
    model: ResolvedModel | Mapping[str, Any] | str,
) -> tuple[str, ResolvedModel | None, str | None]:
    """(name, the full model if given, a pinned version if a spec names one)."""
    if isinstance(model, ResolvedModel):
        return model.name, model, model.version
    if isinstance(model, str):
        name, _alias, version = parse_model_spec(model)
        return name, None, version  # an alias is NOT re-resolved: the shards' version is the run's
    resolved = ResolvedModel.from_dict(model)
    return resolved.name, resolved, resolved.version


def _read_shards(
    root: DataRoot, base: str, interval: Interval, shards: int, run_key: str
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    absent: list[int] = []
    for shard in range(shards):
        path = f"{base}/shard-{shard:04d}-of-{shards:04d}/{SHARD_JSON}"
        if root.exists(path):
            records.append(root.read_json(path))
        else:
            absent.append(shard)
    if absent:
        raise PredictionError(
            f"cannot commit the predictions of {interval} (run {run_key!r}): shard(s) {absent} of {shards}"
            f" have no complete output under {root.uri(base)}; run (or re-run) them first"
        )
    first = records[0]
    keys = ("name", "version", "run_id", "onnx_sha256", "feature_service", "threshold")
    for shard, record in enumerate(records):
        if (
            record["shard"] != shard
            or record["shards"] != shards
            or record["interval"] != _interval_dict(interval)
        ):
            raise PredictionError(
                f"shard {shard} of {shards} under {root.uri(base)} describes shard {record['shard']} of"
                f" {record['shards']} for {record['interval']}: not this run's shard"
            )
        if any(record["model"].get(k) != first["model"].get(k) for k in keys):
            raise PredictionError(
                f"shards of {interval} were scored with different models: shard 0 with"
                f" {first['model']['uri']} ({first['model']['onnx_sha256'][:12]}), shard {shard} with"
                f" {record['model']['uri']} ({record['model']['onnx_sha256'][:12]}); re-run the shards"
            )
        if record["schema"] != first["schema"] or record["views"] != first["views"]:
            raise PredictionError(f"shard {shard} of {interval} has a different schema than shard 0")
    return records


def _merge_day(
    root: DataRoot, base: str, day: str, records: list[dict[str, Any]]
) -> tuple[pa.Table, dict[str, Any]]:
    """The day's rows of all shards in the day's sorted order, checked complete; and the day's totals."""
    import pyarrow.parquet as pq

    entries = []
    for shard, record in enumerate(records):
        if day not in record["days"]:
            raise PredictionError(f"shard {shard} has no output for {day}: re-run it")
        entries.append(record["days"][day])
    day_rows = entries[0]["day_rows"]
    for shard, entry in enumerate(entries):
        if entry["day_rows"] != day_rows or entry["inputs"] != entries[0]["inputs"]:
            raise PredictionError(
                f"shards 0 and {shard} read different inputs for {day} ({entries[0]['day_rows']} vs"
                f" {entry['day_rows']} trips, or other partition hashes): the data changed between shards;"
                " re-run all shards"
            )
    tables = []
    for shard, entry in enumerate(entries):
        name = entry["file"]["uri"].rsplit("/", 1)[1]
        path = f"{base}/shard-{shard:04d}-of-{len(records):04d}/dt={day}/{name}"
        if not root.exists(path) or file_sha256(path, root.fs) != entry["file"]["sha256"]:
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
        "missing": {v: sum(e["missing"][v] for e in entries) for v in records[0]["views"]},
        "missing_features": sum(e["missing_features"] for e in entries),
        "inputs": entries[0]["inputs"],
    }
    return merged.drop_columns([POSITION]), totals


def _remove_empty_parents(root: DataRoot, path: str, stop: str) -> None:
    while path != stop and path.startswith(stop):
        if root.exists(path) and root.fs.get_file_info(pafs.FileSelector(path, recursive=False)):
            return
        if root.exists(path):
            root.fs.delete_dir(path)
        path = path.rsplit("/", 1)[0]


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
    """
    started = time.perf_counter()
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    root = DataRoot(settings.resolved_data_root())
    name, given, version = _model_identity(model)
    base = staging_path(root, name, run_key, interval)
    records = _read_shards(root, base, interval, shards, run_key)
    resolved = ResolvedModel.from_dict(records[0]["model"])
    if (given is not None and given != resolved) or (version is not None and version != resolved.version):
        raise PredictionError(
            f"the shards of {interval} were scored with {resolved.uri}, not {given.uri if given else version}"
        )
    names = records[0]["schema"]
    partitions: list[dict[str, Any]] = []
    missing = dict.fromkeys(records[0]["views"], 0)
    rows = with_missing = 0
    empty_days: list[str] = []
    for day in interval.days():
        key = day.isoformat()
        table, totals = _merge_day(root, base, key, records)
        if table.column_names != names:
            raise PredictionError(f"the staged predictions of {key} have columns {table.column_names}")
        schema = table.schema
        target = root.partition_path(PREDICTIONS_LAYER, name, day)
        with root.write_partition(target) as writer:
            # fixed row groups: the file's bytes do not depend on shards or batch sizes
            for start in range(0, table.num_rows, ROW_GROUP_ROWS):
                writer.write(table.slice(start, ROW_GROUP_ROWS), schema=schema)
            writer.write_empty(schema)
            writer.manifest = Manifest(
                dataset=f"{PREDICTIONS_LAYER}/{name}",
                partition=key,
                step="predict",
                inputs=[*totals["inputs"], resolved.record()],
                row_counts={
                    "rows": totals["rows"],
                    "missing_features": totals["missing_features"],
                    **{f"missing_{v}": n for v, n in totals["missing"].items()},
                },
                params={
                    "model": resolved.uri,
                    "interval": _interval_dict(interval),
                    "shards": shards,
                    "feature_service": resolved.feature_service,
                    "threshold": resolved.threshold,
                },
            )
            outputs = writer.outputs()
            writer.manifest.outputs = outputs
        partitions.append(
            {
                "dt": key,
                "uri": root.uri(target),
                "rows": totals["rows"],
                "sha256": outputs[0]["sha256"],
                "missing_features": totals["missing"],
            }
        )
        rows += totals["rows"]
        with_missing += totals["missing_features"]
        for view, n in totals["missing"].items():
            missing[view] += n
        if totals["rows"] == 0:
            empty_days.append(key)
            log.warning("predict %s: no trips on %s: wrote an empty partition (schema kept)", name, key)
    postgres_rows = None
    if settings.predictions_postgres_uri is not None:
        from ml_tasks.prediction.postgres import upsert_partitions

        postgres_rows = upsert_partitions(
            settings.predictions_postgres_uri.get_secret_value(),
            settings.predictions_postgres_table,
            root,
            [root.partition_path(PREDICTIONS_LAYER, name, d) for d in interval.days()],
        )
    root.fs.delete_dir(base)
    _remove_empty_parents(root, base.rsplit("/", 1)[0], f"{root.dataset_path(PREDICTIONS_LAYER, name)}")
    seconds = time.perf_counter() - started
    shard_seconds = sum(float(r["seconds"]) for r in records)
    log.info(
        "predict %s %s with %s: %d rows in %d partition(s) from %d shard(s), rows without features %s",
        name, interval, resolved.uri, rows, len(partitions), shards, missing,
    )  # fmt: skip
    return {
        "step": "predict",
        "model": resolved.to_dict(),
        "interval": _interval_dict(interval),
        "rows": rows,
        "rows_per_second": round(rows / (shard_seconds + seconds), 1) if rows else 0.0,
        "missing_features": missing,
        "rows_with_missing_features": with_missing,
        "partitions": partitions,
        "empty_days": empty_days,
        "shards": shards,
        "postgres_rows": postgres_rows,
        "shard_seconds": round(shard_seconds, 3),
        "commit_seconds": round(seconds, 3),
        "seconds": round(shard_seconds + seconds, 3),
    }


def predict_interval(
    settings: Settings,
    interval: Interval,
    model_spec: str,
    *,
    run_key: str | None = None,
    handle: StoreHandle | None = None,
) -> dict[str, Any]:
    """Resolve ``model_spec`` once, score the interval as one shard and commit it (``ml-tasks predict``).

    Returns:
        :func:`commit_predictions`' summary; ``seconds`` and ``rows_per_second`` are wall clock end to end.
    """
    started = time.perf_counter()
    model = resolve_model(settings, model_spec)
    key = run_key or f"local-{uuid.uuid4().hex[:12]}"
    root = DataRoot(settings.resolved_data_root())
    base = staging_path(root, model.name, key, interval)
    try:
        predict_shard(settings, interval, model, 0, 1, key, handle=handle)
        summary = commit_predictions(settings, interval, model, 1, key)
    except BaseException:
        if root.exists(base):  # our own staging only: nothing half-done is left behind
            root.fs.delete_dir(base)
            _remove_empty_parents(
                root, base.rsplit("/", 1)[0], root.dataset_path(PREDICTIONS_LAYER, model.name)
            )
        raise
    seconds = time.perf_counter() - started
    summary["seconds"] = round(seconds, 3)
    summary["rows_per_second"] = round(summary["rows"] / seconds, 1) if summary["rows"] else 0.0
    summary["model_spec"] = model_spec
    return summary


def read_predictions(
    root: DataRoot, model_name: str, day: dt.date, columns: list[str] | None = None
) -> pa.Table:
    """A day's predictions partition (complete partitions only), optionally projected to ``columns``."""
    import pyarrow.parquet as pq

    files = root.parquet_files(root.partition_path(PREDICTIONS_LAYER, model_name, day))
    return pa.concat_tables([pq.read_table(f, filesystem=root.fs, columns=columns) for f in files])
