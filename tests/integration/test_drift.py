"""The Evidently drift test against a reference sample (real Evidently; degenerate columns included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ml_tasks.monitoring.drift import RULE_ALL_NULL, drift_report
from tests.unit.monitoring._frames import CAT, NUM, frame, reference, score


@pytest.fixture(scope="module")
def ref_sample() -> pa.Table:
    return reference()[0]


def _with(table: pa.Table, **columns: pa.Array) -> pa.Table:
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table


def test_same_distribution_is_no_drift(ref_sample: pa.Table) -> None:
    current = frame(3_000, 7)
    current = current.append_column("score", pa.array(score(current)))
    result = drift_report(ref_sample, current, CAT, NUM, drift_share=0.3, summary=False)
    assert result.dataset_drift is False and result.drifted_columns == []
    assert result.tested_columns == CAT + NUM and result.drift_share == 0.0
    assert result.prediction_drift is not None and result.prediction_drift["drifted"] is False
    assert result.columns["fare"]["method"] == "Wasserstein distance (normed)"
    assert result.columns["payment_type"]["method"] == "Jensen-Shannon distance"
    assert result.columns["fare"]["threshold"] == 0.1


def test_shifted_columns_drift(ref_sample: pa.Table) -> None:
    current = frame(3_000, 7, shift=8.0, new_payment=True)
    current = current.append_column("score", pa.array(score(current)))
    result = drift_report(ref_sample, current, CAT, NUM, drift_share=0.3, summary=False)
    assert {"fare", "payment_type"} <= set(result.drifted_columns)
    assert "area" not in result.drifted_columns
    assert result.dataset_drift is True and result.drift_share == pytest.approx(
        len(result.drifted_columns) / 4
    )
    assert result.prediction_drift is not None and result.prediction_drift["drifted"] is True
    # one failed Evidently test per drifted column (inputs and the score)
    assert result.evidently["failed_tests"] == len(result.drifted_columns) + 1


def test_degenerate_columns_do_not_crash(ref_sample: pa.Table) -> None:
    n_ref, n_cur = ref_sample.num_rows, 2_000
    ref = _with(
        ref_sample,
        const=pa.array(np.full(n_ref, 2.0)),
        empty=pa.nulls(n_ref, pa.float64()),
        vanished=pa.array(np.arange(n_ref, dtype=np.float64)),
        born=pa.nulls(n_ref, pa.string()),
        const_cat=pa.array(["x"] * n_ref),
    )
    current = frame(n_cur, 7)
    current = _with(
        current,
        score=pa.array(score(current)),
        const=pa.array(np.full(n_cur, 2.0)),
        empty=pa.array(np.full(n_cur, np.nan)),  # NaN only: as empty as nulls
        vanished=pa.nulls(n_cur, pa.float64()),
        born=pa.array(["a", "b"] * (n_cur // 2)),
        const_cat=pa.array(["x"] * n_cur),
    )
    result = drift_report(
        ref, current, [*CAT, "born", "const_cat"], [*NUM, "const", "empty", "vanished"], drift_share=0.3
    )
    assert result.excluded_columns == {
        "empty": "all null in the reference and in the current rows: nothing to compare"
    }
    assert result.columns["vanished"]["method"] == RULE_ALL_NULL and result.columns["vanished"]["drifted"]
    assert result.columns["born"]["drifted"] is True
    assert "all null in the current rows" in result.degenerate["vanished"]
    assert "all null in the reference rows" in result.degenerate["born"]
    assert result.columns["const"]["drifted"] is False and result.columns["const"]["score"] == 0.0
    assert result.columns["const_cat"]["drifted"] is False
    assert "constant" in result.degenerate["const"] and "constant" in result.degenerate["const_cat"]
    # share over tested + rule columns (empty is not counted): vanished and born drifted
    assert set(result.drifted_columns) == {"vanished", "born"}
    assert result.drift_share == pytest.approx(2 / 8)
    assert result.snapshot is not None  # the summary preset ran too


def test_caller_exclusions_are_reported_not_tested(ref_sample: pa.Table) -> None:
    current = frame(2_000, 7)
    current = current.append_column("score", pa.array(score(current)))
    result = drift_report(ref_sample, current, CAT, NUM, drift_share=0.3, summary=False,
                          exclude={"area": "calendar column"})  # fmt: skip
    assert result.excluded_columns == {"area": "calendar column"}
    assert "area" not in result.tested_columns and result.columns["area"]["drifted"] is None


def test_no_current_rows_is_no_test(ref_sample: pa.Table) -> None:
    empty = ref_sample.slice(0, 0)
    result = drift_report(ref_sample, empty, CAT, NUM, drift_share=0.3)
    assert result.drift_share is None and result.dataset_drift is False and result.snapshot is None


def test_columns_outside_share_of_are_tested_and_reported_not_counted(ref_sample: pa.Table) -> None:
    """A shift in columns left out of the share (feature-store aggregates) makes no dataset drift."""
    current = frame(3_000, seed=11, shift=8.0)
    everything = drift_report(ref_sample, current, CAT, NUM, drift_share=0.3, summary=False)
    assert set(everything.drifted_columns) >= {"fare", "miles"}
    trip_only = drift_report(ref_sample, current, CAT, NUM, drift_share=0.3, summary=False,
                             share_of=["payment_type", "area"])  # fmt: skip
    assert trip_only.counted_columns == ["payment_type", "area"]
    assert trip_only.drifted_columns == [] and trip_only.drift_share == 0.0
    assert trip_only.dataset_drift is False
    assert set(trip_only.drifted_not_counted) == set(everything.drifted_columns)
    # still tested, with their scores
    assert trip_only.columns["fare"]["drifted"] is True


_NOTHING_TO_TEST = """
import json, sys
import pyarrow as pa
from ml_tasks.monitoring.drift import drift_report
from tests.unit.monitoring._frames import CAT, NUM, frame, reference, score
sample, stats = reference()
out = []
for rows in (0, 10):
    current = frame(rows + 3, 7).slice(3)  # its first 3 fares are non-finite
    current = current.append_column("score", pa.array(score(current)))
    result = drift_report(sample, current, CAT, NUM, drift_share=0.3, calibration=stats["drift_null"])
    out.append([result.current_rows, result.insufficient_data, result.drift_share, result.snapshot is None])
print(json.dumps({"results": out, "evidently_imported": "evidently" in sys.modules}))
"""


def test_nothing_to_test_never_imports_evidently() -> None:
    """An empty interval, or one whose every column has too few values, is decided without Evidently."""
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", _NOTHING_TO_TEST], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(repo)}, timeout=300, check=True)  # fmt: skip
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["evidently_imported"] is False
    (empty, small) = got["results"]
    assert empty == [0, "no current rows", None, True]
    assert small[0] == 10 and small[2] is None and small[3] is True
    assert small[1].startswith("10 current row(s): 4 input column(s) have fewer non-null values than the 30")


def test_the_summary_preset_adds_metrics_not_verdicts() -> None:
    """``summary`` (setting ``monitor_evidently_summary``) adds Evidently's summary; the drift is the same."""
    sample, stats = reference()
    current = frame(400, 7, shift=8.0, new_payment=True)
    current = current.append_column("score", pa.array(score(current)))
    kwargs: dict[str, Any] = {"drift_share": 0.3, "calibration": stats["drift_null"]}
    plain = drift_report(sample, current, CAT, NUM, summary=False, **kwargs)
    full = drift_report(sample, current, CAT, NUM, summary=True, **kwargs)
    assert plain.columns == full.columns and plain.prediction_drift == full.prediction_drift
    assert plain.drifted_columns == full.drifted_columns
    assert {"fare", "payment_type"} <= set(plain.drifted_columns)
    # one ValueDrift per tested column (4 inputs + the score) without the summary; the preset adds its own
    assert plain.evidently["metrics"] == 5 and full.evidently["metrics"] > 5
    assert plain.evidently["failed_tests"] == len(plain.drifted_columns) + 1
