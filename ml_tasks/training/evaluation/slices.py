"""Slices of the evaluation window: payment type, company, hour bucket, pickup area (top values, "other",
"(null)"), each with rows, positive rate, mean score, ROC-AUC and accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.models.metrics import auc_or_none, check_scores

#: slice name -> source column (hour_bucket is bucketed from the request-time hour)
SLICE_COLUMNS: dict[str, str] = {
    "payment_type": "payment_type",
    "company": "company",
    "hour_bucket": "trip_start_hour",
    "pickup_area": "pickup_community_area",
}
HOUR_BUCKETS = ("night", "morning", "afternoon", "evening")  # 0-5, 6-11, 12-17, 18-23
OTHER = "other"
NULL = "(null)"

Codes = npt.NDArray[np.int64]


def top_k_codes(column: pa.ChunkedArray | pa.Array, top: int = 10) -> tuple[Codes, list[str]]:
    """Slice codes of ``column``: index into the returned names = its ``top`` most frequent values (as
    strings; by count, ties by value), then "other", then "(null)".
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    text = pc.cast(column, pa.string())
    counts = pc.value_counts(text.drop_null())
    ranked = (
        pa.table({"value": counts.field("values"), "count": counts.field("counts")})
        .sort_by([("count", "descending"), ("value", "ascending")])
        .slice(0, top)
    )
    names = [str(v) for v in ranked["value"].to_pylist()]
    index = pc.index_in(text, value_set=pa.array(names, pa.string()))
    # not among the top -> len(names) ("other"); null -> len(names) + 1 ("(null)")
    codes = pc.if_else(pc.is_null(text), len(names) + 1, pc.fill_null(index, len(names)))
    return np.asarray(pc.cast(codes, pa.int64()).to_numpy(zero_copy_only=False)), [*names, OTHER, NULL]


def hour_bucket_codes(hours: pa.ChunkedArray | pa.Array) -> tuple[Codes, list[str]]:
    """Hour-bucket codes of trip start hours 0-23 (night 0-5, morning 6-11, afternoon 12-17, evening
    18-23, then "(null)") and the bucket names.

    Raises:
        ValueError: an hour outside 0-23.
    """
    values = pc.cast(hours, pa.int64())
    bounds = pc.min_max(values)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is not None and (low < 0 or high > 23):
        raise ValueError(f"trip_start_hour must be in 0-23, got values in [{low}, {high}]")
    codes = pc.fill_null(pc.divide(values, 6), len(HOUR_BUCKETS))  # integer division for int64
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64), [*HOUR_BUCKETS, NULL]


def _labels(codes: Codes, names: list[str]) -> tuple[npt.NDArray[np.object_], list[str]]:
    counts = np.bincount(codes, minlength=len(names))
    return np.asarray(names, dtype=object)[codes], [n for n, c in zip(names, counts, strict=True) if c]


def top_k_labels(
    column: pa.ChunkedArray | pa.Array, top: int = 10
) -> tuple[npt.NDArray[np.object_], list[str]]:
    """Per-row slice labels of :func:`top_k_codes` and the slices that occur, in display order."""
    return _labels(*top_k_codes(column, top))


def hour_bucket_labels(hours: pa.ChunkedArray | pa.Array) -> tuple[npt.NDArray[np.object_], list[str]]:
    """Per-row labels of :func:`hour_bucket_codes` and the buckets that occur, in display order."""
    return _labels(*hour_bucket_codes(hours))


def slice_metrics(
    table: pa.Table, y: npt.ArrayLike, p: npt.ArrayLike, threshold: float, *, top: int = 10
) -> dict[str, list[dict[str, Any]]]:
    """Per-slice rows, positive rate, mean score, ROC-AUC (None for a one-class slice) and accuracy.

    Slices: payment_type, company and pickup_area (top ``top`` values + "other" + "(null)") and
    hour_bucket (from trip_start_hour); only slices with rows are listed.

    Raises:
        ValueError: a slice column is missing, or the table and scores are not row-aligned.
    """
    y_arr, p_arr = check_scores(y, p, "slice_metrics")
    if table.num_rows != y_arr.size:
        raise ValueError(
            f"slice_metrics: the table has {table.num_rows} rows but there are {y_arr.size} scores"
        )
    missing = [c for c in SLICE_COLUMNS.values() if c not in table.column_names]
    if missing:
        raise ValueError(f"slice_metrics: the table has no slice column(s) {missing}")
    correct = ((p_arr >= threshold) == y_arr).astype(np.float64)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, column in SLICE_COLUMNS.items():
        if name == "hour_bucket":
            codes, names = hour_bucket_codes(table[column])
        else:
            codes, names = top_k_codes(table[column], top)
        k = len(names)
        rows = np.bincount(codes, minlength=k)
        positives = np.bincount(codes, weights=y_arr.astype(np.float64), minlength=k)
        scores = np.bincount(codes, weights=p_arr, minlength=k)
        right = np.bincount(codes, weights=correct, minlength=k)
        # one stable sort groups the rows of each slice: slice i is order[starts[i]:starts[i] + rows[i]]
        order = np.argsort(codes, kind="stable")
        starts = np.concatenate(([0], np.cumsum(rows)[:-1]))
        out[name] = []
        for i in np.flatnonzero(rows):
            members = order[starts[i] : starts[i] + rows[i]]
            out[name].append(
                {
                    "slice": names[i],
                    "rows": int(rows[i]),
                    "positive_rate": float(positives[i] / rows[i]),
                    "mean_score": float(scores[i] / rows[i]),
                    "roc_auc": auc_or_none(y_arr[members], p_arr[members]),
                    "accuracy": float(right[i] / rows[i]),
                }
            )
    return out
