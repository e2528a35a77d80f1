"""Real Chicago trips: Flywheel's training set equals an independent DuckDB ASOF-join reference.

A slice of the TFX sample (``tfx_simple_data.csv``, real trips; timestamps on 15-minute steps, so
many trips start exactly at local midnight, when the previous day's feature row appears) goes through
extract / transform / validate / publish and build-features; Flywheel's training set (Feast
``get_historical_features``, DuckDB offline store) is then compared, row by row and value by value,
with a point-in-time join written here in SQL from the definition alone:

    for each curated trip of the window and each view: the view's feature row of the same entity with
    the latest event_timestamp <= trip_start_ts_utc, provided event_timestamp >= trip start - ttl;
    otherwise nulls (also for a null entity key).

The slice defaults to 2014-10-01 .. 2014-12-01 (~850 trips, the autumn DST change inside); set
``FLYWHEEL_PIT_REAL_SLICE=2013-01-01/2017-01-01`` to run the whole sample (~15,000 trips, minutes).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_tasks.contract import EVENT_TIMESTAMP, FEATURES_LAYER, TRIP_KEY
from ml_tasks.extract import extract
from ml_tasks.features.build import build_features
from ml_tasks.features.spec import FEATURE_SERVICES, VIEWS_BY_NAME
from ml_tasks.features.store import apply_declarations, open_store
from ml_tasks.features.training_set import build_training_set
from ml_tasks.intervals import Interval
from ml_tasks.publish import publish
from ml_tasks.settings import Settings
from ml_tasks.sources import get_source
from ml_tasks.storage import DataRoot
from ml_tasks.transform import transform
from ml_tasks.validation import validate

SERVICE = "taxi_tips_v1"
_SLICE = os.environ.get("FLYWHEEL_PIT_REAL_SLICE", "2014-10-01/2014-12-01").split("/")
INGESTED = Interval(dt.date.fromisoformat(_SLICE[0]), dt.date.fromisoformat(_SLICE[1]))
# features for every ingested day; the training window starts a week later so most trips have history
WINDOW = Interval(INGESTED.start + dt.timedelta(days=7), INGESTED.end)


@dataclass
class RealRun:
    root: DataRoot
    summary: dict[str, Any]
    training: pa.Table
    ttl_seconds: dict[str, int]


@pytest.fixture(scope="module")
def real_run(chicago_samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRun]:
    data = tmp_path_factory.mktemp("pit_real") / "data"
    data.mkdir()
    with pytest.MonkeyPatch.context() as mp:  # open_store exports FLYWHEEL_* variables: undo them after
        mp.setenv("FLYWHEEL_DATA_ROOT", str(data))
        mp.setenv("FLYWHEEL_CODE_VERSION", "test")
        mp.delenv("FLYWHEEL_FEAST_DIR", raising=False)
        # the sample has gaps, zero fares and missing seconds: keep every day, quarantine what fails
        settings = Settings(data_root=str(data), allow_empty=True, max_reject_rate=1.0)
        root = DataRoot(str(data))
        source = get_source(
            "file", settings, {"uri": [str(chicago_samples / "tfx_simple_data.csv")], "mapping": "tfx"}
        )
        extract(root, source, INGESTED)
        transform(root, INGESTED, settings)
        assert validate(root, INGESTED, settings)["verdict"] == "passed"
        totals = publish(root, INGESTED, settings)["totals"]
        assert totals["curated"] + totals["quarantined"] == totals["raw"] > 0
        build_features(root, INGESTED, settings)
        handle = open_store(settings)
        apply_declarations(handle)
        summary = build_training_set(handle, root, WINDOW, settings, SERVICE)
        training = pq.read_table(Path(summary["uri"]) / "part-00000.parquet")
        ttl = {}
        for name in FEATURE_SERVICES[SERVICE]:
            fv_ttl = handle.store.get_feature_view(name).ttl
            assert fv_ttl is not None
            ttl[name] = int(fv_ttl.total_seconds())
        yield RealRun(root, summary, training, ttl)


def reference(run: RealRun) -> pa.Table:
    """The point-in-time join in plain DuckDB SQL: curated trips ASOF LEFT JOIN each view's partitions."""
    root = run.root
    curated = [f"{root.partition_path('curated', 'trips', d)}/*.parquet" for d in WINDOW.days()]
    selects, joins = [], []
    for i, name in enumerate(FEATURE_SERVICES[SERVICE]):
        view = VIEWS_BY_NAME[name]
        alias = f"v{i}"
        # the features/<view>/dt=* partitions as written: no Flywheel or Feast code reads them here
        source = f"read_parquet('{root.dataset_path(FEATURES_LAYER, view.dataset)}/dt=*/*.parquet',"
        source += " hive_partitioning = false)"
        joins.append(
            f'ASOF LEFT JOIN {source} AS {alias} ON t."{view.entity}" = {alias}."{view.entity}"'
            f" AND t.ts >= {alias}.{EVENT_TIMESTAMP}"
        )
        # ASOF picks the latest row at or before the trip; the ttl then drops a row that is too old
        fresh = f"{alias}.{EVENT_TIMESTAMP} >= t.ts - to_seconds({run.ttl_seconds[name]})"
        for column in view.feature_columns():
            selects.append(f'CASE WHEN {fresh} THEN {alias}."{column}" END AS "{name}__{column}"')
    files = ", ".join(f"'{p}'" for p in curated)
    sql = f"""
        SELECT t.trip_key AS {TRIP_KEY}, t.ts AS {EVENT_TIMESTAMP}, {", ".join(selects)}
        FROM (
            SELECT trip_key, trip_start_ts_utc AS ts, pickup_community_area, company
            FROM read_parquet([{files}], hive_partitioning = false)
        ) AS t
        {" ".join(joins)}
        ORDER BY {EVENT_TIMESTAMP}, {TRIP_KEY}
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")  # interval arithmetic on instants, not local calendar days
        return con.execute(sql).to_arrow_table()
    finally:
        con.close()


def test_training_set_equals_the_asof_join_reference(real_run: RealRun) -> None:
    expected = reference(real_run)
    got = real_run.training
    # same rows: the same trips, each once, in the same (timestamp, key) order
    assert got.num_rows == expected.num_rows == real_run.summary["entity_rows"] > 500
    assert got[TRIP_KEY].to_pylist() == expected[TRIP_KEY].to_pylist()
    assert len(set(got[TRIP_KEY].to_pylist())) == got.num_rows
    assert got[EVENT_TIMESTAMP].to_pylist() == expected[EVENT_TIMESTAMP].to_pylist()
    # same values: every feature column, exact equality, nulls in the same places
    feature_columns = [c for c in expected.column_names if "__" in c]
    assert [c for c in got.column_names if "__" in c] == feature_columns
    differing = {}
    for column in feature_columns:
        a, b = got[column].to_pylist(), expected[column].to_pylist()
        if a != b:
            differing[column] = sum(x != y for x, y in zip(a, b, strict=True))
    assert differing == {}, f"columns differing from the reference (rows): {differing}"
    # the comparison is not vacuous: most trips have features, some do not
    for name in FEATURE_SERVICES[SERVICE]:
        served = got.num_rows - got[f"{name}__trips_28d"].null_count
        assert served > 0.5 * got.num_rows, name
        assert real_run.summary["rows_without_features"][name] == got[f"{name}__trips_28d"].null_count
    print(
        f"\nreal PIT check {WINDOW}: {got.num_rows} trips, {len(feature_columns)} feature columns,"
        f" rows without features {real_run.summary['rows_without_features']},"
        f" training set {real_run.summary['seconds']} s"
    )


def test_trips_at_midnight_see_the_previous_day(real_run: RealRun) -> None:
    """Trips that start exactly when a feature row appears get that row (at-or-before is inclusive)."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("training", real_run.training)
        features = real_run.root.dataset_path(FEATURES_LAYER, "pickup_area_stats")
        row = con.execute(
            f"""
            SELECT count(*), count(*) FILTER (WHERE t.pickup_area_stats__trips_1d = f.trips_1d)
            FROM training t
            JOIN read_parquet('{features}/dt=*/*.parquet', hive_partitioning = false) f
              ON f.pickup_community_area = t.pickup_community_area
             AND f.{EVENT_TIMESTAMP} = t.{EVENT_TIMESTAMP}
            """
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    at_midnight, same = row
    assert at_midnight > 0, "the slice has trips starting exactly at a feature row's timestamp"
    assert same == at_midnight
