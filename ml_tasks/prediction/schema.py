"""The predictions contract: the partition's leading columns, then the model's raw input columns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pyarrow as pa

from ml_tasks.contract import EVENT_TIMESTAMP, TRIP_KEY
from ml_tasks.errors import FlywheelError
from ml_tasks.features.store import FeatureStoreError

if TYPE_CHECKING:
    from ml_tasks.models.preprocess import Inputs

POSITION = "_pos"  # position of a row in its day's sorted order (staging only; the merge key)
MISSING_VIEWS = "missing_feature_views"
#: the predictions contract's leading columns, in order; the model's raw input columns follow
CORE_COLUMNS: dict[str, pa.DataType] = {
    TRIP_KEY: pa.string(),
    EVENT_TIMESTAMP: pa.timestamp("us", tz="UTC"),
    "trip_date": pa.date32(),
    "score": pa.float64(),
    "decision": pa.bool_(),
    "threshold": pa.float64(),
    "model_name": pa.string(),
    "model_version": pa.string(),
    "model_run_id": pa.string(),
    "feature_service": pa.string(),
    "interval_start": pa.date32(),
    "interval_end": pa.date32(),
    MISSING_VIEWS: pa.int8(),
}


class PredictionError(FlywheelError, RuntimeError):
    """Prediction cannot run on these inputs (names the input and the problem)."""


class FeatureServiceMismatch(PredictionError, FeatureStoreError):
    """The model's feature service is not registered in Feast, or lacks columns the model needs."""


def output_schema(inputs: Inputs, types: Mapping[str, pa.DataType]) -> pa.Schema:
    """The predictions contract: :data:`CORE_COLUMNS` then the model's raw input columns (typed by ``types``).

    Raises:
        PredictionError: an input column of unknown type.
    """
    unknown = [c for c in inputs.columns if c not in types]
    if unknown:
        raise PredictionError(f"no type known for the model input column(s) {unknown}")
    clash = [c for c in inputs.columns if c in CORE_COLUMNS]
    if clash:
        raise PredictionError(f"model input column(s) {clash} collide with prediction columns")
    return pa.schema(
        [pa.field(n, t) for n, t in CORE_COLUMNS.items()] + [pa.field(c, types[c]) for c in inputs.columns]
    )
