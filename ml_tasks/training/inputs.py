"""What the training steps read and where they write: training-set snapshots, candidate bundles, run tags."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ml_tasks.contract import (
    MANIFEST,
    PART_FILE,
    TAG_DATA_INTERVAL_END,
    TAG_DATA_INTERVAL_START,
    TAG_FEATURE_SERVICE,
    TAG_TRAINING_SET_SHA256,
    TAG_TRAINING_SET_URI,
    training_set_digest,
)
from ml_tasks.errors import FlywheelError
from ml_tasks.models.tracking import RunKey
from ml_tasks.settings import Settings
from ml_tasks.storage import Manifest, file_sha256

if TYPE_CHECKING:
    from ml_tasks.models.network import Bundle


class TrainingStepError(FlywheelError, ValueError):
    """An expected failure of a training step (bad input, missing upstream output): one clear line."""


def local_path(uri: str) -> Path:
    if "://" in uri and not uri.startswith("file://"):
        raise TrainingStepError(
            f"{uri}: the training steps read and write local paths (a mounted volume in Kubernetes);"
            " object-store data roots are not supported by them yet"
        )
    return Path(uri.removeprefix("file://"))


def read_training_set(uri: str) -> tuple[pa.Table, Manifest, str]:
    """The training set at ``uri`` (a training-set partition), its manifest and its content hash.

    The hash is the one ``training-set`` reported (sha256 over the output files' sha256s), recomputed from
    the manifest, and each file's bytes are checked against the manifest: a snapshot that changed after
    it was written is refused.
    """
    folder = local_path(uri)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise TrainingStepError(f"training set {uri}: no {MANIFEST} (missing or incomplete snapshot)")
    manifest = Manifest.from_json(manifest_path.read_bytes(), f"training set {uri}: {MANIFEST}")
    for output in manifest.outputs:
        path = folder / Path(str(output["uri"])).name
        digest = file_sha256(path) if path.is_file() else None
        if digest != output.get("sha256"):
            raise TrainingStepError(
                f"training set {uri}: {path.name} does not match its manifest (sha256 {digest} vs"
                f" {output.get('sha256')}): rebuild it with `ml-tasks training-set`"
            )
    table = pq.read_table(folder / PART_FILE)
    digest = training_set_digest(manifest.outputs)
    return table, manifest, digest


def safe_component(part: str) -> str:
    """A path component from a run id (``manual__2024-01-01T00:00:00+00:00`` -> filesystem-safe)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "_"


def candidate_dir(settings: Settings, key: RunKey) -> Path:
    """Where the DAG run's candidate bundle lives (one per DAG run; retries rewrite it)."""
    root = local_path(settings.resolved_data_root())
    safe = safe_component
    return root / "models" / settings.model_name / "candidates" / safe(key.dag_id) / safe(key.dag_run_id)


def load_candidate(bundle: str) -> Bundle:
    from ml_tasks.models.network import BundleError, load_bundle

    try:
        return load_bundle(local_path(bundle))
    except BundleError as exc:
        raise TrainingStepError(str(exc)) from exc


def training_tags(uri: str, manifest: Manifest, digest: str) -> dict[str, str]:

    interval = manifest.params.get("interval") or {}
    return {
        TAG_TRAINING_SET_URI: uri,
        TAG_TRAINING_SET_SHA256: digest,
        TAG_FEATURE_SERVICE: str(manifest.params.get("feature_service")),
        TAG_DATA_INTERVAL_START: str(interval.get("start")),
        TAG_DATA_INTERVAL_END: str(interval.get("end")),
    }


def flat_metrics(prefix: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v  # drop NaN
    }


def eval_rows(eval_set: str, max_rows: int = 20_000) -> pa.Table:
    """Real rows for parity and latency: up to ``max_rows`` evenly spaced rows of the eval window."""
    table, _, _ = read_training_set(eval_set)
    if table.num_rows == 0:
        raise TrainingStepError(f"eval set {eval_set} has no rows to check the ONNX model on")
    if table.num_rows <= max_rows:
        return table
    step = table.num_rows / max_rows
    return table.take(pa.array([int(i * step) for i in range(max_rows)]))
