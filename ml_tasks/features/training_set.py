"""``training-set``: a point-in-time correct snapshot of trips, labels and features, with its lineage.

Every curated trip of the window, with its label and request-time features, gets the service's features
as of its start (:func:`ml_tasks.features.retrieval.join_features`), in chunks of whole days, streamed
into one parquet file in (event timestamp, trip key) order; the manifest records the inputs and counts.
Guarantees and layout: ``docs/prediction.md``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import CURATED, LABEL, TRAINING_SETS_LAYER, training_set_digest
from ml_tasks.features.retrieval import (
    ROW_GROUP_ROWS,
    entity_frame,
    feature_columns,
    feature_inputs,
    feature_schema,
    join_features,
    missing_views,
    require_curated,
    resolve_service,
    sorted_order,
    view_columns,
)
from ml_tasks.features.store import FeatureStoreError, StoreHandle
from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, input_record

if TYPE_CHECKING:
    from feast import FeatureView

log = logging.getLogger(__name__)


def view_fingerprint(fv: FeatureView) -> str:
    """A hash of the view's registered spec: changes whenever its definition changes."""
    return hashlib.sha256(fv.to_proto().spec.SerializeToString(deterministic=True)).hexdigest()[:16]


def _chunks(days: list[dt.date], rows_by_day: dict[dt.date, int], limit: int) -> list[list[dt.date]]:
    chunks: list[list[dt.date]] = [[]]
    size = 0
    for day in days:
        if chunks[-1] and size + rows_by_day[day] > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(day)
        size += rows_by_day[day]
    return [c for c in chunks if c]


def training_set_path(root: DataRoot, service: str, interval: Interval, name: str | None) -> str:
    key = name or f"{interval.start.isoformat()}_{interval.end.isoformat()}"
    return f"{root.dataset_path(TRAINING_SETS_LAYER, service)}/{key}"


def build_training_set(
    handle: StoreHandle,
    root: DataRoot,
    interval: Interval,
    settings: Settings,
    service_name: str,
    name: str | None = None,
) -> dict[str, Any]:
    """Write the point-in-time training set of ``interval`` for ``service_name``; return the summary.

    Raises:
        FeatureStoreError: unknown feature service, or Feast lost or duplicated entity rows.
        PartitionError: a curated partition of the window is missing.
    """
    started = time.perf_counter()
    service, views = resolve_service(handle, service_name)
    days = list(interval.days())
    require_curated(root, days, interval)
    curated_inputs = {d: input_record(root, root.partition_path(*CURATED, d)) for d in days}
    rows_by_day = {
        d: int(curated_inputs[d]["rows"].get("curated", curated_inputs[d]["rows"].get("rows", 0)))
        for d in days
    }
    features = feature_columns(views)
    columns_by_view = view_columns(views)
    target = training_set_path(root, service.name, interval, name)

    rows_in = rows_out = positives = labelled = 0
    missing_by_view = {fv.name: 0 for fv in views}
    null_by_feature = dict.fromkeys(features, 0)
    schema: pa.Schema | None = None
    pending: list[pa.Table] = []  # sorted rows not yet written: less than one row group
    with root.write_partition(target) as writer:
        for chunk in _chunks(days, rows_by_day, settings.training_set_chunk_rows):
            t0 = time.perf_counter()
            entities = pa.concat_tables([entity_frame(root, d) for d in chunk], promote_options="default")
            n = entities.num_rows
            rows_in += n
            if n == 0:
                continue
            out = join_features(
                handle, service, views, entities, chunk_rows=settings.training_set_chunk_rows,
                refusing=f"the training set of {chunk[0]}..{chunk[-1]}",
            )  # fmt: skip
            out = out.take(sorted_order(out))  # a stable sort: the same inputs give the same bytes
            if schema is None:
                schema = out.schema
            pending.append(out)
            while sum(t.num_rows for t in pending) >= ROW_GROUP_ROWS:
                buffered = pa.concat_tables(pending)
                writer.write(buffered.slice(0, ROW_GROUP_ROWS), schema=schema)
                pending = [buffered.slice(ROW_GROUP_ROWS)]
            rows_out += out.num_rows
            labelled += n - out[LABEL].null_count
            positives += int(pc.sum(out[LABEL].cast(pa.int64())).as_py() or 0)
            missing, _ = missing_views(out, columns_by_view)
            for view, count in missing.items():
                missing_by_view[view] += count
            for c in features:
                null_by_feature[c] += out[c].null_count
            log.info(
                "training-set %s..%s: %d entity rows joined in %.1f s",
                chunk[0], chunk[-1], n, time.perf_counter() - t0,
            )  # fmt: skip
        if schema is None:
            schema = feature_schema(views)
            writer.write_empty(schema)
        elif any(t.num_rows for t in pending):
            writer.write(pa.concat_tables(pending), schema=schema)
        if rows_out != rows_in:  # pragma: no cover - guarded per chunk by join_features
            raise FeatureStoreError(f"training set has {rows_out} rows for {rows_in} entity rows")
        view_inputs = feature_inputs(root, views, interval)
        label_rate = positives / labelled if labelled else None
        writer.manifest = Manifest(
            dataset=f"{TRAINING_SETS_LAYER}/{service.name}",
            partition=target.rsplit("/", 1)[1],
            step="training-set",
            inputs=[curated_inputs[d] for d in days] + view_inputs,
            row_counts={
                "entity_rows": rows_in,
                "rows": rows_out,
                "labelled": labelled,
                "positives": positives,
            },
            params={
                "feature_service": service.name,
                "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
                "feature_views": {
                    fv.name: {
                        "spec_sha256": view_fingerprint(fv),
                        "ttl_seconds": int(fv.ttl.total_seconds()) if fv.ttl else None,
                    }
                    for fv in views
                },
                "features": features,
                "label": LABEL,
                "label_rate": label_rate,
                "rows_without_features": missing_by_view,
                "null_counts": null_by_feature,
            },
        )
        outputs = writer.outputs()
        writer.manifest.outputs = outputs
    digest = training_set_digest(outputs)
    seconds = time.perf_counter() - started
    log.info(
        "training-set %s %s: %d rows (label rate %s), rows without features %s, %.1f s",
        service.name, interval, rows_out, f"{label_rate:.3f}" if label_rate is not None else "n/a",
        missing_by_view, seconds,
    )  # fmt: skip
    return {
        "step": "training-set",
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "feature_service": service.name,
        "uri": root.uri(target),
        "sha256": digest,
        "rows": rows_out,
        "entity_rows": rows_in,
        "label_rate": round(label_rate, 6) if label_rate is not None else None,
        "rows_without_features": missing_by_view,
        "features": len(features),
        "seconds": round(seconds, 3),
    }
