"""Train and evaluation tables and one evaluation report, built once for the package's tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ml_tasks.training.evaluation.report import evaluate_candidate
from tests.unit.training.evaluation._tables import FnScorer, payment_fare_score, synthetic_table


@pytest.fixture(scope="package")
def train() -> pa.Table:
    return synthetic_table(3000, seed=1)


@pytest.fixture(scope="package")
def evaluation() -> pa.Table:
    return synthetic_table(1500, seed=2, start=dt.datetime(2024, 3, 1, tzinfo=dt.UTC))


@pytest.fixture(scope="package")
def report(train: pa.Table, evaluation: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("evaluation")
    meta = {"training_set_uri": "file:///ts/part-00000.parquet", "training_set_sha256": "ab" * 32, "seed": 7}
    champion = FnScorer(lambda t: np.full(t.num_rows, 0.3))
    result = evaluate_candidate(
        FnScorer(payment_fare_score), train, evaluation, champion=champion, out_dir=out, model_meta=meta,
        gbt_max_iter=30, gbt_threads=1,
    )  # fmt: skip
    return result | {"_out": out, "_meta": meta}
