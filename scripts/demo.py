"""``make demo``: start local Airflow, run the pipeline stages over a demo window, print what happened.

Stages run in order; each is a DAG run through Airflow (never around it) and a summary read back from
the data root. Today there is one stage, ingest (taxi_ingest backfilled over the window); later issues
append features, training and prediction stages to :data:`STAGES`.

Airflow is left running so the runs, logs, rendered commands and reports can be browsed in the UI;
``make stop`` stops it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.airflow_local import AirflowApi, Platform, PlatformError

DEFAULT_FIRST_DAY = dt.date(2024, 1, 1)


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs: the window of local days and the synthetic volume."""

    first_day: dt.date
    days: int
    trips_per_day: int
    timeout: float

    @property
    def last_day(self) -> dt.date:
        return self.first_day + dt.timedelta(days=self.days - 1)


@dataclass(frozen=True)
class Stage:
    """One demo stage: run DAG(s) through the API, then summarise the outputs for the terminal."""

    name: str
    dag_id: str
    run: Callable[[AirflowApi, DemoConfig], list[dict[str, Any]]]
    summarize: Callable[[Path, DemoConfig, list[dict[str, Any]]], str]


# -- stage: ingest ---------------------------------------------------------------------------------------
def run_ingest(api: AirflowApi, config: DemoConfig) -> list[dict[str, Any]]:
    """Backfill taxi_ingest over the window (one run per day) and leave the DAG unpaused."""
    return api.backfill(
        "taxi_ingest",
        config.first_day,
        config.last_day,
        conf={"source": "synthetic", "trips_per_day": config.trips_per_day},
        max_active_runs=2,
        timeout=config.timeout,
        leave_unpaused=True,
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    return dict(json.loads(path.read_text())) if path.is_file() else None


def summarize_ingest(data_root: Path, config: DemoConfig, runs: list[dict[str, Any]]) -> str:
    """One line per day: run state, rows in / curated / quarantined, top reject reasons, report."""
    # a run's data interval starts at Chicago midnight = 05:00 or 06:00 UTC: the same calendar date
    states = {r["data_interval_start"][:10]: r["state"] for r in runs}
    columns = f"{'day':<10}  {'run':<7}  {'rows in':>8}  {'curated':>8}  {'quarant.':>8}  {'rate':>6}"
    header = f"{columns}  top reject reasons"
    lines = [header, "-" * len(header)]
    reports = []
    day = config.first_day
    while day <= config.last_day:
        key = day.isoformat()
        accounting = _read_json(data_root / "reports" / "validation" / f"dt={key}" / "accounting.json") or {}
        curated = _read_json(data_root / "curated" / "trips" / f"dt={key}" / "_manifest.json")
        curated_rows = curated["row_counts"].get("curated") if curated else None
        reasons = sorted(
            ((k, v) for k, v in (accounting.get("by_reason") or {}).items() if v), key=lambda x: -x[1]
        )
        top = ", ".join(f"{k} {v}" for k, v in reasons[:3]) or "-"
        rate = accounting.get("reject_rate")
        lines.append(
            f"{key:<10}  {states.get(key, '?'):<7}  {_n(accounting.get('rows_in')):>8}  {_n(curated_rows):>8}"
            f"  {_n(accounting.get('quarantined')):>8}  {'' if rate is None else f'{rate:.2%}':>6}  {top}"
        )
        index = data_root / "reports" / "validation" / f"dt={key}" / "index.html"
        if index.is_file():
            reports.append(str(index))
        day += dt.timedelta(days=1)
    lines.append("")
    lines.append(f"curated partitions:    {data_root / 'curated' / 'trips'}/dt=YYYY-MM-DD")
    lines.append(
        f"quarantine partitions: {data_root / 'quarantine' / 'trips'}/dt=YYYY-MM-DD (reject_reason column)"
    )
    lines.append("validation reports (open in a browser):")
    lines.extend(f"  {path}" for path in reports)
    return "\n".join(lines)


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


STAGES: list[Stage] = [
    Stage("ingest", "taxi_ingest", run_ingest, summarize_ingest),
    # later issues: Stage("features", "taxi_features", ...), Stage("training", ...), Stage("predict", ...)
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--first-day", type=dt.date.fromisoformat, default=DEFAULT_FIRST_DAY, help="YYYY-MM-DD"
    )
    parser.add_argument("--days", type=int, default=7, help="days in the demo window (default 7)")
    parser.add_argument("--trips-per-day", type=int, default=20_000, help="synthetic trips per day")
    parser.add_argument("--port", type=int, help="API port of a new platform (default 8080)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for each stage")
    ns = parser.parse_args(argv)
    if ns.days < 1:
        parser.error("--days must be at least 1")
    config = DemoConfig(ns.first_day, ns.days, ns.trips_per_day, ns.timeout)

    platform = Platform.from_env(port=ns.port)
    try:
        seconds = platform.start()
        print(f"\nAirflow UI: {platform.url}   login: {platform.username} / {platform.password}")
        print(f"data root:  {platform.data_root}")
        print(f"(platform ready in {seconds:.1f} s)\n")
        api = platform.api()
        for stage in STAGES:
            print(
                f"== {stage.name}: {stage.dag_id} over {config.first_day} .. {config.last_day}"
                f" ({config.days} days, {config.trips_per_day:,} trips/day)",
                flush=True,
            )
            started = time.monotonic()
            runs = stage.run(api, config)
            elapsed = time.monotonic() - started
            failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
            per_run = elapsed / max(len(runs), 1)
            print(f"   {len(runs)} runs finished in {elapsed:.1f} s ({per_run:.1f} s per run)\n")
            print(stage.summarize(platform.data_root, config, runs))
            print()
            if failed:
                print(f"{stage.name}: {len(failed)} run(s) failed: {failed}; see the UI for the task logs")
                return 1
    except PlatformError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    print(f"Airflow keeps running at {platform.url} (login {platform.username} / {platform.password}).")
    print("Stop it with: make stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
