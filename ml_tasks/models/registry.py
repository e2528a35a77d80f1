"""The MLflow model registry: the ONNX model of a bundle as a version of ``taxi_tips``, and its aliases.

* :func:`register_onnx` logs ``model.onnx`` with ``mlflow.onnx.log_model`` into the model's run (the train
  run) with EXPLICIT pip requirements (pins of the installed onnx / onnxruntime / numpy: MLflow's automatic
  inference costs ~10 s) and the bundle's JSON / card files as extra files, and registers it (MLflow 3: a
  LoggedModel plus a model version). Version tags carry the lineage: run ids, ONNX and preprocessing
  sha256, feature service, training set URI and sha256, key metrics. Registering the same run and the same
  ONNX file again returns the existing version (an Airflow retry does not add versions).
* Aliases: ``champion`` is what batch prediction serves, ``challenger`` the latest candidate that was not
  promoted. :func:`promote` and :func:`mark_challenger` record the gate's decision, reasons and whether it
  was forced in version tags (``flywheel.promotion.*``).
* :func:`load_champion_scorer` downloads a version's ONNX file to a local cache (verified against the
  sha256 tag) and returns an :class:`~ml_tasks.training.onnx_export.OnnxScorer`.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ml_tasks.contract import (
    CHALLENGER,
    CHAMPION,
    REGISTERED_MODEL,
    TAG_DECIDED_AT,
    TAG_DECISION,
    TAG_DETAILS,
    TAG_FEATURE_SERVICE,
    TAG_FORCE_REASON,
    TAG_FORCED,
    TAG_METRIC,
    TAG_ONNX_SHA256,
    TAG_PREPROCESSING_SHA256,
    TAG_PREVIOUS_CHAMPION,
    TAG_REASONS,
    TAG_RUN_ID,
    TAG_TRAINING_SET_SHA256,
    TAG_TRAINING_SET_URI,
)
from ml_tasks.errors import FlywheelError
from ml_tasks.models import tracking
from ml_tasks.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from ml_tasks.models.scorer import OnnxScorer

log = logging.getLogger(__name__)

ARTIFACT_NAME = "model"
# bundle files logged with the model (those that exist); model.onnx itself is the flavor's data
BUNDLE_FILES = (
    "model.json", "preprocessing.json", "model_card.md", "onnx_export.json", "onnx.json", "evaluation.json",
    "reliability.png", "reference_sample.parquet", "reference_stats.json",
)  # fmt: skip
REQUIREMENT_PACKAGES = ("onnx", "onnxruntime", "numpy")

_MAX_TAG = 5000  # MLflow's tag value limit in every store


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


def _client(target: Target) -> MlflowClient:
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


def pip_requirements() -> list[str]:
    """Exact pins of what scoring the ONNX model needs, from the installed versions (no inference)."""
    return [f"{name}=={md.version(name)}" for name in REQUIREMENT_PACKAGES]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def _tag_value(value: Any) -> str:
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
    return {k: _tag_value(v) for k, v in tags.items()}


def find_version(client: MlflowClient, name: str, run_id: str, onnx_sha256: str) -> ModelVersion | None:
    """The version of ``name`` registered from ``run_id`` with this ONNX sha256, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = {_quote(name)} and run_id = {_quote(run_id)}")
    except MlflowException:
        return None
    same = [v for v in versions if (v.tags or {}).get(TAG_ONNX_SHA256) == onnx_sha256]
    return min(same, key=lambda v: int(v.version)) if same else None


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
    client = _client(target)

    existing = find_version(client, name, run_id, sha)
    if existing is not None:
        for key, value in tags.items():
            if (existing.tags or {}).get(key) != value:
                client.set_model_version_tag(name, existing.version, key, value)
        mv = client.get_model_version(name, existing.version)
        info = _info(mv, reused=True, seconds=time.perf_counter() - started)
        log.info("run %s already registered %s version %s: reused", run_id, name, info.version)
        return info

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
    # Create the LoggedModel in the RUN's experiment ourselves: without an active run, MLflow 3.17 puts it
    # in the default experiment 0, whose artifact root is ./mlruns relative to the working directory.
    logged = client.create_logged_model(
        experiment_id=client.get_run(run_id).info.experiment_id,
        name=ARTIFACT_NAME,
        source_run_id=run_id,
        tags=tags,
        model_type="onnx",
    )
    model_info = mlflow.onnx.log_model(
        model,
        name=ARTIFACT_NAME,
        model_id=logged.model_id,
        run_id=run_id,
        registered_model_name=name,
        signature=signature,
        pip_requirements=pip_requirements(),
        onnx_execution_providers=["CPUExecutionProvider"],
        save_as_external_data=False,  # one self-contained file: the same bytes as the checked export
        extra_files=extra,
        tags=tags,
        await_registration_for=60,
    )
    version = str(model_info.registered_model_version)
    for key, value in tags.items():  # also on the version (log_model tags land on the LoggedModel)
        client.set_model_version_tag(name, version, key, value)
    mv = client.get_model_version(name, version)
    info = _info(mv, seconds=time.perf_counter() - started)
    log.info(
        "registered %s version %s from run %s (onnx %s) in %.2f s",
        name, version, run_id, sha[:12], info.seconds,
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
    mv = find_version(_client(target), model_name, run_id, file_sha256(bundle / ONNX_FILE))
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
    return _info(_client(target).get_model_version(name, str(version)))


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
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
    mv = _alias_version(_client(target), name, alias)
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


def _decision_fields(
    decision: Mapping[str, Any] | None, reasons: Sequence[str] | None, forced: bool | None
) -> tuple[list[str], bool, dict[str, Any] | None]:
    d = dict(decision or {})
    return (
        [str(r) for r in (reasons if reasons is not None else d.get("reasons", []))],
        bool(forced if forced is not None else d.get("forced", False)),
        d.get("details"),
    )


def _record_decision(
    client: MlflowClient,
    name: str,
    version: str,
    decision: str,
    reasons: Sequence[str],
    forced: bool,
    details: Mapping[str, Any] | None,
    force_reason: str | None,
) -> None:
    import datetime as dt

    tags = {
        TAG_DECISION: decision,
        TAG_REASONS: _tag_value(list(reasons)),
        TAG_FORCED: "true" if forced else "false",
        TAG_DECIDED_AT: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if details is not None:
        tags[TAG_DETAILS] = _tag_value(details)
    if force_reason:
        tags[TAG_FORCE_REASON] = _tag_value(force_reason)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def promote(
    target: Target,
    name: str,
    version: str,
    *,
    decision: Mapping[str, Any] | None = None,
    reasons: Sequence[str] | None = None,
    forced: bool | None = None,
    reason: str | None = None,
) -> VersionInfo:
    """Move the ``champion`` alias to ``version`` and record the decision in its tags.

    Args:
        target: Settings or a client.
        name: Registered model name.
        version: The version to promote.
        decision: ``Decision.to_dict()`` of the gate (reasons, forced, details are recorded).
        reasons: Reasons (override the decision's).
        forced: Forced flag (overrides the decision's).
        reason: The operator's reason for a forced promotion (``flywheel.promotion.force_reason``).

    The previous champion's version is kept in ``flywheel.promotion.previous_champion`` (rollback = promote
    it again). If ``version`` held the ``challenger`` alias, that alias is removed. Promoting the current
    champion again only refreshes the tags.
    """
    client = _client(target)
    version = str(version)
    client.get_model_version(name, version)  # a clear MLflow error for a version that does not exist
    why, is_forced, details = _decision_fields(decision, reasons, forced)
    previous = _alias_version(client, name, CHAMPION)
    if previous is not None and str(previous.version) != version:
        client.set_model_version_tag(name, version, TAG_PREVIOUS_CHAMPION, str(previous.version))
    _record_decision(client, name, version, CHAMPION, why, is_forced, details, reason if is_forced else None)
    client.set_registered_model_alias(name, CHAMPION, version)
    current_challenger = _alias_version(client, name, CHALLENGER)
    if current_challenger is not None and str(current_challenger.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    log.info(
        "%s version %s is champion%s (previous: %s)",
        name, version, " (FORCED)" if is_forced else "", previous.version if previous else None,
    )  # fmt: skip
    return get_version(client, name, version)


def mark_challenger(
    target: Target,
    name: str,
    version: str,
    *,
    decision: Mapping[str, Any] | None = None,
    reasons: Sequence[str] | None = None,
    forced: bool | None = None,
) -> VersionInfo:
    """Point the ``challenger`` alias at ``version`` (not promoted) and record why in its tags.

    The champion alias is untouched.

    Raises:
        RegistryError: ``version`` is the current champion (a model cannot be both).
    """
    client = _client(target)
    version = str(version)
    client.get_model_version(name, version)
    current = _alias_version(client, name, CHAMPION)
    if current is not None and str(current.version) == version:
        raise RegistryError(f"{name} version {version} is the champion: it cannot also be the challenger")
    why, is_forced, details = _decision_fields(decision, reasons, forced)
    _record_decision(client, name, version, CHALLENGER, why, is_forced, details, None)
    client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("%s version %s is challenger: %s", name, version, "; ".join(why))
    return get_version(client, name, version)


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

    from ml_tasks.contract import ONNX_FILE
    from ml_tasks.storage import file_sha256

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


def load_champion_scorer(
    settings: Settings | None = None,
    name: str = REGISTERED_MODEL,
    alias: str = CHAMPION,
    *,
    cache_dir: Path | None = None,
) -> tuple[OnnxScorer | None, dict[str, Any] | None]:
    """An :class:`OnnxScorer` for ``models:/<name>@<alias>`` and the version it resolved to.

    Returns:
        ``(scorer, VersionInfo.to_dict())``, or ``(None, None)`` when the alias does not exist (the first
        model has no champion to compare with).

    Raises:
        RegistryError: the artifact does not verify against the version's sha256 tag.
    """
    from ml_tasks.models.scorer import OnnxScorer

    settings = settings or get_settings()
    client = tracking.client(settings)
    info = alias_version(client, name, alias)
    if info is None:
        return None, None
    path = download_onnx(client, info, cache_dir=cache_dir or model_cache_dir(settings))
    scorer = OnnxScorer(path)
    log.info("loaded %s@%s = version %s from %s", name, alias, info.version, path)
    return scorer, {**info.to_dict(), "alias": alias, "path": str(path)}
