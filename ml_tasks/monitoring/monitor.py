"""``monitor``: drift, data quality and (once labels land) performance of one interval's predictions.

Reads ``predictions/<model>/dt=*`` of the interval (only the model's input columns and the score: parquet
column projection), the reference of the model version that made them, runs :mod:`.drift` (every row for the
data-quality numbers, a seeded bounded sample for Evidently), evaluates the predictions of the interval
``monitor_label_delay_days`` earlier against the labels of the curated trips (``big_tipper``, joined by
``trip_key``), decides with :mod:`.policy` and writes ``monitoring/<model>/dt=<interval start>/``
(``drift_report.html``, ``drift_report.json``, ``decision.json``, ``_manifest.json``) atomically. Re-running
an interval replaces its directory; its own earlier decision never counts in its hysteresis.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml_tasks.contract import (
    CURATED,
    DECISION_JSON,
    DRIFT_REPORT_HTML,
    DRIFT_REPORT_JSON,
    LABEL,
    MONITORING_LAYER,
    PREDICTIONS_LAYER,
    SCORE,
    TAG_METRIC,
    TAG_TRAINING_SET_URI,
    TRIP_KEY,
)
from ml_tasks.intervals import Interval
from ml_tasks.models.reference import Reference, load_reference, load_reference_dir
from ml_tasks.monitoring import MonitoringError
from ml_tasks.monitoring.drift import DriftResult, drift_report, scan_current
from ml_tasks.monitoring.policy import PolicyConfig, decide
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, PartitionError, input_record

log = logging.getLogger(__name__)

BATCH_ROWS = 65_536
#: calendar inputs and their cycle in days: in an interval shorter than the cycle they differ from a longer
#: reference by construction (a one-day interval has ONE day of the week), so they are not drift signals
CALENDAR_CYCLES = {"trip_start_day_of_week": 7, "trip_start_month": 365}
_INTERVAL_KEY = re.compile(r"(\d{4}-\d{2}-\d{2})_(\d{4}-\d{2}-\d{2})/?$")


# -- predictions ----------------------------------------------------------------------------------------


def prediction_partitions(root: DataRoot, model_name: str, interval: Interval) -> list[str]:
    """The complete predictions partitions of every day of ``interval``.

    Raises:
        PartitionError: a day has no (complete) predictions partition.
    """
    paths = {d: root.partition_path(PREDICTIONS_LAYER, model_name, d) for d in interval.days()}
    missing = [d.isoformat() for d, p in paths.items() if not root.exists(f"{p}/_manifest.json")]
    if missing:
        raise PartitionError(
            f"no predictions for {model_name} on {len(missing)} day(s) of {interval}:"
            f" {', '.join(missing[:10])} (looked in"
            f" {root.uri(root.dataset_path(PREDICTIONS_LAYER, model_name))}); run taxi_batch_predict"
            " for them first"
        )
    return list(paths.values())


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


def _parquet(root: DataRoot, paths: list[str]) -> list[pq.ParquetFile]:
    return [pq.ParquetFile(root.fs.open_input_file(f)) for p in paths for f in root.parquet_files(p)]


def model_versions(files: list[pq.ParquetFile]) -> Counter[str]:
    """Rows per ``model_version`` over the files (one projected column)."""
    counts: Counter[str] = Counter()
    for file in files:
        if "model_version" not in file.schema_arrow.names:
            raise MonitoringError(
                "a predictions file has no model_version column: not a predictions partition"
            )
        vc = pc.value_counts(file.read(columns=["model_version"]).column(0))
        for value, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
            counts[str(value)] += int(n)
    return counts


def _batches(
    files: list[pq.ParquetFile], columns: list[str], version: str | None
) -> Iterator[pa.RecordBatch]:
    """The files' rows (projected on ``columns``), only those of ``version`` when given, in file order."""
    read = [*columns, "model_version"] if version is not None else columns
    for file in files:
        absent = [c for c in read if c not in file.schema_arrow.names]
        if absent:
            raise MonitoringError(
                f"a predictions file lacks the column(s) {absent} the model's reference needs"
            )
        for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=read):
            if version is not None:
                batch = batch.filter(pc.equal(batch.column("model_version"), version)).select(columns)
            yield batch


# -- performance ------------------------------------------------------------------------------------------


def training_end(uri: str | None) -> dt.date | None:
    """The (exclusive) end of a training set named ``<start>_<end>``, when its uri says it."""
    match = _INTERVAL_KEY.search(uri or "")
    return dt.date.fromisoformat(match.group(2)) if match else None


def training_set_uri(version_tags: dict[str, str] | None, reference_stats: dict[str, Any]) -> str | None:
    """The model's training set: the version's registry tag, else what its reference recorded."""
    return (version_tags or {}).get(TAG_TRAINING_SET_URI) or reference_stats.get("training_set_uri")


def _baseline(reference: Reference, version: str, tags: dict[str, str] | None) -> dict[str, Any]:
    """The training-time ROC-AUC to compare with: version tags (evaluation window, then test split), else the
    reference sample's labels and scores (training rows: optimistic, said so)."""
    for name, source in (("eval_roc_auc", "evaluation window"), ("test_roc_auc", "test split")):
        value = (tags or {}).get(f"{TAG_METRIC}.{name}")
        if value is not None:
            return {
                "roc_auc": float(value),
                "source": f"version {version} tag {TAG_METRIC}.{name} ({source})",
            }
    if reference.model_version in (None, version):
        from sklearn.metrics import roc_auc_score

        y = np.asarray(reference.sample.column(LABEL).to_numpy(zero_copy_only=False), dtype=np.int8)
        p = np.asarray(reference.sample.column(SCORE).to_numpy(zero_copy_only=False), dtype=np.float64)
        if 0 < y.sum() < y.size:
            return {
                "roc_auc": float(roc_auc_score(y, p)),
                "source": "reference sample (training rows, in-sample: optimistic)",
            }
    return {"roc_auc": None, "source": None}


def evaluate_performance(
    root: DataRoot,
    settings: Settings,
    model_name: str,
    interval: Interval,
    reference: Reference,
    tags_for: Any = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics of the predictions of the interval ``monitor_label_delay_days`` before ``interval``, joined
    with their labels; ``status`` ``labels_not_landed`` (no error) when those predictions or labels are
    absent.

    Returns:
        the performance block and the manifest input records it read.
    """
    from ml_tasks.models.metrics import classification_metrics

    delay = dt.timedelta(days=settings.monitor_label_delay_days)
    labelled = Interval(interval.start - delay, interval.end - delay)
    block: dict[str, Any] = {
        "interval": {"start": labelled.start.isoformat(), "end": labelled.end.isoformat()},
        "label_delay_days": settings.monitor_label_delay_days,
    }
    missing: list[str] = []
    pred_paths, label_paths = [], []
    for day in labelled.days():
        pred = root.partition_path(PREDICTIONS_LAYER, model_name, day)
        label = root.partition_path(*CURATED, day)
        if not root.exists(f"{pred}/_manifest.json"):
            missing.append(f"no predictions for {day}")
        if not root.exists(f"{label}/_manifest.json"):
            missing.append(f"no curated trips (labels) for {day}")
        pred_paths.append(pred)
        label_paths.append(label)
    if missing:
        block.update(
            status="labels_not_landed", reason=f"labels not landed for {labelled}: {'; '.join(missing)}"
        )
        return block, []
    preds = pa.concat_tables(
        [f.read(columns=[TRIP_KEY, SCORE, "threshold", "model_version"]) for f in _parquet(root, pred_paths)]
    )
    labels = pa.concat_tables(
        [
            pq.read_table(f, filesystem=root.fs, columns=[TRIP_KEY, LABEL])
            for p in label_paths
            for f in root.parquet_files(p)
        ]
    )
    records = [input_record(root, p) for p in (*pred_paths, *label_paths)]
    joined = preds.join(labels, TRIP_KEY, join_type="inner").filter(pc.is_valid(pc.field(LABEL)))
    block.update(predictions=preds.num_rows, labelled_rows=joined.num_rows)
    y = np.asarray(pc.cast(joined.column(LABEL), pa.int8()).to_numpy(zero_copy_only=False))
    if joined.num_rows == 0 or y.min() == y.max():
        block.update(
            status="insufficient_labels",
            reason=f"performance not evaluated: {joined.num_rows} labelled prediction(s) of {labelled}"
            " (ROC-AUC needs both classes)",
        )
        return block, records
    versions = Counter(str(v) for v in joined.column("model_version").to_pylist())
    version = versions.most_common(1)[0][0]
    threshold = float(pc.min(joined.column("threshold")).as_py())
    p = np.asarray(joined.column(SCORE).to_numpy(zero_copy_only=False), dtype=np.float64)
    metrics = classification_metrics(y, p, threshold)
    keep = ("roc_auc", "pr_auc", "log_loss", "accuracy", "positive_rate", "mean_score", "rows")
    tags = tags_for(version) if tags_for is not None else None
    block.update(
        status="evaluated",
        model_version=version,
        model_versions=dict(sorted(versions.items())),
        threshold=threshold,
        metrics={k: metrics[k] for k in keep},
        baseline=_baseline(reference, version, tags),
    )
    return block, records


# -- previous decisions and writing -------------------------------------------------------------------------


def previous_decisions(root: DataRoot, model_name: str, interval: Interval) -> list[dict[str, Any]]:
    """Decisions of the intervals that start before ``interval`` (ordered by start)."""
    out = []
    for key in root.list_partitions(MONITORING_LAYER, model_name):
        if key >= interval.start.isoformat():
            continue
        path = f"{root.partition_path(MONITORING_LAYER, model_name, key)}/{DECISION_JSON}"
        if root.exists(path):
            out.append(root.read_json(path))
    return sorted(out, key=lambda d: str(d["interval"]["start"]))


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


def _version_tags(settings: Settings, model_name: str) -> Any:
    def tags(version: str) -> dict[str, str] | None:
        from ml_tasks.models.registry import get_version

        try:
            return get_version(settings, model_name, version).tags
        except Exception as exc:  # the baseline falls back to the reference sample; the reason is logged
            log.warning(
                "no tags for %s version %s (%s): baseline from the reference", model_name, version, exc
            )
            return None

    return tags


def run_monitoring(
    settings: Settings,
    interval: Interval,
    *,
    model_name: str = "taxi_tips",
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
    files = _parquet(root, paths)
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
        _batches(files, columns, version if len(versions) > 1 else None),
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
        exclude=calendar_exclusions(ref.inputs, interval),
        share_of=share_columns(ref.inputs, settings.monitor_share_columns),
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
    html = (
        result.snapshot.get_html_str(as_iframe=False)
        if result.snapshot is not None
        else _placeholder_html(f"no current rows in {interval}: nothing to compare")
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
