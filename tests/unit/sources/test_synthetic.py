"""The synthetic source: determinism, schema, dirty rows, drift, volume, options, and the CLI path."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ml_tasks.intervals import Interval
from ml_tasks.schema import PAYMENT_TYPES, RAW_SCHEMA
from ml_tasks.settings import Settings
from ml_tasks.sources import Source, SourceError, get_source
from ml_tasks.sources.synthetic import CHUNK_ROWS, GENERATOR_VERSION, SOURCE_TAG, SyntheticSource
from ml_tasks.sources.synthetic_calibration import DIRTY_KINDS, DRIFT, WEEKDAY_FACTORS
from tests.conftest import run_cli

D = dt.date(2024, 5, 1)  # a Wednesday


def day(d: dt.date) -> Interval:
    return Interval(d, d + dt.timedelta(days=1))


def read_all(source: SyntheticSource, interval: Interval) -> pa.Table:
    return pa.concat_tables([b.table for b in source.read(interval)])


def query(table: pa.Table, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    try:
        con.register("t", table)
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def dirty_day() -> tuple[pa.Table, dict[str, int]]:
    """One day with a high dirty rate (2%) so every kind shows up in numbers worth testing."""
    batches = list(SyntheticSource(trips_per_day=60_000, dirty_rate=0.02).read(day(D)))
    return pa.concat_tables([b.table for b in batches]), batches[-1].notes["synthetic"]["dirty_rows"]


# -- protocol, schema, identifiers ------------------------------------------------------------------
def test_is_a_source_with_server_side_filter_and_raw_schema() -> None:
    source = SyntheticSource(trips_per_day=500)
    assert isinstance(source, Source)
    assert source.name == "synthetic" and source.server_side_filter is True
    table = read_all(source, day(D))
    assert table.schema.equals(RAW_SCHEMA, check_metadata=True)
    assert table.num_rows == source.day_volume(D)
    assert pc.all(pc.equal(table["_source"], SOURCE_TAG)).as_py()
    assert table["_source_row"].to_pylist() == list(range(table.num_rows))
    assert table["_parse_errors"].null_count == table.num_rows


def test_ids_look_like_the_portal_and_are_unique_across_days() -> None:
    source = SyntheticSource(trips_per_day=5_000, dirty_rate=0.0)
    table = read_all(source, Interval(D, D + dt.timedelta(days=3)))
    trip_ids = table["trip_id"].to_pylist()
    assert all(re.fullmatch(r"[0-9a-f]{40}", t) for t in trip_ids)
    assert len(set(trip_ids)) == table.num_rows  # no dirty rows: no duplicates, even across days
    taxi_ids = table["taxi_id"].to_pylist()
    assert all(re.fullmatch(r"[0-9a-f]{128}", t) for t in taxi_ids)
    assert 2_000 < len(set(taxi_ids)) < 7_000  # a medallion pool, most of it active
    # a medallion always drives for the same company
    per_taxi = query(table, "select taxi_id, count(distinct coalesce(company, '<none>')) n from t group by 1")
    assert max(n for _, n in per_taxi) == 1


# -- determinism -------------------------------------------------------------------------------------
def test_same_day_twice_gives_identical_tables() -> None:
    first = read_all(SyntheticSource(trips_per_day=3_000, seed=7), day(D))
    again = read_all(SyntheticSource(trips_per_day=3_000, seed=7), day(D))
    assert first.num_rows > 0 and first.equals(again)


def test_an_interval_is_the_concatenation_of_its_days() -> None:
    source = SyntheticSource(trips_per_day=4_000, dirty_rate=0.01)
    three = read_all(source, Interval(D, D + dt.timedelta(days=3)))
    singles = [read_all(source, day(D + dt.timedelta(days=k))) for k in range(3)]
    assert three.num_rows == sum(t.num_rows for t in singles)
    assert three.equals(pa.concat_tables(singles))


def test_seed_and_date_change_the_rows() -> None:
    a = read_all(SyntheticSource(trips_per_day=1_000, seed=1), day(D))
    b = read_all(SyntheticSource(trips_per_day=1_000, seed=2), day(D))
    c = read_all(SyntheticSource(trips_per_day=1_000, seed=1), day(D + dt.timedelta(days=7)))
    assert not set(a["trip_id"].to_pylist()) & set(b["trip_id"].to_pylist())
    assert not set(a["trip_id"].to_pylist()) & set(c["trip_id"].to_pylist())
    assert a["fare"].to_pylist() != b["fare"].to_pylist()


def test_a_day_larger_than_a_chunk_is_split_sorted_and_numbered() -> None:
    source = SyntheticSource(trips_per_day=300_000, dirty_rate=0.0)
    batches = list(source.read(day(D)))
    assert len(batches) == 2 and batches[0].table.num_rows == CHUNK_ROWS
    assert [bool(b.notes) for b in batches] == [False, True]  # day totals ride on the last batch
    table = pa.concat_tables([b.table for b in batches])
    assert table.num_rows == source.day_volume(D) == batches[-1].notes["synthetic"]["rows"]
    assert table["_source_row"].to_pylist() == list(range(table.num_rows))
    starts = table["trip_start_timestamp"]
    assert pc.all(pc.greater_equal(starts.slice(1), starts.slice(0, len(starts) - 1))).as_py()


# -- clean rows: time, money --------------------------------------------------------------------------
def test_clean_rows_are_consistent() -> None:
    table = read_all(SyntheticSource(trips_per_day=20_000, dirty_rate=0.0), day(D))
    (row,) = query(
        table,
        """select count(*),
             count(*) filter (where trip_start_timestamp::date <> DATE '2024-05-01'),
             count(*) filter (where epoch(trip_start_timestamp)::bigint % 900 <> 0
                                 or epoch(trip_end_timestamp)::bigint % 900 <> 0),
             count(*) filter (where trip_end_timestamp < trip_start_timestamp),
             count(*) filter (where epoch(trip_end_timestamp) - epoch(trip_start_timestamp)
                                    not between trip_seconds - 900 and trip_seconds + 900),
             count(*) filter (where abs(trip_total - (fare + tips + tolls + extras)) > 0.005),
             count(*) filter (where fare < 0 or fare > 1000),
             count(*) filter (where pickup_community_area is null),
             count(*) filter (where pickup_community_area not between 1 and 77
                                 or dropoff_community_area not between 1 and 77),
             count(*) filter (where trip_seconds % 60 <> 0),
             count(*) filter (where dropoff_community_area is null and dropoff_centroid_latitude is not null),
             count(*) filter (where pickup_census_tract is not null
                                 and substr(pickup_census_tract, 1, 5) <> '17031'),
             count(*) filter (where trip_seconds = 0 and trip_miles > 0)
           from t""",
    )
    n, other_day, unrounded, end_before, bad_duration, bad_total, absurd, no_area, bad_area, *rest = row
    bad_minutes, centroid_without_area, bad_tract, zero_s_pos_miles = rest
    assert n == pytest.approx(20_000 * WEEKDAY_FACTORS[2], rel=0.1)
    assert (other_day, unrounded, end_before, bad_duration, bad_total) == (0, 0, 0, 0, 0)
    assert (absurd, no_area, bad_area, bad_minutes, centroid_without_area, bad_tract) == (0, 0, 0, 0, 0, 0)
    # a few cancelled trips keep their miles, as in the real sample (0.28% there)
    assert zero_s_pos_miles < 0.005 * n
    payments = {p for (p,) in query(table, "select distinct payment_type from t")}
    assert payments <= set(PAYMENT_TYPES) and {"Cash", "Credit Card"} <= payments


# -- dirty rows ----------------------------------------------------------------------------------------
def test_dirty_kinds_are_injected_at_the_configured_rate(dirty_day: tuple[pa.Table, dict[str, int]]) -> None:
    table, counts = dirty_day
    n = table.num_rows
    assert set(counts) == set(DIRTY_KINDS)
    expected = n * 0.02 / len(DIRTY_KINDS)  # ~166 per kind; binomial sd ~13
    for kind, count in counts.items():
        assert expected * 0.6 < count < expected * 1.4, (kind, count, expected)
    (row,) = query(
        table,
        f"""select count(*) filter (where fare > 1000 or fare < 0),
             count(*) filter (where trip_end_timestamp < trip_start_timestamp),
             count(*) filter (where payment_type not in ({", ".join(repr(p) for p in PAYMENT_TYPES)})),
             count(*) filter (where pickup_community_area is null),
             count(*) - count(distinct trip_id),
             count(*) filter (where trip_start_timestamp >= TIMESTAMP '2024-05-02'),
             count(*) filter (where trip_seconds = 0 and trip_miles > 0)
           from t""",
    )
    absurd, end_before, unknown_payment, no_area, repeated, next_day, zero_seconds = row
    # a duplicate copies every column, so a copied dirty row is counted by both kinds: allow for it
    slack = counts["duplicate"] * 0.1
    assert counts["absurd_fare"] <= absurd <= counts["absurd_fare"] + slack
    assert counts["end_before_start"] <= end_before <= counts["end_before_start"] + slack
    assert counts["unknown_payment_type"] <= unknown_payment <= counts["unknown_payment_type"] + slack
    assert counts["missing_pickup_area"] <= no_area <= counts["missing_pickup_area"] + slack
    assert counts["next_day"] <= next_day <= counts["next_day"] + slack
    assert repeated == counts["duplicate"]
    assert zero_seconds >= counts["zero_seconds_positive_miles"]
    # duplicates are exact copies apart from their position
    content = table.drop_columns(["_source_row"])
    groups = content.group_by(content.column_names).aggregate([([], "count_all")])
    assert pc.sum(pc.subtract(groups["count_all"], 1)).as_py() == counts["duplicate"]


def test_default_dirty_rate_is_small_and_zero_means_clean() -> None:
    settings = Settings(synthetic_trips_per_day=100_000)
    default = SyntheticSource.from_options(settings, {})
    assert default.dirty_rate == 0.005
    notes = list(default.read(day(D)))[-1].notes["synthetic"]
    share = sum(notes["dirty_rows"].values()) / notes["rows"]
    assert 0.0035 < share < 0.0065
    clean = list(SyntheticSource(trips_per_day=20_000, dirty_rate=0.0).read(day(D)))[-1].notes
    assert sum(clean["synthetic"]["dirty_rows"].values()) == 0


# -- drift --------------------------------------------------------------------------------------------
def _day_stats(table: pa.Table) -> dict[str, float]:
    new = ", ".join(repr(c) for c in DRIFT.new_companies)
    (row,) = query(
        table,
        f"""select avg((payment_type = 'Cash')::int), avg((payment_type = 'Mobile')::int),
             median(fare), avg((company in ({new}))::int), avg((tips > 0.2 * fare)::int) from t""",
    )
    return dict(zip(("cash", "mobile", "median_fare", "new_companies", "big_tipper"), row, strict=True))


def test_drift_applies_from_drift_from_and_never_before() -> None:
    start = dt.date(2024, 5, 6)
    drift_from = dt.date(2024, 5, 9)
    plain = SyntheticSource(trips_per_day=20_000)
    drifting = SyntheticSource(trips_per_day=20_000, drift_from=drift_from)
    before = Interval(start, drift_from)
    after = Interval(drift_from, drift_from + dt.timedelta(days=3))
    # before drift_from the drifting source is the plain source, row for row
    assert read_all(drifting, before).equals(read_all(plain, before))
    base, drifted = _day_stats(read_all(plain, after)), _day_stats(read_all(drifting, after))
    assert base["mobile"] < 0.002 and drifted["mobile"] == pytest.approx(DRIFT.mobile_share, abs=0.015)
    assert drifted["cash"] < base["cash"] - 0.15
    assert drifted["median_fare"] / base["median_fare"] == pytest.approx(DRIFT.fare_factor, abs=0.07)
    assert base["new_companies"] == 0 and drifted["new_companies"] > 0.15  # of non-null companies
    assert drifted["big_tipper"] > base["big_tipper"] + 0.08
    assert [drifting.drifted(d) for d in (drift_from - dt.timedelta(days=1), drift_from)] == [False, True]
    assert not any(plain.drifted(d) for d in Interval(start, dt.date(2030, 1, 1)).days())


# -- volume --------------------------------------------------------------------------------------------
def test_volume_follows_the_weekday_around_trips_per_day() -> None:
    source = SyntheticSource(trips_per_day=20_000)
    days = list(Interval(dt.date(2024, 1, 1), dt.date(2024, 3, 25)).days())  # 12 whole weeks
    volumes = {d: source.day_volume(d) for d in days}
    assert sum(volumes.values()) / len(days) == pytest.approx(20_000, rel=0.02)
    fridays = [v for d, v in volumes.items() if d.weekday() == 4]
    tuesdays = [v for d, v in volumes.items() if d.weekday() == 1]
    assert min(fridays) > max(tuesdays)
    assert len(set(volumes.values())) > 50  # day-to-day noise, yet deterministic:
    again = SyntheticSource(trips_per_day=20_000)
    assert volumes == {d: again.day_volume(d) for d in days}
    assert read_all(source, day(dt.date(2024, 1, 5))).num_rows == volumes[dt.date(2024, 1, 5)]


def test_zero_trips_per_day_gives_empty_typed_days() -> None:
    batches = list(SyntheticSource(trips_per_day=0).read(Interval(D, D + dt.timedelta(days=2))))
    assert [b.table.num_rows for b in batches] == [0, 0]
    assert all(b.table.schema.equals(RAW_SCHEMA) for b in batches)


# -- options ---------------------------------------------------------------------------------------------
def test_options_override_settings_and_are_described() -> None:
    settings = Settings(synthetic_trips_per_day=1_234, synthetic_drift_from="2024-06-01")
    from_settings = get_source("synthetic", settings)
    assert isinstance(from_settings, SyntheticSource)
    assert from_settings.trips_per_day == 1_234 and from_settings.drift_from == dt.date(2024, 6, 1)
    source = get_source(
        "synthetic",
        settings,
        {"seed": "42", "dirty_rate": "0.01", "trips_per_day": "777", "drift_from": "2024-07-01"},
    )
    assert source.describe(day(D)) == {
        "source": "synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": 42,
        "trips_per_day": 777,
        "drift_from": "2024-07-01",
        "dirty_rate": 0.01,
        "interval": {"start": "2024-05-01", "end": "2024-05-02"},
    }
    no_drift = SyntheticSource.from_options(Settings(), {})
    assert no_drift.describe(day(D))["drift_from"] is None
    assert no_drift.trips_per_day == 20_000 and no_drift.seed == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seed": "abc"}, "option 'seed' must be an integer, got 'abc'"),
        ({"seed": "-1"}, "seed=-1 must be within"),
        ({"dirty_rate": "lots"}, "option 'dirty_rate' must be a number, got 'lots'"),
        ({"dirty_rate": "0.9"}, "dirty_rate=0.9 must be within"),
        ({"dirty_rate": "nan"}, "dirty_rate=nan must be within"),
        ({"trips_per_day": "-5"}, "trips_per_day=-5 must be within"),
        ({"trips_per_day": "1.5"}, "option 'trips_per_day' must be an integer, got '1.5'"),
        ({"drift_from": "next tuesday"}, "drift_from='next tuesday' is not an ISO date"),
        ({"uri": "x.csv"}, "source 'synthetic' does not understand option(s) ['uri']"),
    ],
)
def test_bad_options_are_rejected_with_the_option_named(options: dict[str, str], message: str) -> None:
    with pytest.raises(SourceError) as info:
        SyntheticSource.from_options(Settings(), options)
    assert message in str(info.value)


# -- through the CLI ---------------------------------------------------------------------------------------
def test_cli_extract_writes_one_partition_per_day(data_root: Path) -> None:
    summary = run_cli(
        "extract", "--source", "synthetic", "--start", "2024-05-01", "--end", "2024-05-04",
        "--trips-per-day", "5000", "--data-root", str(data_root),
    )  # fmt: skip
    source = SyntheticSource(trips_per_day=5_000)
    days = [dt.date(2024, 5, 1), dt.date(2024, 5, 2), dt.date(2024, 5, 3)]
    expected = [source.day_volume(d) for d in days]
    assert [p["dt"] for p in summary["partitions"]] == [d.isoformat() for d in days]
    assert [p["rows"] for p in summary["partitions"]] == expected
    assert summary["rows_read"] == summary["rows_written"] == sum(expected)
    assert summary["rows_other_intervals"] == 0
    for d, rows in zip(days, expected, strict=True):
        part = data_root / "raw" / "trips" / f"dt={d.isoformat()}"
        table = pq.read_table(part / "part-00000.parquet")
        assert table.num_rows == rows and table.schema.equals(RAW_SCHEMA)
        # the CLI wrote exactly what the library generates for that day: extract moves the rows that
        # start on the next day (dirty) to the end of the partition, but keeps them in day D
        assert table.sort_by("_source_row").equals(read_all(source, day(d)))
        manifest = json.loads((part / "_manifest.json").read_text())
        assert manifest["inputs"] == [source.describe(day(d))]
        notes = manifest["params"]["synthetic"]
        assert notes["rows"] == rows and notes["generator_version"] == GENERATOR_VERSION
        next_midnight = pa.scalar(
            dt.datetime.combine(d + dt.timedelta(days=1), dt.time()), pa.timestamp("us")
        )
        next_day = pc.sum(pc.greater_equal(table["trip_start_timestamp"], next_midnight)).as_py() or 0
        assert next_day >= notes["dirty_rows"]["next_day"]
