"""Model inputs and their preprocessing: inferred from a training-set schema, fitted on the train split.

The :class:`Preprocessor` is the versioned artifact shared by training, evaluation, ONNX export and
prediction. Pure pyarrow / numpy (no torch): evaluation and prediction import it cheaply.
Design notes: ``docs/training.md``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import EVENT_TIMESTAMP, LABEL, TRIP_KEY
from ml_tasks.errors import FlywheelError
from ml_tasks.models.numeric_stats import DEFAULT_NUMERIC_BINS, MIN_ROWS_PER_BIN, BinMethod, NumericStats

#: categorical inputs, in this order, when the training set has them
CATEGORICAL_COLUMNS: tuple[str, ...] = (
    "payment_type",
    "company",
    "pickup_community_area",
    "dropoff_community_area",
    "trip_start_hour",
    "trip_start_day_of_week",
    "trip_start_month",
)
#: numeric inputs, in this order, when present; then every ``<view>__<feature>`` column in schema order
NUMERIC_COLUMNS: tuple[str, ...] = ("fare", "trip_miles", "trip_seconds", "fare_per_mile", "speed_mph")
#: columns that are never model inputs (identity, time, label)
NOT_INPUTS: tuple[str, ...] = (TRIP_KEY, EVENT_TIMESTAMP, "trip_date", LABEL)
FEATURE_SEPARATOR = "__"
FORMAT_VERSION = 1
Kind = Literal["string", "int"]
BinInputs = Literal["all", "trip"]


class PreprocessError(FlywheelError, ValueError):
    """A table or a preprocessing description that cannot be used (names the column and the problem)."""


@dataclass(frozen=True)
class Inputs:
    """The model's input columns: categorical then numeric, each in a fixed order."""

    categorical: tuple[str, ...]
    numeric: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.categorical, *self.numeric)

    def to_dict(self) -> dict[str, list[str]]:
        return {"categorical": list(self.categorical), "numeric": list(self.numeric)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(tuple(data["categorical"]), tuple(data["numeric"]))


def _is_numeric(typ: pa.DataType) -> bool:
    return bool(pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ))


def infer_inputs(schema: pa.Schema) -> Inputs:
    """The model inputs a training set with ``schema`` offers (see the module docstring).

    Raises:
        PreprocessError: an input column of an unusable type (e.g. a string Feast feature).
    """
    names = set(schema.names)
    categorical = tuple(c for c in CATEGORICAL_COLUMNS if c in names)
    numeric = [c for c in NUMERIC_COLUMNS if c in names]
    numeric += [c for c in schema.names if FEATURE_SEPARATOR in c and c not in NOT_INPUTS]
    for column in categorical:
        typ = schema.field(column).type
        if not (pa.types.is_integer(typ) or pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            raise PreprocessError(
                f"categorical input {column!r} must be a string or integer column, not {typ}"
            )
    for column in numeric:
        typ = schema.field(column).type
        if not _is_numeric(typ):
            raise PreprocessError(f"numeric input {column!r} must be an integer or float column, not {typ}")
    if not categorical and not numeric:
        raise PreprocessError(f"the table has no model input columns; it has {schema.names}")
    return Inputs(categorical, tuple(numeric))


@dataclass(frozen=True)
class Encoded:
    """Model-ready arrays, row-aligned with the encoded table."""

    numeric: npt.NDArray[np.float32]  # [N, F] raw values, NaN where null / not finite
    categorical: npt.NDArray[np.int64]  # [N, C] vocabulary indices, 0 = out of vocabulary / null

    def __len__(self) -> int:
        return int(self.numeric.shape[0])


@dataclass(frozen=True)
class Vocabulary:
    """One categorical column's vocabulary (index i + 1 <-> ``values[i]``)."""

    column: str
    kind: Kind
    values: tuple[str, ...] | tuple[int, ...]

    def arrow(self) -> pa.Array:
        return pa.array(self.values, pa.string() if self.kind == "string" else pa.int64())


def _column(table: pa.Table, name: str) -> pa.ChunkedArray:
    return table.column(name)


def _as_float(column: pa.ChunkedArray, name: str) -> npt.NDArray[np.float64]:
    """float64 values with NaN for null, NaN and +-inf (a non-finite value is as unknown as a null)."""
    if not _is_numeric(column.type):
        raise PreprocessError(f"numeric input {name!r} must be an integer or float column, not {column.type}")
    values = pc.fill_null(pc.cast(column, pa.float64()), float("nan"))
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    out = np.array(array.to_numpy(zero_copy_only=False), dtype=np.float64)
    out[~np.isfinite(out)] = np.nan
    return out


def _categorical_kind(column: pa.ChunkedArray, name: str) -> Kind:
    typ = column.type
    if pa.types.is_integer(typ):
        return "int"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "string"
    raise PreprocessError(f"categorical input {name!r} must be a string or integer column, not {typ}")


class Preprocessor:
    """Vocabularies and numeric statistics of the model inputs (see the module docstring)."""

    def __init__(
        self, inputs: Inputs, vocabularies: list[Vocabulary], stats: list[NumericStats], min_count: int
    ) -> None:
        if [v.column for v in vocabularies] != list(inputs.categorical):
            raise PreprocessError("vocabularies do not match the categorical inputs")
        if [s.column for s in stats] != list(inputs.numeric):
            raise PreprocessError("numeric statistics do not match the numeric inputs")
        self.inputs = inputs
        self.vocabularies = vocabularies
        self.stats = stats
        self.min_count = min_count

    # -- fitting ---------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        table: pa.Table,
        inputs: Inputs,
        min_count: int = 5,
        numeric_bins: int = DEFAULT_NUMERIC_BINS,
        min_rows_per_bin: int = MIN_ROWS_PER_BIN,
        bin_method: BinMethod = "quantile",
        bin_inputs: BinInputs = "all",
    ) -> Preprocessor:
        """Fit on ``table`` (the TRAIN split only: validation/test values must stay unseen).

        ``numeric_bins`` caps the piecewise-linear-encoding bins per numeric column (0: none), and so does
        the column's non-null count // ``min_rows_per_bin``. ``bin_method``: ``quantile`` edges, or
        ``target``-aware ones (``numeric_stats.target_bin_edges``; needs the label column).
        ``bin_inputs``: ``all`` numeric inputs get edges, or only the ``trip``'s own
        (:data:`NUMERIC_COLUMNS`, not the ``<view>__<feature>`` aggregates).

        Raises:
            PreprocessError: an input column is missing or of an unusable type, ``min_count < 1`` or
                ``numeric_bins < 0``.
        """
        if min_count < 1:
            raise PreprocessError(f"min_count must be >= 1, got {min_count}")
        if numeric_bins < 0:
            raise PreprocessError(f"numeric_bins must be >= 0, got {numeric_bins}")
        _check_columns(table, inputs, "fit")
        vocabularies = []
        for name in inputs.categorical:
            column = _column(table, name)
            kind = _categorical_kind(column, name)
            if kind == "int":
                column = pc.cast(column, pa.int64())
            counts = pc.value_counts(column.drop_null())
            values = counts.field("values")
            frequent = pc.filter(values, pc.greater_equal(counts.field("counts"), min_count))
            ordered = pc.sort_indices(frequent)
            kept = pc.take(frequent, ordered).to_pylist()
            vocabularies.append(Vocabulary(name, kind, tuple(kept)))
        if bin_method not in ("quantile", "target"):
            raise PreprocessError(f"bin_method must be quantile or target, got {bin_method!r}")
        if bin_inputs not in ("all", "trip"):
            raise PreprocessError(f"bin_inputs must be all or trip, got {bin_inputs!r}")
        y = labels(table) if bin_method == "target" and numeric_bins > 1 else None
        stats = []
        for name in inputs.numeric:
            values = _as_float(_column(table, name), name)
            bins = min(numeric_bins, int(np.count_nonzero(~np.isnan(values))) // max(min_rows_per_bin, 1))
            if bin_inputs == "trip" and name not in NUMERIC_COLUMNS:
                bins = 0
            stats.append(NumericStats.fit(name, values, y, bins, min_rows_per_bin))
        return cls(inputs, vocabularies, stats, min_count)

    # -- encoding --------------------------------------------------------------------------------
    def encode(self, table: pa.Table) -> Encoded:
        """The model arrays of ``table`` (extra columns are ignored).

        Raises:
            PreprocessError: input columns are missing (all named) or of the wrong type.
        """
        _check_columns(table, self.inputs, "encode")
        n = table.num_rows
        categorical = np.zeros((n, len(self.vocabularies)), dtype=np.int64)
        for j, vocab in enumerate(self.vocabularies):
            column = _column(table, vocab.column)
            kind = _categorical_kind(column, vocab.column)
            if kind != vocab.kind:
                raise PreprocessError(
                    f"categorical input {vocab.column!r} was fitted on {vocab.kind} values"
                    f" but is {column.type}"
                )
            if kind == "int":
                column = pc.cast(column, pa.int64())
            # index_in: position in the vocabulary, null when absent or null -> 0; else position + 1
            index = pc.fill_null(pc.index_in(column, value_set=vocab.arrow()), -1)
            flat = index.combine_chunks() if isinstance(index, pa.ChunkedArray) else index
            categorical[:, j] = flat.to_numpy(zero_copy_only=False).astype(np.int64) + 1
        numeric = np.empty((n, len(self.stats)), dtype=np.float32)
        for j, stat in enumerate(self.stats):
            numeric[:, j] = _as_float(_column(table, stat.column), stat.column)
        return Encoded(numeric, categorical)

    # -- (de)serialisation -----------------------------------------------------------------------
    def vocabulary_sizes(self) -> list[int]:
        """Per categorical input, the number of embedding rows needed (vocabulary + the OOV row 0)."""
        return [len(v.values) + 1 for v in self.vocabularies]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "min_count": self.min_count,
            "inputs": self.inputs.to_dict(),
            "categorical": [
                {"column": v.column, "kind": v.kind, "vocabulary": list(v.values)} for v in self.vocabularies
            ],
            "numeric": [s.to_dict() for s in self.stats],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            PreprocessError: an unknown format version or a malformed description.
        """
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise PreprocessError(
                f"preprocessing format_version {version!r} is not supported ({FORMAT_VERSION})"
            )
        try:
            inputs = Inputs.from_dict(data["inputs"])
            vocabularies = []
            for item in data["categorical"]:
                kind = item["kind"]
                if kind not in ("string", "int"):
                    raise PreprocessError(f"categorical {item['column']!r}: unknown kind {kind!r}")
                values: tuple[str, ...] | tuple[int, ...] = (
                    tuple(str(v) for v in item["vocabulary"])
                    if kind == "string"
                    else tuple(int(v) for v in item["vocabulary"])
                )
                vocabularies.append(Vocabulary(item["column"], kind, values))
            stats = []
            for item in data["numeric"]:
                try:
                    stats.append(NumericStats.from_dict(item))
                except ValueError as exc:
                    raise PreprocessError(str(exc)) from exc
            return cls(inputs, vocabularies, stats, int(data["min_count"]))
        except (KeyError, TypeError) as exc:
            raise PreprocessError(f"malformed preprocessing description: {exc!r}") from exc

    def max_bins(self) -> int:
        """The most piecewise-linear-encoding bins of any numeric input (0 when none has edges)."""
        return max((max(len(s.edges) - 1, 0) for s in self.stats), default=0)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace): what :meth:`sha256` hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        return cls.from_dict(json.loads(text))

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Preprocessor) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.sha256())

    def __repr__(self) -> str:
        sizes = dict(zip(self.inputs.categorical, self.vocabulary_sizes(), strict=True))
        return f"Preprocessor(categorical={sizes}, numeric={list(self.inputs.numeric)})"


def labels(table: pa.Table) -> npt.NDArray[np.float32]:
    """The label column as float32 0/1.

    Raises:
        PreprocessError: no label column, or null labels.
    """
    if LABEL not in table.column_names:
        raise PreprocessError(f"the table has no label column {LABEL!r}")
    column = table.column(LABEL)
    if column.null_count:
        raise PreprocessError(f"label {LABEL!r} has {column.null_count} null value(s)")
    values = pc.cast(column, pa.float32())
    flat = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return np.array(flat.to_numpy(zero_copy_only=False), dtype=np.float32)  # a writable copy


def _check_columns(table: pa.Table, inputs: Inputs, what: str) -> None:
    missing = [c for c in inputs.columns if c not in table.column_names]
    if missing:
        raise PreprocessError(f"{what}: the table lacks model input column(s) {missing}")
