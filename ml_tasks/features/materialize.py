"""``materialize``: load one data interval of feature tables into the online store, in bounded batches.

Why not ``feast materialize`` / ``materialize_incremental``: the incremental watermark is global per
view (a backfill of an old interval moves it backwards or is skipped; a future end date blocks later
runs), and the default path converts the whole window in memory (~5 GB for 1M rows here). This step
takes an explicit window instead and streams it:

1. DuckDB reads the interval's partitions ``features/<view>/dt=D`` and keeps the latest row per entity
   (what ``feast materialize`` keeps), streamed as Arrow record batches of ``batch_rows``;
2. each batch is converted with Feast's own Arrow -> proto conversion and written with the online
   store's ``online_write_batch`` (SQLite, Redis, ...), so the stored format is Feast's;
3. the online store never moves backwards: rows older than what the store already holds for an entity
   (a backfill of an old interval after a newer one) are skipped and counted. Redis does this check
   itself; for other stores the batch's current timestamps are read first.

Re-materializing a window writes the same values (same rows, same timestamps): idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging
import resource
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, PartitionError

from .spec import EVENT_TIMESTAMP, FEATURES_LAYER, VIEWS_BY_NAME, ViewSpec
from .store import FeatureStoreError, StoreHandle

if TYPE_CHECKING:
    from feast import FeatureView

log = logging.getLogger(__name__)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def interval_files(root: DataRoot, view: ViewSpec, interval: Interval) -> list[str]:
    """Parquet files of the view's partitions for every day of ``interval``.

    Raises:
        PartitionError: a day has no complete feature partition (naming the step to run).
    """
    files: list[str] = []
    missing: list[str] = []
    for day in interval.days():
        path = root.partition_path(FEATURES_LAYER, view.dataset, day)
        try:
            files.extend(root.parquet_files(path))
        except PartitionError:
            missing.append(day.isoformat())
    if missing:
        raise PartitionError(
            f"no {FEATURES_LAYER}/{view.dataset} partition for {len(missing)} day(s) of {interval}:"
            f" {', '.join(missing[:10])}; run `ml-tasks build-features` for them first"
        )
    return files


def latest_rows(
    root: DataRoot, view: ViewSpec, files: Sequence[str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """The latest row per entity over ``files``, ordered by key, in record batches."""
    import pyarrow.dataset as pads

    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.register("features", pads.dataset(list(files), filesystem=root.fs, format="parquet"))
        reader = con.execute(
            f"""SELECT * FROM features
            QUALIFY row_number() OVER (PARTITION BY "{view.entity}" ORDER BY {EVENT_TIMESTAMP} DESC) = 1
            ORDER BY "{view.entity}" """
        ).to_arrow_reader(batch_rows)
        yield from reader
    finally:
        con.close()


def _online_timestamps(handle: StoreHandle, fv: FeatureView, keys: list[Any]) -> list[dt.datetime | None]:
    store = handle.store
    provider = store._get_provider()
    first_feature = fv.features[0].name
    return [ts for ts, _ in provider.online_read(store.config, fv, keys, requested_features=[first_feature])]


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def write_batch(handle: StoreHandle, fv: FeatureView, batch: pa.RecordBatch, guard: bool) -> tuple[int, int]:
    """Write one batch to the online store; return (rows written, stale rows skipped)."""
    from feast.utils import _convert_arrow_to_proto

    store = handle.store
    join_keys = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
    rows = _convert_arrow_to_proto(batch, fv, join_keys)
    skipped = 0
    if guard and rows:
        current = _online_timestamps(handle, fv, [r[0] for r in rows])
        fresh = [r for r, ts in zip(rows, current, strict=True) if ts is None or _as_utc(ts) <= _as_utc(r[2])]
        skipped = len(rows) - len(fresh)
        rows = fresh
    if rows:
        store._get_provider().online_write_batch(store.config, fv, rows, progress=None)
    return len(rows), skipped


def materialize(
    handle: StoreHandle,
    root: DataRoot,
    interval: Interval,
    settings: Settings,
    views: Sequence[str | ViewSpec] | None = None,
    batch_rows: int | None = None,
) -> dict[str, Any]:
    """Load the latest feature row per entity of ``interval`` into the online store, for each view.

    Raises:
        FeatureStoreError: an unknown view, or a view that is not served online.
        PartitionError: a feature partition of the interval is missing.
    """
    started = time.perf_counter()
    batch_rows = batch_rows or settings.materialize_batch_rows
    specs = [VIEWS_BY_NAME.get(v, v) if isinstance(v, str) else v for v in (views or VIEWS_BY_NAME)]
    unknown = [v for v in specs if isinstance(v, str)]
    if unknown:
        raise FeatureStoreError(f"unknown feature view(s) {unknown}: choose from {sorted(VIEWS_BY_NAME)}")
    store = handle.store
    online_type = str(getattr(store.config.online_store, "type", ""))
    guard = "redis" not in online_type  # Redis keeps the newest row per entity by itself
    results: list[dict[str, Any]] = []
    for spec in specs:
        assert isinstance(spec, ViewSpec)
        name = spec.name
        fv = store.get_feature_view(name)
        if not fv.online:
            raise FeatureStoreError(
                f"feature view {name} is not online (online=False): nothing to materialize"
            )
        files = interval_files(root, spec, interval)
        t0 = time.perf_counter()
        read = written = skipped = 0
        for batch in latest_rows(root, spec, files, batch_rows):
            read += batch.num_rows
            w, s = write_batch(handle, fv, batch, guard)
            written += w
            skipped += s
        seconds = time.perf_counter() - t0
        if online_type == "redis":
            log.info("materialize %s: Redis skips rows older than what it holds (not counted here)", name)
        log.info(
            "materialize %s %s: %d entities read, %d written, %d older than the online value skipped,"
            " %.2f s (%.0f rows/s)",
            name, interval, read, written, skipped, seconds, read / seconds if seconds else 0.0,
        )  # fmt: skip
        results.append(
            {
                "view": name,
                "files": len(files),
                "rows_read": read,
                "rows_written": written,
                "rows_skipped_older": skipped,
                "seconds": round(seconds, 3),
            }
        )
    total = time.perf_counter() - started
    rows = sum(r["rows_read"] for r in results)
    return {
        "step": "materialize",
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "online_store": online_type,
        "views": results,
        "rows": rows,
        "rows_per_second": round(rows / total, 1) if total else None,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "seconds": round(total, 3),
    }
