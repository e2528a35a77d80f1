"""Lineage on hand-written manifests: every link kind, dedup, missing links, hash mismatches.

The data root is built with the real DataRoot writer and manifests shaped like the ones the steps write
(extract, transform, validate, publish, build-features, training-set, predict). The model links use a real
MLflow SQLite store in the data root with a hand-made run and model versions (no model file is needed:
lineage reads tags only).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ml_tasks.lineage import LineageError, render_text, trace
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, input_record

DAYS = [dt.date(2024, 3, 4), dt.date(2024, 3, 5)]
VIEWS = ("company_stats", "pickup_area_stats")
SERVICE = "taxi_tips_v1"
TS_KEY = "2024-03-04_2024-03-06"
ROWS = {DAYS[0]: 30, DAYS[1]: 40}


def _table(tag: str, n: int) -> pa.Table:
    return pa.table({"trip_key": [f"{tag}-{i}" for i in range(n)], "value": [float(i) for i in range(n)]})


def _write(root: DataRoot, path: str, table: pa.Table, **manifest: Any) -> str:
    rel = path.removeprefix(root.base + "/")
    layer, dataset, key = rel.split("/")
    root.write_table(
        path,
        table,
        table.schema,
        Manifest(
            dataset=f"{layer}/{dataset}", partition=key.removeprefix("dt="), code_version="unit", **manifest
        ),
    )
    return path


def build_root(base: Path) -> DataRoot:
    """raw -> staging -> accepted/quarantine/report -> curated -> features -> training set, for 2 days."""
    root = DataRoot(str(base))
    curated: dict[dt.date, str] = {}
    for day in DAYS:
        n, key = ROWS[day], day.isoformat()
        source = {
            "source": "synthetic",
            "seed": 7,
            "trips_per_day": n,
            "interval": {"start": key, "end": key},
        }
        raw = _write(
            root,
            root.partition_path("raw", "trips", day),
            _table(f"raw{key}", n),
            step="extract",
            inputs=[source],
            row_counts={"rows": n, "rows_without_timestamp": 0},
            params={"source": "synthetic"},
        )
        staging = _write(
            root,
            root.partition_path("staging", "trips", day),
            _table(f"stg{key}", n),
            step="transform",
            inputs=[input_record(root, raw)],
            row_counts={"rows": n},
        )
        accepted = _write(
            root,
            root.partition_path("staging", "trips_accepted", day),
            _table(f"acc{key}", n - 1),
            step="validate",
            inputs=[input_record(root, staging)],
            row_counts={"rows": n - 1},
        )
        quarantine = _write(
            root,
            root.partition_path("quarantine", "trips", day),
            _table(f"q{key}", 1),
            step="validate",
            inputs=[input_record(root, staging)],
            row_counts={"rows": 1},
        )
        report = _write(
            root,
            root.partition_path("reports", "validation", day),
            _table(f"rep{key}", 1),
            step="validate",
            inputs=[],
            row_counts={"rows": 1},
        )
        curated[day] = _write(
            root,
            root.partition_path("curated", "trips", day),
            _table(f"cur{key}", n - 1),
            step="publish",
            inputs=[
                {"role": "raw", **input_record(root, raw)},
                {"role": "staging", **input_record(root, staging)},
                {"role": "accepted", **input_record(root, accepted)},
                {"role": "quarantine", **input_record(root, quarantine)},
                {
                    "role": "validation_report",
                    "uri": root.uri(report),
                    "files": input_record(root, report)["files"],
                },
            ],
            row_counts={"raw": n, "curated": n - 1, "quarantined": 1},
            params={"reports": {"index": f"{root.uri(report)}/index.html"}},
        )
    for view in VIEWS:
        for i, day in enumerate(DAYS):
            # trailing window: every curated day up to this one (so curated dt=DAYS[0] is shared)
            _write(
                root,
                root.partition_path("features", view, day),
                _table(f"{view}{day}", 5),
                step="build-features",
                inputs=[input_record(root, curated[d]) for d in DAYS[: i + 1]],
                row_counts={"rows": 5, "window_days": i + 1},
                params={"view": view},
            )
    inputs = [input_record(root, curated[d]) for d in DAYS] + [
        input_record(root, root.partition_path("features", v, d)) for v in VIEWS for d in DAYS
    ]
    _write(
        root,
        f"{root.base}/training_sets/{SERVICE}/{TS_KEY}",
        _table("ts", 69),
        step="training-set",
        inputs=inputs,
        row_counts={"rows": 69, "labelled": 69, "positives": 20},
        params={
            "feature_service": SERVICE,
            "interval": {"start": "2024-03-04", "end": "2024-03-06"},
            "label_rate": 20 / 69,
        },
    )
    return root


def training_set_sha(root: DataRoot) -> str:
    manifest = root.read_manifest(f"{root.base}/training_sets/{SERVICE}/{TS_KEY}")
    return hashlib.sha256("".join(o["sha256"] for o in manifest.outputs).encode()).hexdigest()


def write_predictions(root: DataRoot, model_name: str, model: dict[str, Any], day: dt.date = DAYS[1]) -> str:
    inputs = [input_record(root, root.partition_path("curated", "trips", day))]
    inputs += [input_record(root, root.partition_path("features", v, d)) for v in VIEWS for d in DAYS]
    path = root.partition_path("predictions", model_name, day)
    return _write(
        root,
        path,
        _table(f"pred{model_name}", 3),
        step="predict",
        inputs=[*inputs, {"model": model}],
        row_counts={"rows": 3, "missing_features": 1},
        params={
            "model": f"{model_name}@champion",
            "shards": 2,
            "feature_service": SERVICE,
            "threshold": 0.25,
            "interval": {"start": day.isoformat(), "end": "2024-03-06"},
        },
    )


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataRoot:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return build_root(tmp_path / "data")


def settings_for(root: DataRoot) -> Settings:
    return Settings(data_root=root.base)


def ids(result: dict[str, Any], kind: str) -> list[str]:
    return sorted(i for i, n in result["nodes"].items() if n["kind"] == kind)


# -- partitions only ---------------------------------------------------------------------------------
def test_training_set_chain_down_to_raw_with_dedup_and_verified_hashes(root: DataRoot) -> None:
    result = trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}")
    ts_id = f"training_sets/{SERVICE}/{TS_KEY}"
    assert result["root"] == ts_id and result["target"]["kind"] == "training_set"
    s = result["summary"]
    assert s["by_kind"] == {"training_set": 1, "features": 4, "curated": 2, "raw": 2}
    assert s["ok"] is True and s["verified"] == 9 and s["mismatches"] == [] and s["missing"] == []
    assert s["raw_partitions"] == ["raw/trips/dt=2024-03-04", "raw/trips/dt=2024-03-05"]
    # curated dt=2024-03-04 is read by the training set and by all 4 feature partitions: one node, 5 checks
    shared = result["nodes"]["curated/trips/dt=2024-03-04"]
    consumers = [c["source"] for c in shared["checks"] if c["what"] == "files read by consumer"]
    assert sorted(consumers) == sorted(
        [ts_id] + [f"features/{v}/dt={d}" for v in VIEWS for d in ("2024-03-04", "2024-03-05")]
    )
    assert all(c["ok"] for c in shared["checks"])
    assert len(shared["checks"]) == 1 + 5  # own files + 5 consumers
    assert shared["children"] == ["raw/trips/dt=2024-03-04"]
    assert set(shared["facts"]["intermediates"]) == {"staging", "accepted", "quarantine", "validation_report"}
    assert shared["facts"]["rows"] == 29 and shared["facts"]["raw_rows"] == 30
    raw = result["nodes"]["raw/trips/dt=2024-03-04"]
    assert raw["facts"]["sources"][0]["seed"] == 7 and raw["children"] == []
    assert raw["facts"]["actual_files"] == raw["files"]
    ts = result["nodes"][ts_id]
    assert ts["facts"]["sha256"] == training_set_sha(root) and ts["facts"]["rows"] == 69
    assert ts["children"][:4] == [f"features/{v}/dt={d}" for v in VIEWS for d in ("2024-03-04", "2024-03-05")]
    json.dumps(result)  # the JSON output is the dict itself


def test_target_forms_resolve_to_the_same_partition(root: DataRoot) -> None:
    settings = settings_for(root)
    absolute = f"{root.base}/training_sets/{SERVICE}/{TS_KEY}"
    for target in (
        absolute,
        f"file://{absolute}/",
        f"{absolute}/_manifest.json",
        f"{absolute}/part-00000.parquet",
    ):
        assert trace(settings, target)["root"] == f"training_sets/{SERVICE}/{TS_KEY}", target


def test_text_tree_shows_each_node_once_and_refers_back(root: DataRoot) -> None:
    text = render_text(trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}"))
    lines = text.splitlines()
    assert lines[0].startswith(f"lineage of training_sets/{SERVICE}/{TS_KEY}: 9 nodes")
    assert "all links verified" in lines[0]
    assert lines[1].startswith(f"training_sets/{SERVICE}/{TS_KEY}  rows 69")
    # every node is expanded exactly once
    for node in (
        "curated/trips/dt=2024-03-04",
        "raw/trips/dt=2024-03-05",
        "features/company_stats/dt=2024-03-05",
    ):
        assert sum(1 for line in lines if line.lstrip("│ ├└─").startswith(node + " ")) == 1, node
    # the training set's own curated inputs were shown under the feature partitions: one grouped reference
    assert lines[-1] == "└── (shown above) curated/trips dt=2024-03-04..2024-03-05 (2)"
    assert all("[verified]" in line for line in lines[1:] if "(shown above)" not in line)


def test_rewritten_partition_is_a_mismatch_not_a_crash(root: DataRoot) -> None:
    # raw dt=2024-03-05 re-extracted after publish: new files, new manifest; curated recorded the old ones
    day = DAYS[1]
    _write(
        root,
        root.partition_path("raw", "trips", day),
        _table("re-extracted", 41),
        step="extract",
        inputs=[{"source": "synthetic"}],
        row_counts={"rows": 41},
    )
    result = trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}")
    raw_id = "raw/trips/dt=2024-03-05"
    assert result["summary"]["mismatches"] == [raw_id]
    raw = result["nodes"][raw_id]
    assert raw["status"] == "MISMATCH" and raw["facts"]["rows"] == 41
    failed = [c for c in raw["checks"] if not c["ok"]]
    assert [c["source"] for c in failed] == ["curated/trips/dt=2024-03-05"]
    assert any("rewritten after it was read" in p for p in raw["problems"])
    assert result["summary"]["ok"] is False
    text = render_text(result)
    assert "1 MISMATCH" in text.splitlines()[0]
    assert any(
        line.lstrip("│ ├└─").startswith(raw_id) and line.endswith("[MISMATCH]") for line in text.splitlines()
    )


def test_file_tampered_behind_the_manifest_is_detected_only_when_verifying(root: DataRoot) -> None:
    part = Path(root.partition_path("features", "company_stats", DAYS[0])) / "part-00000.parquet"
    part.write_bytes(part.read_bytes() + b"tampered")
    result = trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}")
    node_id = "features/company_stats/dt=2024-03-04"
    assert result["summary"]["mismatches"] == [node_id]
    check = next(c for c in result["nodes"][node_id]["checks"] if c["what"] == "files vs own manifest")
    assert (
        check["ok"] is False
        and check["actual"]["part-00000.parquet"] != check["expected"]["part-00000.parquet"]
    )
    # without re-hashing, the manifests alone still agree
    quick = trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}", verify_files=False)
    assert quick["summary"]["mismatches"] == [] and quick["summary"]["ok"] is True
    assert "actual_files" not in quick["nodes"][node_id]["facts"]


def test_training_set_files_changed_changes_its_digest(root: DataRoot) -> None:
    before = trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}")
    part = Path(f"{root.base}/training_sets/{SERVICE}/{TS_KEY}/part-00000.parquet")
    part.write_bytes(part.read_bytes()[:-4] + b"xxxx")
    after = trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}")
    node = f"training_sets/{SERVICE}/{TS_KEY}"
    assert before["nodes"][node]["facts"]["sha256"] == training_set_sha(root)
    assert after["nodes"][node]["facts"]["sha256"] != training_set_sha(root)
    assert after["nodes"][node]["status"] == "MISMATCH"


def test_missing_partition_and_missing_manifest_are_reported(root: DataRoot) -> None:
    shutil.rmtree(root.partition_path("raw", "trips", DAYS[0]))
    Path(root.partition_path("features", "pickup_area_stats", DAYS[1]), "_manifest.json").unlink()
    result = trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}")
    nodes, s = result["nodes"], result["summary"]
    raw = nodes["raw/trips/dt=2024-03-04"]
    assert raw["exists"] is False and raw["manifest"] is False and "does not exist" in raw["problems"][0]
    feat = nodes["features/pickup_area_stats/dt=2024-03-05"]
    assert feat["exists"] is True and feat["manifest"] is False and feat["children"] == []
    assert sorted(s["missing"]) == ["features/pickup_area_stats/dt=2024-03-05", "raw/trips/dt=2024-03-04"]
    assert s["raw_partitions"] == ["raw/trips/dt=2024-03-05"] and s["ok"] is False
    text = render_text(result)
    assert "raw/trips/dt=2024-03-04" in text and "[MISSING]" in text and "[NO MANIFEST]" in text
    assert "2 missing" in text.splitlines()[0]


def test_moved_data_root_is_followed_by_layout(root: DataRoot, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.move(root.base, moved)
    result = trace(Settings(data_root=str(moved)), f"training_sets/{SERVICE}/{TS_KEY}")
    assert result["summary"]["ok"] is True and result["summary"]["nodes"] == 9
    curated = result["nodes"]["curated/trips/dt=2024-03-05"]
    assert curated["facts"]["found_at"] == f"{moved}/curated/trips/dt=2024-03-05"


def test_missing_or_malformed_target_is_a_clear_error(root: DataRoot) -> None:
    settings = settings_for(root)
    with pytest.raises(LineageError, match=r"'predictions/taxi_tips/dt=2030-01-01' does not exist"):
        trace(settings, "predictions/taxi_tips/dt=2030-01-01")
    with pytest.raises(LineageError, match="not a partition"):
        trace(settings, root.base)
    Path(root.partition_path("curated", "trips", DAYS[0]), "_manifest.json").unlink()
    with pytest.raises(LineageError, match=r"no _manifest\.json"):
        trace(settings, "curated/trips/dt=2024-03-04")


def test_prediction_without_a_registry_reports_the_model_link_and_imports_no_mlflow(root: DataRoot) -> None:
    model = {
        "name": "taxi_tips",
        "version": "4",
        "run_id": "r1",
        "uri": "models:/taxi_tips/4",
        "onnx_sha256": "ab" * 32,
        "feature_service": SERVICE,
    }
    write_predictions(root, "taxi_tips", model)
    code = (
        "import json, sys\n"
        "from ml_tasks.lineage import trace\nfrom ml_tasks.settings import Settings\n"
        f"r = trace(Settings(data_root={root.base!r}), 'predictions/taxi_tips/dt=2024-03-05')\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in {'mlflow', 'feast', 'torch', 'onnxruntime'})\n"
        "print(json.dumps({'trace': r, 'heavy': heavy}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    result = out["trace"]
    pred = result["nodes"][result["root"]]
    assert pred["kind"] == "predictions" and pred["facts"]["rows"] == 3 and pred["facts"]["model"] == model
    assert pred["facts"]["threshold"] == 0.25 and pred["facts"]["missing_features"] == 1
    assert pred["children"][0] == "models:/taxi_tips/4"
    missing = result["nodes"]["models:/taxi_tips/4"]
    assert missing["exists"] is False and "no MLflow store" in missing["problems"][0]
    # the data links of the prediction are followed all the same
    assert result["summary"]["by_kind"] == {
        "predictions": 1,
        "model_version": 1,
        "features": 4,
        "curated": 2,
        "raw": 2,
    }
    assert result["summary"]["missing"] == ["models:/taxi_tips/4"]


# -- model links (a real MLflow SQLite store) -------------------------------------------------------------
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
    decision = {"verdict": "drift", "drift_share": 0.5, "retrain": False}
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


def test_text_folds_sibling_days_into_one_line_and_names_the_bad_ones(root: DataRoot) -> None:
    shutil.rmtree(root.partition_path("raw", "trips", DAYS[0]))
    result = trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}")
    lines = render_text(result, group_min=2).splitlines()
    assert lines[0].endswith("0 MISMATCH, 1 missing, 1 problem(s)")
    assert lines[1].startswith("  ! raw/trips/dt=2024-03-04: partition ") and "does not exist" in lines[1]
    tree = [line.split("  rows")[0] for line in lines[2:]]
    assert tree == [
        f"training_sets/{SERVICE}/{TS_KEY}",
        "├── features/company_stats dt=2024-03-04..2024-03-05 (2)",
        "│   └── curated/trips dt=2024-03-04..2024-03-05 (2)",
        "│       └── raw/trips dt=2024-03-04..2024-03-05 (2)",
        "├── features/pickup_area_stats dt=2024-03-04..2024-03-05 (2)",
        "│   └── (shown above) curated/trips dt=2024-03-04..2024-03-05 (2)",
        "└── (shown above) curated/trips dt=2024-03-04..2024-03-05 (2)",
    ]
    assert lines[5].endswith("rows 40  source synthetic  [1 verified; MISSING: raw/trips dt=2024-03-04 (1)]")
    assert lines[4].endswith("rows 68  [2 verified]")  # 29 + 39 curated rows
    # expand=True shows every node on its own line
    expanded = render_text(result, expand=True, group_min=2)
    assert expanded == render_text(result)
    assert "raw/trips/dt=2024-03-04  [MISSING]" in expanded
