"""The MLflow model registry: ONNX bundles as versions of ``taxi_tips``, their lineage tags and aliases.

Promotion (the ``champion`` / ``challenger`` aliases) is :mod:`ml_tasks.models.promotion`; downloading and
loading a version's ONNX file is :mod:`ml_tasks.models.loading`. Design notes: ``docs/prediction.md``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ml_tasks.contract import (
    CHALLENGER,
    CHAMPION,
    REGISTERED_MODEL,
    TAG_ONNX_SHA256,
)
from ml_tasks.errors import FlywheelError
from ml_tasks.models import tracking
from ml_tasks.models.tracking import filter_quote as quote
from ml_tasks.models.version_tags import pip_requirements, version_tags
from ml_tasks.settings import Settings
from ml_tasks.writers import pause_point

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model"
# bundle files logged with the model (those that exist); model.onnx itself is the flavor's data
BUNDLE_FILES = (
    "model.json", "preprocessing.json", "model_card.md", "onnx_export.json", "onnx.json", "evaluation.json",
    "reliability.png", "reference_sample.parquet", "reference_stats.json",
)  # fmt: skip


class RegistryError(FlywheelError, RuntimeError):
    """A registry state that makes a request impossible (e.g. an artifact that does not verify)."""


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version, as the steps and the gate need it."""

    name: str
    version: str
    run_id: str | None
    model_id: str | None
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    reused: bool = False
    seconds: float = 0.0

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"

    @property
    def onnx_sha256(self) -> str | None:
        return self.tags.get(TAG_ONNX_SHA256)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (for XCom / the CLI's summary line)."""
        return {
            "name": self.name,
            "version": self.version,
            "uri": self.uri,
            "run_id": self.run_id,
            "model_id": self.model_id,
            "aliases": list(self.aliases),
            "onnx_sha256": self.onnx_sha256,
            "reused": self.reused,
            "seconds": round(self.seconds, 3),
        }


Target: TypeAlias = "Settings | MlflowClient | None"
"""What registry functions talk to: Flywheel settings (-> :func:`tracking.client`), a client, or None."""


def client_for(target: Target) -> MlflowClient:
    """The MLflow client of ``target`` (a client is returned as is)."""
    from mlflow import MlflowClient

    if isinstance(target, MlflowClient):
        return target
    return tracking.client(target)


def _info(mv: ModelVersion, *, reused: bool = False, seconds: float = 0.0) -> VersionInfo:
    return VersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id or None,
        # MLflow 3 versions point at a LoggedModel: models:/m-<id>
        model_id=mv.model_id
        or (str(mv.source).removeprefix("models:/") if str(mv.source).startswith("models:/m-") else None),
        source=str(mv.source),
        tags=dict(mv.tags or {}),
        aliases=tuple(mv.aliases or ()),
        reused=reused,
        seconds=seconds,
    )


def find_version(client: MlflowClient, name: str, run_id: str, onnx_sha256: str) -> ModelVersion | None:
    """The version of ``name`` registered from ``run_id`` with this ONNX sha256, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = {quote(name)} and run_id = {quote(run_id)}")
    except MlflowException:
        return None
    same = [v for v in versions if (v.tags or {}).get(TAG_ONNX_SHA256) == onnx_sha256]
    return min(same, key=lambda v: int(v.version)) if same else None


def unregistered_model(client: MlflowClient, experiment_id: str, run_id: str, onnx_sha256: str) -> str | None:
    """The model an interrupted try logged from ``run_id`` with this ONNX file but did not register (the
    server went away in between): a READY one is returned to be registered; unfinished ones (and any
    second READY one) are deleted, so a retry leaves one logged model per registered version."""
    from mlflow.entities import LoggedModelStatus

    models = client.search_logged_models(
        [experiment_id],
        filter_string=f"source_run_id = {quote(run_id)} AND name = {quote(ARTIFACT_NAME)}",
    )
    ours = sorted(
        (m for m in models if (m.tags or {}).get(TAG_ONNX_SHA256) == onnx_sha256),
        key=lambda m: m.creation_timestamp,
    )
    ready = [m for m in ours if m.status == LoggedModelStatus.READY]
    keep = ready[0] if ready else None
    for m in ours:
        if m is not keep:
            log.info("deleting logged model %s (%s) of run %s", m.model_id, m.status, run_id)
            client.delete_logged_model(m.model_id)
    if keep is not None:
        log.info("run %s logged model %s without registering it: registering it now", run_id, keep.model_id)
    return keep.model_id if keep is not None else None


def _create_version(
    client: MlflowClient, name: str, model_id: str, run_id: str, tags: Mapping[str, str]
) -> ModelVersion:
    """A version of ``name`` from the logged model, created with its tags in one call: never untagged."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    return client.create_model_version(
        name,
        source=f"models:/{model_id}",
        run_id=run_id,
        tags=dict(tags),
        model_id=model_id,
        await_creation_for=60,
    )


def register_onnx(
    bundle_dir: str | Path,
    *,
    run_id: str,
    name: str = REGISTERED_MODEL,
    run_ids: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    target: Target = None,
) -> VersionInfo:
    """Log ``<bundle_dir>/model.onnx`` into run ``run_id`` and register it as a version of ``name``.

    Args:
        bundle_dir: A bundle with ``model.onnx`` (from ``export_onnx``) and ``model.json``.
        run_id: The model's run (the train run); the version's ``run_id``.
        name: Registered model name.
        run_ids: Other runs to record, task -> run id (e.g. ``{"evaluate": ..., "register": ...}``).
        metrics: Key metrics for version tags (default: the bundle's in-training test metrics).
        target: Settings or a client (None: the environment's settings).

    Returns:
        The version; ``reused=True`` when this run had already registered this exact ONNX file.

    Raises:
        FileNotFoundError: the bundle has no model.onnx / model.json.
    """
    import mlflow.onnx
    import numpy as np
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from ml_tasks.contract import ONNX_FILE
    from ml_tasks.models.scorer import INPUT_CATEGORICAL, INPUT_NUMERIC, OUTPUT
    from ml_tasks.storage import file_sha256

    started = time.perf_counter()
    bundle = Path(bundle_dir)
    onnx_path = bundle / ONNX_FILE
    for needed in (onnx_path, bundle / "model.json"):
        if not needed.is_file():
            raise FileNotFoundError(f"bundle {bundle} has no {needed.name}: export the model first")
    sha = file_sha256(onnx_path)
    tags = version_tags(
        bundle, onnx_sha256=sha, run_ids={"train": run_id, **(run_ids or {})}, metrics=metrics
    )
    client = client_for(target)

    existing = find_version(client, name, run_id, sha)
    if existing is not None:
        for key, value in tags.items():
            if (existing.tags or {}).get(key) != value:
                client.set_model_version_tag(name, existing.version, key, value)
        mv = client.get_model_version(name, existing.version)
        info = _info(mv, reused=True, seconds=time.perf_counter() - started)
        log.info("run %s already registered %s version %s: reused", run_id, name, info.version)
        return info

    experiment_id = client.get_run(run_id).info.experiment_id
    model_id = unregistered_model(client, experiment_id, run_id, sha)
    if model_id is not None:  # its lineage tags name the interrupted try's runs: this try's from now on
        client.set_logged_model_tags(model_id, tags)
    else:
        model = onnx.load(str(onnx_path))
        numeric = next(i for i in model.graph.input if i.name == INPUT_NUMERIC)
        categorical = next(i for i in model.graph.input if i.name == INPUT_CATEGORICAL)
        n_num = numeric.type.tensor_type.shape.dim[1].dim_value
        n_cat = categorical.type.tensor_type.shape.dim[1].dim_value
        signature = ModelSignature(
            inputs=Schema(
                [
                    TensorSpec(np.dtype(np.float32), (-1, n_num), INPUT_NUMERIC),
                    TensorSpec(np.dtype(np.int64), (-1, n_cat), INPUT_CATEGORICAL),
                ]
            ),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), OUTPUT)]),
        )
        extra = [str(bundle / f) for f in BUNDLE_FILES if (bundle / f).is_file()]
        # Create the LoggedModel in the RUN's experiment ourselves: without an active run, MLflow 3.17 puts
        # it in the default experiment 0, whose artifact root is ./mlruns relative to the working directory.
        logged = client.create_logged_model(
            experiment_id=experiment_id,
            name=ARTIFACT_NAME,
            source_run_id=run_id,
            tags=tags,
            model_type="onnx",
        )
        mlflow.onnx.log_model(
            model,
            name=ARTIFACT_NAME,
            model_id=logged.model_id,
            run_id=run_id,
            signature=signature,
            pip_requirements=pip_requirements(),
            onnx_execution_providers=["CPUExecutionProvider"],
            save_as_external_data=False,  # one self-contained file: the same bytes as the checked export
            extra_files=extra,
            tags=tags,
        )
        model_id = logged.model_id
    pause_point("model-logged")
    mv = _create_version(client, name, model_id, run_id, tags)
    info = _info(mv, seconds=time.perf_counter() - started)
    log.info(
        "registered %s version %s from run %s (onnx %s) in %.2f s",
        name, info.version, run_id, sha[:12], info.seconds,
    )  # fmt: skip
    return info


def registered_version(
    target: Target, bundle_dir: str | Path, *, model_name: str = REGISTERED_MODEL
) -> str | None:
    """The version registered from this bundle (its run id and its current model.onnx), or None."""
    from ml_tasks.contract import ONNX_FILE
    from ml_tasks.storage import file_sha256

    bundle = Path(bundle_dir)
    run_id = _bundle_run_id(bundle)
    if not (bundle / ONNX_FILE).is_file():
        return None
    mv = find_version(client_for(target), model_name, run_id, file_sha256(bundle / ONNX_FILE))
    return str(mv.version) if mv is not None else None


def _bundle_run_id(bundle: Path) -> str:
    meta = json.loads((bundle / "model.json").read_text())
    run_id = meta.get("mlflow_run_id")
    if not run_id:
        raise ValueError(
            f"bundle {bundle}: model.json has no mlflow_run_id (train it through the train step)"
        )
    return str(run_id)


def _evaluation_metrics(bundle: Path) -> dict[str, float] | None:
    """The candidate's metrics on the evaluation window (evaluation.json), if the bundle was evaluated."""
    path = bundle / "evaluation.json"
    if not path.is_file():
        return None
    candidate = (json.loads(path.read_text()).get("gate_inputs") or {}).get("candidate") or {}
    keep = ("roc_auc", "pr_auc", "log_loss", "accuracy", "ece", "brier")
    return {
        f"eval_{k}": float(v)
        for k, v in candidate.items()
        if k in keep and isinstance(v, int | float) and not isinstance(v, bool)
    }


def register_candidate(
    target: Target, bundle_dir: str | Path, *, model_name: str = REGISTERED_MODEL
) -> dict[str, Any]:
    """Register a trained, exported bundle: the pipeline's ``register`` step.

    The model's run is ``model.json``'s ``mlflow_run_id`` (the train run); the active MLflow run, if any,
    is recorded as the ``register`` run; key metrics come from evaluation.json when present.

    Returns:
        :meth:`VersionInfo.to_dict` of the (new or reused) version.
    """
    import mlflow

    bundle = Path(bundle_dir)
    run_id = _bundle_run_id(bundle)
    active = mlflow.active_run()
    run_ids = {"register": active.info.run_id} if active is not None and active.info.run_id != run_id else {}
    info = register_onnx(
        bundle,
        run_id=run_id,
        name=model_name,
        run_ids=run_ids,
        metrics=_evaluation_metrics(bundle),
        target=target,
    )
    return info.to_dict()


def get_version(target: Target, name: str, version: str) -> VersionInfo:
    """One version's info."""
    return _info(client_for(target).get_model_version(name, str(version)))


def alias_model_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """MLflow's version holding ``alias`` on ``name``, or None (no model, or no such alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        # no such registered model, or no such alias on it
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def alias_version(target: Target, name: str, alias: str) -> VersionInfo | None:
    """The version holding ``alias`` on ``name``, or None (no model, or no such alias)."""
    mv = alias_model_version(client_for(target), name, alias)
    return _info(mv) if mv is not None else None


def current_alias_version(target: Target, name: str, alias: str) -> str | None:
    """Just the version number holding ``alias`` (None when unset)."""
    info = alias_version(target, name, alias)
    return info.version if info is not None else None


def champion(target: Target, name: str = REGISTERED_MODEL) -> VersionInfo | None:
    """The version holding the ``champion`` alias, or None (no model yet, or never promoted)."""
    return alias_version(target, name, CHAMPION)


def challenger(target: Target, name: str = REGISTERED_MODEL) -> VersionInfo | None:
    """The version holding the ``challenger`` alias, or None."""
    return alias_version(target, name, CHALLENGER)
