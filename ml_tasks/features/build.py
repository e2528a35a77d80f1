"""``build-features``: trailing-window aggregates per entity, one partition per view and day.

Every day of the interval needs its curated partition; the later days whose windows include the interval
are rebuilt too. Design notes (windows, memory, policies): ``docs/features.md``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ml_tasks.contract import CURATED, EVENT_TIMESTAMP, FEATURES_LAYER
from ml_tasks.features.spec import AGGREGATES, COVERAGE, MAX_WINDOW, VIEWS, WINDOWS, ViewSpec
from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, PartitionError, input_record

log = logging.getLogger(__name__)

UTC = dt.UTC

# (sum expression, count expression) per aggregate over the daily rows; the mean is sum / count.
# Sums are DECIMAL (exact): a sum of doubles depends on the order of additions, which DuckDB's parallel
# aggregation changes from run to run and with the interval (the last bits of the means, so the bytes).
_DAILY_SUMS = """
    count(*) AS trips,
    sum(fare::DECIMAL(38, 10)) AS fare_sum, count(fare) AS fare_n,
    sum(fare_per_mile::DECIMAL(38, 10)) AS fare_per_mile_sum, count(fare_per_mile) AS fare_per_mile_n,
    sum(CASE WHEN fare > 0 THEN (tips / fare)::DECIMAL(38, 10) END) AS tip_rate_sum,
    count(CASE WHEN fare > 0 THEN tips END) AS tip_rate_n,
    count(*) FILTER (WHERE payment_type = 'Credit Card') AS credit_card_sum,
    count(payment_type) AS credit_card_n,
    count(*) FILTER (WHERE big_tipper) AS big_tipper_sum,
    count(big_tipper) AS big_tipper_n
"""
_RATIO_OF = {
    "fare_mean": "fare",
    "fare_per_mile_mean": "fare_per_mile",
    "tip_rate_mean": "tip_rate",
    "credit_card_share": "credit_card",
    "big_tipper_rate": "big_tipper",
}


def end_of_day_utc(day: dt.date, timezone: str) -> dt.datetime:
    """The instant day ``day`` ends in ``timezone`` (its next local midnight), in UTC."""
    nxt = day + dt.timedelta(days=1)
    return dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def _window_select(view: ViewSpec) -> str:
    cols = []
    for w in WINDOWS:
        inside = f"age < {w}"
        cols.append(f"coalesce(sum(trips) FILTER (WHERE {inside}), 0)::BIGINT AS trips_{w}d")
        for agg in AGGREGATES:
            if agg == "trips":
                continue
            base = _RATIO_OF[agg]
            cols.append(
                f"(sum({base}_sum) FILTER (WHERE {inside}))::DOUBLE"
                f" / nullif(sum({base}_n) FILTER (WHERE {inside}), 0) AS {agg}_{w}d"
            )
    # keep the declared column order (spec), whatever order the loop above produced
    by_name = {c.rsplit(" AS ", 1)[1]: c for c in cols}
    ordered = [by_name[name] for name in view.feature_columns() if name != COVERAGE]
    return ",\n        ".join(ordered)


def feature_query(view: ViewSpec) -> str:
    """SQL over ``trips`` (curated rows) and ``targets`` (day, event_timestamp, coverage) for one view."""
    key = view.entity
    return f"""
    WITH daily AS (
        SELECT trip_date AS day, "{key}" AS k, {_DAILY_SUMS}
        FROM trips
        WHERE "{key}" IS NOT NULL AND NOT coalesce(_is_duplicate, false)
        GROUP BY ALL
    ), joined AS (
        SELECT t.day, t.{EVENT_TIMESTAMP}, t.coverage, d.k, date_diff('day', d.day, t.day) AS age,
            d.* EXCLUDE (day, k)
        FROM targets t JOIN daily d ON d.day <= t.day AND d.day > t.day - {MAX_WINDOW}
    )
    SELECT k AS "{key}", day, {EVENT_TIMESTAMP},
        {_window_select(view)},
        any_value(coverage)::BIGINT AS {COVERAGE}
    FROM joined
    GROUP BY k, day, {EVENT_TIMESTAMP}
    ORDER BY day, "{key}"
    """


def _curated_days(root: DataRoot, first: dt.date, end: dt.date) -> dict[dt.date, str]:
    """Complete curated partitions in ``[first, end)``: day -> path."""
    present = set(root.list_partitions(*CURATED))
    days = {}
    day = first
    while day < end:
        if day.isoformat() in present:
            days[day] = root.partition_path(*CURATED, day)
        day += dt.timedelta(days=1)
    return days


def dependent_days(root: DataRoot, interval: Interval) -> list[dt.date]:
    """Days after ``interval`` that already have feature partitions and whose windows include it.

    Their trailing windows read the interval's trips: when the interval is (re)built, for instance a
    day ingested late or backfilled after the days that follow it, they are stale.
    """
    present = {key for view in VIEWS for key in root.list_partitions(FEATURES_LAYER, view.dataset)}
    later = (interval.end + dt.timedelta(days=i) for i in range(MAX_WINDOW - 1))
    return [d for d in later if d.isoformat() in present]


def build_features(
    root: DataRoot, interval: Interval, settings: Settings, dependents: bool = True
) -> dict[str, Any]:
    """Write ``features/<view>/dt=D`` for every view and every day D of ``interval``.

    With ``dependents`` (the default), also rebuild the existing feature partitions of the days after
    the interval whose trailing windows include it (:func:`dependent_days`), so the order in which
    days arrive does not matter: any order of daily builds ends with the same partitions as one build
    of the whole range.

    Raises:
        PartitionError: a day of the interval has no complete curated partition.
    """
    started = time.perf_counter()
    later = dependent_days(root, interval) if dependents else []
    targets = list(interval.days())
    first_input = interval.start - dt.timedelta(days=MAX_WINDOW - 1)
    available = _curated_days(
        root, first_input, max([interval.end, *(d + dt.timedelta(days=1) for d in later)])
    )
    skipped_later = [d for d in later if d not in available]
    if skipped_later:
        log.warning(
            "build-features: later day(s) %s have feature partitions but no curated partition: not rebuilt",
            [d.isoformat() for d in skipped_later],
        )
    targets += [d for d in later if d in available]
    missing_targets = [d for d in interval.days() if d not in available]
    if missing_targets:
        shown = ", ".join(d.isoformat() for d in missing_targets[:10])
        raise PartitionError(
            f"no curated trips for {len(missing_targets)} day(s) of the interval {interval}: {shown}"
            f"{' ...' if len(missing_targets) > 10 else ''}; run taxi_ingest (ml-tasks publish) for them"
        )
    inputs = {day: input_record(root, path) for day, path in available.items()}
    files = [f for day in sorted(available) for f in root.parquet_files(available[day])]

    def window(day: dt.date) -> list[dt.date]:
        return [day - dt.timedelta(days=i) for i in range(MAX_WINDOW)]

    coverage = {d: sum(1 for w in window(d) if w in available) for d in targets}
    target_table = pa.table(
        {
            "day": pa.array(targets, pa.date32()),
            EVENT_TIMESTAMP: pa.array(
                [end_of_day_utc(d, settings.timezone) for d in targets], pa.timestamp("us", tz="UTC")
            ),
            "coverage": pa.array([coverage[d] for d in targets], pa.int64()),
        }
    )
    trips = pads.dataset(files, filesystem=root.fs, format="parquet")
    trip_rows = trips.count_rows()

    partitions: list[dict[str, Any]] = []
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute("SET TimeZone = 'UTC'")
        con.register("trips", trips)
        con.register("targets", target_table)
        for view in VIEWS:
            t0 = time.perf_counter()
            result = con.execute(feature_query(view)).to_arrow_table()
            schema = view.schema()
            null_keys = con.execute(f'SELECT count(*) FROM trips WHERE "{view.entity}" IS NULL').fetchone()
            for day in targets:
                rows = result.filter(pc.equal(result["day"], pa.scalar(day, pa.date32())))
                table = rows.select(schema.names).cast(schema)
                path = root.partition_path(FEATURES_LAYER, view.dataset, day)
                day_inputs = [inputs[d] for d in sorted(window(day)) if d in inputs]
                missing = [d.isoformat() for d in sorted(window(day)) if d not in available]
                root.write_table(
                    path,
                    table,
                    schema,
                    Manifest(
                        dataset=f"{FEATURES_LAYER}/{view.dataset}",
                        partition=day.isoformat(),
                        step="build-features",
                        inputs=day_inputs,
                        row_counts={"rows": table.num_rows, "window_days": coverage[day]},
                        params={
                            "view": view.name,
                            "entity": view.entity,
                            "windows_days": list(WINDOWS),
                            "event_timestamp": end_of_day_utc(day, settings.timezone).isoformat(),
                            "missing_window_days": missing,
                        },
                    ),
                )
                partitions.append(
                    {
                        "view": view.name,
                        "dt": day.isoformat(),
                        "uri": root.uri(path),
                        "rows": table.num_rows,
                        "window_days": coverage[day],
                    }
                )
            log.info(
                "build-features %s: %d rows for %d day(s) from %d trips (%d without %s) in %.2f s",
                view.name, result.num_rows, len(targets), trip_rows,
                int(null_keys[0]) if null_keys else 0, view.entity, time.perf_counter() - t0,
            )  # fmt: skip
    finally:
        con.close()
    missing_window_days = sorted(
        {d.isoformat() for day in targets for d in window(day) if d not in available}
    )
    if missing_window_days:
        log.warning(
            "build-features: %d day(s) inside the trailing windows have no curated partition (partial"
            " windows, see window_days_%dd): %s",
            len(missing_window_days), MAX_WINDOW, ", ".join(missing_window_days[:10]),
        )  # fmt: skip
    return {
        "step": "build-features",
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "partitions": partitions,
        "rows": sum(p["rows"] for p in partitions),
        "rebuilt_later_days": [d.isoformat() for d in later if d in available],
        "input_days": len(available),
        "input_trips": trip_rows,
        "missing_window_days": missing_window_days,
        "seconds": round(time.perf_counter() - started, 3),
    }
