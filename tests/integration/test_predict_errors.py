"""Batch prediction's refusals: a missing curated day, a feature-service mismatch, no champion, a bad ONNX.

On the module's own copy of the shared ``pipeline_root`` (the ``predict_root`` fixture in conftest.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from tests.integration._pipeline import MODEL, PipelineRoot, day
from tests.integration._predict import (
    copy_root,
    own_tracking_uri,  # noqa: F401  (autouse: every test here)
    partition_dir,
    settings_of,
    snapshot,
)

pytestmark = [pytest.mark.timeout(1200)]


def test_missing_curated_day_is_refused(predict_root: PipelineRoot) -> None:
    from ml_tasks.prediction.commit import predict_interval
    from ml_tasks.storage import PartitionError

    with pytest.raises(PartitionError, match="no curated trips for 1 day"):
        predict_interval(settings_of(predict_root), Interval(day(8), day(9)), f"{MODEL}@champion")
    assert not partition_dir(predict_root, day(8)).exists()


def test_feature_service_mismatch_is_a_clear_error(predict_root: PipelineRoot) -> None:
    from ml_tasks.prediction.resolve import resolve_model
    from ml_tasks.prediction.schema import FeatureServiceMismatch
    from ml_tasks.prediction.score import predict_shard

    settings = settings_of(predict_root)
    model = dataclasses.replace(resolve_model(settings, f"{MODEL}@champion"), feature_service="taxi_tips_v9")
    with pytest.raises(
        FeatureServiceMismatch, match=r"'taxi_tips_v9'.*not in the Feast registry.*taxi_tips_v1"
    ):
        predict_shard(settings, Interval(day(6), day(7)), model, 0, 1, "mismatch")
    assert not (predict_root.data_root / "predictions" / MODEL / "_shards" / "mismatch").exists()


def test_no_champion_and_unknown_version(
    tmp_path: Path, predict_root: PipelineRoot, predict_env: None
) -> None:
    from ml_tasks.models.registry import RegistryError
    from ml_tasks.prediction.resolve import NoModelError, resolve_model

    empty = Settings(data_root=str(tmp_path / "data"))
    with pytest.raises(NoModelError, match="no champion yet: run taxi_training first") as info:
        resolve_model(empty, f"{MODEL}@champion")
    assert isinstance(info.value, RegistryError)
    with pytest.raises(NoModelError, match="taxi_tips/99 does not exist"):
        resolve_model(settings_of(predict_root), f"{MODEL}/99")
    with pytest.raises(NoModelError, match="no alias 'staging'"):
        resolve_model(settings_of(predict_root), f"{MODEL}@staging")


@pytest.fixture
def broken(pipeline_root: PipelineRoot, tmp_path: Path, predict_env: None) -> PipelineRoot:
    return copy_root(pipeline_root, tmp_path / "data")


def test_corrupt_or_unloadable_onnx_fails_and_writes_nothing(broken: PipelineRoot) -> None:
    from mlflow import MlflowClient

    from ml_tasks.models.loading import ModelLoadError
    from ml_tasks.models.registry import RegistryError
    from ml_tasks.prediction.commit import predict_interval
    from ml_tasks.prediction.resolve import resolve_model
    from ml_tasks.prediction.score import predict_shard

    settings = settings_of(broken)
    interval = Interval(day(6), day(7))
    model = resolve_model(settings, f"{MODEL}@champion")  # downloads into the copy's model cache
    cached = broken.data_root / "mlflow" / "model-cache" / MODEL / broken.version / "model.onnx"
    good = cached.read_bytes()
    # a corrupt CACHED file is not trusted: it is downloaded again and verified
    cached.write_bytes(good[: len(good) // 2])
    assert predict_interval(settings, interval, f"{MODEL}@champion")["rows"] > 0
    assert cached.read_bytes() == good
    written = snapshot(broken, interval)

    client = MlflowClient(tracking_uri=f"sqlite:///{broken.data_root}/mlflow/mlflow.db")
    # the registry's file no longer matches the version's sha256 tag
    client.set_model_version_tag(MODEL, broken.version, "flywheel.onnx_sha256", "0" * 64)
    cached.unlink()
    with pytest.raises(RegistryError, match="sha256"):
        predict_interval(settings, Interval(day(5), day(6)), f"{MODEL}@champion")
    with pytest.raises(ModelLoadError, match="changed after resolution"):
        predict_shard(settings, interval, model, 0, 1, "after-resolution")
    # an unloadable file whose hash matches its tag: onnxruntime refuses it
    import hashlib

    garbage = b"not an onnx model" * 100
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(garbage)
    client.set_model_version_tag(
        MODEL, broken.version, "flywheel.onnx_sha256", hashlib.sha256(garbage).hexdigest()
    )
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        predict_interval(settings, Interval(day(5), day(6)), f"{MODEL}@champion")
    assert not partition_dir(broken, day(5)).exists()
    assert snapshot(broken, interval) == written
    assert not (broken.data_root / "predictions" / MODEL / "_shards").exists()
