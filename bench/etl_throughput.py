"""ETL throughput benchmark: 1M synthetic trips through extract -> transform -> validate -> publish.

Each step runs as the real CLI subprocess (as a DAG task runs it); wall time and peak RSS come from
``os.wait4`` of that child. The floor, measured in the same run on the same machine, is the least work any
ETL over this data must do: read the raw partitions and write them back as Parquet (pyarrow, same codec).
The benchmark reports rows/s per step and the ratio ETL time / floor time, and fails when the ratio
exceeds ``--max-ratio`` (a regression guard that holds on any machine, unlike a time budget).

Usage: python bench/etl_throughput.py [--rows 1000000] [--days 10] [--max-ratio 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ml_tasks.jsonout import read_summary

FLOOR_CODE = r"""
import sys, glob, os
import pyarrow.parquet as pq
src, dst = sys.argv[1], sys.argv[2]
for i, path in enumerate(sorted(glob.glob(os.path.join(src, "raw/trips/dt=*/part-*.parquet")))):
    table = pq.read_table(path)
    pq.write_table(table, os.path.join(dst, f"{i}.parquet"), compression="zstd")
"""


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a child to completion; return (wall seconds, peak RSS MiB, stdout)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, stdout


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="approximate total synthetic rows")
    parser.add_argument("--days", type=int, default=10, help="days the rows are spread over")
    parser.add_argument("--start", default="2024-05-01", help="first day")
    parser.add_argument("--max-ratio", type=float, default=20.0, help="fail above this ETL/floor time ratio")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import datetime as dt

    start = dt.date.fromisoformat(args.start)
    end = start + dt.timedelta(days=args.days)
    per_day = args.rows // args.days
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp:
        env = {**os.environ, "FLYWHEEL_DATA_ROOT": str(Path(tmp) / "data"), "FLYWHEEL_MAX_REJECT_RATE": "0.2"}
        cli = [sys.executable, "-m", "ml_tasks.cli"]
        window = ["--start", start.isoformat(), "--end", end.isoformat()]
        steps: dict[str, dict[str, Any]] = {}
        rows = 0
        for step, extra in [
            ("extract", ["--source", "synthetic", "--trips-per-day", str(per_day)]),
            ("transform", []),
            ("validate", []),
            ("publish", []),
        ]:
            seconds, rss, stdout = run_child([*cli, step, *window, *extra], env)
            summary = read_summary(stdout)
            if step == "extract":
                rows = int(summary["rows_written"])
            steps[step] = {
                "seconds": round(seconds, 2),
                "peak_rss_mib": round(rss),
                "rows_per_s": round(rows / seconds),
            }
            print(
                f"{step:10s} {seconds:7.2f} s  {rows / seconds:>10,.0f} rows/s  peak RSS {rss:7.0f} MiB",
                flush=True,
            )
        floor_dir = Path(tmp) / "floor"
        floor_dir.mkdir()
        floor_s, _, _ = run_child(
            [sys.executable, "-c", FLOOR_CODE, env["FLYWHEEL_DATA_ROOT"], str(floor_dir)], env
        )
    etl_s = sum(s["seconds"] for s in steps.values())
    after_extract = etl_s - steps["extract"]["seconds"]
    ratio = etl_s / floor_s
    result = {
        "rows": rows,
        "days": args.days,
        "steps": steps,
        "etl_seconds": round(etl_s, 2),
        "etl_rows_per_s": round(rows / etl_s),
        "etl_peak_rss_mib": max(s["peak_rss_mib"] for s in steps.values()),
        "transform_validate_publish_rows_per_s": round(rows / after_extract),
        "floor_seconds": round(floor_s, 2),
        "floor_rows_per_s": round(rows / floor_s),
        "ratio_etl_to_floor": round(ratio, 1),
        "max_ratio": args.max_ratio,
        "cpu_count": os.cpu_count(),
    }
    print(
        f"\nETL {rows:,} rows in {etl_s:.1f} s = {rows / etl_s:,.0f} rows/s"
        f" (peak RSS {result['etl_peak_rss_mib']} MiB);"
        f" floor (parquet read+write) {floor_s:.2f} s = {rows / floor_s:,.0f} rows/s; ratio {ratio:.1f}"
        f" (max {args.max_ratio})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if ratio > args.max_ratio:
        print(f"FAIL: ETL/floor ratio {ratio:.1f} > {args.max_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
