"""The MLflow registry on a real SQLite store: register, promote, challenger, idempotency, champion scorer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ml_tasks.contract import TAG_FEATURE_SERVICE
from ml_tasks.models.version_tags import pip_requirements
from ml_tasks.settings import Settings

pytestmark = [pytest.mark.usefixtures("one_torch_thread")]

NAME = "taxi_tips"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One SQLite tracking store + registry for the module (tests build on each other in order)."""
    import mlflow

    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    base = tmp_path_factory.mktemp("registry")
    (base / "cwd").mkdir()
    mp.chdir(base / "cwd")  # nothing may land relative to the working directory (./mlruns)
    yield Settings(data_root=str(base / "data"))
    if mlflow.active_run():
        mlflow.end_run()
    mp.undo()


def _candidate(
    store: Settings, tfdv_frames: tuple[pa.Table, pa.Table], out: Path, seed: int, dag_run: str
) -> Path:
    """A bundle of M's TabularNet (fitted preprocessing, seeded init, one short epoch), its train run,
    and its ONNX export: what the train + export steps leave behind."""
    from ml_tasks.models import tracking
    from ml_tasks.models.network import ModelConfig, save_bundle
    from ml_tasks.training.onnx_export import export_onnx
    from ml_tasks.training.split import split_by_time
    from ml_tasks.training.train import train_model

    key = tracking.RunKey("taxi_training", dag_run, "train")
    with tracking.task_run(store, key, tags={TAG_FEATURE_SERVICE: "taxi_tips_v1"}) as run:
        config = ModelConfig(hidden=(16,), max_epochs=1, patience=1, batch_size=512, seed=seed)
        result = train_model(
            split_by_time(tfdv_frames[0], 0.1, 0.1), config, checkpoint_dir=None, device="cpu"
        )
        meta = result.bundle_metadata(
            mlflow_run_id=run.info.run_id,
            feature_service="taxi_tips_v1",
            training_set_uri="file:///training_sets/taxi_tips_v1/x/part-00000.parquet",
            training_set_sha256="cd" * 32,
        )
        save_bundle(out, result.model, result.preprocessor, config, meta)
    export_onnx(out, sample=tfdv_frames[1].slice(0, 100))
    (out / "model_card.md").write_text(f"# candidate seed {seed}\n")
    return out


@pytest.fixture(scope="module")
def first(
    store: Settings, tfdv_frames: tuple[pa.Table, pa.Table], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return _candidate(
        store, tfdv_frames, tmp_path_factory.mktemp("c1") / "bundle", seed=1, dag_run="manual__1"
    )


@pytest.fixture(scope="module")
def second(
    store: Settings, tfdv_frames: tuple[pa.Table, pa.Table], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return _candidate(
        store, tfdv_frames, tmp_path_factory.mktemp("c2") / "bundle", seed=2, dag_run="manual__2"
    )


@pytest.fixture(scope="module")
def v1(store: Settings, first: Path) -> dict[str, Any]:
    from ml_tasks.models import registry

    run_id = json.loads((first / "model.json").read_text())["mlflow_run_id"]
    info = registry.register_onnx(first, run_id=run_id, target=store, metrics={"eval_roc_auc": 0.9612})
    print(f"\nregistration: {info.seconds:.2f} s")
    return {**info.to_dict(), "tags": info.tags}


def test_no_champion_before_the_first_promotion(store: Settings) -> None:
    from ml_tasks.models import loading, registry

    assert registry.champion(store) is None
    assert registry.current_alias_version(store, NAME, "champion") is None
    assert loading.load_champion_scorer(store) == (None, None)


def test_register_records_lineage_and_explicit_requirements(
    store: Settings, first: Path, v1: dict[str, Any]
) -> None:
    import mlflow

    from ml_tasks.models import tracking
    from ml_tasks.storage import file_sha256

    meta = json.loads((first / "model.json").read_text())
    assert v1["version"] == "1" and v1["reused"] is False
    assert str(v1["model_id"]).startswith("m-")  # MLflow 3: the version points at a LoggedModel
    assert v1["run_id"] == meta["mlflow_run_id"]
    assert v1["seconds"] < 60
    tags = v1["tags"]
    assert tags["flywheel.onnx_sha256"] == file_sha256(first / "model.onnx")
    assert tags["flywheel.preprocessing_sha256"] == meta["preprocessing_sha256"]
    assert tags["flywheel.run_id.train"] == meta["mlflow_run_id"]
    assert tags["flywheel.feature_service"] == "taxi_tips_v1"
    assert tags["flywheel.training_set.uri"].endswith("part-00000.parquet")
    assert tags["flywheel.training_set.sha256"] == "cd" * 32
    assert tags["flywheel.metric.eval_roc_auc"] == "0.9612"

    client = tracking.client(store)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{NAME}/1", dst_path=str(first.parent / "dl")
        )
    )
    requirements = (local / "requirements.txt").read_text().split()
    # explicit pins (MLflow adds its own); no inference ran
    assert sorted(requirements) == sorted([f"mlflow=={mlflow.__version__}", *pip_requirements()])
    assert all("==" in r for r in requirements) and any(r.startswith("onnxruntime==") for r in requirements)
    # the registered file is byte-identical to the checked export; the bundle's files travel with it
    assert file_sha256(local / "model.onnx") == tags["flywheel.onnx_sha256"]
    extra = {p.name for p in (local / "extra_files").iterdir()}
    assert extra == {"model.json", "preprocessing.json", "model_card.md", "onnx_export.json"}
    assert (local / "extra_files" / "model_card.md").read_text() == "# candidate seed 1\n"
    assert client.get_model_version(NAME, "1").run_id == meta["mlflow_run_id"]
    # the LoggedModel lives in the train run's experiment, its files under the data root, none in ./mlruns
    logged = client.get_logged_model(v1["model_id"])
    assert logged.experiment_id == client.get_run(meta["mlflow_run_id"]).info.experiment_id
    data_root = Path(store.resolved_data_root())
    assert logged.artifact_location.startswith((data_root / "mlflow" / "artifacts").as_uri())
    assert not (Path.cwd() / "mlruns").exists()


def test_registering_the_same_run_again_reuses_the_version(
    store: Settings, first: Path, v1: dict[str, Any]
) -> None:
    from ml_tasks.models import registry, tracking

    run_id = json.loads((first / "model.json").read_text())["mlflow_run_id"]
    again = registry.register_onnx(first, run_id=run_id, target=store, run_ids={"register": "r-2"})
    assert (again.version, again.reused) == ("1", True)
    assert again.tags["flywheel.run_id.register"] == "r-2"  # tags refreshed on the reused version
    # the pipeline's entry point, inside the register task's run, finds it too
    key = tracking.RunKey("taxi_training", "manual__1", "register")
    with tracking.task_run(store, key, parent_run_id=run_id) as run:
        summary = registry.register_candidate(store, first, model_name=NAME)
    assert summary["version"] == "1" and summary["reused"] is True
    assert registry.registered_version(store, first, model_name=NAME) == "1"
    assert registry.get_version(store, NAME, "1").tags["flywheel.run_id.register"] == run.info.run_id
    assert len(tracking.client(store).search_model_versions(f"name = '{NAME}'")) == 1


def test_promote_then_champion_alias_serves_the_same_scores(
    store: Settings, first: Path, v1: dict[str, Any], tfdv_frames: tuple[pa.Table, pa.Table]
) -> None:
    import mlflow

    from ml_tasks.models import loading, promotion, tracking
    from ml_tasks.models.network import load_bundle
    from ml_tasks.training.gate import decide

    decision = decide(
        {"roc_auc": 0.9612}, {"gradient_boosted_tree": {"roc_auc": 0.957}}, None, {"passed": True}
    )
    info = promotion.promote(store, NAME, "1", decision=decision.to_dict())
    assert info.aliases == ("champion",)
    assert info.tags["flywheel.promotion.decision"] == "champion"
    assert info.tags["flywheel.promotion.forced"] == "false"
    assert json.loads(info.tags["flywheel.promotion.reasons"]) == decision.reasons
    assert "flywheel.promotion.previous_champion" not in info.tags

    client = tracking.client(store)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    # the alias URI resolves through MLflow itself
    resolved = Path(
        mlflow.artifacts.download_artifacts(f"models:/{NAME}@champion", dst_path=str(first.parent / "a"))
    )
    assert (resolved / "model.onnx").read_bytes() == (first / "model.onnx").read_bytes()

    scorer, version = loading.load_champion_scorer(store, NAME, "champion")
    assert scorer is not None and version is not None
    assert version["version"] == "1" and version["alias"] == "champion"
    rows = tfdv_frames[1]
    expected = load_bundle(first).predict_proba(rows)
    np.testing.assert_allclose(scorer.predict_proba(rows), expected, atol=1e-5, rtol=0)
    assert scorer.threshold == load_bundle(first).threshold
    # a second load hits the cache (same file, verified)
    again, _ = loading.load_champion_scorer(store, NAME, "champion")
    assert again is not None and again.path == scorer.path


def test_a_worse_candidate_becomes_challenger_and_keeps_the_champion(
    store: Settings, second: Path, v1: dict[str, Any]
) -> None:
    from ml_tasks.models import promotion, registry
    from ml_tasks.training.gate import decide

    summary = registry.register_candidate(store, second, model_name=NAME)
    assert summary["version"] == "2" and summary["reused"] is False
    decision = decide(
        {"roc_auc": 0.93},
        {"gradient_boosted_tree": {"roc_auc": 0.957}},
        {"roc_auc": 0.9612},
        {"passed": True},
    )
    assert decision.promote is False
    info = promotion.mark_challenger(store, NAME, "2", decision=decision.to_dict())
    assert info.aliases == ("challenger",)
    assert info.tags["flywheel.promotion.decision"] == "challenger"
    assert json.loads(info.tags["flywheel.promotion.reasons"]) == [
        "roc_auc 0.9300 does not beat baseline gradient_boosted_tree 0.9570",
        "roc_auc 0.9300 is worse than champion 0.9612 by 0.0312 (more than the margin 0.005)",
    ]
    assert json.loads(info.tags["flywheel.promotion.details"])["champion"]["value"] == 0.9612
    champion = registry.champion(store)
    assert champion is not None and champion.version == "1"
    assert registry.current_alias_version(store, NAME, "challenger") == "2"
    with pytest.raises(registry.RegistryError, match="is the champion: it cannot also be the challenger"):
        promotion.mark_challenger(store, NAME, "1", reasons=["x"])


def test_forced_promotion_is_recorded_and_clears_the_challenger(store: Settings, second: Path) -> None:
    from ml_tasks.models import promotion, registry

    decision = {"promote": True, "forced": True, "reasons": ["forced promotion despite: roc_auc ..."]}
    info = promotion.promote(store, NAME, "2", decision=decision, reason="hotfix for a broken champion")
    assert info.aliases == ("champion",)
    assert info.tags["flywheel.promotion.forced"] == "true"
    assert info.tags["flywheel.promotion.force_reason"] == "hotfix for a broken champion"
    assert info.tags["flywheel.promotion.previous_champion"] == "1"
    assert registry.challenger(store) is None
    assert registry.current_alias_version(store, NAME, "champion") == "2"
    # rollback = promote the previous champion again
    promotion.promote(store, NAME, "1", reasons=["rollback"], forced=False)
    assert registry.current_alias_version(store, NAME, "champion") == "1"


def test_a_tampered_download_is_refused(store: Settings, v1: dict[str, Any], tmp_path: Path) -> None:
    from ml_tasks.models import loading, registry, tracking

    client = tracking.client(store)
    scorer, _ = loading.load_champion_scorer(store, NAME, "champion", cache_dir=tmp_path)
    assert scorer is not None
    # a cached file that no longer matches is downloaded again
    scorer.path.write_bytes(b"garbage")
    again, _ = loading.load_champion_scorer(store, NAME, "champion", cache_dir=tmp_path)
    assert again is not None and again.path.stat().st_size > 1000
    # a version whose artifact does not match its recorded hash is refused
    client.set_model_version_tag(NAME, "1", "flywheel.onnx_sha256", "0" * 64)
    try:
        with pytest.raises(registry.RegistryError, match="is not the file that was checked"):
            loading.load_champion_scorer(store, NAME, "champion", cache_dir=tmp_path / "fresh")
    finally:
        client.set_model_version_tag(NAME, "1", "flywheel.onnx_sha256", v1["onnx_sha256"])


def test_concurrent_downloads_of_one_version_share_one_verified_copy(
    store: Settings, v1: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards of one prediction run download the same version at the same time: none fails, none sees a
    half-written file, and the cache holds one verified copy, no staging folders."""
    import hashlib
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    import mlflow.artifacts

    from ml_tasks.models import loading, registry, tracking

    client = tracking.client(store)
    info = registry.get_version(client, NAME, "1")
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: loading.download_onnx(client, info, cache_dir=cache), range(4)))
    assert len(set(paths)) == 1
    assert hashlib.sha256(paths[0].read_bytes()).hexdigest() == v1["onnx_sha256"]
    assert sorted(p.name for p in cache.iterdir()) == [NAME]

    # deterministic: another process swaps its verified copy in while this one downloads; that copy may be
    # in use (onnxruntime reading it): it is kept, not deleted and replaced
    winner = tmp_path / "winner.onnx"
    shutil.copyfile(paths[0], winner)
    other = tmp_path / "other"
    real = mlflow.artifacts.download_artifacts
    inode: dict[str, int] = {}

    def download_while_another_finishes(**kwargs: Any) -> str:
        local = real(**kwargs)
        (other / NAME / "1").mkdir(parents=True)
        shutil.copyfile(winner, other / NAME / "1" / "model.onnx")
        inode["before"] = (other / NAME / "1" / "model.onnx").stat().st_ino
        return str(local)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download_while_another_finishes)
    got = loading.download_onnx(client, info, cache_dir=other)
    assert got == other / NAME / "1" / "model.onnx" and got.read_bytes() == winner.read_bytes()
    assert got.stat().st_ino == inode["before"], "the other process's verified copy was replaced"
    assert sorted(p.name for p in other.iterdir()) == [NAME]
