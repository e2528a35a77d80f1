"""Finding 6: a file's rows land in the same partitions whatever intervals it is read in.

Rows whose start timestamp cannot be parsed belong to the day of the row before them in their file
(``docs/ingest.md``): quarantined once, by the run holding that day, not once per daily run.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli

HEADER = (
    "trip_id,trip_start_timestamp,trip_end_timestamp,trip_seconds,trip_miles,fare,tips,payment_type,"
    "pickup_community_area\n"
)
DAYS = ["2024-05-01", "2024-05-02", "2024-05-03"]
STEPS = ("raw", "staging", "quarantine", "curated")


def _file(path: Path) -> Path:
    # before any dated row (more than a batch of 3): the first dated row's day
    lines = [f"x0{c},not-a-time,,900,2.0,9.50,0,Cash,8" for c in "abcd"]
    for d, day in enumerate(DAYS):
        for i in range(6):
            start = dt.datetime.fromisoformat(day) + dt.timedelta(hours=2 * i + 1)
            end = start + dt.timedelta(minutes=15)
            lines.append(f"t{d}{i},{start:%Y-%m-%dT%H:%M:%S},{end:%Y-%m-%dT%H:%M:%S},900,2.0,9.50,1,Cash,8")
        lines.append(f"x{d + 1},2024-13-45T99:00:00,,900,2.0,9.50,0,Cash,8")  # after the day's rows
    path.write_text(HEADER + "\n".join(lines) + "\n")
    return path


def _run(root: Path, source: Path, start: str, end: str, *options: str) -> None:
    env = {"FLYWHEEL_DATA_ROOT": str(root)}
    window = ["--start", start, "--end", end]
    run_cli("extract", "--source", "file", "--uri", str(source), *window, *options, env=env)
    for step in ("transform", "validate", "publish"):
        run_cli(step, *window, *(["--max-reject-rate", "1"] if step == "validate" else []), env=env)


def _parquet_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for layer in STEPS
        for p in sorted(root.glob(f"{layer}/trips/dt=*/*.parquet"))
    }


@pytest.mark.parametrize("batch_rows", [3, 50_000])  # 3: rows without a day wait across batches
def test_daily_runs_and_one_backfill_give_the_same_partitions(tmp_path: Path, batch_rows: int) -> None:
    source = _file(tmp_path / "trips.csv")
    daily, backfill = tmp_path / "daily", tmp_path / "backfill"
    for day, after in zip(DAYS, [*DAYS[1:], "2024-05-04"], strict=True):
        _run(daily, source, day, after, "--option", f"batch_rows={batch_rows}")
    _run(backfill, source, DAYS[0], "2024-05-04")

    assert _parquet_bytes(daily) == _parquet_bytes(backfill)
    quarantined = {
        day: sorted(pq.read_table(daily / "quarantine" / "trips" / f"dt={day}")["trip_id"].to_pylist())
        for day in DAYS
    }
    # x0a-d (before every dated row) -> the first day; x1..x3 -> the day of the row before them; each once
    assert quarantined == {
        "2024-05-01": ["x0a", "x0b", "x0c", "x0d", "x1"],
        "2024-05-02": ["x2"],
        "2024-05-03": ["x3"],
    }
    curated = sum(pq.read_table(daily / "curated" / "trips" / f"dt={d}").num_rows for d in DAYS)
    assert curated == 18  # rows in (25) = curated (18) + quarantined (7)
