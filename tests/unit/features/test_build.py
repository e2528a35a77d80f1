"""build-features on a hand-built timeline: exact aggregates, event timestamps, coverage, reproducibility.

Curated partitions are written by hand (``DataRoot.write_table`` in ``CURATED_SCHEMA``; the derived
columns come from transform's own function, as publish would store them). Every expected value is
computed in this file from the hand-written trips, and a few are also written out as literals so the
reference itself is pinned. Money and distances are multiples of 1/8, so every sum is exact in any order
and ``==`` is the right comparison.

Timeline (America/Chicago): target days 2024-03-08 (Fri) .. 2024-03-11 (Mon), which include the empty
Saturday 03-09 and the spring-forward Sunday 03-10; the 28-day windows start 2024-02-10. Curated
partitions exist for every day from 2024-02-10 except 2024-02-10 itself and 2024-02-20 (missing days
inside the windows). Days without trips listed below have empty (but complete) partitions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_tasks.contract import EVENT_TIMESTAMP, FEATURES_LAYER
from ml_tasks.features.build import build_features, end_of_day_utc
from ml_tasks.features.spec import AGGREGATES, COVERAGE, MAX_WINDOW, VIEWS, VIEWS_BY_NAME, WINDOWS, ViewSpec
from ml_tasks.intervals import Interval
from ml_tasks.schema import RAW_SCHEMA
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, PartitionError
from tests.unit.features._build import CHICAGO, D, days_between, partition_files, write_curated

UTC = dt.UTC


AREA = VIEWS_BY_NAME["pickup_area_stats"]
COMPANY = VIEWS_BY_NAME["company_stats"]
TARGET = Interval(D(2024, 3, 8), D(2024, 3, 12))
FIRST_INPUT = D(2024, 2, 10)
MISSING = (D(2024, 2, 10), D(2024, 2, 20))
CARD, CASH = "Credit Card", "Cash"

# (id, local start, area, company, fare, tips, miles, seconds, payment)
HAND_TRIPS: list[tuple[Any, ...]] = [
    ("old", dt.datetime(2024, 2, 11, 9, 0), 77, "Old Cab", 20.0, 5.0, 4.0, 900, CARD),
    ("feb15", dt.datetime(2024, 2, 15, 14, 0), 8, "Alpha Cab", 12.0, 0.0, 3.0, 900, CASH),
    ("mar04", dt.datetime(2024, 3, 4, 7, 30), 32, "Beta Cab", 8.0, 2.0, 2.0, 600, CARD),
    # Friday 03-08
    ("a", dt.datetime(2024, 3, 8, 8, 0), 8, "Alpha Cab", 10.0, 2.5, 4.0, 1200, CARD),
    ("b", dt.datetime(2024, 3, 8, 9, 0), 8, "Beta Cab", 0.0, 0.0, 1.0, 300, CASH),  # fare 0
    ("c", dt.datetime(2024, 3, 8, 10, 0), 32, "Alpha Cab", 16.0, 0.0, 0.0, 600, CASH),  # miles 0
    ("d", dt.datetime(2024, 3, 8, 11, 0), None, "Alpha Cab", 6.0, 3.0, 2.0, 600, CARD),  # null area
    ("e", dt.datetime(2024, 3, 8, 23, 59), 8, None, 20.0, 5.0, 5.0, 900, CARD),  # null company
    # Saturday 03-09: no trips. Sunday 03-10: 02:00-02:59 does not exist
    ("g", dt.datetime(2024, 3, 10, 1, 30), 32, "Beta Cab", 10.0, 1.25, 2.0, 600, CARD),
    ("h", dt.datetime(2024, 3, 10, 3, 30), 32, "Beta Cab", 12.0, 3.0, 3.0, 600, CARD),
    ("i", dt.datetime(2024, 3, 10, 12, 0), 8, "Alpha Cab", 5.0, 0.0, 0.0, 0, CASH),
    ("j", dt.datetime(2024, 3, 10, 13, 0), 8, "Alpha Cab", 8.0, 2.0, 2.0, 600, None),  # payment unknown
    ("k", dt.datetime(2024, 3, 10, 20, 0), 32, "Alpha Cab", 10.0, None, 2.5, 600, CASH),  # tips unknown
    # Monday 03-11
    ("l", dt.datetime(2024, 3, 11, 0, 0), 8, "Beta Cab", 14.0, 3.5, 3.5, 600, CARD),
    ("m", dt.datetime(2024, 3, 11, 23, 45), 32, "Alpha Cab", 9.0, 0.0, 4.5, 600, CASH),
]
# a later copy of trip "a" (same trip_id): transform marks it _is_duplicate and build must ignore it
DUPLICATE = ("a", dt.datetime(2024, 3, 8, 8, 0), 8, "Alpha Cab", 999.0, 0.0, 1.0, 60, CARD)


def raw_row(trip: tuple[Any, ...], source_row: int) -> dict[str, Any]:
    trip_id, start, area, company, fare, tips, miles, seconds, payment = trip
    return {
        "trip_id": trip_id,
        "trip_start_timestamp": start,
        "trip_end_timestamp": start + dt.timedelta(seconds=seconds),
        "trip_seconds": seconds,
        "trip_miles": miles,
        "pickup_community_area": area,
        "dropoff_community_area": 32,
        "fare": fare,
        "tips": tips,
        "payment_type": payment,
        "company": company,
        "_source": "unit-test",
        "_source_row": source_row,
    }


def write_timeline(root: DataRoot) -> None:
    by_day: dict[dt.date, list[dict[str, Any]]] = {}
    for i, trip in enumerate([*HAND_TRIPS, DUPLICATE]):
        by_day.setdefault(trip[1].date(), []).append(raw_row(trip, i))
    for day in days_between(FIRST_INPUT, TARGET.end):
        if day not in MISSING:
            write_curated(root, day, pa.Table.from_pylist(by_day.get(day, []), schema=RAW_SCHEMA))


@pytest.fixture(scope="module")
def timeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The curated timeline, written once; each test works on its own copy."""
    template = tmp_path_factory.mktemp("timeline") / "data"
    write_timeline(DataRoot(str(template)))
    return template


@pytest.fixture
def root(timeline: Path, tmp_path: Path) -> DataRoot:
    shutil.copytree(timeline, tmp_path / "data")
    return DataRoot(str(tmp_path / "data"))


@pytest.fixture
def settings(root: DataRoot) -> Settings:
    return Settings(data_root=root.base, timezone=CHICAGO)


# -- the reference, computed from HAND_TRIPS ---------------------------------------------------------
def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def share(flags: list[bool | None]) -> float | None:
    known = [f for f in flags if f is not None]
    return sum(known) / len(known) if known else None


def aggregates(trips: list[tuple[Any, ...]]) -> dict[str, Any]:
    """The AGGREGATES of some trips, written from their definitions in spec.py."""
    fares = [t[4] for t in trips if t[4] is not None]
    per_mile = [t[4] / t[6] for t in trips if t[4] is not None and t[6] is not None and t[6] > 0]
    tip_rates = [t[5] / t[4] for t in trips if t[4] is not None and t[4] > 0 and t[5] is not None]
    card = [None if t[8] is None else t[8] == CARD for t in trips]
    big = [None if t[4] is None or t[5] is None else t[5] > 0.2 * t[4] for t in trips]
    return {
        "trips": len(trips),
        "fare_mean": mean(fares),
        "fare_per_mile_mean": mean(per_mile),
        "tip_rate_mean": mean(tip_rates),
        "credit_card_share": share(card),
        "big_tipper_rate": share(big),
    }


def expected_rows(view: ViewSpec, day: dt.date) -> dict[Any, dict[str, Any]]:
    """Entity key -> expected feature row of ``day`` (entities with a trip in the 28-day window)."""
    key_index = 2 if view is AREA else 3
    window = [day - dt.timedelta(days=i) for i in range(MAX_WINDOW)]
    present = [d for d in window if d not in MISSING and d >= FIRST_INPUT]
    keys = {t[key_index] for t in HAND_TRIPS if t[1].date() in window} - {None}
    rows = {}
    for key in keys:
        row: dict[str, Any] = {view.entity: key, EVENT_TIMESTAMP: end_of_day_utc(day, CHICAGO)}
        for w in WINDOWS:
            inside = [t for t in HAND_TRIPS if t[key_index] == key and 0 <= (day - t[1].date()).days < w]
            row.update({f"{agg}_{w}d": value for agg, value in aggregates(inside).items()})
        row[COVERAGE] = len(present)
        rows[key] = row
    return rows


def read_rows(root: DataRoot, view: ViewSpec, day: dt.date) -> dict[Any, dict[str, Any]]:
    table = root.read_partition(root.partition_path(FEATURES_LAYER, view.dataset, day))
    return {r[view.entity]: r for r in table.to_pylist()}


# -- tests -------------------------------------------------------------------------------------------
def test_event_timestamp_is_the_next_local_midnight_in_utc_across_dst() -> None:
    # spring forward 2024-03-10 02:00 CST -> 03:00 CDT; fall back 2024-11-03 02:00 CDT -> 01:00 CST
    assert end_of_day_utc(D(2024, 3, 9), CHICAGO) == dt.datetime(2024, 3, 10, 6, 0, tzinfo=UTC)
    assert end_of_day_utc(D(2024, 3, 10), CHICAGO) == dt.datetime(2024, 3, 11, 5, 0, tzinfo=UTC)  # 23 h
    assert end_of_day_utc(D(2024, 11, 2), CHICAGO) == dt.datetime(2024, 11, 3, 5, 0, tzinfo=UTC)
    assert end_of_day_utc(D(2024, 11, 3), CHICAGO) == dt.datetime(2024, 11, 4, 6, 0, tzinfo=UTC)  # 25 h
    assert end_of_day_utc(D(2024, 12, 31), "UTC") == dt.datetime(2025, 1, 1, 0, 0, tzinfo=UTC)


def test_reference_is_pinned_by_hand_written_values() -> None:
    """The in-test reference agrees with numbers worked out on paper (so it is not just a copy)."""
    area8 = expected_rows(AREA, D(2024, 3, 8))[8]
    # trips a, b, e (not the duplicate, not d: no area); fare 0 counts in the fare mean, not in tip rate
    assert (area8["trips_1d"], area8["trips_7d"], area8["trips_28d"]) == (3, 3, 4)
    assert area8["fare_mean_1d"] == 10.0  # (10 + 0 + 20) / 3
    assert area8["fare_per_mile_mean_1d"] == 6.5 / 3  # (2.5 + 0 + 4) / 3
    assert area8["tip_rate_mean_1d"] == 0.25  # a 0.25, e 0.25; b has fare 0
    assert area8["credit_card_share_1d"] == 2 / 3
    assert area8["big_tipper_rate_1d"] == 2 / 3
    assert area8["fare_mean_28d"] == 10.5  # + feb15 (12)
    assert area8[COVERAGE] == 26  # 2024-02-10 and 2024-02-20 missing
    alpha = expected_rows(COMPANY, D(2024, 3, 10))["Alpha Cab"]
    # i (miles 0, seconds 0), j (payment unknown), k (tips unknown)
    assert alpha["trips_1d"] == 3
    assert alpha["fare_per_mile_mean_1d"] == 4.0  # j 4.0, k 4.0; i has no miles
    assert alpha["tip_rate_mean_1d"] == 0.125  # i 0, j 0.25; k unknown
    assert alpha["credit_card_share_1d"] == 0.0  # i cash, k cash; j unknown
    assert alpha["big_tipper_rate_1d"] == 0.5  # i no, j yes; k unknown
    assert expected_rows(AREA, D(2024, 3, 9))[8]["trips_1d"] == 0


def test_aggregates_equal_the_hand_computed_values(root: DataRoot, settings: Settings) -> None:
    summary = build_features(root, TARGET, settings)
    assert summary["input_days"] == 29  # 2024-02-10 .. 2024-03-11 is 31 days, two of them missing
    assert summary["input_trips"] == len(HAND_TRIPS) + 1  # every curated row read, the duplicate too
    assert summary["missing_window_days"] == ["2024-02-10", "2024-02-20"]
    total = 0
    for view in VIEWS:
        for day in TARGET.days():
            got, expected = read_rows(root, view, day), expected_rows(view, day)
            assert set(got) == set(expected), (view.name, day)
            for key, row in expected.items():
                assert got[key] == row, (view.name, day, key)
            total += len(got)
    assert summary["rows"] == total == sum(p["rows"] for p in summary["partitions"])
    assert len(summary["partitions"]) == len(VIEWS) * TARGET.n_days


def test_timeline_edge_cases(root: DataRoot, settings: Settings) -> None:
    build_features(root, TARGET, settings)
    fri, sat, sun, mon = TARGET.days()
    # the empty Saturday: rows for the entities of the window, trips_1d = 0 and no 1-day means
    saturday = read_rows(root, AREA, sat)
    assert sorted(saturday) == [8, 32, 77]
    assert saturday[8]["trips_1d"] == 0 and saturday[8]["trips_7d"] == 3
    assert saturday[8]["fare_mean_1d"] is None and saturday[8]["big_tipper_rate_1d"] is None
    # an entity leaves the table when its last trip leaves the 28-day window (02-11: windows to 03-09)
    assert 77 in read_rows(root, AREA, sat) and 77 not in read_rows(root, AREA, sun)
    assert "Old Cab" in read_rows(root, COMPANY, sat) and "Old Cab" not in read_rows(root, COMPANY, sun)
    # 7-day boundary: 03-04 is inside Sunday's 7 days (03-04..03-10), outside Monday's (03-05..03-11)
    assert read_rows(root, AREA, sun)[32]["fare_mean_7d"] == (8 + 16 + 10 + 12 + 10) / 5  # mar04 c g h k
    assert read_rows(root, AREA, mon)[32]["fare_mean_7d"] == (16 + 10 + 12 + 10 + 9) / 5  # c g h k m
    # no null keys, the duplicate ignored (Alpha had a, c, d on Friday)
    for view in VIEWS:
        for day in TARGET.days():
            assert None not in read_rows(root, view, day)
    assert read_rows(root, COMPANY, fri)["Alpha Cab"]["trips_1d"] == 3
    assert read_rows(root, COMPANY, fri)["Alpha Cab"]["fare_mean_1d"] == 32 / 3
    # event timestamps: next local midnight, DST included; coverage of the 28-day window
    stamps = {d: {r[EVENT_TIMESTAMP] for r in read_rows(root, AREA, d).values()} for d in TARGET.days()}
    assert stamps == {
        fri: {dt.datetime(2024, 3, 9, 6, 0, tzinfo=UTC)},
        sat: {dt.datetime(2024, 3, 10, 6, 0, tzinfo=UTC)},
        sun: {dt.datetime(2024, 3, 11, 5, 0, tzinfo=UTC)},
        mon: {dt.datetime(2024, 3, 12, 5, 0, tzinfo=UTC)},
    }
    coverage = {d: {r[COVERAGE] for r in read_rows(root, COMPANY, d).values()} for d in TARGET.days()}
    assert coverage == {fri: {26}, sat: {27}, sun: {27}, mon: {27}}


def test_partition_schema_is_the_view_spec(root: DataRoot, settings: Settings) -> None:
    build_features(root, TARGET, settings)
    for view in VIEWS:
        for day in TARGET.days():
            (file,) = root.parquet_files(root.partition_path(FEATURES_LAYER, view.dataset, day))
            assert pq.read_schema(file).remove_metadata() == view.schema(), (view.name, day)
        expected = [view.entity, EVENT_TIMESTAMP]
        expected += [f"{a}_{w}d" for w in WINDOWS for a in AGGREGATES] + [COVERAGE]
        assert view.schema().names == expected


def test_manifests_record_the_window_inputs_and_gaps(root: DataRoot, settings: Settings) -> None:
    build_features(root, TARGET, settings)
    fri = TARGET.start
    for view in VIEWS:
        manifest = root.read_manifest(root.partition_path(FEATURES_LAYER, view.dataset, fri))
        window = [fri - dt.timedelta(days=i) for i in range(MAX_WINDOW)]
        present = sorted(d for d in window if d not in MISSING)
        assert [i["uri"] for i in manifest.inputs] == [
            root.partition_path("curated", "trips", d) for d in present
        ]
        for record in manifest.inputs:  # the input hashes are the curated files' real hashes
            (name, sha), *_ = record["files"].items()
            assert hashlib.sha256(Path(record["uri"], name).read_bytes()).hexdigest() == sha
        assert manifest.params["missing_window_days"] == ["2024-02-10", "2024-02-20"]
        assert manifest.params["event_timestamp"] == "2024-03-09T06:00:00+00:00"
        rows = root.read_partition(root.partition_path(FEATURES_LAYER, view.dataset, fri)).num_rows
        assert manifest.row_counts == {"rows": rows, "window_days": 26}
        (output,) = manifest.outputs
        assert output["rows"] == rows


def test_a_missing_day_of_the_interval_is_named_and_nothing_is_written(
    root: DataRoot, settings: Settings
) -> None:
    expected = r"no curated trips for 1 day\(s\) of the interval \[2024-02-19, 2024-02-22\): 2024-02-20;"
    with pytest.raises(PartitionError, match=expected):
        build_features(root, Interval(D(2024, 2, 19), D(2024, 2, 22)), settings)
    for view in VIEWS:
        assert root.list_partitions(FEATURES_LAYER, view.dataset) == []


def test_n_days_at_once_equal_n_one_day_builds_and_reruns(root: DataRoot, settings: Settings) -> None:
    build_features(root, TARGET, settings)
    at_once = partition_files(root, TARGET.days())
    assert len(at_once) == 2 * len(VIEWS) * TARGET.n_days  # a parquet file and a manifest each
    build_features(root, TARGET, settings)
    assert partition_files(root, TARGET.days()) == at_once, "a re-run changed bytes"
    for day in TARGET.days():
        build_features(root, TARGET.single(day), settings)
    one_by_one = partition_files(root, TARGET.days())
    assert one_by_one.keys() == at_once.keys()
    changed = sorted(k for k in at_once if one_by_one[k] != at_once[k])
    assert changed == [], f"one-day builds differ from the 4-day build: {changed}"


def test_an_interval_with_no_active_entity_writes_empty_typed_partitions(tmp_path: Path) -> None:
    data = DataRoot(str(tmp_path / "data"))
    day = D(2024, 6, 1)
    write_curated(data, day, RAW_SCHEMA.empty_table())
    summary = build_features(data, Interval(day, day + dt.timedelta(days=1)), Settings(data_root=data.base))
    assert summary["rows"] == 0 and summary["input_trips"] == 0
    assert len(summary["missing_window_days"]) == MAX_WINDOW - 1
    for view in VIEWS:
        table = data.read_partition(data.partition_path(FEATURES_LAYER, view.dataset, day))
        assert table.num_rows == 0
        assert table.schema.remove_metadata() == view.schema()


def test_autumn_dst_day_event_timestamps(tmp_path: Path) -> None:
    """The 25-hour day 2024-11-03: trips in both 01:30s belong to it; its row is stamped 06:00 UTC."""
    data = DataRoot(str(tmp_path / "data"))
    trips = {
        D(2024, 11, 2): [("n1", dt.datetime(2024, 11, 2, 23, 30), 6, "Gamma", 10.0, 2.5, 2.0, 600, CARD)],
        D(2024, 11, 3): [
            ("n2", dt.datetime(2024, 11, 3, 1, 30), 6, "Gamma", 10.0, 0.0, 2.0, 600, CASH),
            ("n3", dt.datetime(2024, 11, 3, 23, 59), 6, "Gamma", 20.0, 5.0, 4.0, 600, CARD),
        ],
        D(2024, 11, 4): [("n4", dt.datetime(2024, 11, 4, 0, 0), 6, "Gamma", 8.0, 0.0, 2.0, 600, CASH)],
    }
    for day, rows in trips.items():
        write_curated(
            data, day, pa.Table.from_pylist([raw_row(t, i) for i, t in enumerate(rows)], RAW_SCHEMA)
        )
    build_features(data, Interval(D(2024, 11, 2), D(2024, 11, 5)), Settings(data_root=data.base))
    got = {
        day: [(r[EVENT_TIMESTAMP], r["trips_1d"], r["trips_7d"]) for r in read_rows(data, AREA, day).values()]
        for day in trips
    }
    assert got == {
        D(2024, 11, 2): [(dt.datetime(2024, 11, 3, 5, 0, tzinfo=UTC), 1, 1)],
        D(2024, 11, 3): [(dt.datetime(2024, 11, 4, 6, 0, tzinfo=UTC), 2, 3)],
        D(2024, 11, 4): [(dt.datetime(2024, 11, 5, 6, 0, tzinfo=UTC), 1, 4)],
    }
