"""Shared by the real-data drift tests and ``bench/drift_false_alarms.py``: the Chicago splits and the
false-alarm / detection rates of the fixed 0.1 threshold (before) and the size-aware one (after)."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ml_tasks.models import drift_null
from ml_tasks.models.preprocess import infer_inputs
from ml_tasks.training.frames import rows_between, training_frame_from_csv

SIZES = (30, 300, 3_000)
#: the key of the dataset-level rate (a draw with at least SHARE of its judged inputs flagged)
DATASET = "_dataset"
SHARE = 0.3


def input_columns(frame: pa.Table) -> list[tuple[str, str]]:
    """The model's inputs of a training frame, (name, kind)."""
    inputs = infer_inputs(frame.schema)
    return [(c, "categorical") for c in inputs.categorical] + [(c, "numeric") for c in inputs.numeric]


def tfdv_split(folder: Path) -> tuple[pa.Table, pa.Table]:
    """Reference tfdv_train.csv, same-distribution pool tfdv_eval.csv (the TFDV split of the same trips)."""
    return training_frame_from_csv(folder / "tfdv_train.csv"), training_frame_from_csv(
        folder / "tfdv_eval.csv"
    )


def tfx_halves(folder: Path, seed: int = 7) -> tuple[pa.Table, pa.Table]:
    """The 2013-2015 rows of tfx_simple_data.csv shuffled into two halves (reference, pool)."""
    frame = rows_between(training_frame_from_csv(folder / "tfx_simple_data.csv"), dt.date(2013, 1, 1),
                         dt.date(2016, 1, 1))  # fmt: skip
    order = np.random.default_rng(seed).permutation(frame.num_rows)
    half = frame.num_rows // 2
    return frame.take(pa.array(np.sort(order[:half]))), frame.take(pa.array(np.sort(order[half:])))


def bigquery_2019(folder: Path) -> pa.Table:
    """The 2019 rows of tfx_bigquery_ml_testdata_2013_2019.csv as a training frame: its missing values are
    coded 0 / "NA" (README), recoded to null first so the loader's rules see what they mean."""
    table = pacsv.read_csv(
        folder / "tfx_bigquery_ml_testdata_2013_2019.csv",
        convert_options=pacsv.ConvertOptions(null_values=["NA", ""], strings_can_be_null=True),
    )
    for name in ("pickup_community_area", "dropoff_community_area", "pickup_census_tract",
                 "dropoff_census_tract"):  # fmt: skip
        column = table.column(name)
        table = table.set_column(
            table.schema.get_field_index(name), name, pc.if_else(pc.equal(column, 0), None, column)
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bigquery.csv"
        pacsv.write_csv(table, path)
        frame = training_frame_from_csv(path)
    return rows_between(frame, dt.date(2019, 1, 1), dt.date(2020, 1, 1))


def flag_rates(
    reference: pa.Table, pool: pa.Table, *, sizes: tuple[int, ...] = SIZES, draws: int = 200, seed: int = 0
) -> dict[int, dict[str, dict[str, float]]]:
    """Per size and column: the share of seeded draws of ``size`` pool rows (without replacement; with
    replacement when the pool is smaller) flagged by Evidently's fixed 0.1 on the raw values (``before``)
    and by the size-aware rule (``after``: winsorised values, the null threshold at the draw's non-null
    count, at least 0.1); draws with fewer non-null values than the calibration's smallest size are
    insufficient data and not counted."""
    columns = input_columns(reference)
    calibration = drift_null.calibrate(reference, columns, seed=seed)
    raw = {c: drift_null.column_values(reference.column(c), k) for c, k in columns}
    refs = {
        c: drift_null.clip(drift_null.column_values(reference.column(c), k), calibration["columns"][c])
        for c, k in columns
    }
    rng = np.random.Generator(np.random.PCG64(seed))
    out: dict[int, dict[str, dict[str, float]]] = {}
    for size in sizes:
        counts: dict[str, list[int]] = {c: [0, 0, 0] for c in (*(c for c, _ in columns), DATASET)}
        for _ in range(draws):
            flags = [0, 0, 0]
            rows = rng.choice(pool.num_rows, size=size, replace=size > pool.num_rows)
            for name, kind in columns:
                current = drift_null.column_values(pool.column(name).take(pa.array(rows)), kind)
                entry = calibration["columns"][name]
                null = drift_null.threshold_at(calibration, entry, len(current))
                if null is None:
                    continue
                d = drift_null.distance(entry["method"], refs[name], drift_null.clip(current, entry))
                before = drift_null.distance(entry["method"], raw[name], current)
                flagged = (
                    int(before >= drift_null.MIN_EFFECT),
                    int(d >= max(null, drift_null.MIN_EFFECT)),
                    1,
                )
                for i, v in enumerate(flagged):
                    counts[name][i] += v
                    flags[i] += v
            if flags[2]:
                counts[DATASET][0] += int(flags[0] / flags[2] >= SHARE)
                counts[DATASET][1] += int(flags[1] / flags[2] >= SHARE)
                counts[DATASET][2] += 1
        out[size] = {
            name: {"before": b / n, "after": a / n, "draws": n} for name, (b, a, n) in counts.items() if n
        }
    return out


def summary(rates: dict[int, dict[str, dict[str, float]]]) -> dict[int, Any]:
    """Per size: the worst column's rate before and after, the mean over columns, the dataset rate."""
    return {
        size: {
            "dataset_before": cols[DATASET]["before"],
            "dataset_after": cols[DATASET]["after"],
            "max_before": max(r["before"] for c, r in cols.items() if c != DATASET),
            "max_after": max(r["after"] for c, r in cols.items() if c != DATASET),
            "mean_before": float(np.mean([r["before"] for c, r in cols.items() if c != DATASET])),
            "mean_after": float(np.mean([r["after"] for c, r in cols.items() if c != DATASET])),
        }
        for size, cols in rates.items()
    }
