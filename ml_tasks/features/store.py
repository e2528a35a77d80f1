"""Open the Feast feature store of an environment, apply declarations, refuse an out-of-date registry.

``FLYWHEEL_FEAST_ENV`` picks the ``feature_store`` yaml. Steps call :func:`check_registry`;
:func:`apply_declarations` (``feast apply``) is for deploy and test time. Design notes: ``docs/features.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_tasks
from ml_tasks.errors import FlywheelError
from ml_tasks.features.feast_import import import_feast
from ml_tasks.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_contents import RepoContents

log = logging.getLogger(__name__)

YAML_BY_ENV = {
    "local": "feature_store.yaml",
    "redis": "feature_store.redis.yaml",
    "production": "feature_store.production.yaml",
}
DECLARATIONS_MODULE = "flywheel_declarations"
APPLY_HINT = "run `ml-tasks feature-apply` (feast apply) to update it"


class FeatureStoreError(FlywheelError, RuntimeError):
    """The feature store cannot serve this request: missing repo or registry, unknown names, ..."""


class RegistryOutOfDate(FeatureStoreError):
    """The registry differs from the declarations in feature_repo/."""


def feature_repo_path(settings: Settings) -> Path:
    """The feature repo: the setting, else beside the package (source checkout), else ./feature_repo."""
    if settings.feature_repo:
        path = Path(settings.feature_repo).expanduser().resolve()
    else:
        beside = Path(ml_tasks.__file__).resolve().parent.parent / "feature_repo"
        path = beside if beside.is_dir() else Path("feature_repo").resolve()
    if not (path / YAML_BY_ENV["local"]).is_file():
        raise FeatureStoreError(
            f"no Feast feature repo at {path} (expected {YAML_BY_ENV['local']}): set FLYWHEEL_FEATURE_REPO"
        )
    return path


def feast_dir(settings: Settings) -> str:
    """Folder of the local registry and SQLite online store."""
    if settings.feast_dir:
        return str(Path(settings.feast_dir).expanduser().resolve())
    return f"{settings.resolved_data_root()}/feast"


@dataclass
class StoreHandle:
    """An open feature store and where it came from."""

    store: FeatureStore
    repo_path: Path
    yaml_path: Path
    env: str
    #: environment the yaml and the declarations are read with (set only while they are read)
    variables: dict[str, str]

    def describe(self) -> dict[str, Any]:
        cfg = self.store.config
        return {
            "env": self.env,
            "project": cfg.project,
            "yaml": str(self.yaml_path),
            "online_store": getattr(cfg.online_store, "type", str(cfg.online_store)),
            "offline_store": getattr(cfg.offline_store, "type", str(cfg.offline_store)),
        }


def store_variables(settings: Settings) -> dict[str, str]:
    """The variables the yaml files and the declarations read, from ``settings``."""
    variables = {"FLYWHEEL_DATA_ROOT": settings.resolved_data_root()}
    if settings.feast_env != "production":
        variables["FLYWHEEL_FEAST_DIR"] = feast_dir(settings)
    return variables


@contextlib.contextmanager
def _scoped_environment(variables: dict[str, str]) -> Iterator[None]:
    # Set only while Feast reads the yaml / imports the declarations: left in os.environ they would
    # leak into later Settings() of this process and into its subprocesses.
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def open_store(settings: Settings) -> StoreHandle:
    """The Feast store of ``settings.feast_env`` over the declarations in the feature repo."""
    repo = feature_repo_path(settings)
    yaml_path = repo / YAML_BY_ENV[settings.feast_env]
    if not yaml_path.is_file():
        raise FeatureStoreError(f"{yaml_path} does not exist (FLYWHEEL_FEAST_ENV={settings.feast_env})")
    variables = store_variables(settings)
    if "FLYWHEEL_FEAST_DIR" in variables:
        Path(variables["FLYWHEEL_FEAST_DIR"]).mkdir(parents=True, exist_ok=True)
    with _scoped_environment(variables):
        text = os.path.expandvars(yaml_path.read_text())
        if "${" in text:
            missing = sorted({part.split("}", 1)[0] for part in text.split("${")[1:]})
            raise FeatureStoreError(f"{yaml_path.name} needs the environment variables {missing}: set them")
        started = time.monotonic()
        import_feast()
        from feast import FeatureStore

        # the file registry logs every cache refresh at INFO: keep the step's log about the step
        logging.getLogger("feast.infra.registry.registry").setLevel(logging.WARNING)
        store = FeatureStore(repo_path=str(repo), fs_yaml_file=yaml_path)
    log.info("feature store %s (%s) opened in %.1f s", yaml_path.name, repo, time.monotonic() - started)
    return StoreHandle(
        store=store, repo_path=repo, yaml_path=yaml_path, env=settings.feast_env, variables=variables
    )


@contextlib.contextmanager
def _repo_on_path(repo: Path) -> Iterator[None]:
    # Feast names modules relative to the working directory and imports them from sys.path
    cwd = Path.cwd()
    sys.path.insert(0, str(repo))
    os.chdir(repo)
    try:
        yield
    finally:
        os.chdir(cwd)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(repo))


def load_declarations(repo: Path, project: str, variables: dict[str, str]) -> RepoContents:
    """The Feast objects declared in ``repo`` (imported afresh: they read FLYWHEEL_DATA_ROOT)."""
    from feast.project import Project
    from feast.repo_operations import parse_repo

    for name in [m for m in sys.modules if m == DECLARATIONS_MODULE or m.startswith("flywheel_")]:
        del sys.modules[name]
    with _scoped_environment(variables), _repo_on_path(repo), contextlib.redirect_stdout(sys.stderr):
        contents = parse_repo(repo)
    if not contents.projects:  # as the feast CLI does: the project named in the yaml
        contents.projects.append(Project(name=project, description="Flywheel batch ML pipelines"))
    return contents


def _changes(handle: StoreHandle, contents: RepoContents) -> list[str]:
    from feast.diff.property_diff import TransitionType

    with contextlib.redirect_stdout(sys.stderr):
        registry_diff, _, _ = handle.store.plan(contents, skip_feature_view_validation=True)
    changes = []
    for diff in registry_diff.feast_object_diffs:
        if diff.transition_type in (TransitionType.UNCHANGED, TransitionType.UNKNOWN):
            continue
        if diff.name == "__dummy":
            continue
        props = ", ".join(p.property_name for p in diff.feast_object_property_diffs)
        kind = diff.feast_object_type.value
        changes.append(
            f"{diff.transition_type.name.lower()} {kind} {diff.name}" + (f" ({props})" if props else "")
        )
    return sorted(changes)


def registry_changes(handle: StoreHandle) -> list[str]:
    """What ``feast apply`` would change in the registry (empty: the registry matches the declarations)."""
    return _changes(
        handle, load_declarations(handle.repo_path, handle.store.config.project, handle.variables)
    )


def check_registry(handle: StoreHandle) -> None:
    """Refuse to work against a registry that differs from the declarations.

    Raises:
        RegistryOutOfDate: naming the objects that differ and saying to run apply.
    """
    changes = registry_changes(handle)
    if changes:
        shown = "; ".join(changes[:8]) + (f"; ... {len(changes) - 8} more" if len(changes) > 8 else "")
        raise RegistryOutOfDate(
            f"the Feast registry of {handle.yaml_path.name} is out of date with {handle.repo_path}: {shown}."
            f" {APPLY_HINT}"
        )


def apply_declarations(handle: StoreHandle) -> dict[str, Any]:
    """``feast apply``: register the declarations (deleting what is no longer declared), create tables."""
    from feast.repo_operations import apply_total_with_repo_instance

    started = time.monotonic()
    contents = load_declarations(handle.repo_path, handle.store.config.project, handle.variables)
    changes = _changes(handle, contents)
    store = handle.store
    with _repo_on_path(handle.repo_path), contextlib.redirect_stdout(sys.stderr):
        apply_total_with_repo_instance(
            store, store.config.project, store.registry, contents, skip_source_validation=True
        )
    store.refresh_registry()  # type: ignore[no-untyped-call]
    log.info("feast apply: %d change(s) in %.1f s", len(changes), time.monotonic() - started)
    return {
        **handle.describe(),
        "changes": changes,
        "feature_views": sorted(fv.name for fv in contents.feature_views),
        "feature_services": sorted(fs.name for fs in contents.feature_services),
        "entities": sorted(e.name for e in contents.entities),
    }
