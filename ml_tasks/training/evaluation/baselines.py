"""Baselines a candidate must beat, fitted on the TRAIN table only: the majority class, the payment-type rule
and a gradient-boosted tree. Each is a :class:`Baseline` (the Scorer protocol plus a ``name``), scored on the
evaluation window exactly like the candidate (docs/evaluation.md says why these three).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import EVENT_TIMESTAMP, LABEL

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingClassifier

log = logging.getLogger(__name__)

PAYMENT_TYPE = "payment_type"
#: HistGradientBoosting's native categorical support takes codes < max_bins (255): the most frequent
#: 254 train values get a code, the rest (and nulls, and values unseen in training) are "missing".
MAX_CATEGORIES = 254
#: every baseline predicts the positive class at this score (a constant prevalence < 0.5 then predicts
#: the majority class "not a big tipper", which is what the majority baseline means)
BASELINE_THRESHOLD = 0.5

Probabilities = npt.NDArray[np.float64]


def labels(table: pa.Table, label: str = LABEL, *, who: str = "table") -> npt.NDArray[np.int8]:
    """The label column of ``table`` as 0/1 int8.

    Raises:
        ValueError: the label column is missing, has nulls, or is not boolean / 0-1.
    """
    if label not in table.column_names:
        raise ValueError(f"{who}: no label column {label!r} (columns: {table.column_names})")
    column = table[label]
    if column.null_count:
        raise ValueError(f"{who}: label column {label!r} has {column.null_count} null(s)")
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype != np.bool_ and not np.isin(values, (0, 1)).all():
        raise ValueError(f"{who}: label column {label!r} must be boolean or 0/1, got {column.type}")
    return np.asarray(values, dtype=np.int8)


def model_inputs(schema: pa.Schema) -> tuple[list[str], list[str]]:
    """(categorical, numeric) model input columns of a training-set schema, as the network uses them."""
    from ml_tasks.models.preprocess import infer_inputs

    inputs = infer_inputs(schema)
    return list(inputs.categorical), list(inputs.numeric)


@dataclass
class Baseline:
    """A fitted baseline: a name, a threshold and a row-aligned scoring function (the Scorer protocol)."""

    name: str
    threshold: float = BASELINE_THRESHOLD
    info: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, table: pa.Table) -> Probabilities:
        """Positive-class probabilities of the rows of ``table`` (float64, row-aligned)."""
        raise NotImplementedError


@dataclass
class MajorityClass(Baseline):
    """A constant score: the train prevalence."""

    prevalence: float = 0.0

    def predict_proba(self, table: pa.Table) -> Probabilities:
        """The train prevalence for every row."""
        return np.full(table.num_rows, self.prevalence, dtype=np.float64)


@dataclass
class PaymentTypeRule(Baseline):
    """Score = the train positive rate of the trip's payment type; unseen or null -> the train prevalence."""

    rates: dict[str, float] = field(default_factory=dict)
    prevalence: float = 0.0

    def predict_proba(self, table: pa.Table) -> Probabilities:
        """The train positive rate of each row's payment type."""
        if PAYMENT_TYPE not in table.column_names:
            raise ValueError(f"{self.name}: the table has no column {PAYMENT_TYPE!r}")
        keys = sorted(self.rates)
        column = pc.cast(table[PAYMENT_TYPE], pa.string())
        index = pc.index_in(column, value_set=pa.array(keys, pa.string()))
        lookup = np.array([self.rates[k] for k in keys] + [self.prevalence], dtype=np.float64)
        # null index (unseen value or null payment type) -> the last slot, the prevalence
        positions = pc.fill_null(index, len(keys)).to_numpy(zero_copy_only=False)
        return np.asarray(lookup[positions], dtype=np.float64)


@dataclass
class GradientBoostedTree(Baseline):
    """A fitted HistGradientBoostingClassifier with its own column encoding (codes per categorical)."""

    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    vocabularies: dict[str, pa.Array] = field(default_factory=dict)
    model: HistGradientBoostingClassifier | None = None
    n_threads: int | None = None

    def features(self, table: pa.Table) -> npt.NDArray[np.float64]:
        """The [N, categorical + numeric] float64 matrix the tree sees (NaN = missing / unseen)."""
        missing = [c for c in (*self.categorical, *self.numeric) if c not in table.column_names]
        if missing:
            raise ValueError(f"{self.name}: the table lacks model input column(s) {missing}")
        out = np.empty((table.num_rows, len(self.categorical) + len(self.numeric)), dtype=np.float64)
        for j, name in enumerate(self.categorical):
            column = table[name]
            vocab = self.vocabularies[name]
            codes = pc.index_in(pc.cast(column, vocab.type), value_set=vocab)
            out[:, j] = pc.cast(codes, pa.float64()).to_numpy(zero_copy_only=False)
        for j, name in enumerate(self.numeric, start=len(self.categorical)):
            out[:, j] = pc.cast(table[name], pa.float64()).to_numpy(zero_copy_only=False)
        return out

    def predict_proba(self, table: pa.Table) -> Probabilities:
        """The tree's positive-class probabilities."""
        if self.model is None:
            raise RuntimeError(f"{self.name}: not fitted")
        with _threads(self.n_threads):
            proba = self.model.predict_proba(self.features(table))
        return np.asarray(proba[:, 1], dtype=np.float64)


@contextlib.contextmanager
def _threads(n_threads: int | None) -> Iterator[None]:
    """Cap the OpenMP threads of scikit-learn's tree code (None: the library default, all cores).

    On a shared machine OpenMP workers that spin-wait for busy cores can make a fit 50x slower.
    """
    if n_threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n_threads, user_api="openmp"):
        yield


def _prevalence(y: npt.NDArray[np.int8], who: str) -> float:
    if y.size == 0:
        raise ValueError(f"{who}: the train table is empty")
    return float(y.mean())


def majority_class(train: pa.Table, label: str = LABEL) -> MajorityClass:
    """The majority-class baseline: the train prevalence as a constant score."""
    prevalence = _prevalence(labels(train, label, who="majority_class train table"), "majority_class")
    return MajorityClass(name="majority_class", prevalence=prevalence, info={"prevalence": prevalence})


def payment_type_rule(train: pa.Table, label: str = LABEL) -> PaymentTypeRule:
    """The payment-type rule: the train positive rate per payment type (unseen or null -> prevalence)."""
    y = labels(train, label, who="payment_type_rule train table")
    prevalence = _prevalence(y, "payment_type_rule")
    if PAYMENT_TYPE not in train.column_names:
        raise ValueError(f"payment_type_rule: the train table has no column {PAYMENT_TYPE!r}")
    grouped = (
        pa.table({"key": pc.cast(train[PAYMENT_TYPE], pa.string()), "y": pa.array(y, pa.float64())})
        .filter(pc.is_valid(pc.field("key")))
        .group_by("key")
        .aggregate([("y", "mean"), ("y", "count")])
    )
    rates = dict(zip(grouped["key"].to_pylist(), grouped["y_mean"].to_pylist(), strict=True))
    counts = dict(zip(grouped["key"].to_pylist(), grouped["y_count"].to_pylist(), strict=True))
    return PaymentTypeRule(
        name="payment_type_rule",
        rates=rates,
        prevalence=prevalence,
        info={
            "prevalence": prevalence,
            "rates": dict(sorted(rates.items())),
            "counts": dict(sorted(counts.items())),
        },
    )


def _vocabulary(column: pa.ChunkedArray, limit: int) -> pa.Array:
    """The ``limit`` most frequent non-null values (ties by value, so the encoding is deterministic)."""
    counts = pc.value_counts(column.drop_null())
    if len(counts) == 0:
        return pa.array([], column.type)
    table = pa.table({"value": counts.field("values"), "count": counts.field("counts")})
    table = table.sort_by([("count", "descending"), ("value", "ascending")]).slice(0, limit)
    return table["value"].combine_chunks()


#: the tree's own small search (tried in order; the first is scikit-learn's default): learning rate,
#: leaves per tree, L2 regularisation, rows per leaf; the best ROC-AUC on the newest train rows wins.
#: Small trees (7 leaves) are in it: on the real TFDV split they are the best tree (docs/evaluation.md)
TREE_SEARCH: tuple[dict[str, float], ...] = (
    {"learning_rate": 0.1, "max_leaf_nodes": 31, "l2_regularization": 0.0, "min_samples_leaf": 20},
    {"learning_rate": 0.05, "max_leaf_nodes": 7, "l2_regularization": 0.0, "min_samples_leaf": 40},
    {"learning_rate": 0.1, "max_leaf_nodes": 15, "l2_regularization": 0.1, "min_samples_leaf": 40},
    {"learning_rate": 0.05, "max_leaf_nodes": 31, "l2_regularization": 1.0, "min_samples_leaf": 80},
)


def gradient_boosted_tree(
    train: pa.Table,
    label: str = LABEL,
    *,
    inputs: tuple[Sequence[str], Sequence[str]] | None = None,
    seed: int = 0,
    max_iter: int = 300,
    learning_rate: float = 0.1,
    validation_fraction: float = 0.1,
    n_iter_no_change: int = 20,
    n_threads: int | None = None,
    search: int = len(TREE_SEARCH),
) -> GradientBoostedTree:
    """A HistGradientBoostingClassifier on the network's model inputs, categoricals handled natively.

    Early stopping watches the log loss on the newest ``validation_fraction`` of the train rows (by
    event timestamp, like the network's validation split; a random stratified fraction when the table
    has no event timestamp). ``max_iter`` bounds the boosting rounds.

    Args:
        train: The train table (training-set columns and the label).
        label: The label column.
        inputs: (categorical, numeric) columns; default: ``infer_inputs`` of the train schema.
        seed: ``random_state`` of the tree (and of the random validation split when one is used).
        max_iter: Upper bound on boosting iterations.
        learning_rate: Boosting learning rate.
        validation_fraction: Share of the train rows held out for early stopping (0 < f < 0.5).
        n_iter_no_change: Early-stopping patience, in iterations.
        n_threads: OpenMP threads for fitting and scoring (None: all cores).
        search: how many of :data:`TREE_SEARCH` to try (their learning rates replace ``learning_rate``;
            1: ``learning_rate`` with scikit-learn's other defaults); chosen by ROC-AUC on the newest rows,
            as the network's trials are, so beating the tree means beating a tuned one. Without event
            timestamps only the first is fitted.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    if not 0.0 < validation_fraction < 0.5:
        raise ValueError(f"validation_fraction must be in (0, 0.5), got {validation_fraction}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    y = labels(train, label, who="gradient_boosted_tree train table")
    if len(np.unique(y)) < 2:
        raise ValueError("gradient_boosted_tree: the train table has a single class; nothing to learn")
    categorical, numeric = inputs if inputs is not None else model_inputs(train.schema)
    if not categorical and not numeric:
        raise ValueError("gradient_boosted_tree: no model input columns in the train table")
    vocabularies = {name: _vocabulary(train[name], MAX_CATEGORIES) for name in categorical}
    tree = GradientBoostedTree(
        name="gradient_boosted_tree",
        categorical=list(categorical),
        numeric=list(numeric),
        vocabularies=vocabularies,
        n_threads=n_threads,
    )
    if search < 1:
        raise ValueError(f"search must be >= 1, got {search}")
    x = tree.features(train)
    candidates = (
        [{**TREE_SEARCH[0], "learning_rate": learning_rate}] if search == 1 else list(TREE_SEARCH[:search])
    )

    def make(params: dict[str, float]) -> Any:
        return HistGradientBoostingClassifier(
            learning_rate=params["learning_rate"],
            max_leaf_nodes=int(params["max_leaf_nodes"]),
            l2_regularization=params["l2_regularization"],
            min_samples_leaf=int(params["min_samples_leaf"]),
            max_iter=max_iter,
            categorical_features=np.arange(x.shape[1]) < len(categorical),
            early_stopping=True,
            scoring="loss",
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            random_state=seed,
        )

    model = make(candidates[0])
    chosen, tried = candidates[0], []
    started = time.perf_counter()
    validation = "random"
    if EVENT_TIMESTAMP in train.column_names and train[EVENT_TIMESTAMP].null_count == 0:
        # stable sort: rows with equal timestamps keep their order, so the split is deterministic
        order = np.argsort(pc.cast(train[EVENT_TIMESTAMP], pa.int64()).to_numpy(), kind="stable")
        n_val = max(1, round(len(order) * validation_fraction))
        fit_rows, val_rows = order[:-n_val], order[-n_val:]
        if len(np.unique(y[val_rows])) == 2 and len(np.unique(y[fit_rows])) == 2:
            best = -1.0
            for params in candidates:
                candidate = make(params)
                with _threads(n_threads):
                    candidate.fit(x[fit_rows], y[fit_rows], X_val=x[val_rows], y_val=y[val_rows])
                    auc = float(roc_auc_score(y[val_rows], candidate.predict_proba(x[val_rows])[:, 1]))
                tried.append({**params, "val_roc_auc": round(auc, 6), "n_iter": int(candidate.n_iter_)})
                if auc > best:
                    best, model, chosen = auc, candidate, params
            validation = "newest"
    if validation == "random":
        with _threads(n_threads):
            model.fit(x, y)
    seconds = time.perf_counter() - started
    tree.model = model
    tree.info = {
        "n_iter": int(model.n_iter_),
        "max_iter": max_iter,
        "learning_rate": chosen["learning_rate"],
        "params": dict(chosen),
        "search": tried,
        "validation": validation,
        "validation_fraction": validation_fraction,
        "seed": seed,
        "n_threads": n_threads,
        "categorical": list(categorical),
        "numeric": list(numeric),
        "fit_seconds": round(seconds, 3),
    }
    log.info(
        "gradient_boosted_tree: %d rows, %d inputs, %d iterations in %.2f s",
        train.num_rows,
        x.shape[1],
        model.n_iter_,
        seconds,
    )
    return tree


def fit_baselines(
    train: pa.Table,
    label: str = LABEL,
    *,
    seed: int = 0,
    gbt_max_iter: int = 300,
    gbt_threads: int | None = None,
    inputs: tuple[Sequence[str], Sequence[str]] | None = None,
) -> list[Baseline]:
    """All three baselines fitted on ``train`` (majority class, payment-type rule, gradient-boosted tree)."""
    return [
        majority_class(train, label),
        payment_type_rule(train, label),
        gradient_boosted_tree(
            train, label, inputs=inputs, seed=seed, max_iter=gbt_max_iter, n_threads=gbt_threads
        ),
    ]
