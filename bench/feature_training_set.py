"""Training-set benchmark: Flywheel's point-in-time training set against a plain DuckDB ASOF join.

Setup (real pipeline, timed but not compared): ``--rows`` synthetic trips over ``--days`` days
(``--rows / --days`` per day, with the source's day-of-week variation and dirty rows) plus the ttl's days
of history before them go through the real CLI steps extract -> transform -> validate -> publish into
``curated/trips``, then ``build-features`` writes the real feature views (``pickup_area_stats``,
``company_stats``) for those days and ``feature-apply`` registers them. The trailing 28-day windows of
the first days are partial (the history is only as long as the ttl): the join does the same work.

Measured, each in its own child process (so peak RSS is its own; times cover the join + write only):

* flywheel: ``ml_tasks.features.training_set.build_training_set`` for ``taxi_tips_v1`` (Feast
  ``get_historical_features`` on the DuckDB offline store, in chunks of whole days), writing parquet;
* duckdb: one plain DuckDB query: the same curated trips (same entity and request-time columns),
  ``ASOF LEFT JOIN`` each feature view's partitions on its key and ``trip ts >= feature ts``, values kept
  only within the view's ttl (Feast's condition ``feature ts + ttl >= trip ts``), sorted like Flywheel's,
  ``COPY`` to zstd parquet.

Checks: both outputs have as many rows as there are curated trips; every trip whose key is unique has the
same value in every feature column (all rows are compared, not a sample), plus its timestamp, keys and
label. Fails (exit 1) on a difference, when a path does not finish, or when Flywheel's time exceeds
``--max-ratio`` times DuckDB's.

Usage: python bench/feature_training_set.py [--rows 1000000] [--days 28] [--max-ratio 8]
    [--mem-limit-gb 12] [--timeout 900] [--chunk-rows N] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ml_tasks.contract import FEATURE_SERVICE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py`: import bench._features

import duckdb

from bench._features import ChildRun, add_child_arguments, child_argv, run_child, run_child_mode
from bench._results import Figure, emit
from ml_tasks.contract import EVENT_TIMESTAMP, FEATURES_LAYER
from ml_tasks.features.spec import FEATURE_SERVICES, VIEWS_BY_NAME

SERVICE = FEATURE_SERVICE
SNAPSHOT = "bench"
#: entity-frame column -> curated column (the rest have the same name)
RENAMED = {EVENT_TIMESTAMP: "trip_start_ts_utc"}


def reference_query(root_base: str, curated_files: list[str], out_path: str) -> str:
    """The plain DuckDB point-in-time join of the curated trips with the service's feature views."""
    from ml_tasks.contract import TRIP_KEY
    from ml_tasks.features.request import REQUEST_FEATURES
    from ml_tasks.features.retrieval import ENTITY_COLUMNS

    views = [VIEWS_BY_NAME[name] for name in FEATURE_SERVICES[SERVICE]]
    entity_cols = [*ENTITY_COLUMNS, *REQUEST_FEATURES]
    trips_select = ", ".join(f'"{RENAMED.get(c, c)}" AS "{c}"' for c in entity_cols)
    files = ", ".join(f"'{f}'" for f in curated_files)
    ctes = [f"trips AS (SELECT {trips_select} FROM read_parquet([{files}]))"]
    selects = [f't."{c}"' for c in entity_cols]
    joins = []
    for i, view in enumerate(views):
        alias = f"f{i}"
        names = list(view.feature_columns())
        source = f"{root_base}/{FEATURES_LAYER}/{view.dataset}/dt=*/*.parquet"
        cols = ", ".join(f'"{n}"' for n in names)
        ctes.append(
            f'{alias} AS (SELECT "{view.entity}" AS _k, {EVENT_TIMESTAMP} AS _ts, {cols}'
            f" FROM read_parquet('{source}'))"
        )
        ttl_seconds = view.ttl_days * 86_400
        fresh = f"{alias}._ts + INTERVAL '{ttl_seconds} seconds' >= t.{EVENT_TIMESTAMP}"
        selects += [f'CASE WHEN {fresh} THEN {alias}."{n}" END AS "{view.name}__{n}"' for n in names]
        joins.append(
            f'ASOF LEFT JOIN {alias} ON t."{view.entity}" = {alias}._k AND t.{EVENT_TIMESTAMP} >= {alias}._ts'
        )
    select = ",\n    ".join(selects)
    return f"""COPY (
WITH {", ".join(ctes)}
SELECT {select}
FROM trips t
{chr(10).join(joins)}
ORDER BY {EVENT_TIMESTAMP}, {TRIP_KEY}
) TO '{out_path}' (FORMAT parquet, COMPRESSION zstd)"""


def child(mode: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One measured path; returns its summary (seconds = the join and write only)."""
    from ml_tasks.intervals import Interval
    from ml_tasks.settings import Settings
    from ml_tasks.storage import DataRoot

    settings = Settings()
    root = DataRoot(settings.data_root)
    start = dt.date.fromisoformat(cfg["start"])
    interval = Interval(start, start + dt.timedelta(days=cfg["days"]))
    if mode == "flywheel":
        from ml_tasks.features.store import open_store
        from ml_tasks.features.training_set import build_training_set

        handle = open_store(settings)
        t0 = time.perf_counter()
        summary = build_training_set(handle, root, interval, settings, SERVICE, name=SNAPSHOT)
        seconds = time.perf_counter() - t0
        folder = summary["uri"]
        return {
            "seconds": seconds,
            "rows": summary["rows"],
            "entity_rows": summary["entity_rows"],
            "rows_without_features": summary.get("rows_without_features"),
            "files": sorted(str(p) for p in Path(folder).glob("*.parquet")),
        }
    out = Path(cfg["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")  # interval arithmetic on timestamptz: no DST days
    t0 = time.perf_counter()
    files = [
        f for day in interval.days() for f in root.parquet_files(root.partition_path("curated", "trips", day))
    ]
    con.execute(reference_query(root.base, files, str(out)))
    seconds = time.perf_counter() - t0
    (rows,) = con.execute("SELECT count(*) FROM read_parquet(?)", [str(out)]).fetchone() or (0,)
    (entity_rows,) = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchone() or (0,)
    return {"seconds": seconds, "rows": int(rows), "entity_rows": int(entity_rows), "files": [str(out)]}


def compare(flywheel_files: list[str], reference_files: list[str]) -> dict[str, Any]:
    """Every trip with a unique key: same timestamp, keys, label and feature values in both outputs."""
    from ml_tasks.contract import LABEL, TRIP_KEY

    views = [VIEWS_BY_NAME[name] for name in FEATURE_SERVICES[SERVICE]]
    features = [f"{v.name}__{n}" for v in views for n in v.feature_columns()]
    plain = [EVENT_TIMESTAMP, "pickup_community_area", "company", LABEL]
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    diffs = [f'count(*) FILTER (WHERE a."{c}" IS DISTINCT FROM b."{c}") AS "{c}"' for c in plain]
    diffs += [
        f'count(*) FILTER (WHERE a."{c}"::DOUBLE IS DISTINCT FROM b."{c}"::DOUBLE) AS "{c}"' for c in features
    ]
    nonnull = [f'count(a."{v.name}__trips_1d") AS "{v.name}"' for v in views]
    unique = f"QUALIFY count(*) OVER (PARTITION BY {TRIP_KEY}) = 1"
    row = con.execute(
        f"""WITH a AS (SELECT * FROM read_parquet(?) {unique}), b AS (SELECT * FROM read_parquet(?) {unique})
        SELECT count(*) AS compared, {", ".join(nonnull)}, {", ".join(diffs)}
        FROM a JOIN b USING ({TRIP_KEY})""",
        [flywheel_files, reference_files],
    ).fetchone()
    assert row is not None
    names = ["compared", *[f"with_{v.name}" for v in views], *plain, *features]
    values = dict(zip(names, (int(v) for v in row), strict=True))
    counts = {
        "flywheel_rows": con.execute("SELECT count(*) FROM read_parquet(?)", [flywheel_files]).fetchone(),
        "reference_rows": con.execute("SELECT count(*) FROM read_parquet(?)", [reference_files]).fetchone(),
        "unique_trip_keys": con.execute(
            f"SELECT count(*) FROM (SELECT {TRIP_KEY} FROM read_parquet(?) GROUP BY ALL HAVING count(*) = 1)",
            [flywheel_files],
        ).fetchone(),
    }
    con.close()
    mismatches = {c: values[c] for c in [*plain, *features] if values[c]}
    return {
        **{k: int(v[0]) if v else 0 for k, v in counts.items()},
        "compared_rows": values["compared"],
        "rows_with_features": {v.name: values[f"with_{v.name}"] for v in views},
        "columns_compared": len(plain) + len(features),
        "mismatches": mismatches,
    }


def setup(tmp: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Ingest the trips and build + register the features with the real CLI steps."""
    start = dt.date.fromisoformat(args.start)
    history = max(v.ttl_days for v in VIEWS_BY_NAME.values())
    first = start - dt.timedelta(days=history)
    end = start + dt.timedelta(days=args.days)
    window = ["--start", first.isoformat(), "--end", end.isoformat()]
    per_day = args.rows // args.days
    cli = [sys.executable, "-m", "ml_tasks.cli"]
    steps: dict[str, float] = {}
    for step, extra in [
        ("extract", ["--source", "synthetic", "--trips-per-day", str(per_day)]),
        ("transform", []),
        ("validate", []),
        ("publish", []),
        ("build-features", []),
        ("feature-apply", None),
    ]:
        argv = [*cli, step] if extra is None else [*cli, step, *window, *extra]
        run = run_child(step, argv, env, args.mem_limit_gb, args.timeout)
        if not run.ok:
            raise SystemExit(f"setup step {step} {run.describe()}")
        steps[step] = round(run.wall_seconds, 1)
        print(f"setup {step:15s} {run.wall_seconds:6.1f} s  peak RSS {run.peak_rss_mib:6.0f} MiB", flush=True)
    return {"window": f"[{first}, {end})", "trips_per_day": per_day, "step_seconds": steps}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="approximate entity rows (trips)")
    parser.add_argument("--days", type=int, default=28, help="days of trips in the training window")
    parser.add_argument("--start", default="2024-05-01", help="first day of the training window")
    parser.add_argument(
        "--chunk-rows", type=int, help="Flywheel's training_set_chunk_rows (default: setting)"
    )
    add_child_arguments(parser, max_ratio=8.0, ratio_help="fail above this Flywheel/DuckDB time")
    args = parser.parse_args()
    if run_child_mode(args, child):
        return 0

    bench_started = time.perf_counter()
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-ts-") as tmp:
        data_root = Path(tmp) / "data"
        env = {
            **os.environ,
            "FLYWHEEL_DATA_ROOT": str(data_root),
            "FLYWHEEL_FEAST_DIR": str(Path(tmp) / "feast"),
            "FLYWHEEL_FEAST_ENV": "local",
            "FLYWHEEL_MAX_REJECT_RATE": "0.2",  # the synthetic source's dirty rows, as in etl_throughput
        }
        if args.chunk_rows:
            env["FLYWHEEL_TRAINING_SET_CHUNK_ROWS"] = str(args.chunk_rows)
        prepared = setup(Path(tmp), args, env)
        config = {
            "start": args.start,
            "days": args.days,
            "out": str(Path(tmp) / "reference" / "part-0.parquet"),
        }
        runs: dict[str, ChildRun] = {}
        for mode in ("duckdb", "flywheel"):
            run = run_child(mode, child_argv(__file__, mode, config), env, args.mem_limit_gb, args.timeout)
            runs[mode] = run
            if run.ok:
                r = run.result
                print(
                    f"{mode:8s} {r['seconds']:8.2f} s {r['rows'] / r['seconds']:>10,.0f} rows/s"
                    f"  peak RSS {run.peak_rss_mib:7.0f} MiB"
                    f"  ({r['rows']:,} rows; child {run.wall_seconds:.0f} s)",
                    flush=True,
                )
            else:
                print(f"{mode:8s} {run.describe()} (peak RSS {run.peak_rss_mib:.0f} MiB)", flush=True)
        checks: dict[str, Any] = {}
        if all(r.ok for r in runs.values()):
            t0 = time.perf_counter()
            checks = compare(runs["flywheel"].result["files"], runs["duckdb"].result["files"])
            checks["seconds"] = round(time.perf_counter() - t0, 1)
    results: dict[str, Any] = {}
    for mode, run in runs.items():
        entry = run.as_dict()
        if run.ok:
            r = run.result
            entry.update(
                seconds=round(r["seconds"], 2),
                rows=r["rows"],
                entity_rows=r["entity_rows"],
                rows_per_s=round(r["rows"] / r["seconds"]),
            )
            if r.get("rows_without_features") is not None:
                entry["rows_without_features"] = r["rows_without_features"]
        else:
            failures.append(f"{mode}: {run.describe()}")
        results[mode] = entry
    report: dict[str, Any] = {
        "entity_rows": results.get("flywheel", {}).get("entity_rows"),
        "days": args.days,
        "feature_service": SERVICE,
        "setup": prepared,
        "paths": results,
        "checks": checks,
        "max_ratio": args.max_ratio,
        "cpu_count": os.cpu_count(),
    }
    fw, ref = results["flywheel"], results["duckdb"]
    if "seconds" in fw and "seconds" in ref:
        ratio = fw["seconds"] / ref["seconds"]
        report["ratio_flywheel_to_duckdb_time"] = round(ratio, 1)
        report["ratio_flywheel_to_duckdb_peak_rss"] = round(fw["peak_rss_mib"] / ref["peak_rss_mib"], 2)
        if not fw["rows"] == ref["rows"] == fw["entity_rows"] == ref["entity_rows"]:
            failures.append(
                f"row counts differ: Flywheel {fw['rows']:,} (of {fw['entity_rows']:,} entity rows),"
                f" DuckDB {ref['rows']:,} (of {ref['entity_rows']:,})"
            )
        if checks.get("mismatches"):
            failures.append(f"values differ between Flywheel and DuckDB: {checks['mismatches']}")
        if ratio > args.max_ratio:
            failures.append(f"Flywheel/DuckDB time ratio {ratio:.1f} > {args.max_ratio:g}")
        print(
            f"\ntraining set of {fw['rows']:,} trips: Flywheel {fw['seconds']:.1f} s ="
            f" {fw['rows_per_s']:,} rows/s"
            f" (peak RSS {fw['peak_rss_mib']:,} MiB); DuckDB ASOF join {ref['seconds']:.1f} s ="
            f" {ref['rows_per_s']:,} rows/s (peak RSS {ref['peak_rss_mib']:,} MiB); ratio {ratio:.1f}"
            f" (max {args.max_ratio:g}); rows equal: {fw['rows'] == ref['rows']};"
            f" {checks.get('compared_rows', 0):,} rows x {checks.get('columns_compared', 0)} columns"
            " compared,"
            f" mismatches: {checks.get('mismatches')}"
        )
    report["bench_seconds"] = round(time.perf_counter() - bench_started, 1)
    print(f"bench ran {report['bench_seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    code = emit("feature_training_set", figures(results, checks, args))
    return 1 if failures else code


def figures(results: dict[str, Any], checks: dict[str, Any], args: argparse.Namespace) -> list[Figure]:
    """Flywheel's point-in-time training set against the plain DuckDB ASOF join (rows/s)."""
    fw, ref = results["flywheel"], results["duckdb"]
    if "seconds" not in fw:
        return [Figure("training set: Flywheel PIT", 0.0, "rows/s", note=str(fw["status"]))]
    ratio = fw["seconds"] / ref["seconds"] if "seconds" in ref else None
    compared = f"{checks.get('compared_rows', 0):,} rows x {checks.get('columns_compared', 0)} columns"
    return [
        Figure(
            name="training set: Flywheel PIT vs DuckDB ASOF",
            value=fw["rows_per_s"],
            unit="rows/s",
            floor=ref.get("rows_per_s"),
            ratio=None if ratio is None else round(ratio, 2),
            bound=args.max_ratio,
            rows=fw["rows"],
            peak_rss_mib=fw["peak_rss_mib"],
            note=f"{args.days} days; {compared} compared, mismatches {checks.get('mismatches')};"
            f" DuckDB peak RSS {ref.get('peak_rss_mib')} MiB",
        )
    ]


if __name__ == "__main__":
    sys.exit(main())
