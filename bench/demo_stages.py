"""The demo's stages: ``python -m scripts.demo`` on a fresh platform (temporary home, data root, ports),
seconds per stage against the issue's goal of 5 minutes for the whole demo after the install.

No floor: the goal is on the total itself. The platform is stopped and its folders removed at the end.
Prints one JSON line (bench/_results.py).

Usage: python bench/demo_stages.py [--days 7] [--trips-per-day 20000] [--max-seconds 600]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py`: import bench._results

from bench._results import Figure, children_peak_rss_mib, emit
from scripts.airflow_local.config import free_port
from scripts.demo.cli import TIMINGS_FILE

REPO = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 300.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, help="demo window days (default: the demo's)")
    parser.add_argument("--trips-per-day", type=int, help="synthetic trips per day (default: the demo's)")
    parser.add_argument("--max-seconds", type=float, default=600, help="fail above this total")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-demo-") as tmp:
        home, data = Path(tmp) / "home", Path(tmp) / "data"
        env = {**os.environ, "FLYWHEEL_AIRFLOW_HOME": str(home), "FLYWHEEL_DATA_ROOT": str(data)}
        argv = [sys.executable, "-m", "scripts.demo", "--port", str(free_port())]
        argv += ["--days", str(args.days)] if args.days else []
        argv += ["--trips-per-day", str(args.trips_per_day)] if args.trips_per_day else []
        started = time.monotonic()
        try:
            demo = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)
        finally:
            subprocess.run(
                [sys.executable, "-m", "scripts.airflow_local", "stop"], env=env, cwd=REPO, check=False
            )
        wall = time.monotonic() - started
        if demo.returncode != 0:
            print(demo.stdout[-3000:], demo.stderr[-3000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"the demo failed (exit status {demo.returncode})")
        record = json.loads((home / TIMINGS_FILE).read_text())
    stages: dict[str, float] = record["stages"]
    rows = int(record["days"]) * int(record["trips_per_day"])
    figures = [
        Figure(
            "demo.total",
            round(record["total"], 1),
            "s",
            goal=GOAL_SECONDS,
            bound=args.max_seconds,
            rows=rows,
            peak_rss_mib=round(children_peak_rss_mib()),
            note=f"{record['days']} days x {record['trips_per_day']} trips/day, after the install;"
            f" {wall:.0f} s with the platform's stop",
        ),
        *(Figure(f"demo.{name}", sec, "s", rows=rows) for name, sec in stages.items()),
    ]
    return emit("demo", figures)


if __name__ == "__main__":
    sys.exit(main())
