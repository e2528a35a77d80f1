"""Statistics of one column over all its rows (numeric: count, nulls, min, max, mean, std, quantiles;
categorical: value frequencies) and seeded row samples: what a model's reference stores and monitoring
recomputes on current data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

#: quantile levels recorded for numeric columns
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: categorical values kept with their counts; a column with more distinct values keeps the most frequent
MAX_VALUES = 5_000


def is_numeric_type(typ: pa.DataType) -> bool:
    return bool(pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ))


def finite_float(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """float64 values with null for null, NaN and +-inf (a non-finite value is as unknown as a null)."""
    values = pc.cast(column, pa.float64())
    return pc.if_else(pc.is_finite(values), values, pa.scalar(None, pa.float64()))


def categorical_values(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A categorical column as int64 (integer codes) or string: one canonical type per column."""
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.int64())
    if pa.types.is_dictionary(column.type):
        return pc.cast(column, column.type.value_type)
    if pa.types.is_large_string(column.type):
        return pc.cast(column, pa.string())
    return column


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, None for None, NaN or +-inf."""
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def numeric_stats(column: pa.ChunkedArray | pa.Array) -> dict[str, Any]:
    """count, null count (incl. NaN / inf), min, max, mean, std (population) and quantiles of a column."""
    values = finite_float(column)
    count = len(values)
    valid = values.drop_null()
    nulls = count - len(valid)
    out: dict[str, Any] = {"kind": "numeric", "type": str(column.type), "count": count, "null_count": nulls}
    if len(valid) == 0:
        out.update(min=None, max=None, mean=None, std=None, quantiles={})
        return out
    minmax = pc.min_max(valid)
    quantiles = pc.quantile(valid, q=list(QUANTILES), interpolation="linear").to_pylist()
    out.update(
        min=finite_or_none(minmax["min"].as_py()),
        max=finite_or_none(minmax["max"].as_py()),
        mean=finite_or_none(pc.mean(valid).as_py()),
        std=finite_or_none(pc.stddev(valid, ddof=0).as_py()),
        quantiles={f"{q:g}": finite_or_none(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
    )
    return out


def categorical_stats(column: pa.ChunkedArray | pa.Array, max_values: int = MAX_VALUES) -> dict[str, Any]:
    """count, null count, distinct count and value frequencies (most frequent first, ties by value)."""
    values = categorical_values(column)
    count = len(values)
    nulls = values.null_count
    counts = pc.value_counts(values.drop_null())
    pairs = sorted(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True),
        key=lambda p: (-p[1], str(p[0])),
    )
    return {
        "kind": "categorical",
        "type": str(column.type),
        "count": count,
        "null_count": nulls,
        "distinct": len(pairs),
        "values": [[v, int(c)] for v, c in pairs[:max_values]],
        "truncated": len(pairs) > max_values,
    }


def sample_indices(total: int, size: int, seed: int) -> npt.NDArray[np.int64]:
    """Sorted row positions of a uniform sample without replacement (all rows when ``total <= size``)."""
    if total <= size:
        return np.arange(total, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.sort(rng.choice(total, size=size, replace=False)).astype(np.int64)
