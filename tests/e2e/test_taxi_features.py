"""taxi_features under the real scheduler, driven by the curated-trips Asset of a taxi_ingest backfill.

The e2e tests never trigger taxi_features: it unpauses it, backfills taxi_ingest for three days (synthetic,
1,000 trips a day), then waits for the runs Airflow created from the curated-trips events. It checks
the runs, the feature partitions (exactly the published days, values that add up to the curated trips),
the features Asset events and an online lookup. taxi_features is paused again at the end, so later
modules' ingest runs do not start feature runs. Two fast tests (no Airflow) cover the deploy step
(``ml-tasks feature-apply``) that Platform.start() runs.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from scripts.airflow_local import REPO, AirflowApi, Platform, PlatformError, free_port
from tests.e2e.conftest import TIMINGS

DAG_ID = "taxi_features"
INGEST = "taxi_ingest"
CURATED_ASSET = "flywheel-curated-trips"
FEATURES_ASSET = "flywheel-features"
TRIPS = 1000
# apart from taxi_ingest's e2e days (2024-01-02..04, 10)
DAYS = [dt.date(2024, 1, 15), dt.date(2024, 1, 16), dt.date(2024, 1, 17)]
VIEWS = {"pickup_area_stats": "pickup_community_area", "company_stats": "company"}
CHICAGO = ZoneInfo("America/Chicago")


def _json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def _days(start: str, end: str) -> list[dt.date]:
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [first + dt.timedelta(days=i) for i in range((last - first).days)]


def event_days(events: list[dict[str, Any]]) -> list[dt.date]:
    """The days named by the intervals of asset events (sorted, distinct)."""
    return sorted(
        {d for e in events for d in _days(e["extra"]["interval"]["start"], e["extra"]["interval"]["end"])}
    )


@pytest.fixture(scope="module")
def flow(api: AirflowApi) -> Iterator[dict[str, Any]]:
    """Unpause taxi_features, backfill taxi_ingest, wait for the asset-triggered taxi_features runs."""
    # Airflow queues no run for a paused consumer: unpause before ingest publishes
    api.set_paused(DAG_ID, False)
    since = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    try:
        # two runs at a time: days may publish out of order; build-features rebuilds the later days
        # whose windows include a late one, and materialize loads them again
        ingest = api.backfill(INGEST, DAYS[0], DAYS[-1], conf={"trips_per_day": TRIPS}, timeout=900)
        ingest_done = time.monotonic()
        TIMINGS[f"features: ingest backfill, {len(DAYS)} days"] = ingest_done - started
        assert [r["state"] for r in ingest] == ["success"] * len(DAYS), ingest
        runs = api.wait_consumer_runs(
            CURATED_ASSET, DAG_ID, [r["dag_run_id"] for r in ingest], since=since, timeout=900
        )
        TIMINGS["features: runs done, after the backfill"] = time.monotonic() - ingest_done
        TIMINGS["features: backfill + features runs (wall)"] = time.monotonic() - started
        consumed = {r["dag_run_id"]: api.upstream_asset_events(DAG_ID, r["dag_run_id"]) for r in runs}
        yield {"ingest": ingest, "runs": runs, "consumed": consumed}
    finally:
        api.set_paused(DAG_ID, True)


def planned(api: AirflowApi, run_id: str) -> list[list[str]]:
    return list(api.xcom(DAG_ID, run_id, "plan_intervals"))


def test_runs_were_created_by_the_asset_and_succeeded(flow: dict[str, Any], api: AirflowApi) -> None:
    runs, consumed = flow["runs"], flow["consumed"]
    assert 1 <= len(runs) <= len(DAYS), [r["dag_run_id"] for r in runs]
    assert [(r["run_type"], r["state"]) for r in runs] == [("asset_triggered", "success")] * len(runs)
    assert all(r["logical_date"] is None for r in runs), "asset-triggered runs have no logical date"
    # every ingest run's curated event was consumed by one of these runs, and nothing was triggered by hand
    ours = {r["dag_run_id"] for r in flow["ingest"]}
    sources = [e["source_run_id"] for events in consumed.values() for e in events]
    assert ours <= set(sources)
    assert all(e["name"] == CURATED_ASSET for events in consumed.values() for e in events)
    assert {r["run_type"] for r in api.dag_runs(DAG_ID)} == {"asset_triggered"}
    durations = [
        (
            dt.datetime.fromisoformat(r["end_date"]) - dt.datetime.fromisoformat(r["start_date"])
        ).total_seconds()
        for r in runs
    ]
    TIMINGS[f"features: mean run duration ({len(runs)} runs)"] = sum(durations) / len(durations)


def test_each_run_planned_exactly_its_events_intervals(flow: dict[str, Any], api: AirflowApi) -> None:
    all_days: list[dt.date] = []
    for run in flow["runs"]:
        run_id = run["dag_run_id"]
        consumed_days = event_days(flow["consumed"][run_id])
        plan = planned(api, run_id)
        plan_days = [d for argv in plan for d in _days(argv[1], argv[3])]
        assert plan_days == consumed_days, (run_id, plan, consumed_days)
        assert all(argv[0] == "--start" and argv[2] == "--end" for argv in plan)
        # one mapped instance per planned interval, each labelled and run with its interval
        for task_id in ("build-features", "materialize"):
            tis = api.mapped_task_instances(DAG_ID, run_id, task_id)
            assert [ti["map_index"] for ti in tis] == list(range(len(plan)))
            assert [ti["state"] for ti in tis] == ["success"] * len(plan)
            assert [ti["rendered_map_index"] for ti in tis] == [" ".join(argv) for argv in plan]
            for index, argv in enumerate(plan):
                summary = api.xcom(DAG_ID, run_id, task_id, map_index=index)
                assert summary["step"] == task_id
                assert summary["interval"] == {"start": argv[1], "end": argv[3]}
        all_days.extend(plan_days)
    # without other producer runs in the window, the runs together cover exactly the backfilled days
    others = {
        e["source_run_id"]
        for events in flow["consumed"].values()
        for e in events
        if e["source_run_id"] not in {r["dag_run_id"] for r in flow["ingest"]}
    }
    if not others:
        assert sorted(set(all_days)) == DAYS


def test_feature_partitions_exist_for_exactly_those_days_and_add_up(
    flow: dict[str, Any], data_root_e2e: Path
) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    expected = set(event_days([e for events in flow["consumed"].values() for e in events]))
    assert set(DAYS) <= expected
    curated_days = {
        p.name[3:] for p in (data_root_e2e / "curated" / "trips").iterdir() if p.name.startswith("dt=")
    }
    for view, entity in VIEWS.items():
        folder = data_root_e2e / "features" / view
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"dt={d.isoformat()}" for d in expected)
        for index, day in enumerate(DAYS):
            path = folder / f"dt={day.isoformat()}"
            manifest = _json(path / "_manifest.json")
            table = pq.read_table(path)
            assert manifest["row_counts"]["rows"] == table.num_rows > 0
            assert manifest["params"]["view"] == view
            # the 1-day trip counts add up to the day's curated trips that have the entity
            curated = pq.read_table(data_root_e2e / "curated" / "trips" / f"dt={day.isoformat()}")
            with_entity = curated.num_rows - curated.column(entity).null_count
            assert pc.sum(table.column("trips_1d")).as_py() == with_entity > 0.4 * TRIPS
            # whatever order the days arrived in (later days are rebuilt), the window saw every
            # backfilled day before it
            window = {(day - dt.timedelta(days=i)).isoformat() for i in range(28)}
            coverage = set(table.column("window_days_28d").to_pylist())
            assert max(coverage) >= index + 1
            assert max(coverage) <= len(window & curated_days)
            # event timestamp = end of the local day (Chicago midnight of the next day, in UTC)
            next_midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=CHICAGO)
            assert set(table.column("event_timestamp").to_pylist()) == {next_midnight.astimezone(dt.UTC)}


def test_features_asset_events_carry_the_intervals(flow: dict[str, Any], api: AirflowApi) -> None:
    run_ids = {r["dag_run_id"] for r in flow["runs"]}
    events = [
        e for e in api.asset_events(FEATURES_ASSET, source_dag_id=DAG_ID) if e["source_run_id"] in run_ids
    ]
    expected = sorted(
        (run_id, index, argv[1], argv[3])
        for run_id in run_ids
        for index, argv in enumerate(planned(api, run_id))
    )
    got = sorted(
        (
            e["source_run_id"],
            e["source_map_index"],
            e["extra"]["interval"]["start"],
            e["extra"]["interval"]["end"],
        )
        for e in events
    )
    assert got == expected, "one features event per materialized interval, carrying it"
    for event in events:
        assert event["source_task_id"] == "materialize"
        assert event["extra"]["step"] == "materialize"
        assert event["extra"]["run_id"] == event["source_run_id"]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return bool(a == b)


def test_online_store_serves_the_last_day(
    flow: dict[str, Any], airflow_platform: Platform, data_root_e2e: Path
) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    last = DAYS[-1].isoformat()
    areas = pq.read_table(data_root_e2e / "features" / "pickup_area_stats" / f"dt={last}")
    companies = pq.read_table(data_root_e2e / "features" / "company_stats" / f"dt={last}")
    area = 8 if 8 in areas.column("pickup_community_area").to_pylist() else areas.column(0)[0].as_py()
    company = companies.sort_by([("trips_28d", "descending")]).column("company")[0].as_py()
    started = time.monotonic()
    answer = airflow_platform.ml_tasks(
        "online-features", "-e", f"pickup_community_area={area}", "-e", f"company={company}"
    )
    TIMINGS["features: online lookup (ml-tasks)"] = time.monotonic() - started
    assert answer["found"] == {"pickup_area_stats": 1, "company_stats": 1}
    # on the PostgreSQL platform the online store is its Redis server: the lookup read the values there
    assert answer["online_store"] == "redis" == airflow_platform.env()["FLYWHEEL_FEAST_ENV"]
    import redis

    host, port = airflow_platform.env()["FLYWHEEL_REDIS_CONNECTION"].split(":")
    entities = redis.Redis(host=host, port=int(port)).dbsize()
    assert entities >= areas.num_rows + companies.num_rows, "every materialized entity is a Redis hash"
    [row] = answer["rows"]
    assert (row["pickup_community_area"], row["company"]) == (area, company)
    for view, table, key, value in (
        ("pickup_area_stats", areas, "pickup_community_area", area),
        ("company_stats", companies, "company", company),
    ):
        [expected] = table.filter(pc.equal(table.column(key), value)).to_pylist()
        features = {k: v for k, v in expected.items() if k not in (key, "event_timestamp")}
        assert len(features) == 19
        online = {name: row[f"{view}__{name}"] for name in features}
        assert online["trips_28d"] is not None and online["trips_28d"] > 0
        assert online["window_days_28d"] == expected["window_days_28d"] >= len(DAYS)
        mismatched = {k: (online[k], v) for k, v in features.items() if not _equal(online[k], v)}
        assert mismatched == {}, f"{view} online values differ from features/{view}/dt={last}"


# -- the deploy step of Platform.start (fast: no Airflow) ---------------------------------------------------
def test_a_failing_deploy_step_fails_with_its_error_line(tmp_path: Path) -> None:
    platform = Platform(
        home=tmp_path / "home",
        port=free_port(),
        data_root=tmp_path / "data",
        extra_env={"FLYWHEEL_FEATURE_REPO": str(tmp_path / "nowhere")},
    )
    platform.log_dir.mkdir(parents=True)
    deploy = platform._start_deploy_step(("feature-apply",), platform.env())
    with pytest.raises(PlatformError) as info:
        platform._finish_deploy_step(deploy, timeout=120)
    message = str(info.value)
    assert message.startswith("deploy step failed: ml-tasks feature-apply failed (exit status 1):")
    assert f"no Feast feature repo at {tmp_path / 'nowhere'}" in message
    assert str(platform.log_dir / "feature-apply.log") in message
    assert platform._deployed_fingerprint() is None, "a failed deploy is not recorded"


def test_deploy_fingerprint_follows_declarations_and_data_root(tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    shutil.copytree(REPO / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))

    def fingerprint(data_root: Path) -> str:
        platform = Platform(
            home=tmp_path / "home", data_root=data_root, extra_env={"FLYWHEEL_FEATURE_REPO": str(repo)}
        )
        return platform._deploy_fingerprint(platform.env())

    first = fingerprint(tmp_path / "data")
    assert fingerprint(tmp_path / "data") == first
    assert fingerprint(tmp_path / "other-data") != first
    declarations = repo / "flywheel_declarations.py"
    declarations.write_text(declarations.read_text() + "\n# a changed declaration\n")
    changed = fingerprint(tmp_path / "data")
    assert changed != first
    platform = Platform(home=tmp_path / "home")
    platform.home.mkdir(parents=True, exist_ok=True)
    platform._record_deploy(changed)
    assert platform._deployed_fingerprint() == changed
