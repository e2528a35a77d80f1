"""The one model loader: a cache file swapped by another process is fetched again; load failures are named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ml_tasks.models import loading, scorer
from ml_tasks.models.registry import RegistryError, VersionInfo

INFO = VersionInfo(name="taxi_tips", version="3", run_id="r", model_id=None, source="models:/m-1")


class _FakeScorer:
    """Stands in for OnnxScorer: a missing file is FileNotFoundError, a file saying "garbage" is refused."""

    def __init__(self, path: str | Path, *, batch_size: int = 65_536, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} does not exist")
        if self.path.read_text() == "garbage":
            raise RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF")
        self.batch_size, self.threads = batch_size, threads


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The paths download_onnx hands out, one per call, in order (the test fills it)."""
    paths: list[Path] = []

    def download(client: Any, info: VersionInfo, *, cache_dir: Path) -> Path:
        assert info is INFO
        return paths.pop(0)

    monkeypatch.setattr(loading, "download_onnx", download)
    monkeypatch.setattr(scorer, "OnnxScorer", _FakeScorer)
    return paths


def test_a_swapped_cache_file_is_fetched_again(downloads: list[Path], tmp_path: Path) -> None:
    good = tmp_path / "b" / "model.onnx"
    good.parent.mkdir()
    good.write_text("onnx")
    downloads += [tmp_path / "a" / "model.onnx", good]  # the first copy vanished before it was opened
    got = loading.load_scorer(None, INFO, cache_dir=tmp_path, batch_size=7, threads=1)  # type: ignore[arg-type]
    assert got.path == good and got.batch_size == 7 and got.threads == 1
    assert downloads == []  # downloaded twice


def test_a_file_that_vanishes_twice_or_does_not_load_is_a_model_load_error(
    downloads: list[Path], tmp_path: Path
) -> None:
    downloads += [tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"]
    with pytest.raises(loading.ModelLoadError, match="vanished twice"):
        loading.load_scorer(None, INFO, cache_dir=tmp_path)  # type: ignore[arg-type]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("garbage")
    downloads.append(garbage)
    with pytest.raises(
        loading.ModelLoadError, match=r"models:/taxi_tips/3: the ONNX file .* cannot be loaded"
    ):
        loading.load_scorer(None, INFO, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert issubclass(loading.ModelLoadError, RegistryError)
