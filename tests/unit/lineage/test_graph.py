"""The walk over partitions: every link kind, dedup, missing links, hash mismatches, target forms."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ml_tasks.lineage import LineageError, render_text, trace
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot
from tests.unit.lineage._tree import (
    DAYS,
    SERVICE,
    TS_KEY,
    VIEWS,
    settings_for,
    table,
    training_set_sha,
    write,
    write_predictions,
)


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


def test_rewritten_partition_is_a_mismatch_not_a_crash(root: DataRoot) -> None:
    # raw dt=2024-03-05 re-extracted after publish: new files, new manifest; curated recorded the old ones
    day = DAYS[1]
    write(
        root,
        root.partition_path("raw", "trips", day),
        table("re-extracted", 41),
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
