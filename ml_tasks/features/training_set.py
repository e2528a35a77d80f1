"""``training-set``: a point-in-time correct snapshot of trips, labels and features, with its lineage.

The entity frame is every curated trip of the window: its key, its start instant (UTC, the entity
timestamp), its entity keys, its label and its request-time features (recomputed with
:func:`ml_tasks.features.request.request_time_features`). Feast's ``get_historical_features`` with the
feature service attaches, per trip, the latest feature row of each view whose event timestamp is at or
before the trip's start and within the view's ttl (DuckDB offline store). Features are named
``<view>__<feature>``.

Guarantees, checked on every run:

* rows in = rows out: every entity row comes back once (trips without a feature row get nulls, counted
  per view in the summary and manifest);
* bounded memory: the window is joined in chunks of whole days (``training_set_chunk_rows``) and
  streamed into one parquet file;
* deterministic: rows are written in (event timestamp, trip key) order; the same inputs give the same
  bytes, so a snapshot is identified by its hash.

The partition ``training_sets/<feature service>/<start>_<end>`` carries a manifest with the feature
service, each view's spec hash, the curated and feature partitions read (with file hashes), row
counts and the label rate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import (
    CURATED,
    EVENT_TIMESTAMP,
    FEATURES_LAYER,
    LABEL,
    TRAINING_SETS_LAYER,
    TRIP_KEY,
    training_set_digest,
)
from ml_tasks.features.request import REQUEST_FEATURES, request_time_features
from ml_tasks.features.spec import VIEWS_BY_NAME
from ml_tasks.features.store import FeatureStoreError, StoreHandle
from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, PartitionError, input_record

if TYPE_CHECKING:
    from feast import FeatureService, FeatureView

log = logging.getLogger(__name__)

#: columns of the entity frame besides the request-time features (the model's raw inputs and the label)
ENTITY_COLUMNS: dict[str, pa.DataType] = {
    TRIP_KEY: pa.string(),
    EVENT_TIMESTAMP: pa.timestamp("us", tz="UTC"),
    "trip_date": pa.date32(),
    "pickup_community_area": pa.int64(),
    "dropoff_community_area": pa.int64(),
    "company": pa.string(),
    "payment_type": pa.string(),
    "fare": pa.float64(),
    "trip_miles": pa.float64(),
    "trip_seconds": pa.int64(),
    LABEL: pa.bool_(),
}
#: rows per parquet row group: fixed, so the file's bytes do not depend on training_set_chunk_rows
ROW_GROUP_ROWS = 131_072


def resolve_service(handle: StoreHandle, name: str) -> tuple[FeatureService, list[FeatureView]]:
    """The feature service ``name`` and its feature views (as registered).

    Raises:
        FeatureStoreError: no such service (naming the ones that exist).
    """
    from feast.errors import FeatureServiceNotFoundException

    store = handle.store
    try:
        service = store.get_feature_service(name)
    except FeatureServiceNotFoundException:
        known = sorted(s.name for s in store.list_feature_services())
        raise FeatureStoreError(f"feature service {name!r} does not exist; registered: {known}") from None
    views = [store.get_feature_view(p.name) for p in service.feature_view_projections]
    return service, views


def feature_columns(views: list[FeatureView]) -> list[str]:
    """Output names of the service's features, ``<view>__<feature>``, in service order."""
    return [f"{fv.name}__{f.name}" for fv in views for f in fv.features]


def view_fingerprint(fv: FeatureView) -> str:
    """A hash of the view's registered spec: changes whenever its definition changes."""
    return hashlib.sha256(fv.to_proto().spec.SerializeToString(deterministic=True)).hexdigest()[:16]


def entity_frame(root: DataRoot, day: dt.date) -> pa.Table:
    """The entity rows of one day: curated trips with labels and request-time features."""
    path = root.partition_path(*CURATED, day)
    trips = root.read_partition(path)
    if trips.num_rows == 0:
        return pa.schema(
            [pa.field(n, t) for n, t in ENTITY_COLUMNS.items()]
            + [pa.field(n, t) for n, t in REQUEST_FEATURES.items()]
        ).empty_table()
    request = request_time_features(trips)
    columns: dict[str, Any] = {
        name: trips["trip_start_ts_utc" if name == EVENT_TIMESTAMP else name].cast(typ)
        for name, typ in ENTITY_COLUMNS.items()
    }
    columns.update(request)
    return pa.table(columns)


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


def historical_join(
    handle: StoreHandle, service: FeatureService, views: list[FeatureView], entities: pa.Table
) -> pa.Table:
    """Feast's point-in-time join for ``entities``; rows carry their ``_row`` position back."""
    import pandas as pd

    keys = sorted({e.name for fv in views for e in fv.entity_columns})
    sent = entities.select(["_row", EVENT_TIMESTAMP, *keys])
    # nullable integers stay integers (numpy would turn a key column with nulls into floats)
    frame = sent.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    job = handle.store.get_historical_features(entity_df=frame, features=service, full_feature_names=True)
    return job.to_arrow()


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
        FeatureStoreError: unknown feature service.
        PartitionError: a curated partition of the window is missing.
    """
    started = time.perf_counter()
    service, views = resolve_service(handle, service_name)
    days = list(interval.days())
    missing = [
        d.isoformat() for d in days if not root.exists(f"{root.partition_path(*CURATED, d)}/_manifest.json")
    ]
    if missing:
        raise PartitionError(
            f"no curated trips for {len(missing)} day(s) of {interval}: {', '.join(missing[:10])};"
            " run taxi_ingest for them first"
        )
    curated_inputs = {d: input_record(root, root.partition_path(*CURATED, d)) for d in days}
    rows_by_day = {
        d: int(curated_inputs[d]["rows"].get("curated", curated_inputs[d]["rows"].get("rows", 0)))
        for d in days
    }
    features = feature_columns(views)
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
            entities = entities.append_column("_row", pa.array(range(n), pa.int64()))
            joined = historical_join(handle, service, views, entities)
            if joined.num_rows != n:
                raise FeatureStoreError(
                    f"get_historical_features returned {joined.num_rows} rows for {n} entity rows"
                    f" ({chunk[0]}..{chunk[-1]}): refusing a training set that lost or duplicated trips"
                )
            out = _output_table(entities, joined, features)
            # Feast returns rows in no particular order; a stable sort makes the bytes reproducible
            out = out.take(
                pc.sort_indices(out, sort_keys=[(EVENT_TIMESTAMP, "ascending"), (TRIP_KEY, "ascending")])
            )
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
            for fv in views:
                cols = [f"{fv.name}__{f.name}" for f in fv.features]
                all_null = (
                    pc.and_(*[pc.is_null(out[c]) for c in cols[:2]])
                    if len(cols) > 1
                    else pc.is_null(out[cols[0]])
                )
                for c in cols[2:]:
                    all_null = pc.and_(all_null, pc.is_null(out[c]))
                missing_by_view[fv.name] += int(pc.sum(all_null.cast(pa.int64())).as_py() or 0)
            for c in features:
                null_by_feature[c] += out[c].null_count
            log.info(
                "training-set %s..%s: %d entity rows joined in %.1f s",
                chunk[0],
                chunk[-1],
                n,
                time.perf_counter() - t0,
            )
        if schema is None:
            schema = feature_schema(views)
            writer.write_empty(schema)
        elif any(t.num_rows for t in pending):
            writer.write(pa.concat_tables(pending), schema=schema)
        if rows_out != rows_in:  # pragma: no cover - guarded per chunk above
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


def _output_table(entities: pa.Table, joined: pa.Table, features: list[str]) -> pa.Table:
    """Entity columns (from our frame, by position) + feature columns (from Feast), typed."""
    positions = joined["_row"]
    base = entities.take(positions).drop_columns(["_row"])
    for name in features:
        base = base.append_column(name, joined[name])
    return base


def feature_schema(views: list[FeatureView]) -> pa.Schema:
    """The columns of a training set (or prediction input) of ``views``: entity columns, request-time
    features, then each view's features as ``<view>__<feature>``, typed as in the view's spec."""
    fields = [pa.field(n, t) for n, t in ENTITY_COLUMNS.items()]
    fields += [pa.field(n, t) for n, t in REQUEST_FEATURES.items()]
    for fv in views:
        spec = VIEWS_BY_NAME.get(fv.name)
        types = spec.feature_columns() if spec else {}
        fields += [pa.field(f"{fv.name}__{f.name}", types.get(f.name, pa.float64())) for f in fv.features]
    return pa.schema(fields)


def feature_inputs(root: DataRoot, views: list[FeatureView], interval: Interval) -> list[dict[str, Any]]:
    """Feature partitions a PIT join of ``interval`` can read: event time within [start - ttl, end)."""
    records = []
    for fv in views:
        spec = VIEWS_BY_NAME.get(fv.name)
        if spec is None:
            continue
        ttl_days = fv.ttl.days + 1 if fv.ttl else 366
        day = interval.start - dt.timedelta(days=ttl_days)
        while day < interval.end:
            path = root.partition_path(FEATURES_LAYER, spec.dataset, day)
            # a day without features is allowed: its trips get nulls, counted in the summary
            with contextlib.suppress(PartitionError):
                records.append(input_record(root, path))
            day += dt.timedelta(days=1)
    return records
