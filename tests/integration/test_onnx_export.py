"""ONNX export of a trained bundle on the real Chicago samples: parity, dynamic batch, integrity, latency."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

pytestmark = [pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def bundle_dir(tfdv_frames: tuple[pa.Table, pa.Table], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained for two epochs on tfdv_train.csv, saved as a bundle."""
    from ml_tasks.models.network import ModelConfig, save_bundle
    from ml_tasks.training.split import split_by_time
    from ml_tasks.training.train import train_model

    config = ModelConfig(hidden=(32, 16), max_epochs=2, patience=1, batch_size=256, seed=7)
    result = train_model(split_by_time(tfdv_frames[0], 0.1, 0.1), config, checkpoint_dir=None, device="cpu")
    out = tmp_path_factory.mktemp("bundle") / "candidate"
    save_bundle(
        out, result.model, result.preprocessor, config, result.bundle_metadata(feature_service="none")
    )
    return out


@pytest.fixture(scope="module")
def exported(bundle_dir: Path, tfdv_frames: tuple[pa.Table, pa.Table]) -> dict[str, Any]:
    from ml_tasks.training.onnx_export import export_onnx

    return export_onnx(bundle_dir, sample=tfdv_frames[1].slice(0, 200))


def _copy_bundle(bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_dir, tmp_path / "copy"))


def test_export_writes_a_self_describing_model(bundle_dir: Path, exported: dict[str, Any]) -> None:
    import onnx

    from ml_tasks.contract import EXPORT_JSON
    from ml_tasks.storage import file_sha256

    path = bundle_dir / "model.onnx"
    assert exported["opset"] == 18
    assert exported["onnx_sha256"] == file_sha256(path)
    assert exported["bytes"] == path.stat().st_size > 1000
    assert 0 < exported["export_seconds"] < 300
    assert json.loads((bundle_dir / EXPORT_JSON).read_text())["onnx_sha256"] == exported["onnx_sha256"]
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain == ""] == [18]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["flywheel.preprocessing"] == (bundle_dir / "preprocessing.json").read_text()
    assert json.loads(meta["flywheel.model"]) == json.loads((bundle_dir / "model.json").read_text())
    shapes = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in [*proto.graph.input, *proto.graph.output]
    }
    assert shapes == {"numeric": ["batch", 5], "categorical": ["batch", 7], "probability": ["batch"]}
    # no temp files left beside it (atomic write)
    assert not [p.name for p in bundle_dir.iterdir() if p.name.endswith(".tmp")]


def test_check_passes_with_parity_on_real_rows(
    bundle_dir: Path, exported: dict[str, Any], tfdv_frames: tuple[pa.Table, pa.Table]
) -> None:
    from ml_tasks.contract import CHECK_JSON
    from ml_tasks.training.onnx_export import check_onnx

    eval_rows = tfdv_frames[1]
    result = check_onnx(
        bundle_dir, eval_rows, expected_sha256=exported["onnx_sha256"], latency_calls=50, large_batch=10_000
    )
    assert result["reasons"] == []
    assert result["passed"] is True
    parity = result["parity"]
    assert parity["rows"] == eval_rows.num_rows > 4_900
    assert parity["max_abs_diff"] <= 1e-5
    assert parity["decisions_differ"] == 0
    latency = result["latency"]
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] < 1_000
    assert latency["large_batch"] == 10_000 and latency["large_batch_rows_per_second"] > 1_000
    assert result["latency_p50_ms"] == latency["p50_ms"]  # flat copies for metric logging
    assert result["graph"]["opset"] == 18
    written = json.loads((bundle_dir / CHECK_JSON).read_text())
    assert written["passed"] is True
    assert written["export"]["onnx_sha256"] == exported["onnx_sha256"]
    print(
        f"\nexport {exported['export_seconds']} s, {exported['bytes']} bytes; parity max abs diff "
        f"{parity['max_abs_diff']:.3g} on {parity['rows']} rows; batch-1 p50 {latency['p50_ms']} ms "
        f"p95 {latency['p95_ms']} ms; {latency['large_batch_rows_per_second']:.0f} rows/s at batch 10k"
    )


def test_scorer_dynamic_batch_1_and_10k(
    bundle_dir: Path, exported: dict[str, Any], tfdv_frames: tuple[pa.Table, pa.Table], tmp_path: Path
) -> None:
    from ml_tasks.models.network import load_bundle
    from ml_tasks.models.scorer import OnnxScorer

    # the ONNX file alone (no bundle beside it) carries its preprocessing and threshold
    alone = tmp_path / "alone.onnx"
    shutil.copy(bundle_dir / "model.onnx", alone)
    scorer = OnnxScorer(alone, batch_size=4_096)
    bundle = load_bundle(bundle_dir)
    assert scorer.threshold == bundle.threshold
    one = tfdv_frames[1].slice(0, 1)
    assert scorer.predict_proba(one).shape == (1,)
    np.testing.assert_allclose(scorer.predict_proba(one), bundle.predict_proba(one), atol=1e-5, rtol=0)
    big = pa.concat_tables([tfdv_frames[1], tfdv_frames[1], tfdv_frames[1]]).slice(0, 10_000)
    p = scorer.predict_proba(big)
    assert p.shape == (10_000,) and p.dtype == np.float64
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p, bundle.predict_proba(big), atol=1e-5, rtol=0)
    # rows are scored independently: the 10k batch repeats the first rows' scores exactly
    np.testing.assert_array_equal(
        p[: tfdv_frames[1].num_rows], p[tfdv_frames[1].num_rows : 2 * tfdv_frames[1].num_rows]
    )


def test_corrupted_file_fails_the_check_with_reasons(
    bundle_dir: Path, exported: dict[str, Any], tfdv_frames: tuple[pa.Table, pa.Table], tmp_path: Path
) -> None:
    from ml_tasks.contract import CHECK_JSON
    from ml_tasks.storage import file_sha256
    from ml_tasks.training.onnx_export import check_onnx, corrupt_onnx

    copy = _copy_bundle(bundle_dir, tmp_path)
    size = (copy / "model.onnx").stat().st_size
    info = corrupt_onnx(copy / "model.onnx")
    assert (copy / "model.onnx").stat().st_size == size
    assert info["sha256_before"] == exported["onnx_sha256"] != file_sha256(copy / "model.onnx")
    result = check_onnx(
        copy, tfdv_frames[1], expected_sha256=exported["onnx_sha256"], latency_calls=5, large_batch=100
    )
    assert result["passed"] is False
    assert "the file was modified or corrupted after export" in result["reasons"][0]
    assert exported["onnx_sha256"][:16] in result["reasons"][0]
    assert json.loads((copy / CHECK_JSON).read_text())["passed"] is False


def test_intact_file_with_the_wrong_recorded_hash_fails_only_on_integrity(
    bundle_dir: Path, exported: dict[str, Any], tfdv_frames: tuple[pa.Table, pa.Table], tmp_path: Path
) -> None:
    from ml_tasks.training.onnx_export import check_onnx

    copy = _copy_bundle(bundle_dir, tmp_path)
    rows = tfdv_frames[1].slice(0, 500)
    result = check_onnx(copy, rows, expected_sha256="0" * 64, latency_calls=5, large_batch=100)
    assert result["passed"] is False
    assert len(result["reasons"]) == 1 and result["reasons"][0].startswith("sha256 of model.onnx is ")
    assert result["parity"]["max_abs_diff"] <= 1e-5  # the other checks still ran


def test_unloadable_and_missing_files_fail_the_check(
    bundle_dir: Path, exported: dict[str, Any], tfdv_frames: tuple[pa.Table, pa.Table], tmp_path: Path
) -> None:
    from ml_tasks.storage import file_sha256
    from ml_tasks.training.onnx_export import check_onnx

    copy = _copy_bundle(bundle_dir, tmp_path)
    rows = tfdv_frames[1].slice(0, 100)
    (copy / "model.onnx").write_bytes(b"not a protobuf at all" * 10)
    result = check_onnx(copy, rows, expected_sha256=file_sha256(copy / "model.onnx"))
    assert result["passed"] is False
    assert result["reasons"][0].startswith("onnxruntime cannot load model.onnx")
    (copy / "model.onnx").unlink()
    result = check_onnx(copy, rows, expected_sha256=exported["onnx_sha256"])
    assert result == {**result, "passed": False, "reasons": [f"model.onnx does not exist in {copy}"]}


def test_unusable_arguments_raise(
    bundle_dir: Path, tfdv_frames: tuple[pa.Table, pa.Table], tmp_path: Path
) -> None:
    from ml_tasks.models.scorer import OnnxScorer
    from ml_tasks.training.onnx_export import OnnxExportError, check_onnx, export_onnx

    with pytest.raises(OnnxExportError, match="not a bundle"):
        export_onnx(tmp_path, sample=tfdv_frames[1])
    with pytest.raises(OnnxExportError, match="sample: at least one row"):
        export_onnx(bundle_dir, sample=tfdv_frames[1].slice(0, 0))
    with pytest.raises(OnnxExportError, match="rows: the parity check needs at least one real row"):
        check_onnx(bundle_dir, tfdv_frames[1].slice(0, 0), expected_sha256="x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxScorer(tmp_path / "missing.onnx")
