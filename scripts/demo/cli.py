"""``make demo``: start the local platform, run the pipeline stages over a demo window, print what happened.

Stages: ingest (backfill), features (from the curated-trips Asset), training (one manual run) and the loop
(features -> prediction -> monitoring -> drift -> retraining through the Assets). Airflow is left running;
``make stop`` stops it. What each stage proves: docs/local-platform.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time

from scripts.airflow_local import Platform, PlatformError
from scripts.airflow_local.servers import mlflow_ready
from scripts.demo.stages import (
    LOOP_DAYS,
    Demo,
    DemoConfig,
    Stage,
    loop_env,
    run_features,
    run_ingest,
    run_loop,
    run_training,
)
from scripts.demo.summaries import summarize_features, summarize_ingest, summarize_loop, summarize_training

DEFAULT_FIRST_DAY = dt.date(2024, 1, 1)
#: the last demo's seconds per stage, in the platform's home
TIMINGS_FILE = "demo-timings.json"

STAGES: list[Stage] = [
    Stage("ingest", "taxi_ingest", run_ingest, summarize_ingest, how="backfill, one run per day"),
    Stage(
        "features",
        "taxi_features",
        run_features,
        summarize_features,
        how="runs created by Airflow from the curated-trips Asset events of the ingest runs",
        asset_triggered=True,
    ),
    Stage(
        "training",
        "taxi_training",
        run_training,
        summarize_training,
        how="one manual run: train on the first days, evaluate on the later ones, gate, register",
    ),
    Stage(
        "loop",
        "taxi_batch_predict",
        run_loop,
        summarize_loop,
        how=f"{LOOP_DAYS} more days (drift from the 2nd) by one manual ingest run; features, predictions,"
        " monitoring and the retraining follow through Assets",
        asset_triggered=True,
    ),
]


def write_timings(platform: Platform, config: DemoConfig, timings: dict[str, float]) -> None:
    """Print the stages' seconds; keep them in ``<home>/demo-timings.json`` (bench/demo_stages.py)."""
    total = round(sum(timings.values()), 1)
    print(
        "stages: "
        + ", ".join(f"{name} {sec:.0f} s" for name, sec in timings.items())
        + f"; total {total:.0f} s"
    )
    record = {"days": config.days, "trips_per_day": config.trips_per_day, "stages": timings, "total": total}
    (platform.home / TIMINGS_FILE).write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.demo",
        description=__doc__.split("\n")[0],
        epilog="stages: " + "; ".join(f"{s.name} ({s.dag_id}: {s.how})" for s in STAGES),
    )
    parser.add_argument(
        "--first-day", type=dt.date.fromisoformat, default=DEFAULT_FIRST_DAY, help="YYYY-MM-DD"
    )
    parser.add_argument("--days", type=int, default=5, help="days in the demo window (default 5)")
    parser.add_argument(
        "--trips-per-day", type=int, default=20_000, help="synthetic trips per day (default 20,000)"
    )
    parser.add_argument("--port", type=int, help="API port of a new platform (default 8080)")
    parser.add_argument(
        "--db",
        choices=["postgres", "sqlite"],
        help="metadata DB of a new platform (default postgres, or FLYWHEEL_AIRFLOW_DB): postgres also runs"
        " the MLflow server and Redis; sqlite is the lightest (SQLite files only)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for each stage")
    ns = parser.parse_args(argv)
    if ns.days < 1:
        parser.error("--days must be at least 1")
    config = DemoConfig(ns.first_day, ns.days, ns.trips_per_day, ns.timeout)

    # no weekly taxi_training run for the current week (the demo's data lies in the past)
    try:
        platform = Platform.from_env(
            port=ns.port,
            db=ns.db,
            extra_env={"FLYWHEEL_TRAINING_END_DATE": ns.first_day.isoformat(), **loop_env(config)},
        )
        seconds = platform.start()
        print(f"\nAirflow UI: {platform.url}   login: {platform.username} / {platform.password}")
        if platform.mlflow_url:
            answers = "answers" if mlflow_ready(platform.mlflow_url) else "NOT answering"
            print(f"MLflow UI:  {platform.mlflow_url}   ({answers}; tracking server of the tasks)")
            print(f"metadata:   PostgreSQL (databases airflow, mlflow) in {platform.pgdata}")
            print(f"online:     Redis 127.0.0.1:{platform.redis_port} (saved in {platform.redis_dir})")
        else:
            print(f"metadata:   SQLite {platform.home / 'airflow.db'} (FLYWHEEL_AIRFLOW_DB=sqlite)")
        print(f"data root:  {platform.data_root}")
        print(f"(platform ready in {seconds:.1f} s)\n")
        demo = Demo(platform, platform.api(), config, began=dt.datetime.now(dt.UTC))
        timings: dict[str, float] = {"platform": round(seconds, 1)}
        for stage in STAGES:
            if stage.asset_triggered:  # before any producer runs: a paused consumer gets no runs
                demo.api.set_paused(stage.dag_id, False)
        for stage in STAGES:
            print(
                f"== {stage.name}: {stage.dag_id} over {config.first_day} .. {config.last_day}"
                f" ({config.days} days, {config.trips_per_day:,} trips/day; {stage.how})",
                flush=True,
            )
            started = time.monotonic()
            runs = stage.run(demo)
            demo.runs[stage.name] = runs
            elapsed = time.monotonic() - started
            timings[stage.name] = round(elapsed, 1)
            failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
            per_run = elapsed / max(len(runs), 1)
            print(f"   {len(runs)} runs finished in {elapsed:.1f} s ({per_run:.1f} s per run)\n")
            try:
                print(stage.summarize(demo, runs))
            except PlatformError as exc:
                if not failed:
                    raise
                print(f"(no summary: {exc})")
            print()
            if failed:
                print(f"{stage.name}: {len(failed)} run(s) failed: {failed}; see the UI for the task logs")
                return 1
    except PlatformError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    write_timings(platform, config, timings)
    print(f"Airflow keeps running at {platform.url} (login {platform.username} / {platform.password}).")
    if platform.mlflow_url:
        print(f"MLflow keeps running at {platform.mlflow_url}.")
    print("Stop it with: make stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
