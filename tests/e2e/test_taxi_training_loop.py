"""The loop under the real scheduler: features -> batch prediction -> monitoring -> drift -> retraining.

Runs after test_taxi_training.py (file order), whose champion it scores with; alone, it trains one first
(forced, on the same days, seeded through the CLI). Four more days are ingested, the last three with the
synthetic source's drift scenario (more card and mobile payments, fares +25%, new companies, later
hours). Then one manual taxi_features run over them, and everything after that happens through Assets:

* taxi_batch_predict (on `flywheel-features`): resolves `taxi_tips@champion` once, scores the 4 days in 2
  shards, commits each day once: `predictions/taxi_tips/dt=D` per day, the rows equal the curated trips;
  one `flywheel-predictions` event per run, listing its days;
* taxi_monitoring (on `flywheel-predictions`): one decision per day, in order. The drifted days are
  judged drift; with hysteresis 1 (the platform's setting) the first drift verdict asks for a retrain,
  the later ones fall inside the cooldown and say so; every drift verdict is alerted (task log and a
  webhook POST to a real HTTP server of the test session);
* taxi_training (on `flywheel-drift`): one run, its eval window ends with the drifted day.

And ``ml-tasks lineage`` on a predictions partition walks down to the raw source partitions.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_local import AirflowApi, Platform
from tests.e2e.conftest import TIMINGS, AlertSink, registry, seed_curated_and_features

pytestmark = pytest.mark.timeout(3600)
INGEST, FEATURES, PREDICT, MONITOR, TRAINING = (
    "taxi_ingest", "taxi_features", "taxi_batch_predict", "taxi_monitoring", "taxi_training",
)  # fmt: skip
MODEL = "taxi_tips"
TRIPS = 2500
# the days after test_taxi_training's (2024-01-20..27): one normal day, then three drifted ones
FIRST, DAYS, DRIFT_FROM = dt.date(2024, 1, 28), 4, dt.date(2024, 1, 29)
CHAMPION_DAYS = (dt.date(2024, 1, 20), 8)


def champion_version(platform: Platform) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(registry(platform).get_model_version_by_alias(MODEL, "champion").version)
    except MlflowException:
        return None


def ingest_and_features(api: AirflowApi, first: dt.date, days: int, conf: dict[str, Any]) -> str:
    """Backfill ingest (taxi_features paused: no asset runs), then one manual taxi_features run."""
    api.set_paused(FEATURES, True)
    last = first + dt.timedelta(days=days - 1)
    ingest = api.backfill(INGEST, first, last, conf=conf, timeout=1200)
    assert [r["state"] for r in ingest] == ["success"] * days, ingest
    api.set_paused(FEATURES, False)
    run_id = api.trigger(
        FEATURES,
        conf={"interval_start": first.isoformat(), "interval_end": (last + dt.timedelta(1)).isoformat()},
    )
    run = api.wait_runs(FEATURES, [run_id], timeout=900)[run_id]
    assert run["state"] == "success", run
    return run_id


@pytest.fixture(scope="module")
def champion(api: AirflowApi, airflow_platform: Platform) -> str:
    """The champion of test_taxi_training.py, or one trained here (one taxi_training run on seeded curated
    trips and features) when this module runs alone."""
    version = champion_version(airflow_platform)
    if version is not None:
        return version
    first, days = CHAMPION_DAYS
    seed_curated_and_features(airflow_platform, first, days, TRIPS)
    api.set_paused(TRAINING, False)
    try:
        conf = {"window_end": (first + dt.timedelta(days)).isoformat(), "train_days": 6, "eval_days": 2,
                "force_promote": True, "force_reason": "e2e: a champion for the loop"}  # fmt: skip
        run_id = api.trigger(TRAINING, conf=conf)
        assert api.wait_runs(TRAINING, [run_id], timeout=1500)[run_id]["state"] == "success"
    finally:
        api.set_paused(TRAINING, True)
    version = champion_version(airflow_platform)
    assert version is not None
    return version


@pytest.fixture(scope="module")
def loop(champion: str, api: AirflowApi, data_root_e2e: Path) -> Iterator[dict[str, Any]]:
    started = time.monotonic()
    since = dt.datetime.now(dt.UTC)
    for dag_id in (PREDICT, MONITOR, TRAINING):  # consumers first: a paused DAG gets no asset runs
        api.set_paused(dag_id, False)
    try:
        conf = {"trips_per_day": TRIPS, "drift_from": DRIFT_FROM.isoformat()}
        features_run = ingest_and_features(api, FIRST, DAYS, conf)
        api.set_paused(FEATURES, True)
        # a consumer run takes every event since its DAG's previous run: the first prediction run also
        # scores the days whose features other modules built while this DAG was paused (the backlog); and
        # events that arrive while a DAG is at max_active_runs wait in the queue: wait until both settle
        predict = api.wait_settled(PREDICT, since, timeout=900)
        monitor = api.wait_settled(MONITOR, since, timeout=1800)
        # only the monitoring runs whose decisions asked for a retrain emitted the drift Asset
        ours = {r["dag_run_id"] for r in monitor}
        events = api.asset_events("flywheel-drift", source_dag_id=MONITOR)
        drift_sources = sorted({e["source_run_id"] for e in events if e["source_run_id"] in ours})
        assert drift_sources, "no monitoring run requested a retrain"
        training = api.wait_consumer_runs(
            "flywheel-drift", TRAINING, drift_sources, since=since, timeout=1800
        )
        TIMINGS["loop: ingest 4 days -> features -> predict -> monitor -> retrain"] = (
            time.monotonic() - started
        )
        yield {"features": features_run, "predict": predict, "monitor": monitor, "training": training,
               "champion": champion}  # fmt: skip
    finally:
        for dag_id in (FEATURES, PREDICT, MONITOR, TRAINING):
            api.set_paused(dag_id, True)


def days() -> list[str]:
    return [(FIRST + dt.timedelta(i)).isoformat() for i in range(DAYS)]


def test_predictions_are_sharded_and_committed_once(loop: dict[str, Any], api: AirflowApi,
                                                   data_root_e2e: Path) -> None:  # fmt: skip
    import pyarrow.parquet as pq

    assert [r["state"] for r in loop["predict"]] == ["success"] * len(loop["predict"])
    for run in loop["predict"]:
        run_id = run["dag_run_id"]
        resolved = api.xcom(PREDICT, run_id, "resolve-model")
        assert resolved["version"] == loop["champion"]
        # Airflow also queued the features events of earlier days (they arrived while this DAG was paused):
        # each run scores every interval it was given, in 2 shards each, and commits each interval once
        shards = api.mapped_task_instances(PREDICT, run_id, "predict")
        commits = api.mapped_task_instances(PREDICT, run_id, "predict-commit")
        assert len(shards) == 2 * len(commits) and {t["state"] for t in shards + commits} == {"success"}
        # one event per run, after every commit, naming each committed interval
        events = api.asset_events("flywheel-predictions", source_run_id=run_id)
        assert len(events) == 1, events
        assert len(events[0]["extra"]["intervals"]) == len(commits), events[0]["extra"]
    for day in days():
        part = data_root_e2e / "predictions" / MODEL / f"dt={day}"
        manifest = json.loads((part / "_manifest.json").read_text())
        table = pq.read_table(part / "part-00000.parquet")
        curated = json.loads(
            (data_root_e2e / "curated" / "trips" / f"dt={day}" / "_manifest.json").read_text()
        )
        assert table.num_rows == manifest["row_counts"]["rows"] > 1000
        assert table.num_rows == curated["row_counts"].get("curated", curated["row_counts"].get("rows"))
        assert set(table.column("model_version").to_pylist()) == {loop["champion"]}
        scores = table.column("score").to_numpy()
        assert ((scores >= 0) & (scores <= 1)).all() and 0.05 < scores.mean() < 0.95
        assert len(table.column("trip_key").unique()) == table.num_rows
    assert not list((data_root_e2e / "predictions" / MODEL).glob("_shards/*/*")), "staging left behind"


def test_monitoring_detects_the_drift_alerts_and_requests_one_retrain(
    loop: dict[str, Any], api: AirflowApi, data_root_e2e: Path, alert_sink: AlertSink
) -> None:
    assert [r["state"] for r in loop["monitor"]] == ["success"] * len(loop["monitor"])
    decisions = {
        day: json.loads((data_root_e2e / "monitoring" / MODEL / f"dt={day}" / "decision.json").read_text())
        for day in days()
    }
    drifted = [d for d in days() if d >= DRIFT_FROM.isoformat()]
    normal = [d for d in days() if d < DRIFT_FROM.isoformat()]
    for day in normal:
        assert decisions[day]["verdict"] == "no_drift", (day, decisions[day]["reasons"])
    for day in drifted:
        assert decisions[day]["verdict"] == "drift", (day, decisions[day])
        drift = decisions[day]["drift"]
        prediction_drift = (decisions[day]["prediction_drift"] or {}).get("drifted")
        assert drift["dataset_drift"] or prediction_drift, decisions[day]
        assert drift["drifted_columns"], decisions[day]
    # every day monitored so far (earlier days too, when Airflow queued their predictions): one retrain,
    # on the first drifted day (hysteresis 1); the later drifted days are inside the cooldown
    every = {
        p.parent.name.removeprefix("dt="): json.loads(p.read_text())
        for p in (data_root_e2e / "monitoring" / MODEL).glob("dt=*/decision.json")
    }
    retrain = sorted(d for d, decision in every.items() if decision["retrain"])
    assert retrain == [DRIFT_FROM.isoformat()], {d: every[d]["reasons"] for d in sorted(every)}
    for day in drifted:
        if day > retrain[0]:
            assert any("cooldown" in r for r in decisions[day]["reasons"]), decisions[day]["reasons"]
    # every drift verdict reached the webhook, with its decision
    posted = [r["body"] for r in alert_sink.received if r["path"].startswith("/alerts")]
    assert {json.dumps(b["decision"].get("interval"), sort_keys=True) for b in posted} >= {
        json.dumps(decisions[d]["interval"], sort_keys=True) for d in drifted
    }
    # one drift event, with the decision that asked for the retrain
    events = [e for e in api.asset_events("flywheel-drift", source_dag_id=MONITOR)
              if e["source_run_id"] in {r["dag_run_id"] for r in loop["monitor"]}]  # fmt: skip
    assert len(events) == 1
    assert events[0]["extra"]["interval"]["start"] == retrain[0]
    assert events[0]["extra"]["decision"]["retrain"] is True


def test_drift_started_one_training_run_on_the_drifted_window(loop: dict[str, Any], api: AirflowApi) -> None:
    assert len(loop["training"]) == 1
    run = loop["training"][0]
    assert run["state"] == "success", api.task_instances(TRAINING, run["dag_run_id"])
    windows = api.xcom(TRAINING, run["dag_run_id"], "plan_windows")
    assert windows["window_source"] == "drift events"
    event = api.upstream_asset_events(TRAINING, run["dag_run_id"])
    assert len(event) == 1
    retrain_day = event[0]["extra"]["interval"]
    assert windows["eval_end"] == retrain_day["end"] and windows["eval_start"] == retrain_day["start"]


def test_lineage_of_a_prediction_partition_reaches_the_raw_source(
    loop: dict[str, Any], airflow_platform: Platform
) -> None:
    part = airflow_platform.data_root / "predictions" / MODEL / f"dt={days()[-1]}"
    chain = airflow_platform.ml_tasks("lineage", str(part), "--json")
    text = json.dumps(chain)
    for layer in ("predictions", "curated", "features", "raw", "training_sets"):
        assert f"/{layer}/" in text, layer
    assert f"models:/{MODEL}/{loop['champion']}" in text
