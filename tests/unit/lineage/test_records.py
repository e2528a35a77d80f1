"""Files lineage reads back (manifests, the monitoring decision): a corrupt one is named with its field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ml_tasks import cli
from ml_tasks.errors import FlywheelError
from ml_tasks.lineage import LineageError, trace
from ml_tasks.lineage.records import read_decision, read_manifest
from ml_tasks.storage import ContractFileError, DataRoot, Manifest, input_record
from tests.unit.lineage._tree import DAYS, SERVICE, TS_KEY, settings_for


def _corrupt_manifest(partition: str, **changes: object) -> None:
    path = Path(partition, "_manifest.json")
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_lineage_error_is_a_flywheel_error() -> None:
    assert issubclass(LineageError, FlywheelError) and issubclass(ContractFileError, FlywheelError)


def test_read_manifest_names_the_file_and_the_field() -> None:
    good = Manifest(dataset="raw/trips", partition="2024-03-04", step="extract", code_version="x")
    assert read_manifest(good.to_json(), "m.json").step == "extract"
    broken = json.loads(good.to_json())
    broken["outputs"] = [{"uri": "/r/part-00000.parquet", "sha256": 7}]
    with pytest.raises(ContractFileError, match=r"^m\.json is corrupt: field 'outputs\.0\.sha256': .*string"):
        read_manifest(json.dumps(broken), "m.json")
    del broken["step"]
    with pytest.raises(ContractFileError, match=r"field 'step': Field required"):
        read_manifest(json.dumps(broken), "m.json")
    with pytest.raises(ContractFileError, match=r"^m\.json is corrupt: Invalid JSON"):
        read_manifest("{not json", "m.json")
    # a partition link whose file hashes are not a name -> sha256 mapping
    broken = json.loads(good.to_json())
    broken["inputs"] = [{"uri": "/r/raw/trips/dt=2024-03-04", "files": ["part-00000.parquet"]}]
    with pytest.raises(ContractFileError, match=r"field 'inputs\.0\.partition\.files': .*an object"):
        read_manifest(json.dumps(broken), "m.json")
    # a source description is kept as written, whatever its keys
    source = {"source": "file", "uris": ["a.csv"], "files": [{"uri": "a.csv", "sha256": "ab"}]}
    broken["inputs"] = [source]
    assert read_manifest(json.dumps(broken), "m.json").inputs[0].as_written() == source


def test_read_decision_names_the_file_and_the_field() -> None:
    decision = read_decision(
        json.dumps({"verdict": "drift", "retrain": True, "drift": {"drift_share": 0.4}}), "d"
    )
    assert (decision.verdict, decision.retrain, decision.drift.drift_share) == ("drift", True, 0.4)
    with pytest.raises(ContractFileError, match=r"^d is corrupt: field 'retrain': Field required"):
        read_decision(json.dumps({"verdict": "drift"}), "d")


def test_a_corrupt_manifest_on_the_way_is_a_problem_naming_file_and_field(root: DataRoot) -> None:
    raw = root.partition_path("raw", "trips", DAYS[0])
    _corrupt_manifest(raw, row_counts="many")
    result = trace(settings_for(root), f"training_sets/{SERVICE}/{TS_KEY}")
    node = result["nodes"]["raw/trips/dt=2024-03-04"]
    assert node["exists"] is True and node["manifest"] is False
    assert node["problems"] == [
        f"_manifest.json of {raw} is corrupt: field 'row_counts': Input should be an object"
    ]
    assert result["summary"]["missing"] == ["raw/trips/dt=2024-03-04"] and result["summary"]["ok"] is False


def test_a_corrupt_target_manifest_fails_in_one_line(
    root: DataRoot, capsys: pytest.CaptureFixture[str]
) -> None:
    curated = root.partition_path("curated", "trips", DAYS[1])
    _corrupt_manifest(curated, inputs=[{"model": "taxi_tips/3"}])
    with pytest.raises(LineageError, match=r"field 'inputs\.0\.model\.model': Input should be an object"):
        trace(settings_for(root), "curated/trips/dt=2024-03-05")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["lineage", "curated/trips/dt=2024-03-05", "--data-root", root.base])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "ml-tasks: error: lineage target 'curated/trips/dt=2024-03-05': _manifest.json of "
        f"{curated} is corrupt: field 'inputs.0.model.model': Input should be an object"
    )


def test_a_corrupt_monitoring_decision_is_a_problem(root: DataRoot) -> None:
    target = root.partition_path("monitoring", "m", DAYS[1])
    data = json.dumps({"verdict": "drift", "retrain": "maybe"}).encode()
    with root.write_partition(target) as writer:
        Path(writer.staging, "decision.json").write_bytes(data)
        writer.manifest = Manifest(
            dataset="monitoring/m",
            partition=DAYS[1].isoformat(),
            step="monitor",
            inputs=[input_record(root, root.partition_path("curated", "trips", DAYS[1]))],
            outputs=[{"uri": f"{target}/decision.json", "sha256": hashlib.sha256(data).hexdigest()}],
        )
    result = trace(settings_for(root), "monitoring/m/dt=2024-03-05")
    node = result["nodes"][result["root"]]
    assert "verdict" not in node["facts"] and result["summary"]["ok"] is False
    assert node["problems"] == [
        f"decision.json of {target} is corrupt: field 'retrain': Input should be a valid boolean,"
        " unable to interpret input"
    ]
