"""Synthetic monitoring frames shared by the data-quality (unit) and Evidently drift (integration) tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ml_tasks.models.reference import compute_reference

CAT = ["payment_type", "area"]
NUM = ["fare", "miles"]


def frame(n: int, seed: int, shift: float = 0.0, new_payment: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    payments = np.array(["Cash", "Credit Card", "Mobile" if new_payment else "Cash"])
    fare = rng.gamma(2.0, 5.0, n) + shift
    fare[:3] = [np.nan, np.inf, -np.inf]  # non-finite values count as null
    return pa.table(
        {
            "payment_type": pa.array(payments[rng.integers(0, 3, n)]),
            "area": pa.array(rng.integers(1, 20, n), pa.int64(), mask=rng.uniform(size=n) < 0.1),
            "fare": pa.array(fare),
            "miles": pa.array(rng.exponential(2.0, n) * (1 + shift / 10)),
            "big_tipper": pa.array(rng.uniform(size=n) < 0.3),
        }
    )


def score(table: pa.Table) -> np.ndarray[Any, np.dtype[np.float64]]:
    fare = np.nan_to_num(table["fare"].to_numpy(zero_copy_only=False), nan=10.0, posinf=10.0, neginf=10.0)
    return np.asarray(1.0 / (1.0 + np.exp(-(fare - 10.0) / 5.0)), dtype=np.float64)


def reference(n: int = 4_000) -> tuple[pa.Table, dict[str, Any]]:
    return compute_reference(frame(n, 1), CAT, NUM, score, rows=2_000, seed=5)


def current_batches(table: pa.Table, size: int = 700) -> list[pa.RecordBatch]:
    with_score = table.append_column("score", pa.array(score(table)))
    batches: list[pa.RecordBatch] = with_score.to_batches(max_chunksize=size)
    return batches
