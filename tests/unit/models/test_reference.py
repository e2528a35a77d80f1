"""The reference sample and statistics: seeded, complete statistics over every row, verified on load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ml_tasks.contract import REFERENCE_SAMPLE, REFERENCE_STATS
from ml_tasks.models.column_stats import categorical_stats
from ml_tasks.models.reference import (
    MonitoringReferenceError,
    ReferenceNotFoundError,
    compute_reference,
    load_reference_dir,
    write_reference,
)


def table(n: int = 3_000) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "company": pa.array(rng.choice(["A", "B", "C"], n), mask=rng.uniform(size=n) < 0.2),
            "area": pa.array(rng.integers(1, 5, n)),
            "fare": pa.array(rng.gamma(2.0, 5.0, n)),
            "big_tipper": pa.array(rng.uniform(size=n) < 0.25),
        }
    )


def half(t: pa.Table) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.full(t.num_rows, 0.5)


def test_statistics_cover_every_row_and_the_sample_is_bounded() -> None:
    data = table()
    sample, stats = compute_reference(data, ["company", "area"], ["fare"], half, rows=1_000, seed=1)
    assert sample.num_rows == 1_000 and sample.column_names == [
        "company",
        "area",
        "fare",
        "big_tipper",
        "score",
    ]
    assert stats["rows"] == 3_000 and stats["sample_rows"] == 1_000 and stats["seed"] == 1
    fare = stats["columns"]["fare"]
    values = data["fare"].to_numpy()
    assert fare["count"] == 3_000 and fare["null_count"] == 0
    assert fare["mean"] == pytest.approx(values.mean()) and fare["std"] == pytest.approx(values.std())
    assert fare["quantiles"]["0.5"] == pytest.approx(np.quantile(values, 0.5))
    company = stats["columns"]["company"]
    assert company["null_count"] == data["company"].null_count
    assert {v for v, _ in company["values"]} == {"A", "B", "C"}
    assert sum(c for _, c in company["values"]) == 3_000 - company["null_count"]
    assert stats["columns"]["area"]["values"][0][0] in (1, 2, 3, 4)  # integer codes stay integers
    assert stats["label_rate"] == pytest.approx(pc.mean(pc.cast(data["big_tipper"], pa.float64())).as_py())
    assert stats["score"]["mean"] == 0.5 and stats["score"]["over"] == "sample"


def test_small_training_set_is_kept_whole() -> None:
    sample, _ = compute_reference(table(500), ["company"], ["fare"], half, rows=1_000, seed=1)
    assert sample.num_rows == 500


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(MonitoringReferenceError, match="no rows"):
        compute_reference(table(0), ["company"], ["fare"], half, rows=10, seed=1)
    with pytest.raises(MonitoringReferenceError, match=r"lacks the model input column\(s\) \['nope'\]"):
        compute_reference(table(), ["nope"], ["fare"], half, rows=10, seed=1)
    with pytest.raises(MonitoringReferenceError, match="'company' is string, not a number"):
        compute_reference(table(), [], ["company"], half, rows=10, seed=1)
    with pytest.raises(MonitoringReferenceError, match="NaN"):
        compute_reference(table(), [], ["fare"], lambda t: np.full(t.num_rows, np.nan), rows=10, seed=1)


def test_categorical_values_are_capped_with_a_flag() -> None:
    out = categorical_stats(pa.array(["a", "b", "b", "c", "c", "c"]), max_values=2)
    assert out["values"] == [["c", 3], ["b", 2]] and out["truncated"] is True and out["distinct"] == 3


def test_written_reference_loads_and_verifies(tmp_path: Path) -> None:
    sample, stats = compute_reference(table(), ["company", "area"], ["fare"], half, rows=1_000, seed=1)
    files = write_reference(tmp_path, sample, stats)
    loaded = load_reference_dir(tmp_path)
    assert loaded.sample.equals(sample) and loaded.files == files
    assert loaded.inputs == ["company", "area", "fare"]
    assert json.loads((tmp_path / REFERENCE_STATS).read_text())["sample_sha256"] == files[REFERENCE_SAMPLE]
    # same inputs, same bytes
    again = write_reference(tmp_path / "again", sample, stats)
    assert again == files
    # a sample that does not belong to the statistics is refused
    other, _ = compute_reference(table(), ["company", "area"], ["fare"], half, rows=1_000, seed=2)
    write_reference(tmp_path / "mixed", other, stats)
    (tmp_path / "mixed" / REFERENCE_STATS).write_text((tmp_path / REFERENCE_STATS).read_text())
    with pytest.raises(MonitoringReferenceError, match="do not belong together"):
        load_reference_dir(tmp_path / "mixed")


def test_missing_reference_names_the_files(tmp_path: Path) -> None:
    with pytest.raises(ReferenceNotFoundError, match=r"reference_sample\.parquet / reference_stats\.json"):
        load_reference_dir(tmp_path)
