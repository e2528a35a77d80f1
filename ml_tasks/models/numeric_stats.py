"""Per numeric input: its train-split statistics and the edges of its piecewise-linear-encoding bins.

Part of the :class:`~ml_tasks.models.preprocess.Preprocessor` (which fits and stores them); pure numpy
(scikit-learn only for target-aware edges, at training time). Design notes: ``docs/training.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

#: default cap on piecewise-linear-encoding bins per numeric input (``ModelConfig.numeric_bins``)
DEFAULT_NUMERIC_BINS = 32
#: at least this many non-null train values per bin: on small data many bins only add noise (measured: a
#: 3k-row train split loses 0.1 ROC-AUC with 64 bins, 0.04 with 16)
MIN_ROWS_PER_BIN = 250

BinMethod = Literal["quantile", "target"]


@dataclass(frozen=True)
class NumericStats:
    """One numeric column's train-split mean and std, of the raw values and of :func:`signed_log1p` of them.

    A std of 0 is stored as 1. The model sees both views: the raw one keeps linear effects, the log one
    resolves the low end of heavy-tailed columns (fares of 5 $ and 50 $ are far apart; 50 $ and 500 $
    barely matter more), which a clipped z-score squeezes together.
    """

    column: str
    mean: float
    std: float
    log_mean: float
    log_std: float
    #: piecewise-linear-encoding bin edges (ascending, distinct; ``len - 1`` bins; empty = no bins)
    edges: tuple[float, ...] = ()

    @classmethod
    def fit(
        cls,
        column: str,
        values: npt.NDArray[np.float64],
        y: npt.NDArray[np.float32] | None,
        bins: int,
        min_rows: int,
    ) -> NumericStats:
        """The statistics of one column's train values (NaN = missing); ``bins`` caps its bins, ``y`` (the
        labels) makes the edges target-aware (:func:`target_bin_edges`), None keeps quantile edges."""
        mean, std = mean_std(values)
        log_mean, log_std = mean_std(signed_log1p(values))
        edges = bin_edges(values, bins) if y is None else target_bin_edges(values, y, bins, min_rows)
        return cls(column, mean, std, log_mean, log_std, edges)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "column": self.column,
            "mean": self.mean,
            "std": self.std,
            "log_mean": self.log_mean,
            "log_std": self.log_std,
        }
        # only when present: a description without bins keeps the JSON (and sha256) of format 1 before bins
        if self.edges:
            out["edges"] = list(self.edges)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NumericStats:
        """Rebuild from :meth:`to_dict` (``ValueError`` for edges that are not >= 2 increasing values;
        ``KeyError`` / ``TypeError`` for a malformed description)."""
        stat = cls(
            data["column"],
            float(data["mean"]),
            float(data["std"]),
            float(data["log_mean"]),
            float(data["log_std"]),
            tuple(float(e) for e in data.get("edges", ())),
        )
        edges = np.asarray(stat.edges)
        if edges.size == 1 or (edges.size and not np.all(np.diff(edges) > 0)):
            raise ValueError(f"numeric {stat.column!r}: bin edges must be >= 2 strictly increasing values")
        return stat


def signed_log1p(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``sign(x) * log1p(|x|)``: monotone, defined for negative values, NaN stays NaN."""
    return np.sign(values) * np.log1p(np.abs(values))


def mean_std(values: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Mean and std ignoring NaN; (0, 1) for an empty column, std 1 for a constant one."""
    finite = values[~np.isnan(values)]
    if not finite.size:
        return 0.0, 1.0
    std = float(finite.std())
    # a constant column: dividing by 1 keeps it at 0 after centring instead of inf/NaN
    return float(finite.mean()), std if std > 0.0 and np.isfinite(std) else 1.0


def bin_edges(values: npt.NDArray[np.float64], bins: int) -> tuple[float, ...]:
    """Distinct quantiles (observed values, not interpolated) of the non-NaN ``values``, ``bins + 1`` levels.

    Fewer than ``bins`` bins when the column has few distinct values (duplicate quantiles merge); no
    edges at all for ``bins == 0`` or a column with fewer than two distinct values (nothing to split).
    """
    finite = values[~np.isnan(values)]
    if bins <= 0 or not finite.size:
        return ()
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1), method="inverted_cdf"))
    # float32 is what the model computes in: edges that collapse there would give a zero-width bin
    edges = np.unique(edges.astype(np.float32)).astype(np.float64)
    return tuple(float(e) for e in edges) if edges.size >= 2 else ()


def target_bin_edges(
    values: npt.NDArray[np.float64], y: npt.NDArray[np.float32], bins: int, min_rows: int
) -> tuple[float, ...]:
    """Target-aware edges (Gorishniy et al. 2022, "tree-based bins"): the thresholds of a decision tree of
    at most ``bins`` leaves of at least ``min_rows`` rows fitted on this column alone (non-NaN rows) to
    the label, plus the column's min and max. The bins fall where the label changes (a fare step at 10 $)
    instead of where the rows are dense; quantile edges when the tree finds no split.
    """
    keep = ~np.isnan(values)
    finite = values[keep]
    if bins <= 1 or finite.size < 2 or np.unique(y[keep]).size < 2:
        return bin_edges(values, bins)
    from sklearn.tree import DecisionTreeClassifier  # training only (~0.5 s import)

    tree = DecisionTreeClassifier(max_leaf_nodes=bins, min_samples_leaf=max(min_rows, 1), random_state=0)
    tree.fit(finite.reshape(-1, 1).astype(np.float32), y[keep])
    thresholds = tree.tree_.threshold[tree.tree_.feature >= 0]
    if not thresholds.size:
        return bin_edges(values, bins)
    edges = np.concatenate([[finite.min()], thresholds, [finite.max()]])
    edges = np.unique(edges.astype(np.float32)).astype(np.float64)
    return tuple(float(e) for e in edges) if edges.size >= 2 else ()
