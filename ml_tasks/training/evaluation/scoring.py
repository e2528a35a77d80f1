"""The Scorer protocol every evaluated model meets (a Bundle, an OnnxScorer, a baseline) and its scores."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ml_tasks.models.metrics import Array


class Scorer(Protocol):
    """Anything that scores a training-set-shaped table: a Bundle, an OnnxScorer, a baseline."""

    @property
    def threshold(self) -> float:
        """Score at or above which a row is predicted positive."""
        ...

    def predict_proba(self, table: pa.Table) -> npt.NDArray[Any]:
        """Positive-class probabilities, row-aligned with ``table``."""
        ...


def scores(scorer: Scorer, table: pa.Table, who: str) -> Array:
    """``scorer``'s float64 probabilities for ``table``.

    Raises:
        ValueError: they are not one per row.
    """
    p = np.asarray(scorer.predict_proba(table), dtype=np.float64)
    if p.shape != (table.num_rows,):
        raise ValueError(f"{who}: predict_proba returned shape {p.shape} for {table.num_rows} rows")
    return p
