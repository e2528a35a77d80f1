"""Batch prediction throughput: end-to-end rows/s of ``predict`` against onnxruntime alone on the same rows.

Data: a data root built through the real CLI in a temporary folder (synthetic trips for ``--days`` + 2 days
at ``--trips-per-day``, features, a 1-epoch model trained on day 1 and promoted to ``taxi_tips@champion``),
or an existing root (``--data-root`` with ``--start/--end``) that already has a champion.

Measured in the same run, on the same rows and threads:

* end to end: :func:`ml_tasks.prediction.commit.predict_interval` over the ``--days`` days (resolve the
  alias, open and check the Feast registry, entity frame + request-time features, Feast point-in-time join,
  encode, ONNX, write the partitions + manifests, commit). Run twice: ``cold`` (first call in the process:
  imports of Feast / MLflow / onnxruntime included, as in a fresh Airflow task) and ``warm``;
* the floor: ``OnnxScorer.predict_encoded`` alone on the same rows, already encoded, in the same batch size
  (``predict_batch_rows``) and threads.

The ratio warm end-to-end time / floor time is the overhead of everything around the model; the run fails
above ``--max-ratio`` (a regression guard). A breakdown of the warm run (entity frame, Feast join, encode,
ONNX, the rest) says where the time goes.

Prints one JSON line. Usage: python bench/predict_throughput.py [--days 3] [--trips-per-day 40000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml_tasks.contract import CHAMPION_SPEC
from ml_tasks.jsonout import read_summary

REPO = Path(__file__).resolve().parents[1]
FIRST = dt.date(2024, 5, 6)


def cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "ml_tasks.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"ml-tasks {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return read_summary(proc.stdout)


def build_root(base: Path, days: int, trips: int) -> tuple[dict[str, str], float]:
    """Curated trips + features for days+2 days, a champion trained on day 1 (day 0 has no features)."""
    started = time.perf_counter()
    env = {
        "FLYWHEEL_DATA_ROOT": str(base / "data"),
        "FLYWHEEL_CODE_VERSION": "bench",
        "FLYWHEEL_TRAIN_THREADS": "1",
        "MLFLOW_TRACKING_URI": "",
    }
    day = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(days + 3)]
    cli(env, "extract", "--source", "synthetic", "--start", day[0], "--end", day[days + 2],
        "--trips-per-day", str(trips))  # fmt: skip
    for step in ("transform", "validate", "publish", "build-features"):
        cli(env, step, "--start", day[0], "--end", day[days + 2])
    cli(env, "feature-apply")
    train = cli(env, "training-set", "--start", day[1], "--end", day[2])["uri"]
    evaluation = cli(env, "training-set", "--start", day[2], "--end", day[3])["uri"]
    key = ["--dag-id", "bench", "--dag-run-id", "bench"]
    bundle = cli(env, "train", "--training-set", train, "--trials", "1", "--max-epochs", "1", *key,
                 "--task-id", "train")["bundle"]  # fmt: skip
    for step, extra in (
        ("evaluate", ["--training-set", train, "--eval-set", evaluation]),
        ("export-onnx", ["--eval-set", evaluation]),
        ("check-onnx", ["--eval-set", evaluation]),
        ("register", []),
    ):
        cli(env, step, "--bundle", bundle, *extra, *key, "--task-id", step)
    cli(
        env, "promote", "--bundle", bundle, "--force", "--force-reason", "bench", *key, "--task-id", "promote"
    )
    return env, time.perf_counter() - started


class Timers:
    """Wall seconds spent inside wrapped functions (outermost call only)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original: Callable[..., Any] = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self.calls[label] += 1

        setattr(owner, attr, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=3, help="days scored")
    parser.add_argument("--trips-per-day", type=int, default=40_000, help="synthetic trips per day")
    parser.add_argument("--data-root", help="an existing data root with a champion (skips the build)")
    parser.add_argument("--start", help="with --data-root: first day scored")
    parser.add_argument("--end", help="with --data-root: end (exclusive)")
    parser.add_argument("--batch-rows", type=int, default=65_536, help="predict_batch_rows")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--max-ratio", type=float, default=4.0, help="fail above this e2e/floor time ratio")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data root")
    args = parser.parse_args()

    temp = None
    build_seconds = 0.0
    if args.data_root:
        if not (args.start and args.end):
            parser.error("--data-root needs --start and --end")
        root = str(Path(args.data_root).resolve())
        start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    else:
        temp = Path(tempfile.mkdtemp(prefix="flywheel-predict-bench-"))
        env, build_seconds = build_root(temp, args.days, args.trips_per_day)
        root = env["FLYWHEEL_DATA_ROOT"]
        start = FIRST + dt.timedelta(days=2)
        end = start + dt.timedelta(days=args.days)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("FLYWHEEL_CODE_VERSION", "bench")
    try:
        return run(args, root, start, end, build_seconds)
    finally:
        if temp is not None and not args.keep:
            shutil.rmtree(temp, ignore_errors=True)


def run(args: argparse.Namespace, root: str, start: dt.date, end: dt.date, build_seconds: float) -> int:
    import numpy as np
    import pyarrow as pa

    from ml_tasks.features import retrieval
    from ml_tasks.intervals import Interval
    from ml_tasks.models.preprocess import Preprocessor
    from ml_tasks.models.scorer import OnnxScorer
    from ml_tasks.prediction import commit, resolve, score
    from ml_tasks.settings import Settings
    from ml_tasks.storage import DataRoot

    settings = Settings(data_root=root, predict_batch_rows=args.batch_rows, predict_threads=args.threads)
    interval = Interval(start, end)
    timers = Timers()
    for owner, attr, label in (
        (commit, "resolve_model", "resolve_model"),
        (score, "open_checked_store", "open_and_check_feast"),
        (score, "load_scorer", "load_scorer"),
        (score, "entity_frame", "entity_frame"),
        (retrieval, "historical_join", "feast_pit_join"),
        (Preprocessor, "encode", "encode"),
        (OnnxScorer, "predict_encoded", "onnx"),
        (commit, "commit_predictions", "commit"),
    ):
        timers.wrap(owner, attr, label)

    started = time.perf_counter()
    cold = commit.predict_interval(settings, interval, CHAMPION_SPEC, run_key="bench-cold")
    cold_seconds = time.perf_counter() - started
    timers.reset()
    started = time.perf_counter()
    warm = commit.predict_interval(settings, interval, CHAMPION_SPEC, run_key="bench-warm")
    warm_seconds = time.perf_counter() - started
    breakdown = {k: round(v, 3) for k, v in timers.seconds.items()}
    breakdown["other"] = round(warm_seconds - sum(timers.seconds.values()), 3)
    rows = int(warm["rows"])
    if rows == 0 or cold["rows"] != rows:
        raise SystemExit(f"no trips in {interval}: nothing to measure")

    # the floor: the same rows, encoded beforehand, through the same scorer settings
    model = resolve.resolve_model(settings, CHAMPION_SPEC)
    scorer = resolve.load_scorer(settings, model)
    data = DataRoot(root)
    table = pa.concat_tables([commit.read_predictions(data, model.name, d) for d in interval.days()])
    encoded = scorer.preprocessor.encode(table)
    scorer.predict_encoded(encoded.numeric[:1000], encoded.categorical[:1000])  # warm-up
    timers.reset()
    floor_runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        scores = scorer.predict_encoded(encoded.numeric, encoded.categorical)
        floor_runs.append(time.perf_counter() - t0)
    floor = float(np.median(floor_runs))
    same = bool(np.array_equal(scores, table["score"].to_numpy()))
    ratio = warm_seconds / floor
    summary = {
        "bench": "predict_throughput",
        "interval": {"start": start.isoformat(), "end": end.isoformat()},
        "rows": rows,
        "days": interval.n_days,
        "batch_rows": args.batch_rows,
        "threads": args.threads,
        "cold_seconds": round(cold_seconds, 3),
        "cold_rows_per_second": round(rows / cold_seconds),
        "warm_seconds": round(warm_seconds, 3),
        "warm_rows_per_second": round(rows / warm_seconds),
        "warm_breakdown_seconds": breakdown,
        "floor_onnx_seconds": round(floor, 4),
        "floor_onnx_rows_per_second": round(rows / floor),
        "ratio_warm_to_floor": round(ratio, 1),
        "max_ratio": args.max_ratio,
        "floor_scores_equal_partition": same,
        "missing_features": warm["missing_features"],
        "build_seconds": round(build_seconds, 1),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(summary), flush=True)
    if not same:
        print("FAIL: the floor's scores differ from the written partition's", file=sys.stderr)
        return 1
    if ratio > args.max_ratio:
        print(f"FAIL: end-to-end/floor time ratio {ratio:.1f} > {args.max_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
