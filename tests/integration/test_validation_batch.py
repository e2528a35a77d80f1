"""Batch-level rules (reject share, empty partition, schema), accounting invariants, reports, idempotency."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ml_tasks.intervals import Interval
from ml_tasks.publish import publish
from ml_tasks.schema import CURATED_SCHEMA
from ml_tasks.storage import DataRoot, Manifest, PartitionError
from ml_tasks.transform import transform
from ml_tasks.validation import ValidationFailed, validate
from ml_tasks.validation.reports import trim_result
from ml_tasks.validation.rules import ROW_CODES, RuleConfig
from ml_tasks.validation.step import schema_problems
from ml_tasks.validation.suite import TripSuite
from tests.unit.validation.trip_rows import (
    DAY,
    ONE_DAY,
    partition_bytes,
    read,
    settings,
    trip,
    trips,
    write_raw,
)

REPORT = "reports/validation/dt=2024-05-01"


def prepare(tmp_path: Path, rows: list[dict[str, Any]], day: dt.date = DAY) -> DataRoot:
    root = DataRoot(str(tmp_path))
    write_raw(root, rows, day)
    transform(root, Interval(day, day + dt.timedelta(days=1)), settings(tmp_path))
    return root


def accounting(root: DataRoot, day: dt.date = DAY) -> dict[str, Any]:
    return dict(root.read_json(f"{root.partition_path('reports', 'validation', day)}/accounting.json"))


def two_bad_of_ten() -> list[dict[str, Any]]:
    return [*trips(8), trip(8, fare=-1.0), trip(9, payment_type="Bitcoin", fare=5000.0)]


def test_reject_share_above_threshold_fails_after_writing_reports_and_quarantine(tmp_path: Path) -> None:
    root = prepare(tmp_path, two_bad_of_ten())
    with pytest.raises(ValidationFailed) as err:
        validate(root, ONE_DAY, settings(tmp_path, max_reject_rate=0.1))
    message = str(err.value)
    assert "staging/trips/dt=2024-05-01" in message
    assert "reject_rate_exceeded" in message
    assert "2 of 10 rows rejected (20.00%) > max_reject_rate 10.00%" in message
    assert "fare_out_of_range=2, payment_type_unknown=1" in message  # top reasons, most frequent first
    assert f"{REPORT}/index.html" in message
    (failure,) = err.value.failures
    assert failure["rule"] == "reject_rate_exceeded"
    assert (failure["rows"], failure["quarantined"], failure["reject_rate"]) == (10, 2, 0.2)
    assert err.value.summary["partitions"][0]["verdict"] == "failed"
    # the user can see why: reports and quarantine are there, accepted rows are not
    acc = accounting(root)
    assert acc["verdict"] == "failed"
    assert (acc["rows_in"], acc["accepted"], acc["quarantined"]) == (10, 8, 2)
    assert [r["code"] for r in acc["batch_rules"] if r["status"] == "failed"] == ["reject_rate_exceeded"]
    assert read(root, "quarantine", "trips").num_rows == 2
    assert not root.exists(root.partition_path("staging", "trips_accepted", DAY))
    index = (tmp_path / REPORT / "index.html").read_text()
    assert "failed" in index and "reject_rate_exceeded" in index and "2 of 10 rows rejected" in index


def test_reject_share_at_the_threshold_passes(tmp_path: Path) -> None:
    root = prepare(tmp_path, two_bad_of_ten())
    summary = validate(root, ONE_DAY, settings(tmp_path, max_reject_rate=0.2))
    assert summary["verdict"] == "passed"
    assert (summary["rows_in"], summary["accepted"], summary["quarantined"]) == (10, 8, 2)
    assert read(root, "staging", "trips_accepted").num_rows == 8


def test_a_failing_rerun_removes_the_stale_accepted_partition(tmp_path: Path) -> None:
    root = prepare(tmp_path, two_bad_of_ten())
    validate(root, ONE_DAY, settings(tmp_path, max_reject_rate=0.5))
    assert read(root, "staging", "trips_accepted").num_rows == 8
    with pytest.raises(ValidationFailed):
        validate(root, ONE_DAY, settings(tmp_path, max_reject_rate=0.0))
    assert not root.exists(root.partition_path("staging", "trips_accepted", DAY))
    assert accounting(root)["verdict"] == "failed"


def test_empty_partition_fails_unless_allowed(tmp_path: Path) -> None:
    root = prepare(tmp_path, [])
    with pytest.raises(ValidationFailed) as err:
        validate(root, ONE_DAY, settings(tmp_path))
    assert (
        "staging/trips/dt=2024-05-01: empty_partition: the partition has 0 rows and allow_empty is off"
        in str(err.value)
    )
    assert accounting(root)["verdict"] == "failed"
    summary = validate(root, ONE_DAY, settings(tmp_path, allow_empty=True))
    assert summary["partitions"][0]["verdict"] == "passed"
    accepted = read(root, "staging", "trips_accepted")
    assert accepted.num_rows == 0 and accepted.schema == CURATED_SCHEMA
    published = publish(root, ONE_DAY, settings(tmp_path, allow_empty=True))
    assert published["totals"] == {"raw": 0, "curated": 0, "quarantined": 0}


def test_schema_mismatch_fails_the_batch_with_the_columns_named(tmp_path: Path) -> None:
    root = prepare(tmp_path, trips(4))
    staged = read(root, "staging", "trips")
    # a staging partition left by older code: one derived column typed differently, one missing
    broken = staged.set_column(
        staged.schema.get_field_index("trip_start_hour"),
        "trip_start_hour",
        staged["trip_start_hour"].cast(pa.int64()),
    ).drop_columns(["speed_mph"])
    path = root.partition_path("staging", "trips", DAY)
    with root.write_partition(path) as writer:
        writer.write(broken)
        writer.manifest = Manifest(dataset="staging/trips", partition="2024-05-01", step="transform",
                                   outputs=writer.outputs(), row_counts={"rows": 4})  # fmt: skip
    with pytest.raises(ValidationFailed) as err:
        validate(root, ONE_DAY, settings(tmp_path))
    message = str(err.value)
    assert "staging/trips/dt=2024-05-01: schema_mismatch" in message
    assert "missing columns ['speed_mph']" in message
    assert "trip_start_hour: int64 (expected int8)" in message
    acc = accounting(root)
    assert acc["verdict"] == "failed" and acc["rows_in"] == 4 and acc["accepted"] is None
    assert not root.exists(root.partition_path("quarantine", "trips", DAY))
    assert not root.exists(root.partition_path("staging", "trips_accepted", DAY))
    assert sorted(p.name for p in (tmp_path / REPORT).iterdir()) == [
        "_manifest.json",
        "accounting.json",
        "index.html",
    ]


def test_schema_problems_lists_every_difference() -> None:
    assert schema_problems(CURATED_SCHEMA) == []
    reordered = pa.schema(list(reversed(list(CURATED_SCHEMA))))
    assert schema_problems(reordered) == ["column order differs from CURATED_SCHEMA"]
    extra = CURATED_SCHEMA.append(pa.field("surge", pa.float64()))
    assert schema_problems(extra) == ["unexpected columns ['surge']"]


def test_multi_day_interval_reports_every_failing_day_and_keeps_the_good_ones(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    day2 = DAY + dt.timedelta(days=1)
    write_raw(root, trips(5), DAY)
    write_raw(root, [*trips(3, day2), trip(3, day2, fare=-1.0)], day2)
    interval = Interval(DAY, day2 + dt.timedelta(days=1))
    transform(root, interval, settings(tmp_path))
    with pytest.raises(ValidationFailed) as err:
        validate(root, interval, settings(tmp_path, max_reject_rate=0.1))
    assert "validation failed for 1 of 2 partition(s)" in str(err.value)
    assert "dt=2024-05-02: reject_rate_exceeded: 1 of 4 rows rejected (25.00%)" in str(err.value)
    assert "dt=2024-05-01" not in str(err.value).split("reports:")[0]
    verdicts = [(p["dt"], p["verdict"]) for p in err.value.summary["partitions"]]
    assert verdicts == [("2024-05-01", "passed"), ("2024-05-02", "failed")]
    assert read(root, "staging", "trips_accepted", DAY).num_rows == 5


def test_missing_staging_partition_is_a_clear_error(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    with pytest.raises(PartitionError, match=r"staging/trips/dt=2024-05-01 is missing or incomplete"):
        validate(root, ONE_DAY, settings(tmp_path))


def test_accounting_invariants_and_lineage(tmp_path: Path) -> None:
    rows = [*trips(30), trip(30, fare=None), trip(31, trip_id="trip-2024-05-01-00001"), trip(32, tips=-1.0)]
    root = prepare(tmp_path, rows)
    summary = validate(root, ONE_DAY, settings(tmp_path, max_reject_rate=0.1))
    acc = accounting(root)
    assert acc["rows_in"] == acc["accepted"] + acc["quarantined"] == 33
    assert acc["quarantined"] == 3
    assert list(acc["by_reason"]) == sorted(ROW_CODES)
    assert {k: v for k, v in acc["by_reason"].items() if v} == {"missing_fare": 1, "duplicate_trip": 1,
                                                                "tips_negative": 1}  # fmt: skip
    assert acc["reject_rate"] == round(3 / 33, 6)
    assert (acc["max_reject_rate"], acc["verdict"], acc["failures"]) == (0.1, "passed", [])
    # lineage: the accounting names the staging files it judged and the files it wrote
    staging_manifest = root.read_manifest(root.partition_path("staging", "trips", DAY))
    assert acc["inputs"]["staging"]["files"] == {"part-00000.parquet": staging_manifest.outputs[0]["sha256"]}
    q_manifest = root.read_manifest(root.partition_path("quarantine", "trips", DAY))
    a_manifest = root.read_manifest(root.partition_path("staging", "trips_accepted", DAY))
    assert acc["outputs"]["quarantine"]["files"] == q_manifest.outputs
    assert acc["outputs"]["accepted"]["files"] == a_manifest.outputs
    assert q_manifest.row_counts["rows"] == 3 and a_manifest.row_counts["rows"] == 30
    assert {
        k.removeprefix("reason."): v for k, v in q_manifest.row_counts.items() if k.startswith("reason.")
    } == (acc["by_reason"])
    assert summary["partitions"][0]["accounting_uri"].endswith(f"{REPORT}/accounting.json")


def test_reports_hold_gx_result_data_docs_and_index(tmp_path: Path) -> None:
    root = prepare(tmp_path, [*trips(30), trip(30, fare=-3.0), trip(31, payment_type="Bitcoin")])
    validate(root, ONE_DAY, settings(tmp_path, max_reject_rate=0.1))
    report = tmp_path / REPORT
    result = json.loads((report / "gx_result.json").read_text())
    by_code = {r["expectation_config"]["meta"]["reject_code"]: r for r in result["results"]
               if "reject_code" in r["expectation_config"]["meta"]}  # fmt: skip
    assert set(by_code) == set(ROW_CODES)
    fare = by_code["fare_out_of_range"]
    assert fare["success"] is False
    assert fare["result"]["unexpected_count"] == 1
    assert fare["result"]["unexpected_index_column_names"] == ["_row_id"]
    assert len(fare["result"]["unexpected_index_list"][0]["_row_id"]) == 1
    assert by_code["tips_negative"]["success"] is True
    docs = (report / "data_docs.html").read_text()
    text = html.unescape(" ".join(re.sub(r"<[^>]+>", " ", docs).split()))
    assert "Data documentation compiled by Great Expectations" in text
    assert "Expectation Suite: flywheel_taxi_trips" in text
    assert (
        "values must be greater than 0.0 and less than or equal to 1000.0 . 1 unexpected values found" in text
    )
    index = (report / "index.html").read_text()
    assert "passed" in index and "fare_out_of_range" in index and "data_docs.html" in index
    manifest = root.read_manifest(root.partition_path("reports", "validation", DAY))
    files = {o["uri"].rsplit("/", 1)[1]: o for o in manifest.outputs}
    assert set(files) == {"accounting.json", "data_docs.html", "gx_result.json", "index.html"}
    assert "sha256" not in files["gx_result.json"]  # holds GX's run time: not hashed
    assert files["accounting.json"]["bytes"] == (report / "accounting.json").stat().st_size


def test_trim_result_keeps_counts_but_cuts_long_row_lists(tmp_path: Path) -> None:
    root = prepare(tmp_path, [trip(i, fare=-1.0) for i in range(50)])
    suite = TripSuite(RuleConfig())
    outcome = suite.run(read(root, "staging", "trips"), DAY)
    assert len(outcome.row_ids["fare_out_of_range"]) == 50
    trim_result(outcome.result, limit=10)
    fare = next(
        r
        for r in outcome.result.results
        if r.expectation_config.meta.get("reject_code") == "fare_out_of_range"
    )
    assert fare.result["unexpected_count"] == 50
    assert len(fare.result["unexpected_index_list"][0]["_row_id"]) == 10
    assert len(fare.result["partial_unexpected_index_list"][0]["_row_id"]) == 20
    assert fare.result["flywheel_listed_rows"] == 10


def test_three_steps_twice_give_identical_bytes(tmp_path: Path) -> None:
    rows = [
        *trips(40),
        trip(40, fare=None, _parse_errors="fare=x"),
        trip(41, trip_id=None),
        trip(42, tips=-1.0),
    ]
    root = prepare(tmp_path, rows)
    cfg = settings(tmp_path, max_reject_rate=0.1)

    def snapshot() -> dict[str, dict[str, bytes]]:
        layers = [
            ("staging", "trips"),
            ("staging", "trips_accepted"),
            ("quarantine", "trips"),
            ("curated", "trips"),
        ]
        return {f"{layer}/{dataset}": partition_bytes(root, layer, dataset) for layer, dataset in layers}

    validate(root, ONE_DAY, cfg)
    publish(root, ONE_DAY, cfg)
    first = snapshot()
    first_accounting = (tmp_path / REPORT / "accounting.json").read_bytes()
    transform(root, ONE_DAY, cfg)
    validate(root, ONE_DAY, cfg)
    publish(root, ONE_DAY, cfg)
    assert snapshot() == first
    assert (tmp_path / REPORT / "accounting.json").read_bytes() == first_accounting
    assert set(first["curated/trips"]) == {"_manifest.json", "part-00000.parquet"}
