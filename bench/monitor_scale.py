"""Monitoring at scale: time and peak RSS of ``run_monitoring`` at 100k and 1M rows x 20 columns vs a floor.

Data (generated here, seeded): a predictions partition of one day in the contract's layout (trip key, score,
model columns, then 19 model inputs: 7 categorical, 12 numeric of which 7 ``<view>__<feature>``; with the
score that is 20 monitored columns), some of them shifted so the drift test has work to do; a reference
(50k-row sample + statistics of 200k "training" rows) written with the project's own ``compute_reference``.

Method (the issue asks for a stated one): the data-quality statistics cover every row in one streamed pass
(pyarrow, record batches of 65k rows); Evidently runs on a seeded sample of at most ``monitor_sample_rows``
(default 100k) current rows against the 50k reference sample.

Each measurement runs in a FRESH subprocess (imports included, as the CLI step pays them); its peak RSS is
that child's own ``VmHWM`` (``bench._results.PEAK_AT_EXIT``: ``ru_maxrss`` would include this parent's).
The floor, measured the same way on the same partition, is a process that imports pyarrow, reads the same 20
columns and computes count / nulls / min / max / mean of each: the least any monitoring must do. The ratio
monitoring / floor is reported; the run FAILS when the 1M run exceeds ``--max-seconds`` (30) or
``--max-rss-gb`` (4), the issue's limits, or a ratio its bound.

The fixed cost: the same fresh-process monitoring of a day of ``--small-rows`` (48) rows, against a fresh
process that only imports what the drift test needs from Evidently (the step's one heavy library; goal: the
step costs no more than that import). Both end as ``ml-tasks`` does (``ml_tasks.cli.finish`` and
``FAST_EXIT``: exit handlers, flush, no module teardown).

Reports through ``bench/_results.py`` (bench name ``monitor``). Usage: python bench/monitor_scale.py
[--rows 100000,1000000] [--sample-rows 100000] [--small-rows 48]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ml_tasks.contract import REGISTERED_MODEL

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/x.py`: import bench._results

from bench._results import FAST_EXIT, PEAK_AT_EXIT, Figure, child_peak_mib, emit  # noqa: E402

MODEL = REGISTERED_MODEL
DAY = dt.date(2024, 6, 3)
CATEGORICAL = [
    "payment_type", "company", "pickup_community_area", "dropoff_community_area",
    "trip_start_hour", "trip_start_day_of_week", "trip_start_month",
]  # fmt: skip
NUMERIC = ["fare", "trip_miles", "trip_seconds", "fare_per_mile", "speed_mph"] + [
    f"trips_area_daily__f{k}" for k in range(7)
]


def inputs(n: int, seed: int, shift: float) -> dict[str, Any]:
    """The 19 model inputs; ``shift`` moves fares, payment mix and companies (0 = the reference's world)."""
    rng = np.random.default_rng(seed)
    pay = np.array(["Cash", "Credit Card", "Mobile", "No Charge", "Unknown", "Dispute"])
    p_pay = np.array([0.6 - shift / 2, 0.33, shift / 2, 0.03, 0.03, 0.01])
    companies = np.array([f"Company {k:02d}" for k in range(40 + int(shift * 10))])
    company = companies[rng.integers(0, companies.size, n)].astype(object)
    company[rng.uniform(size=n) < 0.3] = None
    fare = rng.gamma(2.0, 6.0, n) * (1 + shift / 4) + 3.25
    miles = fare / 2.5 * rng.uniform(0.5, 1.5, n)
    seconds = (miles * 180 + rng.integers(60, 600, n)).astype(np.int64)
    data: dict[str, Any] = {
        "payment_type": pa.array(pay[rng.choice(pay.size, n, p=p_pay / p_pay.sum())]),
        "company": pa.array(company, pa.string()),
        "pickup_community_area": pa.array(rng.integers(1, 78, n)),
        "dropoff_community_area": pa.array(rng.integers(1, 78, n), mask=rng.uniform(size=n) < 0.05),
        "trip_start_hour": pa.array(rng.integers(0, 24, n).astype(np.int8)),
        "trip_start_day_of_week": pa.array(np.full(n, 2, np.int8)),
        "trip_start_month": pa.array(np.full(n, 6, np.int8)),
        "fare": pa.array(fare),
        "trip_miles": pa.array(miles),
        "trip_seconds": pa.array(seconds),
        "fare_per_mile": pa.array(fare / np.maximum(miles, 0.1)),
        "speed_mph": pa.array(miles / (seconds / 3600)),
    }
    for k in range(7):
        values = rng.normal(k, 1 + shift * (k % 2), n)
        data[f"trips_area_daily__f{k}"] = pa.array(np.where(rng.uniform(size=n) < 0.02, np.nan, values))
    return data


def score(table: pa.Table) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A fixed logistic score (the benchmark measures monitoring, not a model)."""
    fare = table["fare"].to_numpy()
    card = np.asarray(table["payment_type"].to_numpy(zero_copy_only=False) == "Credit Card", dtype=np.float64)
    return np.asarray(1 / (1 + np.exp(-(2.5 * card - 1.5 + 0.02 * (fare - 15)))), dtype=np.float64)


def build(base: Path, rows: int) -> tuple[Path, Path]:
    """The data root with the day's predictions partition, and the reference folder."""
    from ml_tasks.models.reference import compute_reference, write_reference
    from ml_tasks.storage import DataRoot, Manifest

    reference_dir = base / "reference"
    if not (reference_dir / "reference_stats.json").is_file():
        train = pa.table(inputs(200_000, 1, 0.0))
        train = train.append_column("big_tipper", pa.array(score(train) > 0.5))
        sample, stats = compute_reference(train, CATEGORICAL, NUMERIC, score, rows=50_000, seed=20240101)
        write_reference(reference_dir, sample, stats)
    root_dir = base / f"data-{rows}"
    root = DataRoot(str(root_dir))
    columns = inputs(rows, 2, 0.4)
    current = pa.table(columns)
    p = score(current)
    ts = pa.array(
        (
            np.sort(np.random.default_rng(3).integers(0, 86_400, rows))
            + int(dt.datetime(2024, 6, 3, 5).timestamp())
        )
        * 1_000_000,
        pa.timestamp("us", tz="UTC"),
    )
    table = pa.table(
        {
            "trip_key": pa.array([f"k{i:09d}" for i in range(rows)]),
            "event_timestamp": ts,
            "trip_date": pa.array([DAY] * rows, pa.date32()),
            "score": pa.array(p),
            "decision": pa.array(p >= 0.5),
            "threshold": pa.array(np.full(rows, 0.5)),
            "model_name": pa.array([MODEL] * rows),
            "model_version": pa.array(["1"] * rows),
            "model_run_id": pa.array(["bench"] * rows),
            "feature_service": pa.array(["bench"] * rows),
            "interval_start": pa.array([DAY] * rows, pa.date32()),
            "interval_end": pa.array([DAY + dt.timedelta(days=1)] * rows, pa.date32()),
            "missing_feature_views": pa.array(np.zeros(rows, np.int8)),
            **columns,
        }
    )
    root.write_table(
        root.partition_path("predictions", MODEL, DAY),
        table,
        table.schema,
        Manifest(dataset=f"predictions/{MODEL}", partition=DAY.isoformat(), step="predict",
                 inputs=[{"model": {"name": MODEL, "version": "1"}}], row_counts={"rows": rows}),
    )  # fmt: skip
    return root_dir, reference_dir


MONITOR = """
import datetime as dt, json, sys
from ml_tasks.intervals import Interval
from ml_tasks.monitoring.monitor import run_monitoring
from ml_tasks.settings import Settings
root, ref, sample = sys.argv[1], sys.argv[2], int(sys.argv[3])
day = dt.date.fromisoformat(sys.argv[4])
settings = Settings(data_root=root, monitor_sample_rows=sample)
s = run_monitoring(settings, Interval(day, day + dt.timedelta(days=1)),
                   reference=ref)
keys = ("verdict", "drift_share", "drifted_columns", "rows", "sample_rows", "seconds")
print(json.dumps({k: s[k] for k in keys}))
from ml_tasks.cli import finish  # the process ends as `ml-tasks monitor` does
finish(0)
"""

IMPORTS = (
    """
import json
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import ValueDrift
from evidently.presets import DataSummaryPreset
print(json.dumps({"imported": "evidently"}))
"""
    + FAST_EXIT
)

FLOOR = """
import json, sys, pyarrow.compute as pc, pyarrow.parquet as pq, glob
cols = json.loads(sys.argv[2])
out = {}
for f in sorted(glob.glob(sys.argv[1] + "/*.parquet")):
    pf = pq.ParquetFile(f)
    for batch in pf.iter_batches(batch_size=65536, columns=cols):
        for name in cols:
            c = batch.column(name)
            if c.type == "string":
                pc.count_distinct(c)
            else:
                pc.min_max(c); pc.mean(c)
            out[name] = out.get(name, 0) + c.null_count
print(json.dumps({"columns": len(out)}))
"""


def measured(args: list[str]) -> dict[str, Any]:
    """Run ``python -c`` args in a fresh process: wall seconds, its own peak RSS (MB), output."""
    code, *rest = args
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", PEAK_AT_EXIT + code, *rest],
            stdout=out,
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        proc.wait()
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        errors = err.read()
        if proc.returncode != 0:
            raise SystemExit(f"benchmark child failed ({proc.returncode}):\n{errors[-3000:]}")
        lines = out.read().strip().splitlines()
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(child_peak_mib(errors) or 0.0, 1),
        "output": json.loads(lines[-1]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000")
    parser.add_argument("--sample-rows", type=int, default=100_000)
    parser.add_argument("--small-rows", type=int, default=48, help="rows of the fixed-cost day (0: skip)")
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--max-rss-gb", type=float, default=4.0)
    parser.add_argument("--max-ratio", type=float, default=45.0, help="fail above this monitor/floor ratio")
    parser.add_argument(
        "--max-fixed-ratio", type=float, default=3.0, help="fail above this small-day/Evidently-import ratio"
    )
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    sizes = sorted(int(r) for r in args.rows.split(","))
    base = Path(args.workdir or tempfile.mkdtemp(prefix="flywheel-monitor-bench-"))
    figures: list[Figure] = []
    failures: list[str] = []
    columns = len(CATEGORICAL) + len(NUMERIC) + 1
    for rows in sizes:
        t0 = time.perf_counter()
        root, reference = build(base, rows)
        setup = time.perf_counter() - t0
        partition = root / "predictions" / MODEL / f"dt={DAY}"
        floor = measured([FLOOR, str(partition), json.dumps([*CATEGORICAL, *NUMERIC, "score"])])
        run = measured([MONITOR, str(root), str(reference), str(args.sample_rows), DAY.isoformat()])
        out = run["output"]
        figures.append(
            Figure(
                name=f"monitoring at {rows} rows",
                value=run["seconds"],
                unit="s",
                floor=floor["seconds"],
                ratio=round(run["seconds"] / floor["seconds"], 2),
                bound=args.max_ratio,
                rows=rows,
                peak_rss_mib=run["peak_rss_mb"],
                note=(
                    f"fresh process, {columns} columns: pyarrow statistics over every row + Evidently on a"
                    f" seeded sample of {out['sample_rows']} rows vs a 50k reference sample; in-step s"
                    f" {json.dumps(out['seconds'])}; verdict {out['verdict']}, share {out['drift_share']};"
                    f" floor (read the columns, count/nulls/min/max/mean) peak {floor['peak_rss_mb']} MiB;"
                    f" setup {setup:.1f} s"
                ),
            )
        )
        if rows >= 1_000_000:
            if run["seconds"] > args.max_seconds:
                failures.append(f"{rows} rows took {run['seconds']} s > {args.max_seconds} s")
            if run["peak_rss_mb"] > args.max_rss_gb * 1024:
                failures.append(f"{rows} rows peaked at {run['peak_rss_mb']} MB > {args.max_rss_gb} GB")
    if args.small_rows > 0:
        root, reference = build(base, args.small_rows)
        imports = min((measured([IMPORTS]) for _ in range(2)), key=lambda r: r["seconds"])
        runs = sorted(
            (measured([MONITOR, str(root), str(reference), str(args.sample_rows), DAY.isoformat()])
             for _ in range(2)),
            key=lambda r: r["seconds"],
        )  # fmt: skip
        run = runs[0]
        figures.append(
            Figure(
                name="monitor step fixed cost on a small day",
                value=run["seconds"],
                unit="s",
                floor=imports["seconds"],
                ratio=round(run["seconds"] / imports["seconds"], 2),
                goal=1.0,
                bound=args.max_fixed_ratio,
                rows=args.small_rows,
                peak_rss_mib=run["peak_rss_mb"],
                note=(
                    f"fresh process monitoring {args.small_rows} rows (best of 2) vs a fresh process"
                    " importing Evidently's drift/summary API (best of 2);"
                    f" in-step s {json.dumps(run['output']['seconds'])}"
                ),
            )
        )
    code = emit("monitor", figures)
    for failure in failures:
        print(f"FAIL: monitor {failure}", file=sys.stderr)
    return 1 if failures else code


if __name__ == "__main__":
    raise SystemExit(main())
