"""GX over chunks of several days: the same bytes and verdicts as one GX run per day."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ml_tasks.intervals import Interval
from ml_tasks.publish import publish
from ml_tasks.storage import DataRoot
from ml_tasks.transform import transform
from ml_tasks.validation import ValidationFailed
from ml_tasks.validation.rules import ROW_CODES
from ml_tasks.validation.step import plan_chunks, validate_interval
from tests.unit.validation.trip_rows import partition_bytes, settings, trip, trips, write_raw

D0 = dt.date(2024, 5, 1)
DAYS = [D0 + dt.timedelta(days=i) for i in range(5)]
INTERVAL = Interval(DAYS[0], DAYS[-1] + dt.timedelta(days=1))
LAYERS = [("staging", "trips_accepted"), ("quarantine", "trips"), ("curated", "trips")]


def midnight(day: dt.date, days: int = 0, seconds: int = 0) -> dt.datetime:
    return dt.datetime.combine(day + dt.timedelta(days=days), dt.time()) + dt.timedelta(seconds=seconds)


def dirty_days() -> dict[dt.date, list[dict[str, Any]]]:
    """Five days: dirty rows of every partition-dependent kind, one empty day (index 3)."""
    d0, d1, d2, _, d4 = DAYS
    return {
        d0: [
            *trips(20, d0),
            trip(20, d0, fare=-1.0),
            trip(21, d0, fare=None, _parse_errors="fare=abc"),
            # a copy of trip 0 (same trip_id): transform flags it, validation rejects it
            {**trip(0, d0), "_source_row": 99},
        ],
        d1: [
            *trips(20, d1),
            # bounds of the day itself: 00:00 is inside, 00:00 of the next day and 23:59:59 before are not
            trip(20, d1, trip_start_timestamp=midnight(d1), trip_end_timestamp=midnight(d1, 0, 60)),
            trip(21, d1, trip_start_timestamp=midnight(d1, 1), trip_end_timestamp=midnight(d1, 1, 60)),
            trip(22, d1, trip_start_timestamp=midnight(d1, 0, -1), trip_end_timestamp=midnight(d1, 0, 60)),
            trip(23, d1, trip_seconds=0, trip_miles=1.5),
        ],
        d2: [
            *trips(30, d2),
            # the next day's first second: inside only for d2 + 1
            trip(30, d2, trip_start_timestamp=midnight(d2, 1), trip_end_timestamp=midnight(d2, 1, 60)),
            # day 0's trip_id again: trip_key is unique per day, so NOT a duplicate here
            {**trip(5, d0), "trip_start_timestamp": midnight(d2, 0, 3600),
             "trip_end_timestamp": midnight(d2, 0, 4000)},
            trip(31, d2, payment_type="Bitcoin", tips=-2.0),
        ],
        DAYS[3]: [],
        d4: [*trips(10, d4), trip(10, d4, trip_start_timestamp=midnight(d0, 0, 60))],
    }  # fmt: skip


# reasons per day, counted by hand from dirty_days()
EXPECTED_REASONS = {
    DAYS[0]: {"fare_out_of_range": 1, "unparseable": 1, "missing_fare": 1, "duplicate_trip": 1},
    DAYS[1]: {"outside_partition": 2, "zero_seconds_positive_miles": 1},
    DAYS[2]: {"outside_partition": 1, "payment_type_unknown": 1, "tips_negative": 1},
    DAYS[3]: {},
    DAYS[4]: {"outside_partition": 1},
}


def prepared(tmp_path: Path, name: str) -> DataRoot:
    base = tmp_path / name
    root = DataRoot(str(base))
    for day, rows in dirty_days().items():
        write_raw(root, rows, day)
    transform(root, INTERVAL, settings(base))
    return root


def snapshot(root: DataRoot) -> dict[str, bytes]:
    """Every deterministic output file of the interval, by relative path."""
    files: dict[str, bytes] = {}
    for day in DAYS:
        for layer, dataset in LAYERS:
            if root.exists(root.partition_path(layer, dataset, day)):
                for name, payload in partition_bytes(root, layer, dataset, day).items():
                    files[f"{layer}/{dataset}/{day}/{name}"] = payload
        report = Path(root.partition_path("reports", "validation", day))
        for name in ("accounting.json", "index.html"):
            files[f"reports/{day}/{name}"] = (report / name).read_bytes()
    return files


def run(root: DataRoot, max_chunk_rows: int, **overrides: Any) -> dict[str, Any]:
    cfg = settings(root.base, **overrides)
    try:
        summary = validate_interval(root, INTERVAL, cfg, max_chunk_rows=max_chunk_rows)
    except ValidationFailed as err:
        return {"failed": err.failures, **err.summary}
    publish(root, INTERVAL, cfg)
    return summary


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without timings (which differ between any two runs)."""
    parts = [{k: v for k, v in p.items() if k != "gx_seconds"} for p in summary["partitions"]]
    return {**{k: v for k, v in summary.items() if k not in ("seconds", "gx_seconds")}, "partitions": parts}


@pytest.mark.parametrize(
    "overrides",
    [{"allow_empty": True, "max_reject_rate": 0.2}, {"allow_empty": False, "max_reject_rate": 0.1}],
)
def test_chunked_run_gives_the_bytes_of_one_gx_run_per_day(tmp_path: Path, overrides: dict[str, Any]) -> None:
    root = prepared(tmp_path, "data")  # one root for both runs: manifests hold absolute URIs
    one = run(root, max_chunk_rows=0, **overrides)
    first = snapshot(root)
    assert not (tmp_path / "data" / "reports" / "validation" / "chunks").exists()
    for layer in ("quarantine", "curated", "reports"):
        shutil.rmtree(tmp_path / "data" / layer, ignore_errors=True)
    shutil.rmtree(tmp_path / "data" / "staging" / "trips_accepted", ignore_errors=True)
    many = run(root, max_chunk_rows=1000, **overrides)
    assert comparable(many) == comparable(one)
    second = snapshot(root)
    assert sorted(first) == sorted(second)
    assert [k for k in first if first[k] != second[k]] == []
    for day in DAYS:
        acc = json.loads(first[f"reports/{day}/accounting.json"])
        assert {k: v for k, v in acc["by_reason"].items() if v} == EXPECTED_REASONS[day], day
    # one GX run over all five days (the chunk's own report) versus none in the per-day run
    chunks = tmp_path / "data" / "reports" / "validation" / "chunks"
    assert [p.name for p in chunks.iterdir()] == [f"{DAYS[0]}_{DAYS[-1]}"]
    if overrides["allow_empty"]:
        assert "failed" not in one and one["quarantined"] == 9 and one["rows_in"] == 91
        assert [p["verdict"] for p in one["partitions"]] == ["passed"] * 5
    else:
        # day 0: 3 of 23 rejected; day 1: 3 of 24; day 3 is empty; day 2 (2 of 33) and day 4 (1 of 11) pass
        failed = {(f["dt"], f["rule"]) for f in one["failed"]}
        assert failed == {
            (DAYS[0].isoformat(), "reject_rate_exceeded"),
            (DAYS[1].isoformat(), "reject_rate_exceeded"),
            (DAYS[3].isoformat(), "empty_partition"),
        }
        assert [p["verdict"] for p in many["partitions"]] == [
            "failed",
            "failed",
            "passed",
            "failed",
            "passed",
        ]


def test_day_gx_result_of_a_chunk_holds_the_days_counts_and_points_at_the_chunk(tmp_path: Path) -> None:
    root = prepared(tmp_path, "data")
    run(root, max_chunk_rows=1000, allow_empty=True, max_reject_rate=0.2)
    report = Path(root.partition_path("reports", "validation", DAYS[1]))
    result = json.loads((report / "gx_result.json").read_text())
    by_code = {r["expectation_config"]["meta"].get("reject_code"): r for r in result["results"]}
    outside = by_code["outside_partition"]["result"]
    assert outside["unexpected_count"] == 2 and by_code["outside_partition"]["success"] is False
    # day-local row ids: the staging order puts 23:59:59 of the day before first and 00:00 next day last
    assert outside["unexpected_index_list"] == [{"_row_id": [0, 24 - 1]}]
    assert by_code["fare_out_of_range"]["result"]["unexpected_count"] == 0
    assert result["success"] is False and result["flywheel_chunk"]["n_days"] == 5
    assert result["flywheel_chunk"]["row_offset"] == 23  # day 0 has 23 rows
    chunk_result = Path(result["flywheel_chunk"]["gx_result_uri"])
    chunk = json.loads(chunk_result.read_text())
    chunk_outside = next(
        r
        for r in chunk["results"]
        if r["expectation_config"]["meta"].get("reject_code") == "outside_partition"
    )
    assert chunk_outside["result"]["unexpected_count"] == 4  # 2 + 1 + 1 over the five days
    docs = (report / "data_docs.html").read_text()
    assert result["flywheel_chunk"]["data_docs_uri"] in docs
    assert (
        "Data documentation compiled by Great Expectations"
        in Path(result["flywheel_chunk"]["data_docs_uri"]).read_text()
    )


def test_days_above_the_bound_judged_in_slices_give_the_bytes_of_one_gx_run_per_day(tmp_path: Path) -> None:
    root = prepared(tmp_path, "data")
    overrides = {"allow_empty": True, "max_reject_rate": 0.2}
    one = run(root, max_chunk_rows=0, **overrides)
    first = snapshot(root)
    for layer in ("quarantine", "curated", "reports"):
        shutil.rmtree(tmp_path / "data" / layer, ignore_errors=True)
    shutil.rmtree(tmp_path / "data" / "staging" / "trips_accepted", ignore_errors=True)
    # days of 23, 24, 33, 0 and 11 rows: the first three in slices of 10 rows, the last two in one chunk
    sliced = run(root, max_chunk_rows=20, **overrides)
    assert comparable(sliced) == comparable(one) and one["quarantined"] == 9
    second = snapshot(root)
    assert sorted(first) == sorted(second)
    assert [k for k in first if first[k] != second[k]] == []
    chunks = tmp_path / "data" / "reports" / "validation" / "chunks"
    assert sorted(p.name for p in chunks.iterdir() if p.name.startswith(str(DAYS[1]))) == [
        f"{DAYS[1]}_rows_0-10", f"{DAYS[1]}_rows_10-20", f"{DAYS[1]}_rows_20-24"
    ]  # fmt: skip
    assert len(list(chunks.iterdir())) == 3 + 3 + 4 + 1  # days 0, 1, 2 in slices; days 3 and 4
    report = Path(root.partition_path("reports", "validation", DAYS[1]))
    result = json.loads((report / "gx_result.json").read_text())
    by_code = {r["expectation_config"]["meta"].get("reject_code"): r for r in result["results"]}
    # the day's own row ids, found in the first and the last slice
    assert by_code["outside_partition"]["result"]["unexpected_index_list"] == [{"_row_id": [0, 24 - 1]}]
    assert by_code["zero_seconds_positive_miles"]["result"]["unexpected_count"] == 1
    assert [s["rows"] for s in result["flywheel_chunk"]["slices"]] == [[0, 10], [10, 20], [20, 24]]
    last = json.loads(Path(result["flywheel_chunk"]["slices"][2]["gx_result_uri"]).read_text())
    outside = next(
        r
        for r in last["results"]
        if r["expectation_config"]["meta"].get("reject_code") == "outside_partition"
    )
    assert outside["result"]["unexpected_index_list"] == [{"_row_id": [3]}]  # position in the slice
    docs = (report / "data_docs.html").read_text()
    assert all(s["data_docs_uri"] in docs for s in result["flywheel_chunk"]["slices"])


@pytest.mark.parametrize("allow_empty", [True, False])
def test_a_day_without_rows_is_judged_on_its_count_without_a_gx_run(
    tmp_path: Path, allow_empty: bool
) -> None:
    root = prepared(tmp_path, "data")
    summary = run(root, max_chunk_rows=0, allow_empty=allow_empty, max_reject_rate=0.2)
    empty = next(p for p in summary["partitions"] if p["dt"] == DAYS[3].isoformat())
    assert empty["rows_in"] == 0 and empty["gx_seconds"] == 0.0
    assert empty["verdict"] == ("passed" if allow_empty else "failed")
    report = Path(root.partition_path("reports", "validation", DAYS[3]))
    result = json.loads((report / "gx_result.json").read_text())
    assert result["success"] is allow_empty and result["flywheel_chunk"]["gx_result_uri"] is None
    counts = {
        r["expectation_config"]["meta"].get("reject_code", "empty_partition"): (
            r["success"],
            r["result"].get("unexpected_count", r["result"].get("observed_value")),
        )
        for r in result["results"]
    }
    assert counts.pop("empty_partition") == (allow_empty, 0)
    assert counts == {code: (True, 0) for code in ROW_CODES}
    assert "No GX run" in (report / "data_docs.html").read_text()


def test_plan_chunks_keeps_whole_days_within_the_row_bound() -> None:
    days = [(D0 + dt.timedelta(days=i), n) for i, n in enumerate([300, 300, 500, 1200, 0, 10])]
    assert [len(c) for c in plan_chunks(days, 600)] == [2, 1, 1, 2]
    assert plan_chunks(days, 600)[2] == [days[3][0]]  # a day above the bound is a chunk of its own
    assert [len(c) for c in plan_chunks(days, 0)] == [1] * 6
    assert [len(c) for c in plan_chunks(days, 10_000)] == [6]


def test_copy_of_interval_compares_equal_to_itself(tmp_path: Path) -> None:
    """The snapshot helper sees a difference when one byte changes (the comparison above can fail)."""
    root = prepared(tmp_path, "data")
    run(root, max_chunk_rows=1000, allow_empty=True, max_reject_rate=0.2)
    shutil.copytree(tmp_path / "data", tmp_path / "copy")
    copy = DataRoot(str(tmp_path / "copy"))
    assert snapshot(copy) == snapshot(root)
    acc = Path(copy.partition_path("reports", "validation", DAYS[2])) / "accounting.json"
    acc.write_bytes(acc.read_bytes().replace(b'"rows_in": 33', b'"rows_in": 34'))
    assert snapshot(copy) != snapshot(root)
