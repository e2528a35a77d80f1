"""The predictions contract's schema and the model/feature-service column check."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ml_tasks.models.preprocess import Inputs
from ml_tasks.prediction.schema import CORE_COLUMNS, FeatureServiceMismatch, PredictionError, output_schema
from ml_tasks.prediction.score import check_service_columns
from tests.unit.prediction._model import MODEL


def test_output_schema_is_the_contract_then_the_inputs() -> None:
    inputs = Inputs(("payment_type", "company"), ("fare", "company_stats__trips_1d"))
    types = {
        "payment_type": pa.string(),
        "company": pa.string(),
        "fare": pa.float64(),
        "company_stats__trips_1d": pa.int64(),
    }
    schema = output_schema(inputs, types)
    assert schema.names == [*CORE_COLUMNS, "payment_type", "company", "fare", "company_stats__trips_1d"]
    assert schema.field("company_stats__trips_1d").type == pa.int64()
    assert schema.field("missing_feature_views").type == pa.int8()
    assert schema.field("interval_start").type == pa.date32()
    with pytest.raises(PredictionError, match=r"no type known.*\['fare'\]"):
        output_schema(inputs, {k: v for k, v in types.items() if k != "fare"})
    with pytest.raises(PredictionError, match="collide"):
        output_schema(Inputs((), ("score",)), {"score": pa.float64()})


def test_service_lacking_model_columns_is_named() -> None:
    inputs = Inputs(("company",), ("fare", "company_stats__trips_1d", "company_stats__fare_mean_7d"))
    check_service_columns(MODEL, inputs, ["company_stats__trips_1d", "company_stats__fare_mean_7d"])
    with pytest.raises(FeatureServiceMismatch) as info:
        check_service_columns(MODEL, inputs, ["company_stats__trips_1d", "pickup_area_stats__trips_1d"])
    message = str(info.value)
    assert "'taxi_tips_v1'" in message and "['company_stats__fare_mean_7d']" in message
    assert "models:/taxi_tips/3" in message
