"""The Feast registry's feature views without ``import feast``, trusted as far as a full check vouched for it.

A prediction step needs from Feast only the registry check (registry = declarations) and the registered
views of the model's service (join keys, features, ttl, source files); ``import feast`` alone costs ~4.5 s.
After a full check passes (:func:`record`), a digest of what that check depends on is written beside the
registry: the registry objects' specs (not the file's bytes: materialization rewrites it daily, specs
unchanged), the feature repo's sources, ``features/spec.py`` and ``contract.py`` (the declarations import
them), Feast's version and the variables the yaml is read with. A later step recomputes the digest, reading
the registry protobuf with Feast's own message descriptors (taken from its ``*_pb2.py`` files, not imported);
the same digest means the same check result, so the step uses the registered views as read. Anything else
(no record, another digest, a non-file registry or non-DuckDB offline store, an unknown service) returns
None: the step opens Feast and checks in full. Design notes: ``docs/prediction.md``.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import ml_tasks
from ml_tasks.settings import Settings

log = logging.getLogger(__name__)

#: the record of the last full check, beside the registry
RECORD = "flywheel_registry_check.json"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WELL_KNOWN = ("timestamp_pb2", "duration_pb2", "wrappers_pb2", "struct_pb2")


@dataclass(frozen=True)
class Named:
    """A feature or entity column of a registered view (``.name``, as Feast's ``Field``)."""

    name: str


@dataclass(frozen=True)
class RegisteredView:
    """A feature view as the registry holds it: what prediction reads of Feast's ``FeatureView``."""

    name: str
    entity_columns: tuple[Named, ...]
    features: tuple[Named, ...]
    ttl: dt.timedelta | None
    path: str
    timestamp_field: str
    created_timestamp_column: str = ""
    field_mapping: dict[str, str] = field(default_factory=dict)
    join_key_map: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Location:
    registry: Path
    project: str
    variables: dict[str, str]
    repo: Path


@cache
def _registry_message() -> Any:
    """Feast's ``feast.core.Registry`` message class, built from the descriptors in its ``*_pb2.py`` files."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    spec = importlib.util.find_spec("feast")  # locates the package without importing it
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("feast")
    files: dict[str, tuple[bytes, list[str]]] = {}
    for path in (Path(spec.origin).parent / "protos").rglob("*_pb2.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
                data = node.args[0].value  # type: ignore[attr-defined]
                proto = descriptor_pb2.FileDescriptorProto.FromString(data)
                files[proto.name] = (data, list(proto.dependency))
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    for module in _WELL_KNOWN:
        descriptor = importlib.import_module(f"google.protobuf.{module}").DESCRIPTOR
        pool.AddSerializedFile(descriptor.serialized_pb)
        added.add(descriptor.name)

    def add(name: str) -> None:
        if name in added:
            return
        data, dependencies = files[name]
        for dependency in dependencies:
            add(dependency)
        pool.AddSerializedFile(data)
        added.add(name)

    add("feast/core/Registry.proto")
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("feast.core.Registry"))


def _location(settings: Settings) -> _Location | None:
    """The local file registry and project of ``settings``' feature store yaml, if it has one (DuckDB)."""
    import yaml

    from ml_tasks.features.store import YAML_BY_ENV, feature_repo_path, store_variables

    repo = feature_repo_path(settings)
    yaml_path = repo / YAML_BY_ENV[settings.feast_env]
    if not yaml_path.is_file():
        return None
    variables = store_variables(settings)
    text = _VARIABLE.sub(lambda m: variables.get(m[1], os.environ.get(m[1], m[0])), yaml_path.read_text())
    config = yaml.safe_load(text)
    registry = config.get("registry")
    if isinstance(registry, dict):
        if registry.get("registry_type", "file") != "file":
            return None
        registry = registry.get("path")
    offline = config.get("offline_store")
    offline_type = offline.get("type") if isinstance(offline, dict) else offline
    if not isinstance(registry, str) or "://" in registry or "${" in registry or offline_type != "duckdb":
        return None
    path = Path(registry)
    return _Location(path if path.is_absolute() else repo / path, str(config["project"]), variables, repo)


def _sources(repo: Path) -> list[tuple[str, str]]:
    """(name, sha256) of what the declarations are made of."""
    package = Path(ml_tasks.__file__).resolve().parent
    paths = sorted(p for p in repo.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    paths += [package / "features" / "spec.py", package / "contract.py"]
    return [(str(p), hashlib.sha256(p.read_bytes()).hexdigest()) for p in paths]


def _digest(location: _Location, registry: Any) -> str:
    objects = []
    for kind in ("entities", "feature_views", "feature_services", "data_sources", "on_demand_feature_views"):
        for item in getattr(registry, kind):
            # data sources are stored as their spec; the other objects as spec + meta (meta not hashed)
            spec = item.spec if "spec" in item.DESCRIPTOR.fields_by_name else item
            if spec.project == location.project:
                data = spec.SerializeToString(deterministic=True)
                objects.append((kind, spec.name, hashlib.sha256(data).hexdigest()))
    material = {
        "project": location.project,
        "objects": sorted(objects),
        "sources": _sources(location.repo),
        "feast": md.version("feast"),
        "variables": dict(sorted(location.variables.items())),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _read(settings: Settings) -> tuple[_Location, Any, str] | None:
    location = _location(settings)
    if location is None or not location.registry.is_file():
        return None
    registry = _registry_message().FromString(location.registry.read_bytes())
    return location, registry, _digest(location, registry)


#: what reading the registry without Feast can raise: the step then takes (or took) the full path
_UNREADABLE = (OSError, ValueError, KeyError, ImportError)


def record(settings: Settings) -> None:
    """Remember the registry as a full check just passed it (call right after ``check_registry``).

    Best effort: a registry or record that cannot be read or written is logged, and later steps check
    in full.
    """
    try:
        found = _read(settings)
        if found is None:
            return
        location, _, digest = found
        target = location.registry.parent / RECORD
        staging = target.with_suffix(".tmp")
        staging.write_text(json.dumps({"digest": digest}) + "\n")
        staging.replace(target)
    except _UNREADABLE as exc:
        log.warning("the registry check was not recorded (%s): later steps check in full", exc)


def _view(spec: Any, projection: Any) -> RegisteredView:
    source = spec.batch_source
    return RegisteredView(
        name=spec.name,
        entity_columns=tuple(Named(c.name) for c in spec.entity_columns),
        features=tuple(Named(f.name) for f in spec.features),
        ttl=spec.ttl.ToTimedelta() if spec.HasField("ttl") and spec.ttl.ToTimedelta() else None,
        path=source.file_options.uri if source.HasField("file_options") else "",
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column,
        field_mapping=dict(source.field_mapping),
        join_key_map=dict(projection.join_key_map),
    )


def checked_views(settings: Settings, service: str) -> list[RegisteredView] | None:
    """The registered views of feature service ``service``, when the last full check vouches for the
    registry as it is now; else None (the caller opens Feast and checks)."""
    try:
        found = _read(settings)
    except _UNREADABLE as exc:
        log.info("registry not read without Feast (%s): full check", exc)
        return None
    if found is None:
        return None
    location, registry, digest = found
    target = location.registry.parent / RECORD
    try:
        recorded = json.loads(target.read_text()).get("digest")
    except (OSError, ValueError):
        return None
    if recorded != digest:
        log.info("the registry or the declarations changed since the last full check: full check")
        return None
    specs = {v.spec.name: v.spec for v in registry.feature_views if v.spec.project == location.project}
    for item in registry.feature_services:
        if item.spec.project == location.project and item.spec.name == service:
            projections = list(item.spec.features)
            if any(p.feature_view_name not in specs or p.feature_view_name_alias for p in projections):
                return None
            return [_view(specs[p.feature_view_name], p) for p in projections]
    return None
