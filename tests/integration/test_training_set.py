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
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ml_tasks.cli import main
from ml_tasks.contract import EVENT_TIMESTAMP, FEATURES_LAYER, LABEL, TRIP_KEY
from ml_tasks.extract import extract
from ml_tasks.features.build import build_features
from ml_tasks.features.spec import FEATURE_SERVICES, VIEWS, ViewSpec
from ml_tasks.features.store import FeatureStoreError, StoreHandle, apply_declarations, open_store
from ml_tasks.features.training_set import build_training_set
from ml_tasks.intervals import Interval
from ml_tasks.publish import publish
from ml_tasks.settings import Settings
from ml_tasks.sources.synthetic import SyntheticSource
from ml_tasks.storage import DataRoot, PartitionError
from ml_tasks.transform import transform
from ml_tasks.validation import validate
from tests.unit.validation.trip_rows import write_raw

UTC = dt.UTC
D = dt.date
SERVICE = "taxi_tips_v1"
SYNTHETIC = Interval(D(2024, 10, 23), D(2024, 10, 30))
HAND = Interval(D(2024, 10, 30), D(2024, 11, 8))
ALL = Interval(SYNTHETIC.start, HAND.end)
FEATURE_DAYS = Interval(SYNTHETIC.start, D(2024, 11, 4))  # no features for 11-04 .. 11-07
TTL = dt.timedelta(days=3)
CARD, CASH = "Credit Card", "Cash"
ALPHA, BETA, GHOST = "PIT Alpha", "PIT Beta", "PIT Ghost"  # companies the synthetic source never uses


def at(day: tuple[int, int], hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, day[0], day[1], hour, minute)


# (trip_id, local start, area, company, fare, tips, payment); 2 miles, 10 minutes each
HAND_TRIPS: list[tuple[Any, ...]] = [
    ("h01", at((10, 30), 9), 8, ALPHA, 10.0, 2.5, CARD),
    ("h02", at((10, 30), 23, 59), 8, ALPHA, 12.0, 0.0, CASH),  # Alpha's first day: no Alpha features yet
    ("h03", at((10, 31), 0), 8, ALPHA, 8.0, 2.0, CARD),  # exactly midnight: sees 10-30's row
    ("h04", at((10, 31), 0, 1), 32, BETA, 14.0, 0.0, CASH),
    ("h05", at((10, 31), 12), 32, ALPHA, 9.0, 3.0, CARD),  # h05-h07: the same entity row three times
    ("h06", at((10, 31), 12), 32, ALPHA, 11.0, 0.0, CASH),
    ("h07", at((10, 31), 12), 32, ALPHA, 7.0, 1.0, CARD),
    ("h08", at((10, 31), 23, 59), 8, ALPHA, 20.0, 5.0, CARD),  # one minute before 10-31's row exists
    ("h09", at((11, 1), 0), 8, ALPHA, 10.0, 0.0, CASH),  # the minute 10-31's row exists
    ("h10", at((11, 1), 10), None, BETA, 10.0, 3.0, CARD),  # no area
    ("h11", at((11, 1), 11), 32, None, 10.0, 0.0, CASH),  # no company
    ("h12", at((11, 1), 12), None, None, 10.0, 0.0, CASH),  # no entity at all
    ("h13", at((11, 2), 23, 59), 8, BETA, 16.0, 4.0, CARD),
    ("h14", at((11, 3), 0, 30), 8, ALPHA, 10.0, 0.0, CASH),  # CDT: 05:30 UTC, after 11-02's row (05:00)
    ("h15", at((11, 3), 1, 30), 8, ALPHA, 10.0, 2.5, CARD),  # ambiguous hour: earliest (CDT) instant
    ("h16", at((11, 3), 23, 59), 8, ALPHA, 10.0, 0.0, CASH),  # CST: 05:59 UTC, before 11-03's row (06:00)
    ("h17", at((11, 4), 0), 8, ALPHA, 10.0, 0.0, CASH),  # 06:00 UTC: 11-03's row, age 0
    ("h18", at((11, 5), 12), 32, BETA, 10.0, 0.0, CASH),  # no features built since 11-03: age 1.25 days
    ("h19", at((11, 5), 13), 32, GHOST, 10.0, 0.0, CASH),  # a company never seen in any feature row
    ("h20", at((11, 6), 23, 59), 8, ALPHA, 10.0, 0.0, CASH),  # age 2 d 23 h 59 min
    ("h21", at((11, 7), 0), 8, ALPHA, 10.0, 0.0, CASH),  # age exactly the ttl: still served
    ("h22", at((11, 7), 0, 15), 8, ALPHA, 10.0, 2.5, CARD),  # ttl + 15 min: expired, nulls
]
# PIT Alpha's trips per local day, from HAND_TRIPS: 10-30: 2, 10-31: 5, 11-01: 1, 11-02: 0, 11-03: 3
EXPECTED_ALPHA_TRIPS_1D = {
    "h02": None, "h03": 2, "h08": 2, "h09": 5, "h14": 0, "h15": 0, "h16": 0, "h17": 3, "h20": 3,
    "h21": 3, "h22": None,
}  # fmt: skip
# what the same trips would see if a feature row stamped after their start leaked in
LEAKED_ALPHA_TRIPS_1D = {"h02": 2, "h08": 5, "h16": 3}


def hand_raw_rows(day: dt.date) -> list[dict[str, Any]]:
    rows = []
    for i, (trip_id, start, area, company, fare, tips, payment) in enumerate(HAND_TRIPS):
        if start.date() != day:
            continue
        rows.append(
            {
                "trip_id": trip_id,
                "taxi_id": f"taxi-{i}",
                "trip_start_timestamp": start,
                "trip_end_timestamp": start + dt.timedelta(minutes=10),
                "trip_seconds": 600,
                "trip_miles": 2.0,
                "pickup_community_area": area,
                "dropoff_community_area": 32,
                "fare": fare,
                "tips": tips,
                "tolls": 0.0,
                "extras": 0.0,
                "trip_total": fare + tips,
                "payment_type": payment,
                "company": company,
                "_source": "hand-built timeline",
                "_source_row": i,
            }
        )
    return rows


@dataclass
class Pipeline:
    """The module's data root, its open store, and the training set of ALL with default settings."""

    root: DataRoot
    settings: Settings
    handle: StoreHandle
    summary: dict[str, Any]
    table: pa.Table


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    base = tmp_path_factory.mktemp("training_set")
    data = base / "data"
    data.mkdir()
    with pytest.MonkeyPatch.context() as mp:  # open_store exports FLYWHEEL_* variables: undo them after
        mp.setenv("FLYWHEEL_DATA_ROOT", str(data))
        mp.setenv("FLYWHEEL_CODE_VERSION", "test")
        mp.delenv("FLYWHEEL_FEAST_DIR", raising=False)
        root = DataRoot(str(data))
        settings = Settings(data_root=str(data))
        # the steps' functions in-process: a CLI subprocess re-imports GX or Feast (~5-10 s per call)
        extract(root, SyntheticSource(trips_per_day=150), SYNTHETIC)
        for day in HAND.days():
            write_raw(root, hand_raw_rows(day), day)
        transform(root, ALL, settings)
        assert validate(root, ALL, settings)["verdict"] == "passed"
        totals = publish(root, ALL, settings)["totals"]
        assert totals["curated"] + totals["quarantined"] == totals["raw"]
        assert totals["quarantined"] < 10  # a few dirty synthetic rows; every hand trip is valid
        build_features(root, FEATURE_DAYS, settings)

        handle = open_store(settings)
        apply_declarations(handle)
        summary = build_training_set(handle, root, ALL, settings, SERVICE)
        table = pq.read_table(Path(summary["uri"]) / "part-00000.parquet")
        yield Pipeline(root, settings, handle, summary, table)


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
def test_every_feature_value_is_the_latest_row_at_or_before_the_trip(pipeline: Pipeline) -> None:
    rows = pipeline.table.to_pylist()
    assert len(rows) == curated_rows(pipeline.root, ALL) > 900
    served = dict.fromkeys((v.name for v in VIEWS), 0)
    for view in VIEWS:
        history = feature_history(pipeline.root, view)
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


def test_hand_trips_around_midnight_see_yesterday_not_today(pipeline: Pipeline) -> None:
    trips = by_trip(pipeline.table)
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


def test_ttl_and_missing_entities_give_nulls(pipeline: Pipeline) -> None:
    trips = by_trip(pipeline.table)
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
    first = [r for r in pipeline.table.to_pylist() if r["trip_date"] == SYNTHETIC.start]
    assert first and all(r[area] is None and r[company] is None for r in first)


def test_rows_in_equal_rows_out_with_duplicates_and_null_keys(pipeline: Pipeline) -> None:
    summary, table = pipeline.summary, pipeline.table
    n = curated_rows(pipeline.root, ALL)
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


def test_missing_features_are_counted_and_equal_the_nulls(pipeline: Pipeline) -> None:
    summary, table = pipeline.summary, pipeline.table
    manifest = pipeline.root.read_manifest(summary["uri"])
    for view in VIEWS:
        columns = [c for c in table.column_names if c.startswith(f"{view.name}__")]
        assert len(columns) == len(view.feature_columns())
        all_null = [all(r[c] is None for c in columns) for r in table.select(columns).to_pylist()]
        # trips_28d is never null in a feature row: its nulls are exactly the rows without features
        assert summary["rows_without_features"][view.name] == sum(all_null)
        assert sum(all_null) == table[f"{view.name}__trips_28d"].null_count > 0
    assert manifest.params["rows_without_features"] == summary["rows_without_features"]
    assert manifest.params["null_counts"] == {c: table[c].null_count for c in table.column_names if "__" in c}


def test_manifest_records_service_views_inputs_counts_and_label_rate(pipeline: Pipeline) -> None:
    summary, table, root = pipeline.summary, pipeline.table, pipeline.root
    manifest = root.read_manifest(summary["uri"])
    assert manifest.step == "training-set"
    assert manifest.params["feature_service"] == SERVICE == summary["feature_service"]
    views = manifest.params["feature_views"]
    assert sorted(views) == sorted(FEATURE_SERVICES[SERVICE])
    for record in views.values():
        assert len(record["spec_sha256"]) == 16 and int(record["spec_sha256"], 16) >= 0
        assert record["ttl_seconds"] == TTL.total_seconds()
    assert views["pickup_area_stats"]["spec_sha256"] != views["company_stats"]["spec_sha256"]
    curated = [i for i in manifest.inputs if "/curated/trips/" in i["uri"]]
    assert [i["uri"] for i in curated] == [root.partition_path("curated", "trips", d) for d in ALL.days()]
    for record in manifest.inputs:  # every input hash is the hash of the file there now
        for name, sha in record["files"].items():
            assert hashlib.sha256(Path(record["uri"], name).read_bytes()).hexdigest() == sha, record["uri"]
    featured = {i["uri"] for i in manifest.inputs} - {i["uri"] for i in curated}
    assert featured == {
        root.partition_path(FEATURES_LAYER, v.dataset, d) for v in VIEWS for d in FEATURE_DAYS.days()
    }
    labels = table[LABEL]
    positives = int(pc.sum(labels.cast(pa.int64())).as_py())
    assert manifest.row_counts == {
        "entity_rows": table.num_rows,
        "rows": table.num_rows,
        "labelled": table.num_rows - labels.null_count,
        "positives": positives,
    }
    assert manifest.params["label_rate"] == positives / (table.num_rows - labels.null_count)
    assert summary["label_rate"] == round(manifest.params["label_rate"], 6)
    (output,) = manifest.outputs
    assert output["rows"] == table.num_rows
    assert hashlib.sha256(output["sha256"].encode()).hexdigest() == summary["sha256"]


def test_view_partitions_match_the_registered_feast_views(pipeline: Pipeline) -> None:
    from feast.types import Float64, Int64, String

    feast_types = {pa.int64(): Int64, pa.float64(): Float64, pa.string(): String}
    store = pipeline.handle.store
    for view in VIEWS:
        fv = store.get_feature_view(view.name)
        assert [(f.name, f.dtype) for f in fv.features] == [
            (name, feast_types[typ]) for name, typ in view.feature_columns().items()
        ]
        assert [(e.name, e.dtype) for e in fv.entity_columns] == [(view.entity, feast_types[view.key_type])]
        assert fv.ttl == TTL
        for key in pipeline.root.list_partitions(FEATURES_LAYER, view.dataset):
            (file,) = pipeline.root.parquet_files(
                pipeline.root.partition_path(FEATURES_LAYER, view.dataset, key)
            )
            assert pq.read_schema(file).remove_metadata() == view.schema()
    service = store.get_feature_service(SERVICE)
    assert [p.name for p in service.feature_view_projections] == list(FEATURE_SERVICES[SERVICE])


def test_rerun_gives_the_same_sha256(pipeline: Pipeline) -> None:
    again = build_training_set(pipeline.handle, pipeline.root, ALL, pipeline.settings, SERVICE, name="rerun")
    assert again["sha256"] == pipeline.summary["sha256"]
    assert again["rows"] == pipeline.summary["rows"]
    assert again["rows_without_features"] == pipeline.summary["rows_without_features"]
    assert pq.read_table(Path(again["uri"]) / "part-00000.parquet").equals(pipeline.table)


@pytest.fixture(scope="module")
def chunked(pipeline: Pipeline) -> dict[str, Any]:
    """The same window joined in chunks of whole days of at most ~300 rows."""
    settings = pipeline.settings.model_copy(update={"training_set_chunk_rows": 300})
    return build_training_set(pipeline.handle, pipeline.root, ALL, settings, SERVICE, name="chunked")


def test_chunked_join_gives_the_same_rows_and_values(pipeline: Pipeline, chunked: dict[str, Any]) -> None:
    table = pq.read_table(Path(chunked["uri"]) / "part-00000.parquet")
    assert table.equals(pipeline.table)
    assert chunked["rows_without_features"] == pipeline.summary["rows_without_features"]
    assert chunked["label_rate"] == pipeline.summary["label_rate"]


def test_chunked_join_gives_the_same_bytes(pipeline: Pipeline, chunked: dict[str, Any]) -> None:
    one = (Path(pipeline.summary["uri"]) / "part-00000.parquet").read_bytes()
    many = (Path(chunked["uri"]) / "part-00000.parquet").read_bytes()
    assert chunked["sha256"] == pipeline.summary["sha256"]
    assert many == one


def test_unknown_feature_service_names_the_registered_ones(pipeline: Pipeline) -> None:
    with pytest.raises(
        FeatureStoreError, match=r"'taxi_tips_v9' does not exist; registered: \['taxi_tips_v1'\]"
    ):
        build_training_set(pipeline.handle, pipeline.root, ALL, pipeline.settings, "taxi_tips_v9")


def test_out_of_date_registry_stops_the_cli_with_the_apply_hint(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registry was applied for this data root; another root moves the sources: exit 1, say apply.

    The console-script entry point runs in-process (a subprocess would import Feast again: ~15 s).
    """
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    feast_dir = str(Path(pipeline.settings.resolved_data_root()) / "feast")
    # setenv first so that monkeypatch restores what open_store exports
    monkeypatch.setenv("FLYWHEEL_FEAST_DIR", feast_dir)
    monkeypatch.setenv("FLYWHEEL_DATA_ROOT", str(moved))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["training-set", "--start", HAND.start.isoformat(), "--data-root", str(moved)])
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no JSON summary: the step did not run
    assert "ml-tasks: error: the Feast registry" in captured.err
    assert "run `ml-tasks feature-apply`" in captured.err
    assert "update feature view pickup_area_stats" in captured.err
    assert not (moved / "training_sets").exists()


def test_an_empty_day_gives_an_empty_snapshot_and_a_missing_day_is_named(pipeline: Pipeline) -> None:
    empty_day = ALL.end + dt.timedelta(days=3)
    interval = Interval(empty_day, empty_day + dt.timedelta(days=1))
    settings = pipeline.settings.model_copy(update={"allow_empty": True})
    write_raw(pipeline.root, [], empty_day)
    transform(pipeline.root, interval, settings)
    assert validate(pipeline.root, interval, settings)["verdict"] == "passed"
    assert publish(pipeline.root, interval, settings)["totals"]["curated"] == 0

    summary = build_training_set(pipeline.handle, pipeline.root, interval, settings, SERVICE)
    assert summary["rows"] == summary["entity_rows"] == 0 and summary["label_rate"] is None
    table = pq.read_table(Path(summary["uri"]) / "part-00000.parquet")
    assert table.num_rows == 0
    assert set(pipeline.table.column_names) <= set(table.column_names)

    missing = Interval(empty_day, empty_day + dt.timedelta(days=2))
    with pytest.raises(PartitionError, match=f"{empty_day + dt.timedelta(days=1)}.*run taxi_ingest"):
        build_training_set(pipeline.handle, pipeline.root, missing, settings, SERVICE)
