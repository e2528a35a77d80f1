"""``evaluate``: a candidate model on a later time window, against baselines and the current champion.

Everything is scored on ONE evaluation table, so the numbers the gate compares are comparable:

* classification metrics (ROC-AUC, PR-AUC, log loss, accuracy, Brier, ECE, ...) of the candidate, of the
  champion when there is one, and of the baselines (:mod:`ml_tasks.training.baselines`, fitted on the
  train table);
* calibration: equal-width reliability bins, the expected calibration error and a reliability plot;
* slices: payment type, company, hour bucket, pickup area (top values + "other" + "(null)");
* behavioural tests: perturbations that must not move the score (invariance) or must move it one way
  (directional), each with its bound and why;
* single-feature AUCs: every model input alone as a score, with a leakage warning for any feature that
  alone reaches a very high AUC (payment_type does on the Chicago data: reported, not hidden).

:func:`evaluate_candidate` writes ``evaluation.json``, ``reliability.png`` and ``model_card.md`` and returns
the report; ``report["gate_inputs"]`` is what :func:`ml_tasks.training.gate.decide` takes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import (
    EVALUATION_JSON,
    EVENT_TIMESTAMP,
    LABEL,
    MODEL_CARD_MD,
    RELIABILITY_PNG,
    TRIP_KEY,
)
from ml_tasks.models.metrics import (
    Array,
    Labels,
    auc_or_none,
    calibration,
    check_scores,
    classification_metrics,
)
from ml_tasks.storage import atomic_write_text
from ml_tasks.training.baselines import fit_baselines, labels, model_inputs

log = logging.getLogger(__name__)


#: slice name -> source column (hour_bucket is bucketed from the request-time hour)
SLICE_COLUMNS: dict[str, str] = {
    "payment_type": "payment_type",
    "company": "company",
    "hour_bucket": "trip_start_hour",
    "pickup_area": "pickup_community_area",
}
HOUR_BUCKETS = ("night", "morning", "afternoon", "evening")  # 0-5, 6-11, 12-17, 18-23
OTHER = "other"
NULL = "(null)"
#: default single-feature ROC-AUC at or above which a feature is flagged as a possible leak
LEAKAGE_THRESHOLD = 0.9


class Scorer(Protocol):
    """Anything that scores a training-set-shaped table: a Bundle, an OnnxScorer, a baseline."""

    @property
    def threshold(self) -> float:
        """Score at or above which a row is predicted positive."""
        ...

    def predict_proba(self, table: pa.Table) -> npt.NDArray[Any]:
        """Positive-class probabilities, row-aligned with ``table``."""
        ...


# ---------------------------------------------------------------------------------------------- metrics


def reliability_plot(table: Sequence[Mapping[str, Any]], path: Path, *, title: str = "Reliability") -> Path:
    """Write the reliability diagram of a :func:`calibration` table to ``path`` (PNG) and return it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not table:
        raise ValueError("reliability_plot: empty calibration table")
    # a bare Figure + Agg canvas: no pyplot global state, no GUI backend, safe in threads and pods
    fig = Figure(figsize=(5.5, 5.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    filled = [row for row in table if row["count"]]
    ax.plot(
        [row["mean_predicted"] for row in filled],
        [row["observed_rate"] for row in filled],
        marker="o",
        color="tab:blue",
        label="model",
    )
    counts = ax.twinx()
    counts.bar(
        [(row["lower"] + row["upper"]) / 2 for row in table],
        [row["count"] for row in table],
        width=[(row["upper"] - row["lower"]) * 0.9 for row in table],
        alpha=0.2,
        color="tab:orange",
        label="rows per bin",
    )
    counts.set_ylabel("rows per bin")
    ax.set_zorder(counts.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed positive rate")
    ax.set_title(title)
    ax.legend(loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    # no "Software" metadata: the bytes then do not depend on the matplotlib version string
    fig.savefig(tmp, format="png", metadata={"Software": None})
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------------------------- slices


Codes = npt.NDArray[np.int64]


def top_k_codes(column: pa.ChunkedArray | pa.Array, top: int = 10) -> tuple[Codes, list[str]]:
    """Slice codes of ``column``: index into the returned names = its ``top`` most frequent values (as
    strings; by count, ties by value), then "other", then "(null)".
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    text = pc.cast(column, pa.string())
    counts = pc.value_counts(text.drop_null())
    ranked = (
        pa.table({"value": counts.field("values"), "count": counts.field("counts")})
        .sort_by([("count", "descending"), ("value", "ascending")])
        .slice(0, top)
    )
    names = [str(v) for v in ranked["value"].to_pylist()]
    index = pc.index_in(text, value_set=pa.array(names, pa.string()))
    # not among the top -> len(names) ("other"); null -> len(names) + 1 ("(null)")
    codes = pc.if_else(pc.is_null(text), len(names) + 1, pc.fill_null(index, len(names)))
    return np.asarray(pc.cast(codes, pa.int64()).to_numpy(zero_copy_only=False)), [*names, OTHER, NULL]


def hour_bucket_codes(hours: pa.ChunkedArray | pa.Array) -> tuple[Codes, list[str]]:
    """Hour-bucket codes of trip start hours 0-23 (night 0-5, morning 6-11, afternoon 12-17, evening
    18-23, then "(null)") and the bucket names.

    Raises:
        ValueError: an hour outside 0-23.
    """
    values = pc.cast(hours, pa.int64())
    bounds = pc.min_max(values)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is not None and (low < 0 or high > 23):
        raise ValueError(f"trip_start_hour must be in 0-23, got values in [{low}, {high}]")
    codes = pc.fill_null(pc.divide(values, 6), len(HOUR_BUCKETS))  # integer division for int64
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64), [*HOUR_BUCKETS, NULL]


def _labels(codes: Codes, names: list[str]) -> tuple[npt.NDArray[np.object_], list[str]]:
    counts = np.bincount(codes, minlength=len(names))
    return np.asarray(names, dtype=object)[codes], [n for n, c in zip(names, counts, strict=True) if c]


def top_k_labels(
    column: pa.ChunkedArray | pa.Array, top: int = 10
) -> tuple[npt.NDArray[np.object_], list[str]]:
    """Per-row slice labels of :func:`top_k_codes` and the slices that occur, in display order."""
    return _labels(*top_k_codes(column, top))


def hour_bucket_labels(hours: pa.ChunkedArray | pa.Array) -> tuple[npt.NDArray[np.object_], list[str]]:
    """Per-row labels of :func:`hour_bucket_codes` and the buckets that occur, in display order."""
    return _labels(*hour_bucket_codes(hours))


def slice_metrics(
    table: pa.Table, y: npt.ArrayLike, p: npt.ArrayLike, threshold: float, *, top: int = 10
) -> dict[str, list[dict[str, Any]]]:
    """Per-slice rows, positive rate, mean score, ROC-AUC (None for a one-class slice) and accuracy.

    Slices: payment_type, company and pickup_area (top ``top`` values + "other" + "(null)") and
    hour_bucket (from trip_start_hour); only slices with rows are listed.

    Raises:
        ValueError: a slice column is missing, or the table and scores are not row-aligned.
    """
    y_arr, p_arr = check_scores(y, p, "slice_metrics")
    if table.num_rows != y_arr.size:
        raise ValueError(
            f"slice_metrics: the table has {table.num_rows} rows but there are {y_arr.size} scores"
        )
    missing = [c for c in SLICE_COLUMNS.values() if c not in table.column_names]
    if missing:
        raise ValueError(f"slice_metrics: the table has no slice column(s) {missing}")
    correct = ((p_arr >= threshold) == y_arr).astype(np.float64)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, column in SLICE_COLUMNS.items():
        if name == "hour_bucket":
            codes, names = hour_bucket_codes(table[column])
        else:
            codes, names = top_k_codes(table[column], top)
        k = len(names)
        rows = np.bincount(codes, minlength=k)
        positives = np.bincount(codes, weights=y_arr.astype(np.float64), minlength=k)
        scores = np.bincount(codes, weights=p_arr, minlength=k)
        right = np.bincount(codes, weights=correct, minlength=k)
        # one stable sort groups the rows of each slice: slice i is order[starts[i]:starts[i] + rows[i]]
        order = np.argsort(codes, kind="stable")
        starts = np.concatenate(([0], np.cumsum(rows)[:-1]))
        out[name] = []
        for i in np.flatnonzero(rows):
            members = order[starts[i] : starts[i] + rows[i]]
            out[name].append(
                {
                    "slice": names[i],
                    "rows": int(rows[i]),
                    "positive_rate": float(positives[i] / rows[i]),
                    "mean_score": float(scores[i] / rows[i]),
                    "roc_auc": auc_or_none(y_arr[members], p_arr[members]),
                    "accuracy": float(right[i] / rows[i]),
                }
            )
    return out


# ------------------------------------------------------------------------------------ behavioural tests


def _replace(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(name), pc.cast(values, table.schema.field(name).type))


def shift_start_within_hour(table: pa.Table, minutes: int = 7) -> pa.Table:
    """``table`` with each trip start moved by ``minutes`` inside its own clock hour (wrapping around).

    Hour, day of week, month and date stay the same, so the request-time features are unchanged.
    """
    if not 0 < minutes < 60:
        raise ValueError(f"minutes must be in 1..59, got {minutes}")
    start = table[EVENT_TIMESTAMP]
    minute = pc.minute(start).to_numpy(zero_copy_only=False)
    delta_min = np.where(minute + minutes < 60, minutes, minutes - 60).astype(np.int64)
    micros = pc.cast(start, pa.int64()).to_numpy(zero_copy_only=False) + delta_min * 60_000_000
    return _replace(table, EVENT_TIMESTAMP, pa.array(micros, pa.int64()).cast(start.type))


def add_to_fare(table: pa.Table, amount: float = 0.01) -> pa.Table:
    """``table`` with ``amount`` added to every fare, fare_per_mile recomputed as the request features do."""
    fare = pc.add(table["fare"], amount)
    out = _replace(table, "fare", fare)
    if "fare_per_mile" in table.column_names and "trip_miles" in table.column_names:
        miles = table["trip_miles"]
        out = _replace(out, "fare_per_mile", pc.if_else(pc.greater(miles, 0.0), pc.divide(fare, miles), None))
    return out


def replace_value(table: pa.Table, column: str, old: str, new: str) -> pa.Table:
    """``table`` with ``column == old`` set to ``new`` (other rows unchanged)."""
    values = table[column]
    return _replace(table, column, pc.if_else(pc.equal(values, old), new, values))


@dataclass(frozen=True)
class Invariance:
    """A perturbation that must not move the score: |delta p| <= ``bound`` for >= ``min_fraction`` rows."""

    name: str
    perturb: Callable[[pa.Table], pa.Table]
    bound: float
    min_fraction: float
    why: str
    needs: tuple[str, ...]


@dataclass(frozen=True)
class Directional:
    """Setting ``column`` from ``old`` to ``new`` must move the rows' mean score by >= bound in ``sign``."""

    name: str
    column: str
    old: str
    new: str
    sign: int  # +1: the mean score must rise by >= bound; -1: it must fall by >= bound
    bound: float
    why: str


INVARIANCES: tuple[Invariance, ...] = (
    Invariance(
        name="start_minute_shift",
        perturb=shift_start_within_hour,
        bound=1e-6,
        min_fraction=0.99,
        why="the model sees the start hour, day and month, not the minute: moving a trip by 7 minutes "
        "within its hour changes no input, so any movement above float noise means the score depends on "
        "something it should not (a leaked timestamp, nondeterminism)",
        needs=(EVENT_TIMESTAMP,),
    ),
    Invariance(
        name="fare_plus_one_cent",
        perturb=add_to_fare,
        bound=0.01,
        min_fraction=0.99,
        why="one cent is ~0.1% of a typical fare; a score that moves by more than 0.01 for it is reacting "
        "to noise. Trees jump at split points, so 1% of rows may cross one",
        needs=("fare",),
    ),
)

DIRECTIONALS: tuple[Directional, ...] = (
    Directional(
        name="cash_to_credit_card",
        column="payment_type",
        old="Cash",
        new="Credit Card",
        sign=+1,
        bound=0.05,
        why="tips on cash trips are almost never recorded (0.04% big tippers vs 67.6% for credit cards "
        "in the Chicago samples), so paying by card must raise the mean score of the same trips; 0.05 "
        "leaves room for models that spread the effect over correlated inputs",
    ),
    Directional(
        name="credit_card_to_cash",
        column="payment_type",
        old="Credit Card",
        new="Cash",
        sign=-1,
        bound=0.05,
        why="the mirror of cash_to_credit_card: paying cash must lower the mean score",
    ),
)


def _predict(scorer: Scorer, table: pa.Table, who: str) -> Array:
    p = np.asarray(scorer.predict_proba(table), dtype=np.float64)
    if p.shape != (table.num_rows,):
        raise ValueError(f"{who}: predict_proba returned shape {p.shape} for {table.num_rows} rows")
    return p


def _evenly_spaced(table: pa.Table, max_rows: int) -> pa.Table:
    if table.num_rows <= max_rows:
        return table
    return table.take(np.linspace(0, table.num_rows - 1, max_rows).astype(np.int64))


def behavioural_tests(scorer: Scorer, table: pa.Table, *, max_rows: int = 20_000) -> list[dict[str, Any]]:
    """Invariance and directional tests of ``scorer`` on (an evenly spaced sample of) ``table``.

    Each result has name, kind ("invariance" / "directional"), passed, measured, bound, rows, skipped
    and why. Invariance: ``measured`` = share of rows with |delta p| <= bound (max |delta p| reported
    too), passed when >= ``min_fraction``. Directional: ``measured`` = mean delta p over the rows
    perturbed, passed when it moves in the expected direction by >= bound. A test whose column is
    missing or that has no row to perturb is skipped (passed True, skipped True, with the reason).
    """
    sample = _evenly_spaced(table, max_rows)
    base = _predict(scorer, sample, "behavioural_tests")
    results: list[dict[str, Any]] = []
    for inv in INVARIANCES:
        result: dict[str, Any] = {
            "name": inv.name,
            "kind": "invariance",
            "bound": inv.bound,
            "min_fraction": inv.min_fraction,
            "why": inv.why,
        }
        missing = [c for c in inv.needs if c not in sample.column_names]
        if missing or sample.num_rows == 0:
            results.append(
                {
                    **result,
                    "passed": True,
                    "skipped": True,
                    "measured": None,
                    "rows": 0,
                    "reason": f"missing column(s) {missing}" if missing else "no rows",
                }
            )
            continue
        delta = np.abs(_predict(scorer, inv.perturb(sample), inv.name) - base)
        within = float(np.mean(delta <= inv.bound))
        results.append(
            {
                **result,
                "passed": within >= inv.min_fraction,
                "skipped": False,
                "measured": within,
                "max_abs_delta": float(delta.max()),
                "rows": sample.num_rows,
            }
        )
    for d in DIRECTIONALS:
        result = {"name": d.name, "kind": "directional", "bound": d.bound, "direction": d.sign, "why": d.why}
        if d.column not in sample.column_names:
            results.append(
                {
                    **result,
                    "passed": True,
                    "skipped": True,
                    "measured": None,
                    "rows": 0,
                    "reason": f"missing column {d.column!r}",
                }
            )
            continue
        mask = pc.fill_null(pc.equal(sample[d.column], d.old), False).to_numpy(zero_copy_only=False)
        rows = int(mask.sum())
        if rows == 0:
            results.append(
                {
                    **result,
                    "passed": True,
                    "skipped": True,
                    "measured": None,
                    "rows": 0,
                    "reason": f"no rows with {d.column} == {d.old!r}",
                }
            )
            continue
        subset = sample.filter(pa.array(mask))
        delta = _predict(scorer, replace_value(subset, d.column, d.old, d.new), d.name) - base[mask]
        mean = float(delta.mean())
        results.append(
            {
                **result,
                "passed": mean * d.sign >= d.bound,
                "skipped": False,
                "measured": mean,
                "share_moved_as_expected": float(np.mean(delta * d.sign > 0)),
                "rows": rows,
            }
        )
    return results


# --------------------------------------------------------------------------------- single-feature AUCs


def _categorical_rate_scores(train_col: pa.ChunkedArray, train_y: Labels, eval_col: pa.ChunkedArray) -> Array:
    """Eval scores = the train positive rate of each eval row's category (null is a category; unseen ->
    the train prevalence)."""
    prevalence = float(train_y.mean())
    train_text = pc.fill_null(pc.cast(train_col, pa.string()), "\x00null")
    eval_text = pc.fill_null(pc.cast(eval_col, pa.string()), "\x00null")
    grouped = (
        pa.table({"key": train_text, "y": pa.array(train_y, pa.float64())})
        .group_by("key")
        .aggregate([("y", "mean")])
    )
    keys = grouped["key"].combine_chunks()
    lookup = np.append(grouped["y_mean"].to_numpy(), prevalence)
    index = pc.fill_null(pc.index_in(eval_text, value_set=keys), len(keys)).to_numpy(zero_copy_only=False)
    return np.asarray(lookup[index], dtype=np.float64)


def single_feature_auc(
    train: pa.Table,
    eval_table: pa.Table,
    *,
    inputs: tuple[Sequence[str], Sequence[str]] | None = None,
    label: str = LABEL,
) -> dict[str, float]:
    """ROC-AUC on ``eval_table`` of each model input alone, as max(auc, 1 - auc).

    Numeric: the value itself is the score (nulls take the train median: "unknown" ranks as typical).
    Categorical: the score is the category's positive rate in ``train`` (null is a category of its own;
    a category unseen in train scores the train prevalence). Columns of ``inputs`` = (categorical,
    numeric), default ``infer_inputs`` of the eval schema.
    """
    from sklearn.metrics import roc_auc_score

    y_train = labels(train, label, who="single_feature_auc train table")
    y_eval = labels(eval_table, label, who="single_feature_auc eval table")
    if y_eval.size == 0 or y_eval.min() == y_eval.max():
        raise ValueError("single_feature_auc: the eval table needs both classes")
    categorical, numeric = inputs if inputs is not None else model_inputs(eval_table.schema)
    missing = [
        c for c in (*categorical, *numeric) if c not in train.column_names or c not in eval_table.column_names
    ]
    if missing:
        raise ValueError(f"single_feature_auc: column(s) {missing} missing from the train or eval table")
    out: dict[str, float] = {}
    for name in categorical:
        scores = _categorical_rate_scores(train[name], y_train, eval_table[name])
        auc = float(roc_auc_score(y_eval, scores))
        out[name] = max(auc, 1.0 - auc)
    for name in numeric:
        train_values = pc.cast(train[name], pa.float64())
        median = pc.approximate_median(train_values).as_py()
        values = pc.fill_null(pc.cast(eval_table[name], pa.float64()), 0.0 if median is None else median)
        scores = np.nan_to_num(values.to_numpy(zero_copy_only=False), nan=0.0 if median is None else median)
        auc = float(roc_auc_score(y_eval, scores))
        out[name] = max(auc, 1.0 - auc)
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def leakage_warnings(aucs: Mapping[str, float], threshold: float = LEAKAGE_THRESHOLD) -> list[dict[str, Any]]:
    """One warning per feature whose single-feature ROC-AUC is >= ``threshold`` (highest first)."""
    if not 0.5 <= threshold <= 1.0:
        raise ValueError(f"leakage threshold must be in [0.5, 1], got {threshold}")
    return [
        {
            "feature": name,
            "auc": auc,
            "threshold": threshold,
            "message": f"{name} alone reaches ROC-AUC {auc:.3f} (>= {threshold:g}): a possible leak or a "
            "data-generation artefact; the model's score leans on it",
        }
        for name, auc in sorted(aucs.items(), key=lambda kv: (-kv[1], kv[0]))
        if auc >= threshold
    ]


# ------------------------------------------------------------------------------------------- the report


def window_info(table: pa.Table, label: str = LABEL) -> dict[str, Any]:
    """Rows, label rate, first/last event timestamp and a hash of the trip keys (identifies the window)."""
    info: dict[str, Any] = {"rows": table.num_rows}
    if label in table.column_names and table.num_rows:
        info["label_rate"] = float(labels(table, label).mean())
    if EVENT_TIMESTAMP in table.column_names and table.num_rows:
        bounds = pc.min_max(table[EVENT_TIMESTAMP])
        info["start"] = bounds["min"].as_py().isoformat()
        info["end"] = bounds["max"].as_py().isoformat()
    if TRIP_KEY in table.column_names:
        digest = hashlib.sha256()
        keys = pc.fill_null(pc.cast(table[TRIP_KEY], pa.string()), "")
        for offset in range(0, len(keys), 65_536):  # bounded memory on large windows
            # a unit separator (never in a key) between keys: ("ab","c") and ("a","bc") hash differently
            digest.update("\x1f".join(keys.slice(offset, 65_536).to_pylist()).encode() + b"\x1f")
        info["trip_keys_sha256"] = digest.hexdigest()
    return info


def _scored(name: str, scorer: Scorer, table: pa.Table, y: Labels) -> dict[str, Any]:
    started = time.perf_counter()
    p = _predict(scorer, table, name)
    seconds = time.perf_counter() - started
    return {
        "name": name,
        "threshold": float(scorer.threshold),
        "metrics": classification_metrics(y, p, float(scorer.threshold)),
        "predict_seconds": round(seconds, 3),
        "_p": p,
    }


def evaluate_candidate(
    scorer: Scorer,
    train_table: pa.Table,
    eval_table: pa.Table,
    *,
    champion: Scorer | None,
    out_dir: Path,
    model_meta: Mapping[str, Any] | None = None,
    label: str = LABEL,
    bins: int = 10,
    slice_top: int = 10,
    leakage_threshold: float = LEAKAGE_THRESHOLD,
    seed: int = 0,
    gbt_max_iter: int = 300,
    gbt_threads: int | None = 1,
    behavioural_max_rows: int = 20_000,
) -> dict[str, Any]:
    """Evaluate ``scorer`` (and ``champion``, and the baselines) on ``eval_table``; write the artifacts.

    Args:
        scorer: The candidate (Scorer protocol).
        train_table: The table the candidate was trained on: the baselines are fitted on it and the
            categorical single-feature scores come from it.
        eval_table: The evaluation window (later than training; overlap is reported).
        champion: The current champion, scored on the SAME eval table, or None.
        out_dir: Where evaluation.json, reliability.png and model_card.md are written.
        model_meta: The candidate's metadata (model.json) for the model card.
        label: Label column.
        bins: Reliability bins.
        slice_top: Values per categorical slice before "other".
        leakage_threshold: Single-feature ROC-AUC that triggers a leakage warning.
        seed: Seed of the gradient-boosted-tree baseline.
        gbt_max_iter: Iteration bound of the gradient-boosted-tree baseline.
        gbt_threads: OpenMP threads of the gradient-boosted-tree baseline (None: all cores). Default 1:
            on a machine shared with other tasks, OpenMP workers spin-waiting for busy cores made a
            3k-row fit take 177 s instead of 1.4 s here; one thread fits 10k rows in a few seconds.
        behavioural_max_rows: Rows (evenly spaced) the behavioural tests perturb.

    Returns:
        The report (also written as evaluation.json); ``report["gate_inputs"]`` feeds the gate.
    """
    from ml_tasks.training.card import model_card

    started = time.perf_counter()
    y_eval = labels(eval_table, label, who="eval table")
    labels(train_table, label, who="train table")
    if y_eval.size == 0 or y_eval.min() == y_eval.max():
        raise ValueError(
            f"eval table: needs both classes, got {y_eval.size} rows with label rate "
            f"{float(y_eval.mean()) if y_eval.size else float('nan'):.3f}"
        )
    inputs = model_inputs(eval_table.schema)

    candidate = _scored("candidate", scorer, eval_table, y_eval)
    p = candidate.pop("_p")
    cal = calibration(y_eval, p, bins)
    champion_result = None
    if champion is not None:
        champion_result = _scored("champion", champion, eval_table, y_eval)
        champion_result.pop("_p")

    baselines: dict[str, dict[str, Any]] = {}
    for baseline in fit_baselines(
        train_table, label, seed=seed, gbt_max_iter=gbt_max_iter, gbt_threads=gbt_threads, inputs=inputs
    ):
        scored = _scored(baseline.name, baseline, eval_table, y_eval)
        scored.pop("_p")
        baselines[baseline.name] = {**scored, "info": baseline.info}

    slices = slice_metrics(eval_table, y_eval, p, candidate["threshold"], top=slice_top)
    behavioural = behavioural_tests(scorer, eval_table, max_rows=behavioural_max_rows)
    aucs = single_feature_auc(train_table, eval_table, inputs=inputs, label=label)
    warnings = leakage_warnings(aucs, leakage_threshold)
    for warning in warnings:
        log.warning("leakage warning: %s", warning["message"])

    train_window, eval_window = window_info(train_table, label), window_info(eval_table, label)
    later = None
    if "end" in train_window and "start" in eval_window:
        later = eval_window["start"] > train_window["end"]
    out_dir.mkdir(parents=True, exist_ok=True)
    reliability_plot(cal.table, out_dir / RELIABILITY_PNG, title=f"Reliability (ECE {cal.ece:.3f})")
    report: dict[str, Any] = {
        "candidate": candidate,
        "champion": champion_result,
        "baselines": baselines,
        "calibration": {"ece": cal.ece, "bins": bins, "table": cal.table, "plot": RELIABILITY_PNG},
        "slices": slices,
        "behavioural_tests": behavioural,
        "single_feature_auc": aucs,
        "leakage_warnings": warnings,
        "windows": {"train": train_window, "eval": eval_window, "eval_after_train": later},
        "inputs": {"categorical": inputs[0], "numeric": inputs[1]},
        "settings": {
            "label": label,
            "bins": bins,
            "slice_top": slice_top,
            "leakage_threshold": leakage_threshold,
            "seed": seed,
            "gbt_max_iter": gbt_max_iter,
            "gbt_threads": gbt_threads,
            "behavioural_max_rows": behavioural_max_rows,
        },
        "gate_inputs": {
            "candidate": candidate["metrics"],
            "baselines": {name: b["metrics"] for name, b in baselines.items()},
            "champion": champion_result["metrics"] if champion_result else None,
            "behavioural_passed": all(t["passed"] for t in behavioural),
            "eval_window": eval_window,
        },
        "artifacts": {
            "evaluation": EVALUATION_JSON,
            "reliability_plot": RELIABILITY_PNG,
            "model_card": MODEL_CARD_MD,
        },
    }
    atomic_write_text(out_dir / MODEL_CARD_MD, model_card(report, dict(model_meta or {})))
    report["seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_text(
        out_dir / EVALUATION_JSON, json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"
    )
    log.info(
        "evaluate: %d eval rows, candidate roc_auc %.4f (baselines %s) in %.1f s",
        eval_table.num_rows,
        candidate["metrics"]["roc_auc"],
        {n: round(b["metrics"]["roc_auc"], 4) for n, b in baselines.items()},
        report["seconds"],
    )
    return report
