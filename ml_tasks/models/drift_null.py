"""Size-aware drift thresholds: each column's distance calibrated against its own null distribution.

Evidently's distances (normed Wasserstein, Jensen-Shannon) shrink only with the sample, so a fixed 0.1
flags small same-distribution samples nearly every time. At training time, per column and per size of a
grid, the distance of many random subsets of the reference against the rest of it gives the null
distribution; its ``1 - alpha`` quantile is the threshold at that size, stored in
``reference_stats.json``. At monitoring time the threshold is interpolated at the current sample's size
and never set below a minimum effect size. The formulas are Evidently's own (checked against it in the
tests). See ``docs/monitoring.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.models.column_stats import categorical_values, finite_float

WASSERSTEIN = "wasserstein"
JENSEN_SHANNON = "jensenshannon"
#: Evidently's display names of the two methods (what its report and the decision show)
DISPLAY = {WASSERSTEIN: "Wasserstein distance (normed)", JENSEN_SHANNON: "Jensen-Shannon distance"}
#: Evidently's automatic rule for a large reference: numeric columns with more distinct values than this
#: get the normed Wasserstein distance, the others Jensen-Shannon
MAX_DISCRETE = 5
#: current-sample sizes (non-null values) the null distribution is drawn at
SIZES = (30, 100, 300, 1_000, 3_000, 10_000)
DRAWS = 400
ALPHA = 0.005
#: the smallest distance called drift at any size (Evidently's default threshold): a large sample makes a
#: tiny, harmless difference significant, and the monitor asks for a difference worth a retrain
MIN_EFFECT = 0.1
_CHUNK = 32
#: numeric values are winsorised to these quantiles of the reference before the Wasserstein distance: one
#: trip of 20 hours moves a std-normed distance more than a real shift of the bulk (out-of-range values are
#: counted by the data-quality scan instead)
CLIP_QUANTILES = (0.001, 0.999)
#: the reference values the splits are drawn from (a seeded subset of a larger reference)
MAX_POOL = 10_000

Floats = npt.NDArray[np.float64]


def column_values(column: pa.ChunkedArray | pa.Array, kind: str) -> Floats | npt.NDArray[np.str_]:
    """The non-null (finite) values of a column as numpy: float64, or strings for a categorical."""
    if kind == "categorical":
        values = categorical_values(column).drop_null()
        return np.asarray(pc.cast(values, pa.string()).to_numpy(zero_copy_only=False), dtype=str)
    return np.asarray(finite_float(column).drop_null().to_numpy(zero_copy_only=False), dtype=np.float64)


def choose_method(kind: str, values: npt.NDArray[Any]) -> str:
    """Evidently's method for this column with a reference above 1,000 rows (used at any size here)."""
    if kind == "numeric" and len(np.unique(values)) > MAX_DISCRETE:
        return WASSERSTEIN
    return JENSEN_SHANNON


def _js(p: Floats, q: Floats) -> Floats:
    """Jensen-Shannon distance (natural log) of frequency rows ``q`` against ``p`` (scipy's formula)."""
    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0)
        right = np.where(q > 0, q * np.log(q / m), 0.0)
    return np.asarray(np.sqrt(np.maximum((left.sum(axis=-1) + right.sum(axis=-1)) / 2, 0.0)))


def distance(method: str, reference: npt.NDArray[Any], current: npt.NDArray[Any]) -> float:
    """The distance Evidently reports for ``method`` (non-null values of both samples)."""
    if method == WASSERSTEIN:
        from scipy import stats

        norm = max(float(np.std(reference)), 0.001)
        return float(stats.wasserstein_distance(reference, current)) / norm
    keys = np.unique(np.concatenate([reference, current]))
    p = np.searchsorted(keys, reference)
    q = np.searchsorted(keys, current)
    ref = np.bincount(p, minlength=len(keys)) / len(reference)
    cur = np.bincount(q, minlength=len(keys)) / len(current)
    return float(_js(ref.astype(np.float64), cur.astype(np.float64)))


def _null_draws(
    method: str, values: npt.NDArray[Any], size: int, draws: int, rng: np.random.Generator
) -> Floats:
    """Distances of ``draws`` random subsets of ``size`` values against the rest of ``values`` (the
    current rows' own rare values are absent from what they are compared with, as in real use)."""
    total = len(values)
    out = np.empty(draws, dtype=np.float64)
    if method == WASSERSTEIN:
        x = np.sort(values.astype(np.float64))
        dx = np.diff(x)
        norm = max(float(np.std(x)), 0.001)
        below = np.arange(1, total, dtype=np.float64)
    else:
        _, counts = np.unique(values, return_counts=True)
    for start in range(0, draws, _CHUNK):
        rows = min(start + _CHUNK, draws) - start
        if method == WASSERSTEIN:
            mask = np.zeros((rows, total), dtype=np.float64)
            for r in range(rows):
                mask[r, rng.choice(total, size=size, replace=False)] = 1.0
            in_current = np.cumsum(mask, axis=1)[:, :-1]
            gap = np.abs(in_current / size - (below - in_current) / (total - size))
            out[start : start + rows] = gap @ dx / norm
        else:
            current = rng.multivariate_hypergeometric(counts, size, size=rows).astype(np.float64)
            out[start : start + rows] = _js(counts - current, current)
    return out


def calibrate_column(
    values: npt.NDArray[Any],
    kind: str,
    *,
    sizes: Sequence[int] = SIZES,
    draws: int = DRAWS,
    alpha: float = ALPHA,
    seed: int = 0,
) -> dict[str, Any]:
    """Method and per-size thresholds of one column from its reference values (non-null).

    Each draw splits (a random pool of at most :data:`MAX_POOL` of) the reference: ``size`` values against
    the others. Sizes above half the pool are drawn at half; every quantile is scaled by the ratio of
    ``sqrt(1/n + 1/N)`` of the real comparison to that of the draw (the two samples' noise adds up).
    """
    method = choose_method(kind, values)
    bounds = None
    if method == WASSERSTEIN:
        bounds = [float(b) for b in np.quantile(values, CLIP_QUANTILES)]
        values = np.clip(values, bounds[0], bounds[1])
    rng = np.random.Generator(np.random.PCG64(seed))
    total = len(values)
    pool = values if total <= MAX_POOL else values[rng.choice(total, size=MAX_POOL, replace=False)]
    thresholds = []
    for size in sizes:
        drawn = max(1, min(size, len(pool) // 2))
        scale = math.sqrt((1 / size + 1 / total) / (1 / drawn + 1 / (len(pool) - drawn)))
        null = _null_draws(method, pool, drawn, draws, rng)
        thresholds.append(round(float(np.quantile(null, 1.0 - alpha)) * scale, 6))
    return {"method": method, "reference_values": total, "thresholds": thresholds, "clip": bounds}


def calibrate(
    sample: pa.Table,
    columns: Sequence[tuple[str, str]],
    *,
    sizes: Sequence[int] = SIZES,
    draws: int = DRAWS,
    alpha: float = ALPHA,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``drift_null`` block of ``reference_stats.json`` for ``columns`` ((name, kind)) of ``sample``."""
    out: dict[str, Any] = {}
    for i, (name, kind) in enumerate(columns):
        values = column_values(sample.column(name), kind)
        if len(values) == 0:
            continue
        out[name] = {"kind": kind, **calibrate_column(values, kind, sizes=sizes, draws=draws, alpha=alpha,
                                                      seed=seed + i)}  # fmt: skip
    return {
        "method": f"null distribution: {draws} random splits of the reference sample per size (size values"
        f" against the others), the {1 - alpha:.1%} quantile",
        "alpha": alpha,
        "draws": draws,
        "sizes": list(sizes),
        "seed": seed,
        "columns": out,
    }


def clip(values: npt.NDArray[Any], column: Mapping[str, Any]) -> npt.NDArray[Any]:
    """``values`` winsorised to the column's reference bounds (unchanged when it has none)."""
    bounds = column.get("clip")
    return values if not bounds else np.clip(values, bounds[0], bounds[1])


def threshold_at(calibration: Mapping[str, Any], column: Mapping[str, Any], size: int) -> float | None:
    """The column's null threshold at ``size`` current values: log-log interpolation between the grid's
    sizes, the largest size's threshold above it (conservative), None below the smallest."""
    sizes = [float(s) for s in calibration["sizes"]]
    thresholds = [float(t) for t in column["thresholds"]]
    if size < sizes[0]:
        return None
    if size >= sizes[-1]:
        return thresholds[-1]
    logs = np.log(np.maximum(thresholds, 1e-9))
    return float(np.exp(np.interp(math.log(size), np.log(sizes), logs)))
