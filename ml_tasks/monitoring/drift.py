"""Drift of a bounded current sample against the reference sample: one Evidently ``ValueDrift`` per column.

Columns without a value in either frame are screened first (excluded, or drifted by rule when null in
one frame only); each tested column's threshold is its null threshold at the current sample's size
(:mod:`ml_tasks.models.drift_null`), never below a minimum effect; a column with fewer current values
than the calibration starts at is not judged (``insufficient_data``). The drift share is computed here
from the per-column results. See ``docs/monitoring.md``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import SCORE
from ml_tasks.models import drift_null
from ml_tasks.models.column_stats import categorical_values, finite_float
from ml_tasks.monitoring import MonitoringError

if TYPE_CHECKING:
    import pandas as pd
    from evidently.core.report import Snapshot

RULE_ALL_NULL = "all_null_in_one_frame"


def _valid_count(table: pa.Table, name: str, kind: str) -> tuple[int, bool]:
    """(non-null finite values, whether they are all one value) of a column."""
    column = table.column(name)
    values = categorical_values(column) if kind == "categorical" else finite_float(column)
    valid = values.drop_null()
    if not len(valid):
        return 0, False
    low, high = pc.min_max(valid).values()  # one pass; cheaper than counting distinct values
    return len(valid), low.as_py() == high.as_py()


def _pandas(
    table: pa.Table,
    categorical: list[str],
    numeric: list[str],
    clips: Mapping[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """Evidently's frame: categoricals as strings (an int code and its float twin must not differ),
    numerics as float64 with NaN for null / non-finite, winsorised to ``clips`` (name -> bounds)."""
    import pandas as pd

    data: dict[str, Any] = {}
    for name in categorical:
        values = categorical_values(table.column(name))
        data[name] = pc.cast(values, pa.string()).to_pandas() if values.type != pa.null() else None
    for name in numeric:
        column = table.column(name)
        values = finite_float(column) if column.type != pa.null() else pa.nulls(len(column), pa.float64())
        array = pc.fill_null(values, float("nan")).to_numpy()
        bounds = (clips or {}).get(name)
        data[name] = array if bounds is None else np.clip(array, *bounds)
    frame = pd.DataFrame(data, index=pd.RangeIndex(table.num_rows))
    for name in categorical:
        frame[name] = frame[name].astype(object)
    return frame


@dataclass
class DriftResult:
    """Drift of one interval: per column, the share over the inputs, prediction drift, the snapshot."""

    columns: dict[str, dict[str, Any]]
    drift_share: float | None
    dataset_drift: bool
    drifted_columns: list[str]
    tested_columns: list[str]
    #: tested inputs left out of the share (``share_of``) that drifted: reported, not counted
    drifted_not_counted: list[str]
    #: the inputs the share counts (tested, or drifted by rule)
    counted_columns: list[str]
    excluded_columns: dict[str, str]
    degenerate: dict[str, str]
    prediction_drift: dict[str, Any] | None
    evidently: dict[str, Any]
    snapshot: Snapshot | None
    reference_rows: int
    current_rows: int
    seconds: float
    #: why no input could be judged (every one had too few current values), else None
    insufficient_data: str | None = None
    #: where the size-aware thresholds came from (stored with the reference, or computed now)
    calibration: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (the snapshot is saved separately)."""
        return {
            "method": (
                "Evidently ValueDrift per column (normed Wasserstein for numeric columns with > 5 values,"
                " Jensen-Shannon otherwise) at a size-aware threshold: the column's null-distribution"
                " threshold at the current sample's size, at least the minimum effect (recorded per column);"
                " fewer current values than the calibration's smallest size: insufficient_data, not judged;"
                " columns null in one frame only drift by rule; share = drifted / (tested + rule) inputs"
            ),
            "calibration": self.calibration,
            "insufficient_data": self.insufficient_data,
            "columns": self.columns,
            "drift_share": self.drift_share,
            "dataset_drift": self.dataset_drift,
            "drifted_columns": self.drifted_columns,
            "drifted_not_counted": self.drifted_not_counted,
            "counted_columns": self.counted_columns,
            "tested_columns": self.tested_columns,
            "excluded_columns": self.excluded_columns,
            "degenerate_columns": self.degenerate,
            "prediction_drift": self.prediction_drift,
            "evidently": self.evidently,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "seconds": round(self.seconds, 3),
        }


def _screen(
    reference: pa.Table, current: pa.Table, columns: list[tuple[str, str]]
) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str], dict[str, dict[str, Any]]]:
    """Split columns into tested by Evidently / excluded / drifted by rule; note constant ones."""
    tested: list[tuple[str, str]] = []
    excluded: dict[str, str] = {}
    degenerate: dict[str, str] = {}
    by_rule: dict[str, dict[str, Any]] = {}
    for name, kind in columns:
        ref_n, ref_constant = _valid_count(reference, name, kind)
        cur_n, cur_constant = _valid_count(current, name, kind)
        if ref_n == 0 and cur_n == 0:
            excluded[name] = "all null in the reference and in the current rows: nothing to compare"
            degenerate[name] = "all null in both frames"
        elif ref_n == 0 or cur_n == 0:
            empty, other, n = (
                ("reference", "current", cur_n) if ref_n == 0 else ("current", "reference", ref_n)
            )
            why = f"all null in the {empty} rows, {n} value(s) in the {other} sample"
            degenerate[name] = f"all null in the {empty} rows"
            by_rule[name] = {
                "kind": kind,
                "method": RULE_ALL_NULL,
                "threshold": None,
                "score": 1.0,
                "drifted": True,
                "reason": why,
            }
        else:
            if ref_constant or cur_constant:
                which = [w for w, c in (("reference", ref_constant), ("current", cur_constant)) if c]
                degenerate[name] = f"constant in the {' and '.join(which)} rows (tested by Evidently)"
            tested.append((name, kind))
    return tested, excluded, degenerate, by_rule


def _results(payload: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per column: Evidently's method, threshold, score and test status, from the snapshot's JSON."""
    by_id: dict[str, dict[str, Any]] = {}
    for metric in payload.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type") == "evidently:metric_v2:ValueDrift":
            by_id[metric["id"]] = {
                "column": config["column"],
                "method": config.get("method"),
                "threshold": config.get("threshold"),
                "score": _json_float(metric.get("value")),
                "drifted": None,
            }
    for test in payload.get("tests", []):
        params = test.get("metric_config", {})
        metric_id = params.get("metric_id")
        if metric_id in by_id and test.get("id") == "drift":
            by_id[metric_id]["drifted"] = test.get("status") == "FAIL"
    return {r["column"]: r for r in by_id.values()}


def _json_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _thresholds(
    current: pa.Table,
    tested: list[tuple[str, str]],
    calibration: Mapping[str, Any],
    min_effect: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, str, int]]]:
    """Per tested column: the decision's method, threshold and sample size; and the columns with too few
    current values to judge ({name: (kind, reason, size)})."""
    out: dict[str, dict[str, Any]] = {}
    insufficient: dict[str, tuple[str, str, int]] = {}
    for name, kind in tested:
        entry = calibration["columns"].get(name)
        if entry is None:
            continue
        size, _ = _valid_count(current, name, kind)
        null = drift_null.threshold_at(calibration, entry, size)
        if null is None:
            insufficient[name] = (
                kind,
                f"{size} non-null current value(s), fewer than the {calibration['sizes'][0]} the size-aware"
                " threshold is calibrated from: too few to tell drift from noise",
                size,
            )
            continue
        out[name] = {
            "stattest": entry["method"],
            "method": drift_null.DISPLAY[entry["method"]],
            "threshold": round(max(null, min_effect), 6),
            "null_threshold": round(null, 6),
            "min_effect": min_effect,
            "sample_size": size,
            "clip": entry.get("clip"),
            "decided_by": "null quantile at this size" if null >= min_effect else "minimum effect",
        }
    return out, insufficient


def _method_kwargs(decision: Mapping[str, Any] | None) -> dict[str, Any]:
    if decision is None:
        return {}
    return {"method": decision["stattest"], "threshold": decision["threshold"]}


def _evidently_info(payload: Mapping[str, Any]) -> dict[str, Any]:
    import importlib.metadata as md

    tests = payload.get("tests", [])
    return {
        "version": md.version("evidently"),
        "metrics": len(payload.get("metrics", [])),
        "tests": len(tests),
        "failed_tests": sum(1 for t in tests if t.get("status") == "FAIL"),
    }


def drift_report(
    reference: pa.Table,
    current: pa.Table,
    categorical: list[str],
    numeric: list[str],
    *,
    drift_share: float,
    score: str | None = SCORE,
    summary: bool = True,
    exclude: Mapping[str, str] | None = None,
    share_of: Collection[str] | None = None,
    calibration: Mapping[str, Any] | None = None,
    min_effect: float = drift_null.MIN_EFFECT,
) -> DriftResult:
    """Evidently drift of ``current`` against ``reference`` on the inputs (and the score).

    Args:
        reference: the reference sample.
        current: the current rows (a bounded sample of them).
        categorical: categorical inputs.
        numeric: numeric inputs.
        drift_share: dataset drift when at least this share of the inputs drifted.
        score: the score column for prediction drift (None: none).
        summary: add Evidently's ``DataSummaryPreset`` (on the same rows) to the report.
        exclude: columns the caller excludes from the drift test, with the reason (e.g. calendar columns in an
            interval shorter than their cycle); they are reported, not tested, not in the share.
        share_of: the inputs the drift share counts (default: all); the others are tested and reported
            (``drifted_not_counted``) but do not make a dataset drift.
        calibration: the reference's ``drift_null`` block (None: computed now from the reference sample).
        min_effect: the smallest threshold at any size.

    Raises:
        MonitoringError: a column is missing from either frame.
    """
    started = time.perf_counter()
    scored = score is not None and score in reference.column_names and score in current.column_names
    kinds = [(c, "categorical") for c in categorical] + [(c, "numeric") for c in numeric]
    if scored:
        assert score is not None
        kinds.append((score, "numeric"))
    for label, table in (("reference", reference), ("current", current)):
        missing = [c for c, _ in kinds if c not in table.column_names]
        if missing:
            raise MonitoringError(f"the {label} rows lack the column(s) {missing}")
    if current.num_rows == 0:
        return DriftResult(
            columns={},
            drift_share=None,
            dataset_drift=False,
            drifted_columns=[],
            tested_columns=[],
            drifted_not_counted=[],
            counted_columns=[],
            excluded_columns={c: "no current rows" for c, _ in kinds},
            degenerate={},
            prediction_drift=None,
            evidently={},
            snapshot=None,
            reference_rows=reference.num_rows,
            current_rows=0,
            seconds=time.perf_counter() - started,
            insufficient_data="no current rows",
        )
    skipped = dict(exclude or {})
    tested, excluded, degenerate, by_rule = _screen(
        reference, current, [k for k in kinds if k[0] not in skipped]
    )
    excluded.update(skipped)
    source = "stored with the reference (computed at training time)"
    if calibration is None:
        calibration = drift_null.calibrate(reference, tested)
        source = "computed at monitoring time from the reference sample (the reference has none stored)"
    thresholds, insufficient = _thresholds(current, tested, calibration, min_effect)
    tested = [t for t in tested if t[0] not in insufficient]
    test_cat = [c for c, k in tested if k == "categorical"]
    test_num = [c for c, k in tested if k == "numeric"]
    input_names = set(categorical) | set(numeric)
    tested_inputs = [c for c, _ in tested if c in input_names]
    payload: dict[str, Any] = {}
    snapshot = None
    if tested:
        # imported only here: an interval with nothing to test never pays Evidently's import (~4 s)
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import ValueDrift
        from evidently.presets import DataSummaryPreset

        definition = DataDefinition(numerical_columns=test_num, categorical_columns=test_cat)
        clips = {c: t["clip"] for c, t in thresholds.items() if t.get("clip")}
        cur = Dataset.from_pandas(_pandas(current, test_cat, test_num, clips), data_definition=definition)
        ref = Dataset.from_pandas(_pandas(reference, test_cat, test_num, clips), data_definition=definition)
        metrics: list[Any] = [ValueDrift(column=c, **_method_kwargs(thresholds.get(c))) for c, _ in tested]
        if summary:
            metrics.append(DataSummaryPreset(columns=[c for c, _ in tested]))
        snapshot = Report(metrics, include_tests=True).run(cur, ref)
        payload = json.loads(snapshot.json())
    results = _results(payload)
    columns: dict[str, dict[str, Any]] = {}
    for name, kind in tested:
        found = results.get(name)
        if found is None or found["drifted"] is None:
            raise MonitoringError(f"Evidently returned no drift test for column {name!r}")
        columns[name] = {
            "kind": kind,
            **{k: v for k, v in found.items() if k != "column"},
            **(thresholds.get(name) or {"decided_by": "evidently default (column not calibrated)"}),
        }
    columns.update(by_rule)
    for name, (kind, reason, size) in insufficient.items():
        columns[name] = {"kind": kind, "drifted": None, "sample_size": size, "insufficient_data": reason}
    for name, reason in excluded.items():
        columns[name] = {"kind": dict(kinds)[name], "drifted": None, "excluded": reason}
    judged = [c for c in (*categorical, *numeric) if c in columns and columns[c].get("drifted") is not None]
    counted = [c for c in judged if share_of is None or c in share_of]
    drifted = [c for c in counted if columns[c]["drifted"]]
    not_counted = [c for c in judged if c not in counted and columns[c]["drifted"]]
    share = len(drifted) / len(counted) if counted else None
    too_small = [
        c for c in (*categorical, *numeric) if c in insufficient and (share_of is None or c in share_of)
    ]
    why = None
    if not counted and too_small:
        why = (
            f"{current.num_rows} current row(s): {len(too_small)} input column(s) have fewer non-null values"
            f" than the {calibration['sizes'][0]} a drift verdict needs"
        )
    prediction = None
    if scored:
        assert score is not None
        prediction = {"column": score, **columns.pop(score)}
    return DriftResult(
        columns=columns,
        drift_share=share,
        dataset_drift=share is not None and share >= drift_share,
        drifted_columns=drifted,
        tested_columns=tested_inputs,
        drifted_not_counted=not_counted,
        counted_columns=counted,
        excluded_columns={c: r for c, r in excluded.items() if c != score},
        degenerate=degenerate,
        prediction_drift=prediction,
        evidently=_evidently_info(payload),
        snapshot=snapshot,
        reference_rows=reference.num_rows,
        current_rows=current.num_rows,
        seconds=time.perf_counter() - started,
        insufficient_data=why,
        calibration=source,
    )
