"""Model specs, the resolved model's JSON round trip, and the error families of model resolution."""

from __future__ import annotations

import pytest

from ml_tasks.models.loading import ModelLoadError
from ml_tasks.models.registry import RegistryError
from ml_tasks.prediction import resolve as r
from ml_tasks.prediction.schema import FeatureServiceMismatch, PredictionError
from tests.unit.prediction._model import MODEL


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("taxi_tips@champion", ("taxi_tips", "champion", None)),
        ("taxi_tips/12", ("taxi_tips", None, "12")),
        ("models:/taxi_tips@challenger", ("taxi_tips", "challenger", None)),
        ("models:/taxi_tips/3", ("taxi_tips", None, "3")),
        (" taxi-tips.v2@champion ", ("taxi-tips.v2", "champion", None)),
    ],
)
def test_model_specs_parse(spec: str, expected: tuple[str, str | None, str | None]) -> None:
    assert r.parse_model_spec(spec) == expected


@pytest.mark.parametrize(
    "spec", ["taxi_tips", "taxi_tips@", "taxi_tips/v3", "models:/taxi_tips/3/4", "", "@champion", "a b@c"]
)
def test_bad_model_specs_are_refused_with_the_forms(spec: str) -> None:
    with pytest.raises(ValueError, match=r"is not NAME@ALIAS, NAME/VERSION"):
        r.parse_model_spec(spec)


def test_error_types_map_to_the_cli_families() -> None:
    from ml_tasks.features.store import FeatureStoreError

    assert issubclass(r.NoModelError, RegistryError) and issubclass(ModelLoadError, RegistryError)
    assert issubclass(FeatureServiceMismatch, FeatureStoreError)
    assert issubclass(FeatureServiceMismatch, PredictionError)


def test_resolved_model_round_trips_as_json() -> None:
    import json

    data = json.loads(json.dumps(MODEL.to_dict()))
    assert r.ResolvedModel.from_dict(data) == MODEL
    assert MODEL.record() == {
        "model": {
            "name": "taxi_tips",
            "version": "3",
            "run_id": "abc",
            "uri": "models:/taxi_tips/3",
            "onnx_sha256": "f" * 64,
            "feature_service": "taxi_tips_v1",
        }
    }
    with pytest.raises(ValueError, match="not a resolved model description"):
        r.ResolvedModel.from_dict({"name": "taxi_tips"})
