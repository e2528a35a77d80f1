"""The Feast registry against the declarations: apply, the plan-style check, and clear errors.

Real Feast with the local file registry and SQLite online store under a temporary data root.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ml_tasks.features.spec import FEATURE_SERVICES, VIEWS
from ml_tasks.features.store import (
    FeatureStoreError,
    RegistryOutOfDate,
    apply_declarations,
    check_registry,
    feature_repo_path,
    open_store,
    registry_changes,
)
from ml_tasks.settings import Settings
from tests.conftest import REPO, run_cli


@pytest.fixture
def settings(data_root: Path) -> Settings:
    return Settings(data_root=str(data_root))


def test_a_fresh_registry_is_refused_until_apply(settings: Settings) -> None:
    handle = open_store(settings)
    with pytest.raises(RegistryOutOfDate, match=r"create feature view pickup_area_stats.*feature-apply"):
        check_registry(handle)

    applied = apply_declarations(handle)
    assert applied["feature_views"] == sorted(v.name for v in VIEWS)
    assert applied["feature_services"] == sorted(FEATURE_SERVICES)
    assert "create feature service taxi_tips_v1" in applied["changes"]
    assert applied["online_store"] == "sqlite" and applied["offline_store"] == "duckdb"

    fresh = open_store(settings)
    check_registry(fresh)  # no exception: registry == declarations
    assert registry_changes(fresh) == []
    # the registered views have exactly the columns build-features writes
    for view in VIEWS:
        fv = fresh.store.get_feature_view(view.name)
        assert [f.name for f in fv.features] == list(view.feature_columns())
        assert [e.name for e in fv.entity_columns] == [view.entity]
        assert fv.ttl is not None and fv.ttl.days == view.ttl_days
        assert fv.batch_source.path.startswith(f"{settings.resolved_data_root()}/features/{view.dataset}/")

    # applying again changes nothing
    assert apply_declarations(open_store(settings))["changes"] == []


def test_changed_declarations_are_caught_and_named(settings: Settings, tmp_path: Path) -> None:
    apply_declarations(open_store(settings))
    repo = tmp_path / "feature_repo"
    shutil.copytree(feature_repo_path(settings), repo, ignore=shutil.ignore_patterns("__pycache__"))
    declarations = repo / "flywheel_declarations.py"
    text = declarations.read_text()
    assert "ttl=dt.timedelta(days=view.ttl_days)" in text
    declarations.write_text(text.replace("ttl=dt.timedelta(days=view.ttl_days)", "ttl=dt.timedelta(days=9)"))
    edited = settings.model_copy(update={"feature_repo": str(repo)})

    with pytest.raises(RegistryOutOfDate) as caught:
        check_registry(open_store(edited))
    message = str(caught.value)
    assert "update feature view pickup_area_stats (ttl" in message
    assert "update feature view company_stats (ttl" in message
    assert "ml-tasks feature-apply" in message

    env = {"FLYWHEEL_FEATURE_REPO": str(repo)}
    failed = run_cli("feature-apply", "--check", env=env, check=False)
    assert failed["returncode"] == 1
    assert "ml-tasks: error: the Feast registry" in failed["stderr"]
    assert "update feature view pickup_area_stats (ttl" in failed["stderr"]

    applied = apply_declarations(open_store(edited))
    assert any(c.startswith("update feature view pickup_area_stats (ttl") for c in applied["changes"])
    assert registry_changes(open_store(edited)) == []


def test_a_moved_data_root_means_the_sources_moved(settings: Settings, tmp_path: Path) -> None:
    apply_declarations(open_store(settings))
    moved = settings.model_copy(
        update={
            "data_root": str(tmp_path / "elsewhere"),
            "feast_dir": f"{settings.resolved_data_root()}/feast",
        }
    )
    with pytest.raises(RegistryOutOfDate, match="update feature view pickup_area_stats \\(batch_source\\)"):
        check_registry(open_store(moved))


def test_missing_repo_and_missing_environment_are_clear(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FeatureStoreError, match=r"no Feast feature repo at .*FLYWHEEL_FEATURE_REPO"):
        feature_repo_path(settings.model_copy(update={"feature_repo": str(tmp_path / "nowhere")}))
    monkeypatch.delenv("FLYWHEEL_FEAST_REGISTRY_URI", raising=False)
    monkeypatch.delenv("FLYWHEEL_REDIS_CONNECTION", raising=False)
    production = settings.model_copy(update={"feast_env": "production"})
    with pytest.raises(
        FeatureStoreError,
        match=r"variables \['FLYWHEEL_FEAST_REGISTRY_URI', 'FLYWHEEL_REDIS_CONNECTION'\]",
    ):
        open_store(production)


def test_the_feature_repo_holds_declarations_only() -> None:
    """Feast imports every .py file of the repo on apply: nothing else may live there."""
    repo = REPO / "feature_repo"
    python_files = sorted(p.name for p in repo.rglob("*.py") if "__pycache__" not in p.parts)
    assert python_files == ["flywheel_declarations.py"]
    assert sorted(p.name for p in repo.glob("feature_store*.yaml")) == [
        "feature_store.production.yaml",
        "feature_store.redis.yaml",
        "feature_store.yaml",
    ]
