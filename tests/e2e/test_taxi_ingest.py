"""taxi_ingest under the real scheduler: backfill, byte-identical re-run, a planted bad interval.

All runs use the synthetic source at 2,000 trips a day. Order matters (module-scoped state): the
backfill's partitions are what the re-run is compared against. This module runs on the SQLite option of
the platform (``PLATFORM_DB``), so that option and its backfill recipe stay working.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_local import AirflowApi
from tests.e2e.conftest import TIMINGS

DAG_ID = "taxi_ingest"
TRIPS = 2000
DAYS = [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)]
RERUN_DAY = DAYS[1]
BAD_DAY = dt.date(2024, 1, 10)
ASSET = "flywheel-curated-trips"
#: the platform of this module: the SQLite option (tests/e2e/conftest.py runs it after the others)
PLATFORM_DB = "sqlite"


def _json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def partition(root: Path, layer: str, day: dt.date, dataset: str = "trips") -> Path:
    return root / layer / dataset / f"dt={day.isoformat()}"


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file in a partition folder."""
    assert folder.is_dir(), f"{folder} missing"
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


@pytest.fixture(scope="module")
def backfill(api: AirflowApi) -> list[dict[str, Any]]:
    """A backfill of three days, created and awaited through the REST API (the SQLite-safe recipe)."""
    started = time.monotonic()
    # left unpaused for the manual runs below; the e2e end date keeps the scheduler from adding its own
    runs = api.backfill(
        DAG_ID,
        DAYS[0],
        DAYS[-1],
        conf={"trips_per_day": TRIPS},
        max_active_runs=2,
        timeout=600,
        leave_unpaused=True,
    )
    TIMINGS[f"backfill of {len(DAYS)} days ({TRIPS} trips/day)"] = time.monotonic() - started
    return runs


def test_backfill_runs_every_day(
    backfill: list[dict[str, Any]], airflow_platform: Any, api: AirflowApi
) -> None:
    assert [r["data_interval_start"][:10] for r in backfill] == [d.isoformat() for d in DAYS]
    assert [r["state"] for r in backfill] == ["success"] * len(DAYS), [r["dag_run_id"] for r in backfill]
    assert all(r["run_type"] == "backfill" for r in backfill)
    # on the SQLite option: Airflow's metadata in the home's SQLite file, no server besides Airflow's
    assert airflow_platform.db == "sqlite" and (airflow_platform.home / "airflow.db").is_file()
    assert set(airflow_platform.alive()) == {"step-server", "api-server", "dag-processor", "scheduler"}
    for run in backfill:
        tis = api.task_instances(DAG_ID, run["dag_run_id"])
        assert {t: ti["state"] for t, ti in tis.items()} == dict.fromkeys(
            ["extract", "transform", "validate", "publish"], "success"
        )
    durations = [
        (
            dt.datetime.fromisoformat(r["end_date"]) - dt.datetime.fromisoformat(r["start_date"])
        ).total_seconds()
        for r in backfill
    ]
    TIMINGS["backfill: mean run duration"] = sum(durations) / len(durations)
    assert airflow_platform.alive()["scheduler"]
    # the scheduler created nothing by itself (end date in the past): every run is ours
    assert {r["run_type"] for r in api.dag_runs(DAG_ID)} <= {"backfill", "manual"}


def test_partitions_and_counts_add_up(
    backfill: list[dict[str, Any]], data_root_e2e: Path, api: AirflowApi
) -> None:
    for run, day in zip(backfill, DAYS, strict=True):
        raw = _json(partition(data_root_e2e, "raw", day) / "_manifest.json")["row_counts"]["rows"]
        curated_manifest = _json(partition(data_root_e2e, "curated", day) / "_manifest.json")
        quarantine_manifest = _json(partition(data_root_e2e, "quarantine", day) / "_manifest.json")
        accounting = _json(partition(data_root_e2e, "reports", day, "validation") / "accounting.json")
        counts = curated_manifest["row_counts"]
        quarantined = quarantine_manifest["row_counts"]["rows"]
        # synthetic volume is TRIPS +- day-of-week factor and noise; dirty rows are 0.5 %
        assert 0.5 * TRIPS < raw < 2 * TRIPS, raw
        assert counts["raw"] == raw == counts["curated"] + quarantined == accounting["rows_in"]
        assert counts["quarantined"] == quarantined == accounting["quarantined"] > 0
        assert accounting["verdict"] == "passed"
        assert sum(v for k, v in counts.items() if k.startswith("quarantined.")) >= quarantined
        # the step summaries (XCom) tell the same story
        published = api.xcom(DAG_ID, run["dag_run_id"], "publish")
        assert published["interval"] == {
            "start": day.isoformat(),
            "end": (day + dt.timedelta(days=1)).isoformat(),
        }
        assert [(p["dt"], p["rows"], p["quarantined"]) for p in published["partitions"]] == [
            (day.isoformat(), counts["curated"], quarantined)
        ]


def test_quarantined_rows_carry_reasons(backfill: list[dict[str, Any]], data_root_e2e: Path) -> None:
    import pyarrow.parquet as pq

    day = DAYS[0]
    table = pq.read_table(partition(data_root_e2e, "quarantine", day))
    accounting = _json(partition(data_root_e2e, "reports", day, "validation") / "accounting.json")
    assert table.num_rows == accounting["quarantined"] > 0
    reasons = table.column("reject_reason").to_pylist()
    assert all(reasons), "every quarantined row has a reason"
    codes = {code.split(":")[0] for r in reasons for code in r.split(";")}
    assert codes <= set(accounting["by_reason"]) | {"unparseable"}
    assert sum(accounting["by_reason"].values()) >= table.num_rows


def test_asset_events_carry_interval_and_partitions(backfill: list[dict[str, Any]], api: AirflowApi) -> None:
    events = api.asset_events(ASSET)
    ours = {
        e["source_run_id"]: e for e in events if e["source_run_id"] in {r["dag_run_id"] for r in backfill}
    }
    assert len(ours) == len(DAYS), f"expected one asset event per run, got {len(ours)} of {len(events)}"
    for run, day in zip(backfill, DAYS, strict=True):
        extra = ours[run["dag_run_id"]]["extra"]
        assert extra["interval"] == {
            "start": day.isoformat(),
            "end": (day + dt.timedelta(days=1)).isoformat(),
        }
        assert [p["dt"] for p in extra["partitions"]] == [day.isoformat()]
        assert extra["partitions"][0]["uri"].endswith(f"curated/trips/dt={day.isoformat()}")
        assert extra["run_id"] == run["dag_run_id"]


@pytest.fixture(scope="module")
def second_wave(backfill: list[dict[str, Any]], api: AirflowApi, data_root_e2e: Path) -> dict[str, Any]:
    """In parallel: re-run one backfilled day (clear), a planted bad day, and a run with no interval."""
    before = {
        layer: digest(partition(data_root_e2e, layer, RERUN_DAY))
        for layer in ("raw", "curated", "quarantine")
    }
    inode = partition(data_root_e2e, "curated", RERUN_DAY).stat().st_ino
    rerun = next(r for r in backfill if r["data_interval_start"].startswith(RERUN_DAY.isoformat()))
    started = time.monotonic()
    api.set_paused(DAG_ID, False)  # runs of a paused DAG stay queued
    api.clear_run(DAG_ID, rerun["dag_run_id"])
    bad = api.trigger(
        DAG_ID,
        {"interval_start": BAD_DAY.isoformat(), "trips_per_day": TRIPS, "dirty_rate": 0.3},
        logical_date=None,
    )
    no_interval = api.trigger(DAG_ID, {"trips_per_day": TRIPS}, logical_date=None)
    # a cleared run goes back to queued: wait for it to leave its old "success" first
    deadline = time.monotonic() + 60
    while api.dag_run(DAG_ID, rerun["dag_run_id"])["state"] == "success" and time.monotonic() < deadline:
        time.sleep(0.5)
    runs = api.wait_runs(DAG_ID, [rerun["dag_run_id"], bad, no_interval], timeout=600)
    TIMINGS["re-run + bad day + no-interval run (parallel)"] = time.monotonic() - started
    return {
        "before": before,
        "inode": inode,
        "rerun": runs[rerun["dag_run_id"]],
        "bad": runs[bad],
        "no_interval": runs[no_interval],
    }


def test_rerun_is_byte_identical(second_wave: dict[str, Any], data_root_e2e: Path, api: AirflowApi) -> None:
    run = second_wave["rerun"]
    assert run["state"] == "success"
    tis = api.task_instances(DAG_ID, run["dag_run_id"])
    assert all(ti["try_number"] >= 2 for ti in tis.values()), "the cleared run must really run again"
    folder = partition(data_root_e2e, "curated", RERUN_DAY)
    assert folder.stat().st_ino != second_wave["inode"], "the curated partition was not rewritten"
    for layer in ("raw", "curated", "quarantine"):
        after = digest(partition(data_root_e2e, layer, RERUN_DAY))
        assert after == second_wave["before"][layer], f"{layer} dt={RERUN_DAY} changed on re-run"
        assert "_manifest.json" in after and any(name.endswith(".parquet") for name in after)


def test_bad_interval_fails_validation_clearly(
    second_wave: dict[str, Any], data_root_e2e: Path, api: AirflowApi
) -> None:
    run = second_wave["bad"]
    assert run["state"] == "failed"
    tis = api.task_instances(DAG_ID, run["dag_run_id"])
    states = {t: ti["state"] for t, ti in tis.items()}
    assert states == {
        "extract": "success",
        "transform": "success",
        "validate": "failed",
        "publish": "upstream_failed",
    }
    # retries are on (1 in e2e): the batch failure is reported on every try
    validate = tis["validate"]
    assert validate["try_number"] == 2
    log = api.task_log(DAG_ID, run["dag_run_id"], "validate", validate["try_number"])
    assert "ml-tasks validate failed (exit status 1" in log
    assert "reject_rate_exceeded" in log and f"staging/trips/dt={BAD_DAY.isoformat()}" in log
    # reports and quarantine are written; nothing of that day is curated
    accounting = _json(partition(data_root_e2e, "reports", BAD_DAY, "validation") / "accounting.json")
    assert accounting["verdict"] == "failed"
    assert [f["rule"] for f in accounting["failures"]] == ["reject_rate_exceeded"]
    assert accounting["reject_rate"] > accounting["max_reject_rate"]
    assert accounting["rows_in"] == accounting["accepted"] + accounting["quarantined"]
    quarantine = _json(partition(data_root_e2e, "quarantine", BAD_DAY) / "_manifest.json")
    assert quarantine["row_counts"]["rows"] == accounting["quarantined"]
    assert not partition(data_root_e2e, "curated", BAD_DAY).exists()
    assert not partition(data_root_e2e, "staging", BAD_DAY, "trips_accepted").exists()


def test_run_without_interval_fails_fast_with_a_clear_message(
    second_wave: dict[str, Any], api: AirflowApi
) -> None:
    run = second_wave["no_interval"]
    assert run["state"] == "failed" and run["logical_date"] is None
    tis = api.task_instances(DAG_ID, run["dag_run_id"])
    assert tis["extract"]["state"] == "failed"
    assert tis["extract"]["try_number"] == 1, "a run without interval must not be retried"
    log = api.task_log(DAG_ID, run["dag_run_id"], "extract", 1)
    assert "AirflowFailException: this run has no data interval" in log
    assert "set the params interval_start" in log
