"""Model links on a real MLflow SQLite store in the data root: a hand-made run and model versions (no model
file is needed: lineage reads tags only)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml_tasks.lineage import LineageError, render_text, trace
from ml_tasks.storage import Manifest, input_record
from tests.unit.lineage._tree import (
    DAYS,
    SERVICE,
    TS_KEY,
    build_root,
    settings_for,
    training_set_sha,
    write_predictions,
)


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A data root with an MLflow store: a train run and versions with good, wrong and missing tags."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    from mlflow import MlflowClient

    root = build_root(tmp_path_factory.mktemp("lineage_registry") / "data")
    (Path(root.base) / "mlflow").mkdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{root.base}/mlflow/mlflow.db")
    exp = client.create_experiment(
        "flywheel-taxi-tips", artifact_location=Path(root.base, "mlflow/a").as_uri()
    )
    ts_uri, sha = f"{root.base}/training_sets/{SERVICE}/{TS_KEY}", training_set_sha(root)
    run_tags = {
        "flywheel.dag_id": "taxi_training",
        "flywheel.dag_run_id": "manual__1",
        "flywheel.task_id": "train",
        "flywheel.code_version": "0.1.0+gabc",
        "flywheel.training_set.uri": ts_uri,
        "flywheel.training_set.sha256": sha,
    }
    run = client.create_run(exp, tags=run_tags, run_name="train manual__1")
    client.log_param(run.info.run_id, "max_epochs", "3")
    client.set_terminated(run.info.run_id, "FINISHED")
    bare = client.create_run(exp, run_name="no training-set tags")
    gone = client.create_run(exp, run_name="deleted")
    client.delete_run(gone.info.run_id)
    client.create_registered_model("taxi_tips")
    onnx = "cd" * 32
    base_tags = {
        "flywheel.onnx_sha256": onnx,
        "flywheel.feature_service": SERVICE,
        "flywheel.threshold": "0.25",
        "flywheel.run_id.train": run.info.run_id,
        "flywheel.run_id.register": "r-register",
        "flywheel.metric.eval_roc_auc": "0.81",
        "flywheel.training_set.uri": ts_uri,
    }
    versions = {
        "good": {**base_tags, "flywheel.training_set.sha256": sha},
        "wrong_sha": {**base_tags, "flywheel.training_set.sha256": "0" * 64},
        "no_set": {
            **{k: v for k, v in base_tags.items() if k != "flywheel.training_set.uri"},
            "flywheel.run_id.train": bare.info.run_id,
        },
        # the version lacks the training-set tags; its run has them
        "set_on_run_only": {k: v for k, v in base_tags.items() if k != "flywheel.training_set.uri"},
        "deleted_run": {
            **base_tags,
            "flywheel.run_id.train": gone.info.run_id,
            "flywheel.training_set.sha256": sha,
        },
        "unknown_run": {**base_tags, "flywheel.run_id.train": "f" * 32, "flywheel.training_set.sha256": sha},
    }
    numbers = {}
    for label, tags in versions.items():
        mv = client.create_model_version(
            "taxi_tips", source=Path(root.base).as_uri(), run_id=run.info.run_id, tags=tags
        )
        numbers[label] = str(mv.version)
    client.set_registered_model_alias("taxi_tips", "champion", numbers["good"])
    yield {"root": root, "versions": numbers, "run_id": run.info.run_id, "onnx": onnx, "sha": sha}
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def test_model_version_forms_trace_to_run_training_set_and_raw(registry_root: dict[str, Any]) -> None:
    root, good = registry_root["root"], registry_root["versions"]["good"]
    settings = settings_for(root)
    results = [
        trace(settings, t) for t in (f"taxi_tips/{good}", f"models:/taxi_tips/{good}", "taxi_tips@champion")
    ]
    assert {r["root"] for r in results} == {f"models:/taxi_tips/{good}"}
    result = results[2]
    model = result["nodes"][result["root"]]
    assert model["kind"] == "model_version" and model["facts"]["aliases"] == ["champion"]
    assert model["facts"]["runs"] == {"train": registry_root["run_id"], "register": "r-register"}
    assert (
        model["facts"]["metrics"] == {"eval_roc_auc": "0.81"} and model["facts"]["onnx_sha256"] == "cd" * 32
    )
    run_id = f"runs:/{registry_root['run_id']}"
    assert model["children"] == [run_id]
    run = result["nodes"][run_id]
    assert run["facts"]["experiment"] == "flywheel-taxi-tips" and run["facts"]["status"] == "FINISHED"
    assert (run["facts"]["dag_id"], run["facts"]["dag_run_id"]) == ("taxi_training", "manual__1")
    assert run["facts"]["code_version"] == "0.1.0+gabc" and run["facts"]["params"] == {"max_epochs": "3"}
    assert run["facts"]["start_time"].endswith("+00:00")
    ts_id = f"training_sets/{SERVICE}/{TS_KEY}"
    assert run["children"] == [ts_id]
    ts = result["nodes"][ts_id]
    assert ts["facts"]["sha256_verdict"] == "verified" and ts["facts"]["sha256"] == registry_root["sha"]
    s = result["summary"]
    assert s["ok"] is True and s["by_kind"] == {
        "model_version": 1,
        "mlflow_run": 1,
        "training_set": 1,
        "features": 4,
        "curated": 2,
        "raw": 2,
    }
    text = render_text(result)
    assert text.splitlines()[1].startswith(f"model models:/taxi_tips/{good} @champion")
    assert (
        "experiment flywheel-taxi-tips" in text
        and "sha256 " + registry_root["sha"][:12] + " verified" in text
    )


def test_training_set_hash_differing_from_the_model_tag_is_a_mismatch(registry_root: dict[str, Any]) -> None:
    version = registry_root["versions"]["wrong_sha"]
    result = trace(settings_for(registry_root["root"]), f"taxi_tips/{version}")
    ts = result["nodes"][f"training_sets/{SERVICE}/{TS_KEY}"]
    assert ts["facts"]["sha256_verdict"] == "MISMATCH" and ts["status"] == "MISMATCH"
    assert ts["facts"]["sha256_recorded"] == "0" * 64
    assert any("other data than the partition holds now" in p for p in ts["problems"])
    assert result["summary"]["mismatches"] == [f"training_sets/{SERVICE}/{TS_KEY}"]
    assert "MISMATCH" in render_text(result)


def test_broken_model_links_are_reported(registry_root: dict[str, Any]) -> None:
    settings, v = settings_for(registry_root["root"]), registry_root["versions"]
    no_set = trace(settings, f"taxi_tips/{v['no_set']}")
    assert no_set["summary"]["by_kind"] == {"model_version": 1, "mlflow_run": 1}
    assert any("training set is unknown" in p for p in no_set["summary"]["problems"])
    on_run = trace(settings, f"taxi_tips/{v['set_on_run_only']}")
    ts = on_run["nodes"][f"training_sets/{SERVICE}/{TS_KEY}"]
    assert ts["facts"]["sha256_verdict"] == "verified" and on_run["summary"]["ok"] is True
    deleted = trace(settings, f"taxi_tips/{v['deleted_run']}")
    run = next(n for n in deleted["nodes"].values() if n["kind"] == "mlflow_run")
    assert run["exists"] is True and "is deleted" in run["problems"][0]
    unknown = trace(settings, f"taxi_tips/{v['unknown_run']}")
    run = unknown["nodes"][f"runs:/{'f' * 32}"]
    assert run["exists"] is False and "not found" in run["problems"][0]
    # the training set still hangs under the version when its run is gone, and is still verified
    model = unknown["nodes"][unknown["root"]]
    assert model["children"] == [f"runs:/{'f' * 32}", f"training_sets/{SERVICE}/{TS_KEY}"]
    assert unknown["nodes"][f"training_sets/{SERVICE}/{TS_KEY}"]["facts"]["sha256_verdict"] == "verified"


def test_unknown_model_version_or_alias_is_a_clear_error(registry_root: dict[str, Any]) -> None:
    settings = settings_for(registry_root["root"])
    with pytest.raises(LineageError, match="taxi_tips/99 not found in the registry"):
        trace(settings, "taxi_tips/99")
    with pytest.raises(LineageError, match="holds the alias @challenger"):
        trace(settings, "taxi_tips@challenger")
    with pytest.raises(LineageError, match="no_such_model"):
        trace(settings, "models:/no_such_model/1")


def model_record(registry_root: dict[str, Any]) -> dict[str, Any]:
    """The model record a predictions manifest carries: the registry fixture's good version."""
    good = registry_root["versions"]["good"]
    return {
        "name": "taxi_tips",
        "version": good,
        "run_id": registry_root["run_id"],
        "uri": f"models:/taxi_tips/{good}",
        "onnx_sha256": registry_root["onnx"],
        "feature_service": SERVICE,
    }


def test_prediction_partition_links_model_and_checks_its_record(registry_root: dict[str, Any]) -> None:
    root, good = registry_root["root"], registry_root["versions"]["good"]
    record = model_record(registry_root)
    write_predictions(root, "taxi_tips", record)
    result = trace(settings_for(root), f"{root.base}/predictions/taxi_tips/dt=2024-03-05")
    pred_id = "predictions/taxi_tips/dt=2024-03-05"
    assert result["root"] == pred_id and result["summary"]["ok"] is True, result["summary"]
    assert result["nodes"][pred_id]["children"][0] == f"models:/taxi_tips/{good}"
    assert result["summary"]["by_kind"] == {
        "predictions": 1,
        "model_version": 1,
        "mlflow_run": 1,
        "training_set": 1,
        "features": 4,
        "curated": 2,
        "raw": 2,
    }
    model = result["nodes"][f"models:/taxi_tips/{good}"]
    assert {c["what"]: c["ok"] for c in model["checks"]} == {
        f"onnx_sha256 of {pred_id}": True,
        f"feature_service of {pred_id}": True,
    }
    # curated dt=2024-03-05 read by the prediction AND the training set: one node, both checks pass
    curated = result["nodes"]["curated/trips/dt=2024-03-05"]
    consumers = {c["source"] for c in curated["checks"] if c["what"] == "files read by consumer"}
    assert {pred_id, f"training_sets/{SERVICE}/{TS_KEY}"} <= consumers
    # a prediction whose record names another ONNX file than the version: reported, not a crash
    write_predictions(root, "other", {**record, "onnx_sha256": "ee" * 32})
    bad = trace(settings_for(root), "predictions/other/dt=2024-03-05")
    node = bad["nodes"][f"models:/taxi_tips/{good}"]
    assert node["status"] == "MISMATCH" and bad["summary"]["mismatches"] == [f"models:/taxi_tips/{good}"]
    assert any("scored by onnx_sha256 " + "ee" * 32 in p for p in node["problems"])


def test_monitoring_partition_links_predictions_and_the_reference_model(
    registry_root: dict[str, Any],
) -> None:
    root, good = registry_root["root"], registry_root["versions"]["good"]
    record = model_record(registry_root)
    predictions = write_predictions(root, "monitored", record)
    target = root.partition_path("monitoring", "monitored", DAYS[1])
    # the shape ml_tasks.monitoring.policy.decide writes: the share sits under "drift"
    decision = {"verdict": "drift", "retrain": False, "drift": {"drift_share": 0.5}}
    with root.write_partition(target) as writer:
        data = json.dumps(decision).encode()
        Path(writer.staging, "decision.json").write_bytes(data)
        reference = {
            "uri": f"models:/taxi_tips/{good}",
            "source": "s",
            "files": {"reference_stats.json": "ab"},
        }
        writer.manifest = Manifest(
            dataset="monitoring/monitored",
            partition=DAYS[1].isoformat(),
            step="monitor",
            inputs=[input_record(root, predictions), {"reference": reference}],
            outputs=[{"uri": f"{target}/decision.json", "sha256": hashlib.sha256(data).hexdigest()}],
            params={"model": "taxi_tips", "model_version": good, "interval": "[2024-03-05, 2024-03-06)"},
        )
    result = trace(settings_for(root), "monitoring/monitored/dt=2024-03-05")
    node = result["nodes"][result["root"]]
    assert result["target"]["kind"] == "monitoring" and result["summary"]["ok"] is True, result["summary"]
    assert node["facts"]["verdict"] == "drift" and node["facts"]["drift_share"] == 0.5
    assert node["facts"]["reference"] == reference
    model_id = f"models:/taxi_tips/{good}"
    assert node["children"] == ["predictions/monitored/dt=2024-03-05", model_id]
    # the prediction reaches the same model version: one node
    assert result["nodes"]["predictions/monitored/dt=2024-03-05"]["children"][0] == model_id
    assert result["summary"]["by_kind"]["model_version"] == 1
    text = render_text(result).splitlines()
    assert "verdict drift  drift share 0.5" in text[1]
    assert text[-1] == f"└── (shown above) {model_id}"
