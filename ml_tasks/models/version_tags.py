"""The tags of a registered model version: lineage (run ids, hashes, training set), metrics, threshold; and
the exact pins scoring a version needs. Kept apart from :mod:`ml_tasks.models.registry` so readers of tags
(the promotion, the UI plugin) need no registry code."""

from __future__ import annotations

import importlib.metadata as md
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ml_tasks.contract import (
    TAG_FEATURE_SERVICE,
    TAG_METRIC,
    TAG_ONNX_SHA256,
    TAG_PREPROCESSING_SHA256,
    TAG_RUN_ID,
    TAG_TRAINING_SET_SHA256,
    TAG_TRAINING_SET_URI,
)

REQUIREMENT_PACKAGES = ("onnx", "onnxruntime", "numpy")

_MAX_TAG = 5000  # MLflow's tag value limit in every store


def pip_requirements() -> list[str]:
    """Exact pins of what scoring the ONNX model needs, from the installed versions (no inference)."""
    return [f"{name}=={md.version(name)}" for name in REQUIREMENT_PACKAGES]


def tag_value(value: Any) -> str:
    """A tag value: text as is, anything else as JSON; cut to MLflow's limit."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _MAX_TAG else text[: _MAX_TAG - 3] + "..."


def version_tags(
    bundle_dir: Path,
    *,
    onnx_sha256: str,
    run_ids: Mapping[str, str],
    metrics: Mapping[str, float] | None,
) -> dict[str, str]:
    """The lineage tags of a version, from the bundle's model.json plus the caller's run ids and metrics."""
    meta: dict[str, Any] = json.loads((bundle_dir / "model.json").read_text())
    tags: dict[str, str] = {TAG_ONNX_SHA256: onnx_sha256}
    for key, tag in (
        ("preprocessing_sha256", TAG_PREPROCESSING_SHA256),
        ("feature_service", TAG_FEATURE_SERVICE),
        ("training_set_uri", TAG_TRAINING_SET_URI),
        ("training_set_sha256", TAG_TRAINING_SET_SHA256),
    ):
        if meta.get(key) is not None:
            tags[tag] = str(meta[key])
    for task, run_id in run_ids.items():
        tags[f"{TAG_RUN_ID}.{task}"] = run_id
    if metrics is None:
        # default: the in-training test split's numbers (evaluation passes the real window's metrics)
        test = (meta.get("metrics") or {}).get("test") or {}
        metrics = {f"test_{k}": v for k, v in test.items() if k in ("roc_auc", "pr_auc", "log_loss")}
    for name, value in metrics.items():
        tags[f"{TAG_METRIC}.{name}"] = f"{float(value):.6g}"
    if "threshold" in meta:
        tags["flywheel.threshold"] = f"{float(meta['threshold']):.6g}"
    return {k: tag_value(v) for k, v in tags.items()}
