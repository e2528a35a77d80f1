"""A registered version's ONNX file: downloaded once into a local cache, verified, loaded as a scorer.

The one way steps load a model (prediction, the training gate's champion): concurrent shards share one
verified copy per version. Design notes: ``docs/prediction.md``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.contract import CHAMPION, ONNX_FILE, REGISTERED_MODEL
from ml_tasks.models import tracking
from ml_tasks.models.registry import RegistryError, VersionInfo, alias_version
from ml_tasks.settings import Settings, get_settings
from ml_tasks.storage import file_sha256

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ml_tasks.models.scorer import OnnxScorer

log = logging.getLogger(__name__)


class ModelLoadError(RegistryError):
    """The version's ONNX file cannot be verified or loaded: nothing is scored or written."""


def model_cache_dir(settings: Settings) -> Path:
    """Where downloaded model files are cached: ``<data root>/mlflow/model-cache`` for a local data root, a
    temporary folder for a remote one."""
    root = settings.resolved_data_root()
    if "://" in root:
        return Path(tempfile.gettempdir()) / "flywheel-model-cache"
    return Path(root) / "mlflow" / "model-cache"


def download_onnx(client: MlflowClient, info: VersionInfo, *, cache_dir: Path) -> Path:
    """The version's ``model.onnx`` in ``cache_dir/<name>/<version>/`` (downloaded once, sha-verified).

    Raises:
        RegistryError: the artifact has no model.onnx, or its sha256 is not the version's tag.
    """
    import mlflow.artifacts

    expected = info.onnx_sha256
    target = cache_dir / info.name / info.version
    cached = target / ONNX_FILE

    def valid() -> bool:
        return cached.is_file() and (expected is None or file_sha256(cached) == expected)

    if valid():
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".download-"))
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=info.uri, dst_path=str(staging / "dl"), tracking_uri=client.tracking_uri
            )
        )
        found = local / ONNX_FILE if (local / ONNX_FILE).is_file() else next(local.rglob(ONNX_FILE), None)
        if found is None:
            raise RegistryError(f"{info.uri} has no {ONNX_FILE} artifact")
        actual = file_sha256(found)
        if expected is not None and actual != expected:
            raise RegistryError(
                f"{info.uri}: downloaded {ONNX_FILE} has sha256 {actual[:16]}..., the version tag says "
                f"{expected[:16]}...: the registered artifact is not the file that was checked"
            )
        # the version folder is swapped in whole: a concurrent reader never sees half a file
        ready = staging / "ready"
        ready.mkdir()
        found.replace(ready / ONNX_FILE)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not valid():
            shutil.rmtree(target, ignore_errors=True)  # a stale or corrupt copy
        try:
            ready.replace(target)
        except OSError:
            # another process (a concurrent shard) swapped in its verified copy first: use it
            if not valid():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def _open(info: VersionInfo, path: Path, batch_size: int, threads: int | None) -> OnnxScorer:
    from ml_tasks.models.scorer import OnnxScorer

    try:
        return OnnxScorer(path, batch_size=batch_size, threads=threads)
    except FileNotFoundError:
        raise
    except Exception as exc:  # onnxruntime raises its own types for a file it cannot parse
        raise ModelLoadError(f"{info.uri}: the ONNX file {path} cannot be loaded: {exc}") from exc


def load_scorer(
    client: MlflowClient,
    info: VersionInfo,
    *,
    cache_dir: Path,
    batch_size: int = 65_536,
    threads: int | None = None,
) -> OnnxScorer:
    """The :class:`OnnxScorer` of ``info``'s ONNX file, from the local cache (downloaded and verified
    against the version's sha256 tag when needed).

    Raises:
        RegistryError: the artifact has no model.onnx, or it does not match the version's sha256 tag.
        ModelLoadError: the verified file cannot be loaded (onnxruntime refuses it).
    """
    path = download_onnx(client, info, cache_dir=cache_dir)
    try:
        return _open(info, path, batch_size, threads)
    except FileNotFoundError:
        # another process (a parallel shard) swapped the cached version folder in between: fetch again
        path = download_onnx(client, info, cache_dir=cache_dir)
    try:
        return _open(info, path, batch_size, threads)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{info.uri}: the ONNX file {path} vanished twice while loading") from exc


def load_champion_scorer(
    settings: Settings | None = None,
    name: str = REGISTERED_MODEL,
    alias: str = CHAMPION,
    *,
    cache_dir: Path | None = None,
    threads: int | None = None,
) -> tuple[OnnxScorer | None, dict[str, Any] | None]:
    """An :class:`OnnxScorer` for ``models:/<name>@<alias>`` and the version it resolved to.

    ``threads``: onnxruntime intra-op threads (None: its default). Scores equal the prediction step's to
    the bit only with the same count (one, there): a Gemm split over threads may differ by one ulp.

    Returns:
        ``(scorer, VersionInfo.to_dict() + alias + path)``, or ``(None, None)`` when the alias does not
        exist (the first model has no champion to compare with).

    Raises:
        RegistryError: the artifact does not verify against the version's sha256 tag.
        ModelLoadError: the verified file cannot be loaded.
    """
    settings = settings or get_settings()
    client = tracking.client(settings)
    info = alias_version(client, name, alias)
    if info is None:
        return None, None
    scorer = load_scorer(client, info, cache_dir=cache_dir or model_cache_dir(settings), threads=threads)
    log.info("loaded %s@%s = version %s from %s", name, alias, info.version, scorer.path)
    return scorer, {**info.to_dict(), "alias": alias, "path": str(scorer.path)}
