"""Which model a prediction run scores with: a spec resolved ONCE to a fixed, verified registry version."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ml_tasks.contract import CHAMPION, TAG_FEATURE_SERVICE, TAG_ONNX_SHA256
from ml_tasks.models.loading import ModelLoadError
from ml_tasks.models.registry import RegistryError
from ml_tasks.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ml_tasks.models.registry import VersionInfo
    from ml_tasks.models.scorer import OnnxScorer

log = logging.getLogger(__name__)

_SPEC = re.compile(
    r"^(?:models:/)?(?P<name>[A-Za-z0-9_.-]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$"
)


class NoModelError(RegistryError):
    """The model spec names no registered version (e.g. no champion has been promoted yet)."""


@dataclass(frozen=True)
class ResolvedModel:
    """One fixed registered model version, as prediction records it."""

    name: str
    version: str
    run_id: str | None
    uri: str
    onnx_sha256: str
    feature_service: str
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (for XCom between the resolve, shard and commit tasks)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResolvedModel:
        """The model of :meth:`to_dict`'s output.

        Raises:
            ValueError: a key is missing or a value has the wrong type.
        """
        try:
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                run_id=None if data.get("run_id") is None else str(data["run_id"]),
                uri=str(data["uri"]),
                onnx_sha256=str(data["onnx_sha256"]),
                feature_service=str(data["feature_service"]),
                threshold=float(data["threshold"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a resolved model description: {dict(data)!r} ({exc!r})") from None

    def record(self) -> dict[str, Any]:
        """The manifest ``inputs`` entry of the model."""
        return {
            "model": {
                "name": self.name,
                "version": self.version,
                "run_id": self.run_id,
                "uri": self.uri,
                "onnx_sha256": self.onnx_sha256,
                "feature_service": self.feature_service,
            }
        }


def parse_model_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``(name, alias, version)`` of ``name@alias``, ``name/version`` or ``models:/<either>``.

    Raises:
        ValueError: any other form.
    """
    match = _SPEC.match(spec.strip())
    if match is None:
        raise ValueError(
            f"model spec {spec!r} is not NAME@ALIAS, NAME/VERSION or models:/NAME@ALIAS|VERSION"
            " (e.g. taxi_tips@champion, taxi_tips/3)"
        )
    return match["name"], match["alias"], match["version"]


def _version_info(client: MlflowClient, spec: str) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    from ml_tasks.models import registry

    name, alias, version = parse_model_spec(spec)
    if alias is not None:
        info = registry.alias_version(client, name, alias)
        if info is None:
            if alias == CHAMPION:
                raise NoModelError(
                    f"no champion yet: run taxi_training first (model {name!r} has no {alias!r} alias in the"
                    " MLflow registry, so there is nothing to predict with)"
                )
            raise NoModelError(f"model {name!r} has no alias {alias!r} in the MLflow registry")
        return info
    assert version is not None  # the pattern matched one of the two
    try:
        return registry.get_version(client, name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            raise NoModelError(
                f"model version {name}/{version} does not exist in the MLflow registry"
            ) from None
        raise


def _scorer(settings: Settings, client: MlflowClient, info: VersionInfo) -> OnnxScorer:
    from ml_tasks.models import loading

    return loading.load_scorer(
        client,
        info,
        cache_dir=loading.model_cache_dir(settings),
        batch_size=settings.predict_batch_rows,
        threads=settings.predict_threads or 1,
    )


def resolve_model(settings: Settings, spec: str) -> ResolvedModel:
    """Resolve ``spec`` to one fixed version, verify and load its ONNX file (cached), and describe it.

    The threshold is the exact one in the ONNX file's metadata (the version tag is rounded).

    Raises:
        ValueError: an unparseable spec.
        NoModelError: no such alias (no champion yet) or version.
        ModelLoadError: the version has no ONNX sha256 tag, or its file does not verify or load.
        RegistryError: the version has no feature service.
    """
    return resolve_loaded(settings, spec)[0]


def resolve_loaded(settings: Settings, spec: str) -> tuple[ResolvedModel, OnnxScorer]:
    """:func:`resolve_model` and the scorer it loaded (a step that scores right away loads it once)."""
    from ml_tasks.models import tracking

    client = tracking.client(settings)  # one client (store) for the alias, the version and its file
    info = _version_info(client, spec)
    if not info.onnx_sha256:
        raise ModelLoadError(f"{info.uri} has no {TAG_ONNX_SHA256} tag: its ONNX file cannot be verified")
    scorer = _scorer(settings, client, info)
    service = info.tags.get(TAG_FEATURE_SERVICE) or scorer.metadata.get("feature_service")
    if not service:
        raise RegistryError(f"{info.uri} records no feature service (tag {TAG_FEATURE_SERVICE})")
    model = ResolvedModel(
        name=info.name,
        version=info.version,
        run_id=info.run_id,
        uri=info.uri,
        onnx_sha256=info.onnx_sha256,
        feature_service=str(service),
        threshold=scorer.threshold,
    )
    log.info("model %s resolved to %s (run %s, feature service %s)", spec, model.uri, model.run_id, service)
    return model, scorer


def load_scorer(settings: Settings, model: ResolvedModel) -> OnnxScorer:
    """The verified :class:`OnnxScorer` of ``model`` (from the local model cache; downloaded when needed).

    Raises:
        ModelLoadError: the version's sha256 tag or threshold changed since resolution, or the file
            does not verify / load.
    """
    from ml_tasks.models import registry, tracking

    client = tracking.client(settings)
    info = registry.get_version(client, model.name, model.version)
    if info.onnx_sha256 != model.onnx_sha256:
        raise ModelLoadError(
            f"{model.uri}: its ONNX sha256 tag is {info.onnx_sha256}, but it was resolved with"
            f" {model.onnx_sha256}: the version changed after resolution"
        )
    scorer = _scorer(settings, client, info)
    if scorer.threshold != model.threshold:
        raise ModelLoadError(
            f"{model.uri}: the ONNX threshold is {scorer.threshold}, resolved with {model.threshold}"
        )
    return scorer


def as_model(settings: Settings, model: ResolvedModel | Mapping[str, Any] | str) -> ResolvedModel:
    """``model`` itself, its :meth:`ResolvedModel.to_dict`, or a spec (resolved here)."""
    if isinstance(model, ResolvedModel):
        return model
    if isinstance(model, str):
        return resolve_model(settings, model)
    return ResolvedModel.from_dict(model)


def model_identity(
    model: ResolvedModel | Mapping[str, Any] | str,
) -> tuple[str, ResolvedModel | None, str | None]:
    """(name, the full model if given, a pinned version if a spec names one); never resolves an alias."""
    if isinstance(model, ResolvedModel):
        return model.name, model, model.version
    if isinstance(model, str):
        name, _alias, version = parse_model_spec(model)
        return name, None, version  # an alias is NOT re-resolved: the shards' version is the run's
    resolved = ResolvedModel.from_dict(model)
    return resolved.name, resolved, resolved.version
