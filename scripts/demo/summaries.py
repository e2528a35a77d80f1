"""What each demo stage prints: read back from the data root and the runs' XComs."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from pathlib import Path
from typing import Any

from ml_tasks.contract import (
    ACCOUNTING_FILE,
    CURATED,
    DECISION_JSON,
    DRIFT_REPORT_HTML,
    EVENT_TIMESTAMP,
    FEATURES_LAYER,
    INDEX_FILE,
    MANIFEST,
    MONITORING_LAYER,
    PART_FILE,
    PREDICTIONS_LAYER,
    QUARANTINE,
    REGISTERED_MODEL,
    VALIDATION_REPORTS,
)
from ml_tasks.training.gate import FORCED_PREFIX
from scripts.demo.stages import Demo, loop_days

FEATURE_VIEWS = {"pickup_area_stats": "pickup_community_area", "company_stats": "company"}
#: the online lookup of the features stage: the Near North Side (the busiest pickup area)
LOOKUP_AREA = 8


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
        accounting = _read_json(data_root.joinpath(*VALIDATION_REPORTS, f"dt={key}", ACCOUNTING_FILE)) or {}
        curated = _read_json(data_root.joinpath(*CURATED, f"dt={key}", MANIFEST))
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
        index = data_root.joinpath(*VALIDATION_REPORTS, f"dt={key}", INDEX_FILE)
        if index.is_file():
            reports.append(str(index))
        day += dt.timedelta(days=1)
    lines.append("")
    lines.append(f"curated partitions:    {data_root.joinpath(*CURATED)}/dt=YYYY-MM-DD")
    lines.append(
        f"quarantine partitions: {data_root.joinpath(*QUARANTINE)}/dt=YYYY-MM-DD (reject_reason column)"
    )
    lines.append("validation reports (open in a browser):")
    lines.extend(f"  {path}" for path in reports)
    return "\n".join(lines)


def _n(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


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

    folder = data_root / FEATURES_LAYER / view
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
    names = [k for k in offline if k not in (FEATURE_VIEWS[view], EVENT_TIMESTAMP)]
    same = all(row.get(f"{view}__{name}") == offline[name] for name in names)
    verdict = "=" if same else "DIFFERS from"
    window = offline["window_days_28d"]
    return f"{verdict} features/{view}/dt={day} ({len(names)} features, {window} day(s) in the 28-day window)"


def summarize_features(demo: Demo, runs: list[dict[str, Any]]) -> str:
    """Which intervals the runs processed, rows per view and day, and one online lookup."""
    data_root, config, api = demo.data_root, demo.config, demo.api
    planned = [
        f"[{argv[1]}, {argv[3]})"
        for r in runs
        if r["state"] == "success"
        for argv in api.xcom("taxi_features", r["dag_run_id"], "plan_intervals")
    ]
    intervals = list(dict.fromkeys(planned))  # a run re-plans what an earlier run left pending: once each
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
            view: _read_json(data_root / FEATURES_LAYER / view / f"dt={key}" / MANIFEST)
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
    where = (
        demo.platform.env().get("FLYWHEEL_REDIS_CONNECTION") if answer["online_store"] == "redis" else None
    )
    lines.append(
        f"online lookup ({answer['online_store']} store{f' at {where}' if where else ''}):"
        f" ml-tasks online-features {shlex.join(lookup)}"
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

    path = data_root / FEATURES_LAYER / "company_stats" / f"dt={day.isoformat()}"
    if not path.is_dir():
        return None
    table = pq.read_table(path, columns=["company", "trips_28d"]).sort_by([("trips_28d", "descending")])
    return str(table.column("company")[0].as_py()) if table.num_rows else None


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
    if decision.get("forced"):  # the reasons it overrode are the gate's own refusal
        gate = "refused: " + gate.replace(FORCED_PREFIX, "")
    lines.append(f"the gate alone: {gate}")
    lines.append(f"model card: {Path(trained['bundle']) / 'model_card.md'}")
    if demo.platform.mlflow_url:
        lines.append(f"MLflow UI:  {demo.platform.mlflow_url}/#/models/{decision['model']} (tracking server)")
    else:
        store = demo.data_root / "mlflow" / "mlflow.db"
        lines.append(f"MLflow UI:  .venv/bin/mlflow ui --backend-store-uri sqlite:///{store} --port 5000")
    return "\n".join(lines)


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
        part = demo.data_root / PREDICTIONS_LAYER / REGISTERED_MODEL / f"dt={day}" / PART_FILE
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
        decision = _read_json(
            demo.data_root / MONITORING_LAYER / REGISTERED_MODEL / f"dt={day}" / DECISION_JSON
        )
        lines.append(_decision_line(day, decision) if decision else f"{day}  (no decision)")
        report = demo.data_root / MONITORING_LAYER / REGISTERED_MODEL / f"dt={day}" / DRIFT_REPORT_HTML
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
