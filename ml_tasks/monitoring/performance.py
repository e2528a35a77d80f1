"""Performance once labels land: the predictions of the interval ``monitor_label_delay_days`` earlier,
joined with the curated trips' labels by trip key, against the training-time ROC-AUC."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml_tasks.contract import CURATED, LABEL, MANIFEST, PREDICTIONS_LAYER, SCORE, TAG_METRIC, TRIP_KEY
from ml_tasks.intervals import Interval
from ml_tasks.models.reference import Reference
from ml_tasks.monitoring.predictions import parquet_files
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, input_record

#: a model version's registry tags, or None when they cannot be read
TagsFor = Callable[[str], dict[str, str] | None]


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
    tags_for: TagsFor | None = None,
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
        if not root.exists(f"{pred}/{MANIFEST}"):
            missing.append(f"no predictions for {day}")
        if not root.exists(f"{label}/{MANIFEST}"):
            missing.append(f"no curated trips (labels) for {day}")
        pred_paths.append(pred)
        label_paths.append(label)
    if missing:
        block.update(
            status="labels_not_landed", reason=f"labels not landed for {labelled}: {'; '.join(missing)}"
        )
        return block, []
    preds = pa.concat_tables(
        [
            f.read(columns=[TRIP_KEY, SCORE, "threshold", "model_version"])
            for f in parquet_files(root, pred_paths)
        ]
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
