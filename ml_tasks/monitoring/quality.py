"""Data quality over every current row: one streamed pass of running statistics and a seeded sample.

Per column the statistics merge batch by batch (numeric: Chan's parallel mean/variance, min/max, rows
outside the reference range; categorical: value counts -> values new to the reference vocabulary); the
sample's row positions are drawn up front, so it depends only on the rows, their order and the seed.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import SCORE
from ml_tasks.models.column_stats import categorical_values, finite_float, sample_indices
from ml_tasks.monitoring import MonitoringError

#: distinct categorical values tracked per column (beyond this, only the count of new-value rows is exact)
MAX_DISTINCT = 100_000
#: new categories listed per column in the summary (the count covers all of them)
TOP_NEW = 20


@dataclass
class NumericAccumulator:
    """Running statistics of one numeric column (mergeable batch by batch)."""

    ref_min: float | None = None
    ref_max: float | None = None
    count: int = 0
    nulls: int = 0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float | None = None
    max: float | None = None
    below: int = 0
    above: int = 0

    def update(self, column: pa.Array | pa.ChunkedArray) -> None:
        values = finite_float(column)
        self.count += len(values)
        valid = values.drop_null()
        k = len(valid)
        self.nulls += len(values) - k
        if k == 0:
            return
        arr = np.asarray(valid.to_numpy(zero_copy_only=False), dtype=np.float64)
        b_mean = float(arr.mean())
        b_m2 = float(((arr - b_mean) ** 2).sum())
        # Chan et al.: merge (n, mean, M2) of two parts without a second pass or a catastrophic sum of squares
        total = self.n + k
        delta = b_mean - self.mean
        self.mean += delta * k / total
        self.m2 += b_m2 + delta * delta * self.n * k / total
        self.n = total
        lo, hi = float(arr.min()), float(arr.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        if self.ref_min is not None:
            self.below += int(np.count_nonzero(arr < self.ref_min))
        if self.ref_max is not None:
            self.above += int(np.count_nonzero(arr > self.ref_max))

    def summary(self, reference: Mapping[str, Any]) -> dict[str, Any]:
        out_of_range = self.below + self.above
        std = math.sqrt(self.m2 / self.n) if self.n else None
        ref_count = int(reference.get("count") or 0)
        return {
            "kind": "numeric",
            "count": self.count,
            "null_count": self.nulls,
            "null_rate": _rate(self.nulls, self.count),
            "reference_null_rate": _rate(int(reference.get("null_count") or 0), ref_count),
            "min": self.min,
            "max": self.max,
            "mean": self.mean if self.n else None,
            "std": std,
            "reference_min": reference.get("min"),
            "reference_max": reference.get("max"),
            "reference_mean": reference.get("mean"),
            "reference_std": reference.get("std"),
            "out_of_range": out_of_range,
            "out_of_range_share": _rate(out_of_range, self.n),
            "below_reference_min": self.below,
            "above_reference_max": self.above,
        }


@dataclass
class CategoricalAccumulator:
    """Value counts of one categorical column (merged batch by batch) and the reference vocabulary."""

    vocabulary: set[Any] = field(default_factory=set)
    vocabulary_truncated: bool = False
    count: int = 0
    nulls: int = 0
    counts: Counter[Any] = field(default_factory=Counter)
    overflow: bool = False
    new_rows_overflow: int = 0

    def update(self, column: pa.Array | pa.ChunkedArray) -> None:
        values = categorical_values(column)
        self.count += len(values)
        self.nulls += values.null_count
        vc = pc.value_counts(values.drop_null())
        for value, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
            if value in self.counts or len(self.counts) < MAX_DISTINCT:
                self.counts[value] += int(n)
            else:
                # beyond the cap only rows of new values are counted (the vocabulary is still exact)
                self.overflow = True
                if value not in self.vocabulary:
                    self.new_rows_overflow += int(n)

    def summary(self, reference: Mapping[str, Any]) -> dict[str, Any]:
        new = {v: n for v, n in self.counts.items() if v not in self.vocabulary}
        new_rows = sum(new.values()) + self.new_rows_overflow
        top = sorted(new.items(), key=lambda p: (-p[1], str(p[0])))[:TOP_NEW]
        ref_count = int(reference.get("count") or 0)
        return {
            "kind": "categorical",
            "count": self.count,
            "null_count": self.nulls,
            "null_rate": _rate(self.nulls, self.count),
            "reference_null_rate": _rate(int(reference.get("null_count") or 0), ref_count),
            "distinct": len(self.counts),
            "distinct_capped": self.overflow,
            "reference_distinct": reference.get("distinct"),
            "new_categories": len(new),
            "new_category_rows": new_rows,
            "new_category_share": _rate(new_rows, self.count - self.nulls),
            "top_new_categories": [[v, n] for v, n in top],
            # a truncated reference vocabulary holds the most frequent training values only
            "reference_vocabulary_truncated": self.vocabulary_truncated,
        }


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class CurrentScan:
    """One pass over the current rows: the data-quality summary and the seeded sample."""

    rows: int
    sample: pa.Table
    quality: dict[str, dict[str, Any]]
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "sample_rows": self.sample.num_rows, "columns": self.quality}


def scan_current(
    batches: Iterable[pa.RecordBatch],
    total_rows: int,
    reference_stats: Mapping[str, Any],
    *,
    sample_rows: int,
    seed: int,
    score: str | None = SCORE,
) -> CurrentScan:
    """Stream ``batches`` (``total_rows`` rows in all, in a fixed order) once: statistics and sample.

    Args:
        batches: record batches holding the model's input columns (and ``score``).
        total_rows: the number of rows the batches hold (the sample positions are drawn from it).
        reference_stats: ``reference_stats.json`` of the model.
        sample_rows: the sample's size cap.
        seed: the sample's seed.
        score: the score column (None: no score).

    Raises:
        MonitoringError: a batch lacks an input column, or the batches hold a different number of rows.
    """
    started = time.perf_counter()
    inputs = reference_stats["inputs"]
    categorical: list[str] = list(inputs["categorical"])
    numeric: list[str] = list(inputs["numeric"])
    ref_columns: Mapping[str, Any] = reference_stats["columns"]
    numeric_acc: dict[str, NumericAccumulator] = {}
    for name in [*numeric, *([score] if score else [])]:
        ref = reference_stats["score"] if name == score else ref_columns[name]
        numeric_acc[name] = NumericAccumulator(ref_min=ref.get("min"), ref_max=ref.get("max"))
    categorical_acc = {
        name: CategoricalAccumulator(
            vocabulary={v for v, _ in ref_columns[name]["values"]},
            vocabulary_truncated=bool(ref_columns[name].get("truncated")),
        )
        for name in categorical
    }
    wanted = [*categorical, *numeric_acc]
    positions = sample_indices(total_rows, sample_rows, seed)
    parts: list[pa.RecordBatch] = []
    schema: pa.Schema | None = None
    offset = 0
    for batch in batches:
        missing = [c for c in wanted if c not in batch.schema.names]
        if missing:
            raise MonitoringError(f"the current rows lack the model input column(s) {missing}")
        for name, num_acc in numeric_acc.items():
            num_acc.update(batch.column(name))
        for name, cat_acc in categorical_acc.items():
            cat_acc.update(batch.column(name))
        schema = batch.select(wanted).schema
        lo, hi = np.searchsorted(positions, [offset, offset + batch.num_rows])
        if hi > lo:
            parts.append(batch.select(wanted).take(pa.array(positions[lo:hi] - offset)))
        offset += batch.num_rows
    if offset != total_rows:
        raise MonitoringError(f"the current rows were announced as {total_rows} but {offset} were read")
    sample = pa.Table.from_batches(parts) if parts else (schema or _empty_schema(wanted)).empty_table()
    quality: dict[str, dict[str, Any]] = {}
    for name, cat_acc in categorical_acc.items():
        quality[name] = cat_acc.summary(ref_columns[name])
    for name, num_acc in numeric_acc.items():
        ref = reference_stats["score"] if name == score else ref_columns[name]
        quality[name] = num_acc.summary(ref)
    return CurrentScan(offset, sample, quality, time.perf_counter() - started)


def _empty_schema(columns: list[str]) -> pa.Schema:
    return pa.schema([pa.field(c, pa.null()) for c in columns])
