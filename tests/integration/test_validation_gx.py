"""Real GX on real trips: the TFX Chicago sample through transform -> validate -> publish.

The sample is typed by schema.to_canonical with the TFX mapping and written as raw partitions, as
extract would. Every row must be accounted for, and GX's own unexpected counts (gx_result.json) must
equal the per-reason counts of the quarantined rows.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pytest

from ml_tasks.intervals import Interval
from ml_tasks.publish import publish
from ml_tasks.schema import RAW_SCHEMA, TFX_MAPPING, to_canonical
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest
from ml_tasks.transform import transform
from ml_tasks.validation import validate
from ml_tasks.validation.rules import ROW_CODES
from tests.conftest import run_cli, run_cli_process

log = logging.getLogger(__name__)

AUGUST_2014 = Interval(dt.date(2014, 8, 1), dt.date(2014, 9, 1))  # the sample's busiest month: 478 trips


@pytest.fixture(scope="module")
def tfx_trips(chicago_samples: Path) -> pa.Table:
    """The 15,002 real trips of tfx_simple_data.csv in the canonical raw schema."""
    path = chicago_samples / "tfx_simple_data.csv"
    table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
    canonical = to_canonical(table, source=f"file://{path}", mapping=TFX_MAPPING).table
    assert canonical.num_rows == 15_002
    return canonical


def write_raw(root: DataRoot, table: pa.Table, day: dt.date) -> None:
    with root.write_partition(root.partition_path("raw", "trips", day)) as writer:
        writer.write(table, schema=RAW_SCHEMA)
        writer.write_empty(RAW_SCHEMA)
        writer.manifest = Manifest(dataset="raw/trips", partition=day.isoformat(), step="extract",
                                   outputs=writer.outputs(), row_counts={"rows": table.num_rows})  # fmt: skip


def write_days(root: DataRoot, trips: pa.Table, interval: Interval) -> dict[dt.date, int]:
    days = pc.cast(trips["trip_start_timestamp"], pa.date32())
    counts = {}
    for day in interval.days():
        part = trips.filter(pc.equal(days, pa.scalar(day, pa.date32())))
        write_raw(root, part, day)
        counts[day] = part.num_rows
    return counts


def gx_unexpected(report_dir: Path) -> dict[str, int]:
    result = json.loads((report_dir / "gx_result.json").read_text())
    counts = {}
    for res in result["results"]:
        code = res["expectation_config"]["meta"].get("reject_code")
        if code:
            counts[code] = res["result"]["unexpected_count"]
    return counts


def quarantine_counts(root: DataRoot, day: dt.date) -> Counter[str]:
    rows = root.read_partition(root.partition_path("quarantine", "trips", day))
    counts: Counter[str] = Counter()
    for reason in rows["reject_reason"].to_pylist():
        assert reason, "every quarantined row has a reason"
        for code in reason.split(";"):
            counts[code.split(":")[0]] += 1
    return counts


def check_day(root: DataRoot, base: Path, day: dt.date, raw_rows: int) -> dict[str, Any]:
    report = base / "reports" / "validation" / f"dt={day.isoformat()}"
    accounting = json.loads((report / "accounting.json").read_text())
    accepted = root.read_partition(root.partition_path("staging", "trips_accepted", day)).num_rows
    quarantined = root.read_partition(root.partition_path("quarantine", "trips", day)).num_rows
    curated = root.read_partition(root.partition_path("curated", "trips", day)).num_rows
    assert raw_rows == accepted + quarantined == accounting["rows_in"], day
    assert curated == accepted == accounting["accepted"], day
    gx_counts = gx_unexpected(report)
    assert set(gx_counts) == set(ROW_CODES)
    q_counts = quarantine_counts(root, day)
    assert {c: n for c, n in gx_counts.items() if n} == dict(q_counts), day
    return {"accepted": accepted, "quarantined": quarantined, "reasons": q_counts}


def test_a_month_of_real_trips_every_row_accounted_for(tmp_path: Path, tfx_trips: pa.Table) -> None:
    root = DataRoot(str(tmp_path))
    counts = write_days(root, tfx_trips, AUGUST_2014)
    assert sum(counts.values()) == 478
    cfg = Settings(data_root=str(tmp_path), allow_empty=True, max_reject_rate=0.25)
    transform(root, AUGUST_2014, cfg)
    summary = validate(root, AUGUST_2014, cfg)
    published = publish(root, AUGUST_2014, cfg)
    totals: Counter[str] = Counter()
    for day, raw_rows in counts.items():
        got = check_day(root, tmp_path, day, raw_rows)
        totals.update(got["reasons"])
    assert published["totals"]["raw"] == 478
    assert published["totals"]["curated"] + published["totals"]["quarantined"] == 478
    assert summary["rows_in"] == 478
    # the sample's known defects are caught: some fares <= 0, zero-second trips with miles, dropoffs outside
    assert published["totals"]["quarantined"] > 0
    log.info("August 2014: %s, quarantine reasons %s", published["totals"], dict(totals))


def test_whole_sample_in_one_partition_gx_counts_equal_quarantine_counts(
    tmp_path: Path, tfx_trips: pa.Table
) -> None:
    # all 15,002 trips moved onto one day (time of day kept): a realistic day-sized frame for GX
    day = dt.date(2016, 6, 1)
    start = pc.cast(tfx_trips["trip_start_timestamp"], pa.int64())  # floating wall clock, microseconds
    micros_into_day = pc.subtract(start, pc.multiply(pc.divide(start, 86_400_000_000), 86_400_000_000))
    midnight = (dt.datetime.combine(day, dt.time()) - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    moved = pc.cast(pc.add(micros_into_day, midnight), pa.timestamp("us"))
    column = tfx_trips.schema.get_field_index("trip_start_timestamp")
    table = tfx_trips.set_column(column, "trip_start_timestamp", moved)
    root = DataRoot(str(tmp_path))
    write_raw(root, table, day)
    interval = Interval(day, day + dt.timedelta(days=1))
    cfg = Settings(data_root=str(tmp_path), max_reject_rate=0.25)
    t0 = time.perf_counter()
    transform(root, interval, cfg)
    t_transform = time.perf_counter() - t0
    summary = validate(root, interval, cfg)
    publish(root, interval, cfg)
    got = check_day(root, tmp_path, day, 15_002)
    assert got["accepted"] + got["quarantined"] == 15_002
    # known facts of the sample (README): 27 fares <= 0; the hashed keys find the exact duplicates
    assert got["reasons"]["fare_out_of_range"] >= 27
    assert got["reasons"]["missing_trip_seconds"] == 6
    log.info(
        "15,002 real trips: transform %.2f s, GX %.2f s, accepted %d, quarantined %d %s",
        t_transform, summary["gx_seconds"], got["accepted"], got["quarantined"], dict(got["reasons"]),
    )  # fmt: skip


def test_cli_chain_and_a_failing_gate(tmp_path: Path, tfx_trips: pa.Table) -> None:
    root = DataRoot(str(tmp_path))
    interval = Interval(dt.date(2014, 8, 22), dt.date(2014, 8, 25))  # 2014-08-23 holds one bad trip
    counts = write_days(root, tfx_trips, interval)
    args = ["--start", "2014-08-22", "--end", "2014-08-25", "--data-root", str(tmp_path)]
    staged = run_cli("transform", *args)
    assert [p["rows"] for p in staged["partitions"]] == list(counts.values())
    validated = run_cli("validate", *args, "--max-reject-rate", "0.5")
    assert validated["verdict"] == "passed"
    published = run_cli("publish", *args)
    assert published["totals"]["raw"] == sum(counts.values())
    assert [p["uri"] for p in published["partitions"]] == [
        str(tmp_path / "curated" / "trips" / f"dt={d.isoformat()}") for d in interval.days()
    ]
    # the failures as processes: exit status 1, the one-line error, nothing on stdout (the DAG reads these)
    failed = run_cli_process("validate", *args, "--max-reject-rate", "0", check=False)
    assert failed["returncode"] == 1
    assert "ml-tasks: error: validation failed for" in failed["stderr"]
    assert (
        "dt=2014-08-23: reject_rate_exceeded: 1 of 20 rows rejected (5.00%) > max_reject_rate 0.00%"
        in (failed["stderr"])
    )
    assert failed["stdout"] == ""
    refused = run_cli_process("publish", *args, check=False)
    assert refused["returncode"] == 1
    assert "refusing to publish [2014-08-22, 2014-08-25)" in refused["stderr"]
    assert "dt=2014-08-23: validation verdict is 'failed'" in refused["stderr"]
