"""A resolved model the prediction unit tests share."""

from __future__ import annotations

from ml_tasks.prediction.resolve import ResolvedModel

MODEL = ResolvedModel(
    name="taxi_tips",
    version="3",
    run_id="abc",
    uri="models:/taxi_tips/3",
    onnx_sha256="f" * 64,
    feature_service="taxi_tips_v1",
    threshold=0.4123456789,
)
