"""Entity rows and their point-in-time features: the one join training sets and prediction share.

Design notes (chunking, row checks, canonical order): ``docs/prediction.md``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import CURATED, EVENT_TIMESTAMP, FEATURES_LAYER, LABEL, MANIFEST, TRIP_KEY
from ml_tasks.features.request import REQUEST_FEATURES, REQUEST_INPUTS, request_time_features
from ml_tasks.features.spec import VIEWS_BY_NAME
from ml_tasks.features.store import FeatureStoreError, StoreHandle
from ml_tasks.intervals import Interval
from ml_tasks.storage import DataRoot, PartitionError, input_record

if TYPE_CHECKING:
    from feast import FeatureService, FeatureView


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class View(Protocol):
    """What the join reads of a feature view: Feast's ``FeatureView``, or one read from the registry
    without Feast (``ml_tasks.prediction.checked_registry.RegisteredView``)."""

    @property
    def name(self) -> str: ...
    @property
    def features(self) -> Sequence[_Named]: ...
    @property
    def entity_columns(self) -> Sequence[_Named]: ...
    @property
    def ttl(self) -> dt.timedelta | None: ...


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
#: rows per parquet row group of joined outputs (training sets, predictions): fixed, so a file's bytes do
#: not depend on chunk or batch sizes
ROW_GROUP_ROWS = 131_072
#: the canonical order of entity rows: event time, then trip key
SORT_KEYS = [(EVENT_TIMESTAMP, "ascending"), (TRIP_KEY, "ascending")]
#: an entity row's position, carried through Feast (which returns rows in no particular order)
ROW = "_row"


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


def view_columns(views: Sequence[View]) -> dict[str, list[str]]:
    """Per view, its output columns ``<view>__<feature>``, in service order."""
    return {fv.name: [f"{fv.name}__{f.name}" for f in fv.features] for fv in views}


def feature_columns(views: Sequence[View]) -> list[str]:
    """Output names of the service's features, ``<view>__<feature>``, in service order."""
    return [c for columns in view_columns(views).values() for c in columns]


def feature_schema(views: Sequence[View]) -> pa.Schema:
    """The columns of a training set (or prediction input) of ``views``: entity columns, request-time
    features, then each view's features as ``<view>__<feature>``, typed as in the view's spec."""
    fields = [pa.field(n, t) for n, t in ENTITY_COLUMNS.items()]
    fields += [pa.field(n, t) for n, t in REQUEST_FEATURES.items()]
    for fv in views:
        spec = VIEWS_BY_NAME.get(fv.name)
        types = spec.feature_columns() if spec else {}
        fields += [pa.field(f"{fv.name}__{f.name}", types.get(f.name, pa.float64())) for f in fv.features]
    return pa.schema(fields)


def require_curated(root: DataRoot, days: list[dt.date], interval: Interval) -> None:
    """Raises PartitionError naming the days of ``interval`` without a (complete) curated partition."""
    missing = [
        d.isoformat() for d in days if not root.exists(f"{root.partition_path(*CURATED, d)}/{MANIFEST}")
    ]
    if missing:
        raise PartitionError(
            f"no curated trips for {len(missing)} day(s) of {interval}: {', '.join(missing[:10])};"
            " run taxi_ingest for them first"
        )


#: the curated columns the entity rows are made of (a curated partition holds more)
_CURATED_READ = sorted(
    {"trip_start_ts_utc" if n == EVENT_TIMESTAMP else n for n in ENTITY_COLUMNS} | set(REQUEST_INPUTS)
)


def entity_frame(root: DataRoot, day: dt.date) -> pa.Table:
    """The entity rows of one day: curated trips with labels and request-time features."""
    path = root.partition_path(*CURATED, day)
    trips = root.read_partition(path, columns=_CURATED_READ)
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


def sorted_order(table: pa.Table) -> pa.Array:
    """Row indices of ``table`` in (event_timestamp, trip_key) order (stable)."""
    return pc.sort_indices(table, sort_keys=SORT_KEYS)


def historical_join(
    handle: StoreHandle, service: FeatureService, views: list[FeatureView], entities: pa.Table
) -> pa.Table:
    """Feast's point-in-time join for ``entities`` (one call); rows carry their :data:`ROW` position back."""
    import pandas as pd

    keys = sorted({e.name for fv in views for e in fv.entity_columns})
    sent = entities.select([ROW, EVENT_TIMESTAMP, *keys])
    # nullable integers stay integers (numpy would turn a key column with nulls into floats)
    frame = sent.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    job = handle.store.get_historical_features(entity_df=frame, features=service, full_feature_names=True)
    return job.to_arrow()


def join_features(
    handle: StoreHandle | None,
    service: FeatureService | None,
    views: Sequence[View],
    entities: pa.Table,
    *,
    chunk_rows: int,
    refusing: str,
    join: Callable[[pa.Table], pa.Table] | None = None,
) -> pa.Table:
    """``entities`` in their order plus the service's feature columns, typed as in :func:`feature_schema`.

    Feast joins ``chunk_rows`` entity rows at a time (bounded memory); every chunk must come back with each
    row sent exactly once. A row without a feature row of a view gets nulls in that view's columns.

    Args:
        handle: The open feature store (None only with ``join``).
        service: The feature service; ``views`` its feature views (:func:`resolve_service`; None only with
            ``join``).
        entities: Entity rows (event timestamp and the views' entity keys at least).
        chunk_rows: Entity rows per Feast call (>= 1).
        refusing: What a failed row check refuses, for the message (e.g. ``"predictions"``).
        join: Joins one chunk instead of Feast's :func:`historical_join` (same contract: the chunk's
            :data:`ROW`, event timestamp and join keys in; :data:`ROW` and the feature columns out).

    Raises:
        FeatureStoreError: Feast lost, duplicated or invented entity rows.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    features = feature_columns(views)
    types = {f.name: f.type for f in feature_schema(views)}
    n = entities.num_rows
    indexed = entities.append_column(ROW, pa.array(np.arange(n, dtype=np.int64)))
    parts: list[pa.Table] = []
    for start in range(0, n, chunk_rows):
        part = indexed.slice(start, chunk_rows)
        if join is None:
            if handle is None or service is None:
                raise ValueError("join_features needs the store and the service, or a join")
            joined = historical_join(handle, service, cast("list[FeatureView]", views), part)
        else:
            keys = sorted({e.name for fv in views for e in fv.entity_columns})
            joined = join(part.select([ROW, EVENT_TIMESTAMP, *keys]))
        if joined.num_rows != part.num_rows:
            raise FeatureStoreError(
                f"get_historical_features returned {joined.num_rows} rows for {part.num_rows} entity rows:"
                f" refusing {refusing} that lost or duplicated trips"
            )
        # Feast returns rows in no particular order: put them back in ours, by the carried position
        joined = joined.take(pc.sort_indices(joined[ROW]))
        if not joined[ROW].equals(part[ROW]):
            raise FeatureStoreError(
                f"get_historical_features returned entity rows that were not sent: refusing {refusing}"
            )
        parts.append(pa.table({c: joined[c].cast(types[c]) for c in features}))
    table = entities
    merged = pa.concat_tables(parts) if parts else None
    for name in features:
        column = merged[name] if merged is not None else pa.nulls(0, types[name])
        table = table.append_column(name, column)
    return table


def missing_views(table: pa.Table, columns: Mapping[str, list[str]]) -> tuple[dict[str, int], pa.Array]:
    """Per view, the rows with no feature row (all its ``columns`` null); per row, how many views miss."""
    per_row = np.zeros(table.num_rows, dtype=np.int8)
    counts: dict[str, int] = {}
    for view, names in columns.items():
        mask = np.ones(table.num_rows, dtype=bool)
        for column in names:
            mask &= table[column].is_null().to_numpy(zero_copy_only=False)
        counts[view] = int(mask.sum())
        per_row += mask.astype(np.int8)
    return counts, pa.array(per_row, pa.int8())


def feature_inputs(root: DataRoot, views: Sequence[View], interval: Interval) -> list[dict[str, Any]]:
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
