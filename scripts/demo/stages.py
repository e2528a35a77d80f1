"""The demo's stages: what each one runs through Airflow (never around it), and the window it runs on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.airflow_local import AirflowApi, Platform, PlatformError

CURATED_ASSET = "flywheel-curated-trips"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs: the window of local days and the synthetic volume."""

    first_day: dt.date
    days: int
    trips_per_day: int
    timeout: float

    @property
    def last_day(self) -> dt.date:
        return self.first_day + dt.timedelta(days=self.days - 1)


@dataclass
class Demo:
    """What the stages share: the platform and its API, the window, when the demo began, runs so far."""

    platform: Platform
    api: AirflowApi
    config: DemoConfig
    #: asset events at or after this instant belong to this demo
    began: dt.datetime
    #: stage name -> its finished runs
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def data_root(self) -> Path:
        return self.platform.data_root


@dataclass(frozen=True)
class Stage:
    """One demo stage: run DAG(s) through the API, then summarise the outputs for the terminal."""

    name: str
    dag_id: str
    run: Callable[[Demo], list[dict[str, Any]]]
    summarize: Callable[[Demo, list[dict[str, Any]]], str]
    #: how its runs come about (printed in the stage header)
    how: str
    #: an Asset consumer: unpaused before any stage runs (Airflow queues no run for a paused consumer)
    asset_triggered: bool = False


# -- stage: ingest ---------------------------------------------------------------------------------------
def run_ingest(demo: Demo) -> list[dict[str, Any]]:
    """Backfill taxi_ingest over the window (one run per day) and leave the DAG unpaused.

    Days may publish out of order (two runs at a time): taxi_features rebuilds and reloads the later
    days whose trailing windows include a day that arrives late.
    """
    config = demo.config
    return demo.api.backfill(
        "taxi_ingest",
        config.first_day,
        config.last_day,
        conf={"source": "synthetic", "trips_per_day": config.trips_per_day},
        timeout=config.timeout,
        leave_unpaused=True,
    )


# -- stage: features -------------------------------------------------------------------------------------
def run_features(demo: Demo) -> list[dict[str, Any]]:
    """Wait for the taxi_features runs Airflow created from the ingest runs' curated-trips events, and for
    any other taxi_features run created since the demo began (taxi_ingest is unpaused with catchup off, so
    the scheduler also runs its latest interval, whose event leads to a features run too)."""
    api = demo.api
    ingest = [r["dag_run_id"] for r in demo.runs.get("ingest", [])]
    if not ingest:
        raise PlatformError("the features stage needs the ingest stage's runs")
    ours = api.wait_consumer_runs(
        CURATED_ASSET, "taxi_features", ingest, since=demo.began, timeout=demo.config.timeout
    )
    known = {r["dag_run_id"] for r in ours}
    others = [
        r["dag_run_id"]
        for r in api.dag_runs("taxi_features", run_after_gte=demo.began.isoformat())
        if r["dag_run_id"] not in known
    ]
    done = api.wait_runs("taxi_features", others, timeout=demo.config.timeout) if others else {}
    return sorted([*ours, *done.values()], key=lambda r: (r["run_after"], r["dag_run_id"]))


# -- stage: training ------------------------------------------------------------------------------------
#: hyperparameter trials of the demo's training runs (the DAG's default)
DEMO_TRIALS = 2
#: the loop needs a champion: the first run may override the gate, which then records and prints what it
#: refused (a no-op when the gate promotes on its own; on the demo's data the tuned tree is usually the
#: better model, docs/training.md)
DEMO_FORCE_REASON = "demo: the loop needs a first champion"


def training_conf(config: DemoConfig) -> dict[str, Any]:
    """Train on the window's first days, evaluate on its last ones (about a quarter, at least one day)."""
    eval_days = max(1, config.days // 4)
    if config.days - eval_days < 1:
        raise PlatformError(f"the training stage needs at least 2 days in the window, got {config.days}")
    end = config.last_day + dt.timedelta(days=1)
    return {"window_end": end.isoformat(), "train_days": config.days - eval_days, "eval_days": eval_days,
            "trials": DEMO_TRIALS, "force_promote": True, "force_reason": DEMO_FORCE_REASON}  # fmt: skip


def run_training(demo: Demo) -> list[dict[str, Any]]:
    """One manual taxi_training run over the window (train, then evaluate on the later days)."""
    api = demo.api
    api.set_paused("taxi_training", False)
    run_id = api.trigger("taxi_training", conf=training_conf(demo.config))
    return list(api.wait_runs("taxi_training", [run_id], timeout=demo.config.timeout).values())


# -- stage: the loop (predict -> monitor -> drift -> retrain) ---------------------------------------------
#: days after the window: one normal day, then the synthetic source's drift scenario
LOOP_DAYS = 4
DRIFT_ASSET = "flywheel-drift"


def loop_days(config: DemoConfig) -> tuple[dt.date, dt.date, dt.date]:
    """First day, drift start and exclusive end of the loop stage's days (right after the window)."""
    first = config.last_day + dt.timedelta(days=1)
    return first, first + dt.timedelta(days=1), first + dt.timedelta(days=LOOP_DAYS)


def loop_env(config: DemoConfig) -> dict[str, str]:
    """Windows of the drift-triggered retrain: evaluate on the drifted day that asked for it, train on every
    day before it (the demo's data has no 28 days of history), with the demo's one trial."""
    return {
        "FLYWHEEL_TRAIN_DAYS": str(config.days + 2),
        "FLYWHEEL_EVAL_DAYS": "1",
        "FLYWHEEL_TRAIN_TRIALS": str(DEMO_TRIALS),
    }


def run_loop(demo: Demo) -> list[dict[str, Any]]:
    """One manual taxi_ingest run over the loop's days (drift from the second); then Airflow does the rest:
    features -> batch prediction -> monitoring -> (drift) -> retraining, each run created from an Asset.

    taxi_batch_predict runs from the start (an Asset consumer): its runs for the window's days found no
    champion and skipped, so prediction and monitoring here judge the loop's days only.
    """
    api, config = demo.api, demo.config
    first, drift_from, end = loop_days(config)
    for dag_id in ("taxi_batch_predict", "taxi_monitoring", "taxi_training"):
        api.set_paused(dag_id, False)
    since = dt.datetime.now(dt.UTC)
    conf = {"source": "synthetic", "trips_per_day": config.trips_per_day,
            "drift_from": drift_from.isoformat(), "interval_start": first.isoformat(),
            "interval_end": end.isoformat()}  # fmt: skip
    ingest_id = api.trigger("taxi_ingest", conf=conf)
    runs = list(api.wait_runs("taxi_ingest", [ingest_id], timeout=config.timeout).values())
    for dag_id in ("taxi_features", "taxi_batch_predict", "taxi_monitoring"):
        if any(r["state"] != "success" for r in runs):
            return runs
        runs += api.wait_settled(dag_id, since, timeout=config.timeout)
    # only the monitoring runs whose decisions asked for a retrain emitted the drift Asset
    monitoring = {r["dag_run_id"] for r in runs if r.get("dag_id") == "taxi_monitoring"}
    events = api.asset_events(DRIFT_ASSET, source_dag_id="taxi_monitoring")
    requested = sorted({e["source_run_id"] for e in events if e["source_run_id"] in monitoring})
    if requested:
        runs += api.wait_consumer_runs(
            DRIFT_ASSET, "taxi_training", requested, since=since, timeout=config.timeout
        )
    return runs
