"""``make demo``: start local Airflow, run the pipeline stages over a demo window, print what happened.

Stages run in order; each is DAG runs through Airflow (never around it) and a summary read back from
the data root. Today: **ingest** (taxi_ingest backfilled over the window, one run per day),
**features** (the taxi_features runs Airflow itself creates from the curated-trips Asset events of
those ingest runs: feature tables, online store, then one online lookup) and **training** (one
taxi_training run: train on the window's first days, evaluate on the later ones, the gate, the registry;
it prints the champion's metrics and the MLflow UI command) and the **loop**: four more days (the last
three drifted) by one manual ingest run, after which Airflow alone runs features -> batch prediction ->
monitoring -> (drift, after the hysteresis) -> retraining through the Assets; it prints the predictions,
each day's drift decision (with the hysteresis and cooldown reasons), the retraining run and the lineage
command.

Starting the platform also runs the deploy step ``ml-tasks feature-apply`` (Feast registry).
Airflow is left running so the runs, logs, rendered commands and reports can be browsed in the UI;
``make stop`` stops it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.airflow_local import AirflowApi, Platform, PlatformError

DEFAULT_FIRST_DAY = dt.date(2024, 1, 1)
CURATED_ASSET = "flywheel-curated-trips"
FEATURE_VIEWS = {"pickup_area_stats": "pickup_community_area", "company_stats": "company"}
#: the online lookup of the features stage: the Near North Side (the busiest pickup area)
LOOKUP_AREA = 8


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


def _read_json(path: Path) -> dict[str, Any] | None:
    return dict(json.loads(path.read_text())) if path.is_file() else None


def summarize_ingest(demo: Demo, runs: list[dict[str, Any]]) -> str:
    """One line per day: run state, rows in / curated / quarantined, top reject reasons, report."""
    data_root, config = demo.data_root, demo.config
    # a run's data interval starts at Chicago midnight = 05:00 or 06:00 UTC: the same calendar date
    states = {r["data_interval_start"][:10]: r["state"] for r in runs}
    columns = f"{'day':<10}  {'run':<7}  {'rows in':>8}  {'curated':>8}  {'quarant.':>8}  {'rate':>6}"
    header = f"{columns}  top reject reasons"
    lines = [header, "-" * len(header)]
    reports = []
    day = config.first_day
    while day <= config.last_day:
        key = day.isoformat()
        accounting = _read_json(data_root / "reports" / "validation" / f"dt={key}" / "accounting.json") or {}
        curated = _read_json(data_root / "curated" / "trips" / f"dt={key}" / "_manifest.json")
        curated_rows = curated["row_counts"].get("curated") if curated else None
        reasons = sorted(
            ((k, v) for k, v in (accounting.get("by_reason") or {}).items() if v), key=lambda x: -x[1]
        )
        top = ", ".join(f"{k} {v}" for k, v in reasons[:3]) or "-"
        rate = accounting.get("reject_rate")
        lines.append(
            f"{key:<10}  {states.get(key, '?'):<7}  {_n(accounting.get('rows_in')):>8}  {_n(curated_rows):>8}"
            f"  {_n(accounting.get('quarantined')):>8}  {'' if rate is None else f'{rate:.2%}':>6}  {top}"
        )
        index = data_root / "reports" / "validation" / f"dt={key}" / "index.html"
        if index.is_file():
            reports.append(str(index))
        day += dt.timedelta(days=1)
    lines.append("")
    lines.append(f"curated partitions:    {data_root / 'curated' / 'trips'}/dt=YYYY-MM-DD")
    lines.append(
        f"quarantine partitions: {data_root / 'quarantine' / 'trips'}/dt=YYYY-MM-DD (reject_reason column)"
    )
    lines.append("validation reports (open in a browser):")
    lines.extend(f"  {path}" for path in reports)
    return "\n".join(lines)


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


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


def _online_line(row: dict[str, Any], view: str) -> str:
    def value(name: str, fmt: str = "{:,}") -> str:
        v = row.get(f"{view}__{name}")
        return "null" if v is None else fmt.format(v)

    return (
        f"trips 1d/7d/28d {value('trips_1d')}/{value('trips_7d')}/{value('trips_28d')}"
        f"  fare mean 7d {value('fare_mean_7d', '{:.2f}')}"
        f"  tip rate 7d {value('tip_rate_mean_7d', '{:.3f}')}"
        f"  big tippers 28d {value('big_tipper_rate_28d', '{:.1%}')}"
    )


def _newest_row(data_root: Path, view: str, key: str, value: Any) -> tuple[str, dict[str, Any]] | None:
    """The newest feature partition holding the entity, and its row: what the online store serves."""
    import pyarrow.parquet as pq

    folder = data_root / "features" / view
    days = sorted((p.name[3:] for p in folder.glob("dt=*") if p.is_dir()), reverse=True)
    for day in days:
        rows = pq.read_table(folder / f"dt={day}", filters=[(key, "=", value)]).to_pylist()
        if rows:
            return day, rows[0]
    return None


def _lookup_check(row: dict[str, Any], view: str, newest: tuple[str, dict[str, Any]] | None) -> str:
    """Whether the online values equal the newest offline row of the entity (as materialize promises)."""
    if newest is None:
        return "no feature partition holds this entity"
    day, offline = newest
    names = [k for k in offline if k not in (FEATURE_VIEWS[view], "event_timestamp")]
    same = all(row.get(f"{view}__{name}") == offline[name] for name in names)
    verdict = "=" if same else "DIFFERS from"
    window = offline["window_days_28d"]
    return f"{verdict} features/{view}/dt={day} ({len(names)} features, {window} day(s) in the 28-day window)"


def summarize_features(demo: Demo, runs: list[dict[str, Any]]) -> str:
    """Which intervals the runs processed, rows per view and day, and one online lookup."""
    data_root, config, api = demo.data_root, demo.config, demo.api
    intervals = [
        f"[{argv[1]}, {argv[3]})"
        for r in runs
        if r["state"] == "success"
        for argv in api.xcom("taxi_features", r["dag_run_id"], "plan_intervals")
    ]
    events = sum(len(api.upstream_asset_events("taxi_features", r["dag_run_id"])) for r in runs)
    lines = [
        f"{len(runs)} asset-triggered run(s) consumed {events} curated-trips event(s):"
        f" intervals {', '.join(intervals)}",
        "",
    ]
    header = f"{'day':<10}  {'area rows':>9}  {'company rows':>12}  {'window days (28d)':>17}"
    lines += [header, "-" * len(header)]
    day = config.first_day
    while day <= config.last_day:
        key = day.isoformat()
        manifests = {
            view: _read_json(data_root / "features" / view / f"dt={key}" / "_manifest.json")
            for view in FEATURE_VIEWS
        }
        counts = {v: (m or {}).get("row_counts", {}) for v, m in manifests.items()}
        lines.append(
            f"{key:<10}  {_n(counts['pickup_area_stats'].get('rows')):>9}"
            f"  {_n(counts['company_stats'].get('rows')):>12}"
            f"  {_n(counts['pickup_area_stats'].get('window_days')):>17}"
        )
        day += dt.timedelta(days=1)
    lines.append("")
    company = _top_company(data_root, config.last_day)
    lookup = ["-e", f"pickup_community_area={LOOKUP_AREA}"] + (
        ["-e", f"company={company}"] if company else []
    )
    answer = demo.platform.ml_tasks("online-features", *lookup)
    [row] = answer["rows"]
    lines.append(
        f"online lookup ({answer['online_store']} store): ml-tasks online-features {shlex.join(lookup)}"
    )
    area = _newest_row(data_root, "pickup_area_stats", "pickup_community_area", LOOKUP_AREA)
    lines.append(f"  pickup area {LOOKUP_AREA:<28} {_online_line(row, 'pickup_area_stats')}")
    lines.append(f"  {'':<40} {_lookup_check(row, 'pickup_area_stats', area)}")
    if company:
        newest = _newest_row(data_root, "company_stats", "company", company)
        lines.append(f"  company {company[:32]:<32} {_online_line(row, 'company_stats')}")
        lines.append(f"  {'':<40} {_lookup_check(row, 'company_stats', newest)}")
    if area and area[0] > config.last_day.isoformat():
        lines.append(
            f"  (the online store serves each entity's newest materialized day, here {area[0]}: after the"
            " window; taxi_ingest, unpaused with catchup off, also ran its latest interval)"
        )
    lines.append("")
    lines.append(f"feature tables: {data_root / 'features'}/<view>/dt=YYYY-MM-DD")
    return "\n".join(lines)


def _top_company(data_root: Path, day: dt.date) -> str | None:
    """The company with the most trips in the 28 days up to ``day`` (None without its features)."""
    import pyarrow.parquet as pq

    path = data_root / "features" / "company_stats" / f"dt={day.isoformat()}"
    if not path.is_dir():
        return None
    table = pq.read_table(path, columns=["company", "trips_28d"]).sort_by([("trips_28d", "descending")])
    return str(table.column("company")[0].as_py()) if table.num_rows else None


# -- stage: training ------------------------------------------------------------------------------------
def training_conf(config: DemoConfig) -> dict[str, Any]:
    """Train on the window's first days, evaluate on its last ones (about a quarter, at least one day)."""
    eval_days = max(1, config.days // 4)
    if config.days - eval_days < 1:
        raise PlatformError(f"the training stage needs at least 2 days in the window, got {config.days}")
    end = config.last_day + dt.timedelta(days=1)
    return {"window_end": end.isoformat(), "train_days": config.days - eval_days, "eval_days": eval_days}


#: the demo's first model is promoted with the form's force switch (recorded on the version): on synthetic
#: data the network and the gradient-boosted-tree baseline are within a few thousandths of ROC-AUC, so the
#: gate alone may keep it as challenger; the summary prints what the gate itself decided
DEMO_FORCE = {"force_promote": True, "force_reason": "demo: bootstrap the first champion"}


def run_training(demo: Demo) -> list[dict[str, Any]]:
    """One manual taxi_training run over the window (train, then evaluate on the later days)."""
    api = demo.api
    api.set_paused("taxi_training", False)
    run_id = api.trigger("taxi_training", conf={**training_conf(demo.config), **DEMO_FORCE})
    return list(api.wait_runs("taxi_training", [run_id], timeout=demo.config.timeout).values())


def _metric(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def summarize_training(demo: Demo, runs: list[dict[str, Any]]) -> str:
    """Windows, the candidate against the baselines, the gate's decision, ONNX parity and latency."""
    api = demo.api
    [run] = runs
    run_id = run["dag_run_id"]
    windows = api.xcom("taxi_training", run_id, "plan_windows")
    trained = api.xcom("taxi_training", run_id, "train")
    evaluation = api.xcom("taxi_training", run_id, "evaluate")
    check = api.xcom("taxi_training", run_id, "check-onnx")
    decision = api.xcom("taxi_training", run_id, "promote")
    candidate = evaluation["candidate"]
    lines = [
        f"train [{windows['train_start']}, {windows['train_end']}) -> eval [{windows['eval_start']},"
        f" {windows['eval_end']}): {len(trained['trials'])} trial(s), best trial {trained['best_trial']}"
        f" (epoch {trained['best_epoch']}, {trained['device']})",
        "",
        f"{'model on the eval window':<28} {'ROC-AUC':>8} {'PR-AUC':>8} {'log loss':>9}",
        f"{'candidate':<28} {_metric(candidate.get('roc_auc')):>8} {_metric(candidate.get('pr_auc')):>8}"
        f" {_metric(candidate.get('log_loss')):>9}",
    ]
    for name, value in evaluation["baselines"].items():
        lines.append(f"{'baseline ' + name:<28} {_metric(value):>8}")
    if evaluation.get("champion"):
        lines.append(f"{'previous champion':<28} {_metric(evaluation['champion'].get('roc_auc')):>8}")
    for warning in evaluation.get("leakage_warnings", []):
        lines.append(f"leakage warning: {warning.get('message', warning)}")
    lines.append("")
    lines.append(
        f"ONNX: parity max |diff| {check.get('parity_max_abs_diff')}, batch-1 p50"
        f" {check.get('latency_p50_ms')} ms, {_n(check.get('large_batch_rows_per_second'))} rows/s"
        f" batched; check {'passed' if check.get('passed') else 'FAILED: ' + '; '.join(check['reasons'])}"
    )
    verdict = "champion" if decision["promoted"] else "challenger"
    if decision.get("forced"):
        verdict += f" (forced: {decision.get('force_reason')})"
    lines.append(f"registry: {decision['model']} version {decision['version']} -> {verdict}")
    gate = "; ".join(decision["reasons"]) or "promote: it beat every baseline and passed the ONNX checks"
    lines.append(f"the gate alone: {gate}")
    lines.append(f"model card: {Path(trained['bundle']) / 'model_card.md'}")
    store = demo.data_root / "mlflow" / "mlflow.db"
    lines.append(f"MLflow UI:  .venv/bin/mlflow ui --backend-store-uri sqlite:///{store} --port 5000")
    return "\n".join(lines)


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
    day before it (the demo's data has no 28 days of history)."""
    return {"FLYWHEEL_TRAIN_DAYS": str(config.days + 2), "FLYWHEEL_EVAL_DAYS": "1"}


def run_loop(demo: Demo) -> list[dict[str, Any]]:
    """One manual taxi_ingest run over the loop's days (drift from the second); then Airflow does the rest:
    features -> batch prediction -> monitoring -> (drift) -> retraining, each run created from an Asset.

    taxi_batch_predict was paused until now, so Airflow also kept the features events of the window's
    days: its first run scores those days too (with the champion), and monitoring judges them as well.
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


def _decision_line(day: str, decision: dict[str, Any]) -> str:
    drift = decision.get("drift") or {}
    drifted = drift.get("drifted_columns") or []
    names = ", ".join(str(c.get("column", c)) if isinstance(c, dict) else str(c) for c in drifted[:4])
    more = f" (+{len(drifted) - 4})" if len(drifted) > 4 else ""
    share = drift.get("drift_share")
    verdict = decision.get("verdict", "?")
    retrain = "RETRAIN" if decision.get("retrain") else "no retrain"
    reasons = "; ".join(decision.get("reasons") or [])
    return (f"{day}  {verdict:<9} drift share {share if share is None else f'{share:.2f}'}"
            f"  {names}{more}\n{'':12}{retrain}: {reasons}")  # fmt: skip


def summarize_loop(demo: Demo, runs: list[dict[str, Any]]) -> str:
    """Predictions per day, each day's drift decision, the retraining run and the lineage command."""
    import pyarrow.parquet as pq

    first, drift_from, end = loop_days(demo.config)
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range((end - first).days)]
    lines = [f"days {days[0]} .. {days[-1]}; synthetic drift from {drift_from} (payments, fares, companies,"
             " hours)", "", "predictions (champion, ONNX, sharded):"]  # fmt: skip
    for day in days:
        part = demo.data_root / "predictions" / "taxi_tips" / f"dt={day}" / "part-00000.parquet"
        if not part.is_file():
            lines.append(f"{day}  (no predictions)")
            continue
        table = pq.read_table(part, columns=["score", "decision", "model_version"])
        scores = table.column("score").to_numpy()
        positive = float(sum(table.column("decision").to_pylist())) / max(table.num_rows, 1)
        version = table.column("model_version")[0].as_py() if table.num_rows else "-"
        lines.append(f"{day}  {table.num_rows:>7,} trips  mean score {scores.mean():.3f}"
                     f"  big tippers predicted {positive:.1%}  model version {version}")  # fmt: skip
    lines += ["", "monitoring decisions (Evidently vs the model's training reference):"]
    for day in days:
        decision = _read_json(demo.data_root / "monitoring" / "taxi_tips" / f"dt={day}" / "decision.json")
        lines.append(_decision_line(day, decision) if decision else f"{day}  (no decision)")
        report = demo.data_root / "monitoring" / "taxi_tips" / f"dt={day}" / "drift_report.html"
        if decision and decision.get("verdict") != "no_drift" and report.is_file():
            lines.append(f"{'':12}report: {report}")
    retrains = [r for r in runs if r.get("dag_id") == "taxi_training"]
    lines.append("")
    if not retrains:
        lines.append("no retraining was requested (see the decisions above)")
    for run in retrains:
        run_id = run["dag_run_id"]
        windows = demo.api.xcom("taxi_training", run_id, "plan_windows")
        decision = demo.api.xcom("taxi_training", run_id, "promote") if run["state"] == "success" else None
        why = "; ".join((decision or {}).get("reasons") or [])
        outcome = "failed" if decision is None else (
            "new champion" if decision.get("promoted") else f"challenger ({why})"
        )  # fmt: skip
        lines.append(f"retraining (taxi_training {run_id}, started by the drift Asset): train"
                     f" [{windows['train_start']}, {windows['train_end']}) eval [{windows['eval_start']},"
                     f" {windows['eval_end']}) -> {outcome}")  # fmt: skip
    lines += ["", "which data and which model made a prediction:",
              f"  .venv/bin/ml-tasks lineage predictions/taxi_tips/dt={days[-1]}"]  # fmt: skip
    return "\n".join(lines)


STAGES: list[Stage] = [
    Stage("ingest", "taxi_ingest", run_ingest, summarize_ingest, how="backfill, one run per day"),
    Stage(
        "features",
        "taxi_features",
        run_features,
        summarize_features,
        how="runs created by Airflow from the curated-trips Asset events of the ingest runs",
        asset_triggered=True,
    ),
    Stage(
        "training",
        "taxi_training",
        run_training,
        summarize_training,
        how="one manual run: train on the first days, evaluate on the later ones, gate, register",
    ),
    Stage(
        "loop",
        "taxi_batch_predict",
        run_loop,
        summarize_loop,
        how=f"{LOOP_DAYS} more days (drift from the 2nd) by one manual ingest run; features, predictions,"
        " monitoring and the retraining follow through Assets",
    ),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.demo",
        description=__doc__.split("\n")[0],
        epilog="stages: " + "; ".join(f"{s.name} ({s.dag_id}: {s.how})" for s in STAGES),
    )
    parser.add_argument(
        "--first-day", type=dt.date.fromisoformat, default=DEFAULT_FIRST_DAY, help="YYYY-MM-DD"
    )
    parser.add_argument("--days", type=int, default=7, help="days in the demo window (default 7)")
    parser.add_argument("--trips-per-day", type=int, default=20_000, help="synthetic trips per day")
    parser.add_argument("--port", type=int, help="API port of a new platform (default 8080)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for each stage")
    ns = parser.parse_args(argv)
    if ns.days < 1:
        parser.error("--days must be at least 1")
    config = DemoConfig(ns.first_day, ns.days, ns.trips_per_day, ns.timeout)

    # no weekly taxi_training run for the current week (the demo's data lies in the past)
    platform = Platform.from_env(
        port=ns.port, extra_env={"FLYWHEEL_TRAINING_END_DATE": ns.first_day.isoformat(), **loop_env(config)}
    )
    try:
        seconds = platform.start()
        print(f"\nAirflow UI: {platform.url}   login: {platform.username} / {platform.password}")
        print(f"data root:  {platform.data_root}")
        print(f"(platform ready in {seconds:.1f} s)\n")
        demo = Demo(platform, platform.api(), config, began=dt.datetime.now(dt.UTC))
        for stage in STAGES:
            if stage.asset_triggered:  # before any producer runs: a paused consumer gets no runs
                demo.api.set_paused(stage.dag_id, False)
        for stage in STAGES:
            print(
                f"== {stage.name}: {stage.dag_id} over {config.first_day} .. {config.last_day}"
                f" ({config.days} days, {config.trips_per_day:,} trips/day; {stage.how})",
                flush=True,
            )
            started = time.monotonic()
            runs = stage.run(demo)
            demo.runs[stage.name] = runs
            elapsed = time.monotonic() - started
            failed = [r["dag_run_id"] for r in runs if r["state"] != "success"]
            per_run = elapsed / max(len(runs), 1)
            print(f"   {len(runs)} runs finished in {elapsed:.1f} s ({per_run:.1f} s per run)\n")
            try:
                print(stage.summarize(demo, runs))
            except PlatformError as exc:
                if not failed:
                    raise
                print(f"(no summary: {exc})")
            print()
            if failed:
                print(f"{stage.name}: {len(failed)} run(s) failed: {failed}; see the UI for the task logs")
                return 1
    except PlatformError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    print(f"Airflow keeps running at {platform.url} (login {platform.username} / {platform.password}).")
    print("Stop it with: make stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
