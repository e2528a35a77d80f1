"""Point-in-time training sets through real Feast (DuckDB offline store) on a hand-built timeline.

One data root for the module: a week of synthetic trips (2024-10-23 .. 10-29) and nine days of
hand-written trips (10-30 .. 11-07, across the autumn DST change) go through extract / transform /
validate / publish (the steps' functions, in-process: Feast and GX are imported once); build-features
covers 10-23 .. 11-03 only, so the last days test the views' 3-day ttl; the declarations are applied
once.

The PIT proof: for every training row and every view, the features equal the view's feature row with
the latest event timestamp at or before the trip's start and no older than the ttl, found in this file
from the feature partitions; hand-picked trips right before, at and after local midnight pin the
values a leak (a feature row stamped after the trip) would change.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import EVENT_TIMESTAMP, FEATURES_LAYER, TRIP_KEY
from ml_tasks.features.spec import VIEWS, ViewSpec
from ml_tasks.intervals import Interval
from ml_tasks.storage import DataRoot
from tests.integration._training_set import ALL, HAND_TRIPS, SYNTHETIC, TTL, Pipeline

UTC = dt.UTC


# PIT Alpha's trips per local day, from HAND_TRIPS: 10-30: 2, 10-31: 5, 11-01: 1, 11-02: 0, 11-03: 3
EXPECTED_ALPHA_TRIPS_1D = {
    "h02": None, "h03": 2, "h08": 2, "h09": 5, "h14": 0, "h15": 0, "h16": 0, "h17": 3, "h20": 3,
    "h21": 3, "h22": None,
}  # fmt: skip
# what the same trips would see if a feature row stamped after their start leaked in
LEAKED_ALPHA_TRIPS_1D = {"h02": 2, "h08": 5, "h16": 3}


# -- the reference: feature rows read straight from the partitions --------------------------------
def feature_history(root: DataRoot, view: ViewSpec) -> dict[Any, list[dict[str, Any]]]:
    """Entity key -> its feature rows, oldest first, from every partition of the view."""
    history: dict[Any, list[dict[str, Any]]] = {}
    for key in root.list_partitions(FEATURES_LAYER, view.dataset):
        for row in root.read_partition(root.partition_path(FEATURES_LAYER, view.dataset, key)).to_pylist():
            history.setdefault(row[view.entity], []).append(row)
    for rows in history.values():
        rows.sort(key=lambda r: r[EVENT_TIMESTAMP])
    return history


def point_in_time_row(rows: list[dict[str, Any]], start: dt.datetime) -> dict[str, Any] | None:
    """The row with the latest event timestamp <= start, if it is no older than the ttl."""
    seen = [r for r in rows if r[EVENT_TIMESTAMP] <= start]
    if not seen or seen[-1][EVENT_TIMESTAMP] < start - TTL:
        return None
    return seen[-1]


def curated_rows(root: DataRoot, interval: Interval) -> int:
    return sum(
        root.read_partition(root.partition_path("curated", "trips", d)).num_rows for d in interval.days()
    )


def by_trip(table: pa.Table) -> dict[str, dict[str, Any]]:
    return {r[TRIP_KEY]: r for r in table.to_pylist()}


# -- tests ---------------------------------------------------------------------------------------------
def test_every_feature_value_is_the_latest_row_at_or_before_the_trip(training_set_pipeline: Pipeline) -> None:
    rows = training_set_pipeline.table.to_pylist()
    assert len(rows) == curated_rows(training_set_pipeline.root, ALL) > 900
    served = dict.fromkeys((v.name for v in VIEWS), 0)
    for view in VIEWS:
        history = feature_history(training_set_pipeline.root, view)
        names = [n for n in view.schema().names if n not in (view.entity, EVENT_TIMESTAMP)]
        for row in rows:
            start = row[EVENT_TIMESTAMP]
            expected = point_in_time_row(history.get(row[view.entity], []), start)
            got = {n: row[f"{view.name}__{n}"] for n in names}
            if expected is None:
                assert set(got.values()) == {None}, (view.name, row[TRIP_KEY])
                continue
            served[view.name] += 1
            assert expected[EVENT_TIMESTAMP] <= start  # never a row stamped after the trip started
            assert got == {n: expected[n] for n in names}, (view.name, row[TRIP_KEY], start)
    # most trips get features: the proof is not vacuous
    # (a third of the synthetic trips have no company, as in the real data)
    assert served["pickup_area_stats"] > 0.8 * len(rows) and served["company_stats"] > 0.5 * len(rows), served


def test_hand_trips_around_midnight_see_yesterday_not_today(training_set_pipeline: Pipeline) -> None:
    trips = by_trip(training_set_pipeline.table)
    got = {k: trips[k]["company_stats__trips_1d"] for k in EXPECTED_ALPHA_TRIPS_1D}
    assert got == EXPECTED_ALPHA_TRIPS_1D
    for key, leaked in LEAKED_ALPHA_TRIPS_1D.items():
        assert got[key] != leaked, f"{key} sees a feature row stamped after its start"
    # Alpha's trips in the 7 days before 11-03 00:30 (CDT): 2 + 5 + 1 + 0
    assert trips["h14"]["company_stats__trips_7d"] == 8
    assert trips["h17"]["company_stats__trips_7d"] == 11
    # h08 at 23:59 sees 10-30's mean fare (10 and 12), not 10-31's
    assert trips["h08"]["company_stats__fare_mean_1d"] == 11.0
    assert trips["h09"]["company_stats__fare_mean_1d"] == (8 + 9 + 11 + 7 + 20) / 5
    # the entity timestamp is the trip's UTC start (DST both ways)
    assert trips["h14"][EVENT_TIMESTAMP] == dt.datetime(2024, 11, 3, 5, 30, tzinfo=UTC)
    assert trips["h15"][EVENT_TIMESTAMP] == dt.datetime(2024, 11, 3, 6, 30, tzinfo=UTC)
    assert trips["h16"][EVENT_TIMESTAMP] == dt.datetime(2024, 11, 4, 5, 59, tzinfo=UTC)


def test_ttl_and_missing_entities_give_nulls(training_set_pipeline: Pipeline) -> None:
    trips = by_trip(training_set_pipeline.table)
    area, company = "pickup_area_stats__trips_28d", "company_stats__trips_28d"
    assert trips["h21"][company] is not None and trips["h21"][area] is not None  # age == ttl
    assert trips["h22"][company] is None and trips["h22"][area] is None  # age > ttl
    assert trips["h18"]["company_stats__trips_1d"] == 0  # Beta's 11-03 row (Beta had no trip on 11-03)
    assert trips["h19"][company] is None and trips["h19"][area] is not None  # Ghost: never featured
    assert trips["h10"][area] is None and trips["h10"][company] is not None  # no area
    assert trips["h11"][company] is None and trips["h11"][area] is not None  # no company
    assert trips["h12"][area] is None and trips["h12"][company] is None
    assert trips["h04"][company] is None  # Beta's first trip: no Beta row before it
    # the first synthetic day has no feature row before it: nothing is served
    first = [r for r in training_set_pipeline.table.to_pylist() if r["trip_date"] == SYNTHETIC.start]
    assert first and all(r[area] is None and r[company] is None for r in first)


def test_rows_in_equal_rows_out_with_duplicates_and_null_keys(training_set_pipeline: Pipeline) -> None:
    summary, table = training_set_pipeline.summary, training_set_pipeline.table
    n = curated_rows(training_set_pipeline.root, ALL)
    assert summary["entity_rows"] == summary["rows"] == table.num_rows == n
    keys = table[TRIP_KEY].to_pylist()
    assert len(set(keys)) == n  # every trip once
    assert {f"h{i:02d}" for i in range(1, len(HAND_TRIPS) + 1)} <= set(keys)
    trips = by_trip(table)
    same = [trips[k] for k in ("h05", "h06", "h07")]
    assert len({(r["pickup_community_area"], r["company"], r[EVENT_TIMESTAMP]) for r in same}) == 1
    feature_names = [c for c in table.column_names if "__" in c]
    assert all({c: r[c] for c in feature_names} == {c: same[0][c] for c in feature_names} for r in same)
    assert [trips[k]["fare"] for k in ("h05", "h06", "h07")] == [9.0, 11.0, 7.0]  # each its own trip
    # rows come out ordered by (entity timestamp, trip key)
    order = pc.sort_indices(table, sort_keys=[(EVENT_TIMESTAMP, "ascending"), (TRIP_KEY, "ascending")])
    assert order.to_pylist() == list(range(n))


def test_missing_features_are_counted_and_equal_the_nulls(training_set_pipeline: Pipeline) -> None:
    summary, table = training_set_pipeline.summary, training_set_pipeline.table
    manifest = training_set_pipeline.root.read_manifest(summary["uri"])
    for view in VIEWS:
        columns = [c for c in table.column_names if c.startswith(f"{view.name}__")]
        assert len(columns) == len(view.feature_columns())
        all_null = [all(r[c] is None for c in columns) for r in table.select(columns).to_pylist()]
        # trips_28d is never null in a feature row: its nulls are exactly the rows without features
        assert summary["rows_without_features"][view.name] == sum(all_null)
        assert sum(all_null) == table[f"{view.name}__trips_28d"].null_count > 0
    assert manifest.params["rows_without_features"] == summary["rows_without_features"]
    assert manifest.params["null_counts"] == {c: table[c].null_count for c in table.column_names if "__" in c}
