"""Each row rule, each bad-input case: which rows are quarantined, with which reason, and what GX counted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ml_tasks.schema import CURATED_SCHEMA, QUARANTINE_SCHEMA
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot
from ml_tasks.transform import transform
from ml_tasks.validation import validate
from ml_tasks.validation.accounting import _concat_ws, unparseable_reasons
from ml_tasks.validation.rules import ROW_CODES
from tests.unit.validation.trip_rows import DAY, ONE_DAY, read, settings, trip, trips, write_raw

GOOD = 20  # valid trips around each bad one


def run(tmp_path: Path, bad: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """Write GOOD valid trips + ``bad`` as raw, transform and validate (rejects allowed), return results."""
    root = DataRoot(str(tmp_path))
    write_raw(root, [*trips(GOOD), *bad])
    cfg = settings(tmp_path, max_reject_rate=1.0, **overrides)
    transform(root, ONE_DAY, cfg)
    summary = validate(root, ONE_DAY, cfg)
    quarantine = read(root, "quarantine", "trips")
    accepted = read(root, "staging", "trips_accepted")
    accounting = root.read_json(f"{root.partition_path('reports', 'validation', DAY)}/accounting.json")
    assert quarantine.schema == QUARANTINE_SCHEMA
    assert accepted.schema == CURATED_SCHEMA
    assert accepted.num_rows + quarantine.num_rows == GOOD + len(bad)
    return {
        "summary": summary,
        "reasons": {r["_source_row"]: r["reject_reason"] for r in quarantine.to_pylist()},
        "accepted": sorted(accepted["_source_row"].to_pylist()),
        "accounting": accounting,
    }


def reason_counts(reasons: dict[int, str]) -> dict[str, int]:
    counts = dict.fromkeys(ROW_CODES, 0)
    for text in reasons.values():
        for code in text.split(";"):
            counts[code.split(":")[0]] += 1
    return counts


B = GOOD  # _source_row of the first bad trip


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"fare": None, "_parse_errors": "fare=abc"}, "unparseable:fare;missing_fare"),
        (
            {"trip_miles": None, "tips": None, "_parse_errors": "tips=x;trip_miles=1,5"},
            "unparseable:trip_miles,tips;missing_trip_miles;missing_tips",
        ),
        (  # an optional column still counts
            {"pickup_centroid_latitude": None, "_parse_errors": "pickup_centroid_latitude=north"},
            "unparseable:pickup_centroid_latitude",
        ),
        ({"trip_start_timestamp": None}, "missing_trip_start_timestamp"),
        ({"trip_seconds": None}, "missing_trip_seconds"),
        ({"trip_miles": None}, "missing_trip_miles"),
        ({"fare": None}, "missing_fare"),
        ({"tips": None}, "missing_tips"),
        ({"payment_type": None}, "missing_payment_type"),
        ({"fare": 0.0}, "fare_out_of_range"),
        ({"fare": -4.5}, "fare_out_of_range"),
        ({"fare": 1000.01}, "fare_out_of_range"),
        ({"tips": -0.01}, "tips_negative"),
        ({"trip_seconds": 86_401}, "trip_seconds_out_of_range"),
        ({"trip_seconds": -1}, "trip_seconds_out_of_range"),
        ({"trip_miles": 1000.5}, "trip_miles_out_of_range"),
        ({"trip_miles": -0.1}, "trip_miles_out_of_range"),
        ({"trip_seconds": 0, "trip_miles": 0.5}, "zero_seconds_positive_miles"),
        (
            {"trip_end_timestamp": dt.datetime(2024, 5, 1, 7, 59)},  # starts 08:20
            "end_before_start",
        ),
        ({"payment_type": "Bitcoin"}, "payment_type_unknown"),
        ({"payment_type": "cash"}, "payment_type_unknown"),  # the domain is case-sensitive
        ({"pickup_community_area": 0}, "pickup_community_area_unknown"),
        ({"pickup_community_area": 78}, "pickup_community_area_unknown"),
        ({"dropoff_community_area": 99}, "dropoff_community_area_unknown"),
        (
            {
                "trip_start_timestamp": dt.datetime(2024, 5, 2, 0, 0),
                "trip_end_timestamp": dt.datetime(2024, 5, 2, 0, 9),
            },
            "outside_partition",
        ),
        (
            {"trip_start_timestamp": dt.datetime(2024, 4, 30, 23, 59), "trip_end_timestamp": None},
            "outside_partition",
        ),
        (
            {"trip_start_timestamp": dt.datetime(9999, 1, 1), "trip_end_timestamp": None},  # parses fine
            "outside_partition",
        ),
        ({"trip_id": "trip-2024-05-01-00003"}, "duplicate_trip"),
        ({"fare": 2000.0, "payment_type": "Bitcoin"}, "fare_out_of_range;payment_type_unknown"),
        (
            {"fare": -1.0, "tips": -1.0, "trip_seconds": 0, "pickup_community_area": 100},
            "fare_out_of_range;tips_negative;zero_seconds_positive_miles;pickup_community_area_unknown",
        ),
    ],
)
def test_bad_row_is_quarantined_with_its_reason(
    tmp_path: Path, overrides: dict[str, Any], reason: str
) -> None:
    result = run(tmp_path, [trip(B, **overrides)])
    assert result["reasons"] == {B: reason}
    assert result["accepted"] == list(range(GOOD))
    acc = result["accounting"]
    assert (acc["rows_in"], acc["accepted"], acc["quarantined"]) == (GOOD + 1, GOOD, 1)
    # GX's unexpected counts are the quarantine's per-reason counts
    assert acc["by_reason"] == reason_counts(result["reasons"])
    assert {r["code"]: r["unexpected_count"] for r in acc["row_rules"]} == acc["by_reason"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"fare": 1000.0},  # the cap is inclusive
        {"fare": 0.01},
        {"tips": 0.0},
        {"trip_seconds": 86_400},
        {"trip_seconds": 0, "trip_miles": 0.0},  # a zero trip is odd but not contradictory
        {"trip_miles": 0.0},  # 27 % of the real sample: kept
        {"pickup_community_area": None, "dropoff_community_area": None},  # outside Chicago: allowed
        {"pickup_community_area": 1, "dropoff_community_area": 77},
        {"trip_end_timestamp": None},  # the TFX layout has no end time
        {"trip_end_timestamp": dt.datetime(2024, 5, 1, 8, 20)},  # ends when it starts
        {"trip_start_timestamp": dt.datetime(2024, 5, 1, 0, 0)},  # the partition starts inclusive
        {"trip_start_timestamp": dt.datetime(2024, 5, 1, 23, 59, 59), "trip_end_timestamp": None},
        {"trip_id": None},  # hashed key
        {"company": None, "taxi_id": None, "tolls": None},  # optional columns
        {"payment_type": "Prcard"},
    ],
)
def test_valid_edge_cases_are_accepted(tmp_path: Path, overrides: dict[str, Any]) -> None:
    result = run(tmp_path, [trip(B, **overrides)])
    assert result["reasons"] == {}
    assert result["accepted"] == list(range(GOOD + 1))
    assert sum(result["accounting"]["by_reason"].values()) == 0


def test_configurable_fare_cap(tmp_path: Path) -> None:
    class CappedSettings(Settings):  # what a max_fare setting would look like
        max_fare: float = 50.0

    root = DataRoot(str(tmp_path))
    write_raw(root, [*trips(3), trip(3, fare=50.0), trip(4, fare=50.5)])
    cfg = CappedSettings(data_root=str(tmp_path), max_reject_rate=1.0)
    transform(root, ONE_DAY, cfg)
    validate(root, ONE_DAY, cfg)
    quarantine = read(root, "quarantine", "trips").to_pylist()
    assert [(r["_source_row"], r["reject_reason"]) for r in quarantine] == [(4, "fare_out_of_range")]
    accounting = root.read_json(f"{root.partition_path('reports', 'validation', DAY)}/accounting.json")
    assert accounting["thresholds"]["max_fare"] == 50.0


def test_duplicates_keep_the_first_copy_and_quarantine_each_later_one(tmp_path: Path) -> None:
    copies = [trip(B + k, trip_id="trip-2024-05-01-00007") for k in range(3)]
    twin = trip(B + 3, trip_id=None)
    result = run(tmp_path, [*copies, twin, {**twin, "_source_row": B + 4}])
    assert result["reasons"] == {B: "duplicate_trip", B + 1: "duplicate_trip", B + 2: "duplicate_trip",
                                 B + 4: "duplicate_trip"}  # fmt: skip
    assert 7 in result["accepted"] and B + 3 in result["accepted"]
    assert result["accounting"]["by_reason"]["duplicate_trip"] == 4


def test_many_bad_rows_every_row_accounted_for(tmp_path: Path) -> None:
    bad = [
        trip(B, fare=None),
        trip(B + 1, fare=-1.0),
        trip(B + 2, payment_type="X", tips=-2.0),
        trip(B + 3, trip_id="trip-2024-05-01-00000"),
        trip(B + 4, trip_seconds=0, trip_miles=9.0, _parse_errors="extras=oops"),
    ]
    result = run(tmp_path, bad)
    assert result["reasons"] == {
        B: "missing_fare",
        B + 1: "fare_out_of_range",
        B + 2: "tips_negative;payment_type_unknown",
        B + 3: "duplicate_trip",
        B + 4: "unparseable:extras;zero_seconds_positive_miles",
    }
    acc = result["accounting"]
    assert acc["rows_in"] == acc["accepted"] + acc["quarantined"] == GOOD + 5
    assert acc["rows_with_several_reasons"] == 2
    assert acc["by_reason"] == reason_counts(result["reasons"])
    partition = result["summary"]["partitions"][0]
    assert partition["by_reason"] == {k: v for k, v in acc["by_reason"].items() if v}
    assert partition["reject_rate"] == pytest.approx(5 / 25)


def test_unparseable_reason_names_known_columns_in_schema_order() -> None:
    errors = pa.chunked_array(
        [pa.array(["tips=x;fare=1", None, "zz=1", "trip_start_timestamp=13/45/2020;fare=;", "fare=a;b=c"])]
    )
    assert unparseable_reasons(errors).to_pylist() == [
        "unparseable:fare,tips",
        None,
        "unparseable",  # no column we know: the bare code, never a silent accept
        "unparseable:trip_start_timestamp,fare",
        "unparseable:fare",
    ]


def test_reason_join_keeps_rows_whose_values_are_all_null() -> None:
    # regression guard: pyarrow 25's binary_join_element_wise(null_handling="skip") drops such rows
    a = pa.array([None, "x", None, "y"])
    b = pa.array([None, None, None, "z"])
    assert _concat_ws([a, b], ";").to_pylist() == [None, "x", None, "y;z"]
