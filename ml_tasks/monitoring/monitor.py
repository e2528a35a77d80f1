"""``monitor``: drift, data quality and (once labels land) performance of one interval's predictions.

Writes ``monitoring/<model>/dt=<interval start>/`` (``drift_report.html``, ``drift_report.json``,
``decision.json``, ``_manifest.json``) atomically; a re-run replaces it and never counts its own earlier
decision. See ``docs/monitoring.md``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from ml_tasks.contract import (
    DECISION_JSON,
    DRIFT_REPORT_HTML,
    DRIFT_REPORT_JSON,
    MONITORING_LAYER,
    REGISTERED_MODEL,
    SCORE,
    TAG_TRAINING_SET_URI,
)
from ml_tasks.intervals import Interval
from ml_tasks.models.reference import Reference, load_reference, load_reference_dir
from ml_tasks.monitoring import MonitoringError
from ml_tasks.monitoring.decisions import previous_decisions
from ml_tasks.monitoring.drift import DriftResult, drift_report
from ml_tasks.monitoring.performance import TagsFor, evaluate_performance
from ml_tasks.monitoring.policy import PolicyConfig, decide
from ml_tasks.monitoring.predictions import (
    model_versions,
    parquet_files,
    prediction_batches,
    prediction_partitions,
)
from ml_tasks.monitoring.quality import scan_current
from ml_tasks.monitoring.report_html import with_quality
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, input_record

log = logging.getLogger(__name__)

#: calendar inputs and their cycle in days: in an interval shorter than the cycle they differ from a longer
#: reference by construction (a one-day interval has ONE day of the week), so they are not drift signals
CALENDAR_CYCLES = {"trip_start_day_of_week": 7, "trip_start_month": 365}
_INTERVAL_KEY = re.compile(r"(\d{4}-\d{2}-\d{2})_(\d{4}-\d{2}-\d{2})/?$")


def calendar_exclusions(columns: list[str], interval: Interval) -> dict[str, str]:
    """Calendar inputs excluded from the drift test of ``interval`` (:data:`CALENDAR_CYCLES`), with why."""
    return {
        name: f"calendar column: the interval ({interval.n_days} day(s)) is shorter than its {cycle}-day"
        " cycle,"
        " so it differs from the reference by construction (its values are in the data-quality summary)"
        for name, cycle in CALENDAR_CYCLES.items()
        if name in columns and interval.n_days < cycle
    }


def share_columns(columns: list[str], which: str) -> list[str] | None:
    """The inputs the drift share counts: ``trip`` = all but the feature-store aggregates (``<view>__<f>``).

    The aggregates are tested and reported too, but they trend with the history the store holds (a 28-day
    count grows for 28 days after the data begins; a one-day mean per area is noisy), so on a young store
    they drift every day while the trips do not; their drift follows from the trips' drift anyway.
    """
    if which == "all":
        return None
    return [c for c in columns if "__" not in c]


def training_end(uri: str | None) -> dt.date | None:
    """The (exclusive) end of a training set named ``<start>_<end>``, when its uri says it."""
    match = _INTERVAL_KEY.search(uri or "")
    return dt.date.fromisoformat(match.group(2)) if match else None


def training_set_uri(version_tags: dict[str, str] | None, reference_stats: dict[str, Any]) -> str | None:
    """The model's training set: the version's registry tag, else what its reference recorded."""
    return (version_tags or {}).get(TAG_TRAINING_SET_URI) or reference_stats.get("training_set_uri")


def _json_bytes(payload: Any) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n").encode()


def _placeholder_html(reason: str) -> str:
    return f"<!doctype html><html><body><h1>No drift report</h1><p>{reason}</p></body></html>\n"


def _quality_digest(quality: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline data-quality numbers (the full table is in drift_report.json)."""
    return {
        "new_categories": {
            c: q["new_categories"] for c, q in sorted(quality.items()) if q.get("new_categories")
        },
        "null_rate": {c: q["null_rate"] for c, q in sorted(quality.items())},
        "out_of_range_share": {
            c: q["out_of_range_share"] for c, q in sorted(quality.items()) if q.get("out_of_range_share")
        },
    }


def _resolve_reference(
    settings: Settings, model_name: str, version: str, reference: Reference | str | Path | None
) -> Reference:
    if isinstance(reference, Reference):
        return reference
    if reference is not None:
        return load_reference_dir(reference, model_name=model_name, model_version=version)
    return load_reference(settings, model_name, version)


def _version_tags(settings: Settings, model_name: str) -> TagsFor:
    """The registry tags of a version of ``model_name``: read once per version (a failed read is retried),
    over one client."""
    read: dict[str, dict[str, str]] = {}
    clients: list[Any] = []

    def tags(version: str) -> dict[str, str] | None:
        from mlflow.exceptions import MlflowException

        from ml_tasks.models import tracking
        from ml_tasks.models.registry import RegistryError, get_version

        if version in read:
            return read[version]
        try:
            if not clients:
                clients.append(tracking.client(settings))  # a client per call costs ~0.6 s on SQLite
            read[version] = get_version(clients[0], model_name, version).tags
        except (RegistryError, MlflowException) as exc:
            # the baseline falls back to the reference sample; the reason is logged
            log.warning(
                "no tags for %s version %s (%s): baseline from the reference", model_name, version, exc
            )
            return None
        return read[version]

    return tags


def run_monitoring(
    settings: Settings,
    interval: Interval,
    *,
    model_name: str = REGISTERED_MODEL,
    reference: Reference | str | Path | None = None,
) -> dict[str, Any]:
    """Monitor the predictions of ``interval``; write ``monitoring/<model>/dt=<start>/``; return the summary.

    Args:
        settings: data root, monitor_* thresholds, drift_hysteresis, retrain_cooldown_days.
        interval: the monitored interval.
        model_name: the registered model whose predictions are monitored.
        reference: the reference to use instead of the registered version's (a loaded one, or a local folder
            holding the two files: tests and offline comparisons; the version's registry tags are then not
            read either).

    Returns:
        ``{"model", "interval", "partition", "verdict", "alert", "retrain", "consecutive_drift",
        "drift_share",
        "drifted_columns", "prediction_drift", "performance", "reasons", "rows", "sample_rows", "seconds",
        "decision"}``.

    Raises:
        PartitionError: a day of the interval has no predictions.
        ReferenceNotFoundError: the model version has no reference.
        MonitoringError: predictions without the columns the reference needs.
    """
    started = time.perf_counter()
    root = DataRoot(settings.resolved_data_root())
    paths = prediction_partitions(root, model_name, interval)
    files = parquet_files(root, paths)
    versions = model_versions(files)
    if versions:
        version = max(versions.items(), key=lambda kv: (kv[1], kv[0]))[0]
    else:
        # an interval without trips: the manifests still name the model
        model_records = [
            i["model"]
            for p in paths
            for i in root.read_manifest(p).inputs
            if isinstance(i, dict) and "model" in i
        ]
        if not model_records:
            raise MonitoringError(
                f"the predictions of {interval} have no rows and no model record: nothing to monitor"
            )
        version = str(model_records[0]["version"])
    if len(versions) > 1:
        log.warning(
            "%s: predictions of %d versions %s; monitoring version %s",
            interval,
            len(versions),
            dict(versions),
            version,
        )
    ref = _resolve_reference(settings, model_name, version, reference)
    t_ref = time.perf_counter()
    columns = [*ref.inputs, SCORE]
    rows = versions.get(version, 0)
    scan = scan_current(
        prediction_batches(files, columns, version if len(versions) > 1 else None),
        rows,
        ref.stats,
        sample_rows=settings.monitor_sample_rows,
        seed=settings.monitor_seed,
    )
    t_scan = time.perf_counter()
    result: DriftResult = drift_report(
        ref.sample,
        scan.sample,
        ref.categorical,
        ref.numeric,
        drift_share=settings.monitor_drift_share,
        summary=settings.monitor_evidently_summary,
        exclude=calendar_exclusions(ref.inputs, interval),
        share_of=share_columns(ref.inputs, settings.monitor_share_columns),
        calibration=ref.stats.get("drift_null"),
    )
    t_drift = time.perf_counter()
    tags_for = _version_tags(settings, model_name) if reference is None else None
    performance, label_records = evaluate_performance(root, settings, model_name, interval, ref, tags_for)
    t_perf = time.perf_counter()
    previous = previous_decisions(root, model_name, interval)
    version_tags = tags_for(version) if tags_for is not None else None
    trained_until = training_end(training_set_uri(version_tags, ref.stats))
    model = {
        "name": model_name,
        "version": version,
        "uri": f"models:/{model_name}/{version}",
        "versions_in_interval": dict(sorted(versions.items())),
    }
    drift_dict = result.to_dict()
    decision = decide(
        interval=interval,
        model=model,
        drift=drift_dict,
        performance=performance,
        previous=previous,
        config=PolicyConfig.from_settings(settings),
        model_trained_until=trained_until,
        data_quality={"rows": scan.rows, **_quality_digest(scan.quality)},
    )
    report = {
        "format_version": 1,
        "interval": decision["interval"],
        "model": model,
        "method": {
            "data_quality": "pyarrow over every current row, compared with the reference statistics of every"
            " training row",
            "drift": f"Evidently {_evidently_version()} on a seeded uniform sample of at most"
            f" {settings.monitor_sample_rows} current rows (seed {settings.monitor_seed}) against the"
            f" reference sample ({ref.sample.num_rows} training rows)",
        },
        "data_quality": scan.summary(),
        "drift": drift_dict,
        "performance": decision["performance"],
        "evidently": json.loads(result.snapshot.json()) if result.snapshot is not None else None,
    }
    html = with_quality(
        result.snapshot.get_html_str(as_iframe=False)
        if result.snapshot is not None
        else _placeholder_html(
            f"no Evidently drift test in {interval}: {result.insufficient_data or 'no column to test'}"
        ),
        scan.summary(),
    )
    files_out = {
        DRIFT_REPORT_HTML: html.encode(),
        DRIFT_REPORT_JSON: _json_bytes(report),
        DECISION_JSON: _json_bytes(decision),
    }
    target = root.partition_path(MONITORING_LAYER, model_name, interval.start)
    with root.write_partition(target) as writer:
        for name, data in files_out.items():
            with root.fs.open_output_stream(f"{writer.staging}/{name}") as out:
                out.write(data)
        writer.manifest = Manifest(
            dataset=f"{MONITORING_LAYER}/{model_name}",
            partition=interval.start.isoformat(),
            step="monitor",
            inputs=[input_record(root, p) for p in paths] + [ref.record()] + label_records,
            outputs=[
                {
                    "uri": root.uri(f"{target}/{name}"),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data),
                }
                for name, data in files_out.items()
            ],
            row_counts={
                "rows": scan.rows,
                "sample_rows": scan.sample.num_rows,
                "reference_sample_rows": ref.sample.num_rows,
                "labelled_rows": int(performance.get("labelled_rows", 0)),
            },
            params={
                "model": model_name,
                "model_version": version,
                "interval": str(interval),
                "sample_rows": settings.monitor_sample_rows,
                "seed": settings.monitor_seed,
                "label_delay_days": settings.monitor_label_delay_days,
                "thresholds": decision["thresholds"],
            },
        )
    seconds = {
        "reference": round(t_ref - started, 3),
        "scan": round(t_scan - t_ref, 3),
        "evidently": round(t_drift - t_scan, 3),
        "performance": round(t_perf - t_drift, 3),
        "total": round(time.perf_counter() - started, 3),
    }
    log.info(
        "monitor %s %s v%s: %s (retrain %s), share %s, %d rows in %.2f s",
        model_name, interval, version, decision["verdict"], decision["retrain"], result.drift_share,
        scan.rows, seconds["total"],
    )  # fmt: skip
    return {
        "model": model,
        "interval": decision["interval"],
        "partition": root.uri(target),
        "verdict": decision["verdict"],
        "alert": decision["alert"],
        "retrain": decision["retrain"],
        "consecutive_drift": decision["consecutive_drift"],
        "drift_share": result.drift_share,
        "drifted_columns": result.drifted_columns,
        "prediction_drift": bool(result.prediction_drift and result.prediction_drift.get("drifted")),
        "performance": decision["performance"].get("status"),
        "reasons": decision["reasons"],
        "rows": scan.rows,
        "sample_rows": scan.sample.num_rows,
        "seconds": seconds,
        "decision": decision,
    }


def _evidently_version() -> str:
    import importlib.metadata as md

    return md.version("evidently")
