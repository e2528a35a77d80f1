"""JSON files one step writes and another reads back: a corrupt one fails in one line naming file, field."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from ml_tasks.contract import (
    ACCOUNTING_FILE,
    DECISION_JSON,
    MONITORING_LAYER,
    REFERENCE_STATS,
    VALIDATION_REPORTS,
)
from ml_tasks.errors import FlywheelError
from ml_tasks.intervals import Interval
from ml_tasks.models.reference import (
    MonitoringReferenceError,
    compute_reference,
    load_reference_dir,
    write_reference,
)
from ml_tasks.monitoring.decisions import previous_decisions
from ml_tasks.publish import AccountingError, publish
from ml_tasks.settings import Settings
from ml_tasks.storage import ContractFileError, DataRoot, Manifest, parse_contract_file
from ml_tasks.validation.layout import partition, read_accounting

DAY = dt.date(2024, 3, 4)
MODEL = "taxi_tips"


class _Point(BaseModel):
    x: int
    y: int


def test_parse_contract_file_names_file_and_field_in_one_line() -> None:
    with pytest.raises(ContractFileError) as err:
        parse_contract_file(_Point, '{"x": "seven"}', "/data/point.json")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("/data/point.json is corrupt: ")
    assert "field 'x'" in message and "valid integer" in message
    assert "field 'y'" in message and "Field required" in message
    assert isinstance(err.value, FlywheelError) and isinstance(err.value, ValueError)


def test_parse_contract_file_invalid_json_and_many_errors() -> None:
    with pytest.raises(ContractFileError, match=r"^p\.json is corrupt: Invalid JSON"):
        parse_contract_file(_Point, '{"x": 1,', "p.json")

    class Wide(BaseModel):
        a: int
        b: int
        c: int
        d: int
        e: int

    with pytest.raises(ContractFileError, match=r"\(and 2 more\)$"):
        parse_contract_file(Wide, "{}", "w.json")
    assert parse_contract_file(_Point, b'{"x": 1, "y": 2}', "p.json") == _Point(x=1, y=2)


# -- validation's accounting.json, read back by publish ------------------------------------------------


def _accounting(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "dataset": "trips",
        "partition": DAY.isoformat(),
        "verdict": "passed",
        "failures": [],
        "rows_in": 3,
        "accepted": 2,
        "quarantined": 1,
        "by_reason": {"negative_fare": 1},
        "max_reject_rate": 0.5,
        "inputs": {"staging": {"uri": "file:///s", "files": {"part-00000.parquet": "ab" * 32}, "rows": {}}},
        "outputs": {
            "accepted": {
                "uri": "file:///a",
                "files": [{"uri": "file:///a/part-00000.parquet", "sha256": "cd"}],
            },
        },
    }
    doc.update(overrides)
    return doc


def _write_report(root: DataRoot, accounting: dict[str, Any] | str) -> str:
    target = partition(root, VALIDATION_REPORTS, DAY)
    text = accounting if isinstance(accounting, str) else json.dumps(accounting)
    with root.write_partition(target) as writer:
        with root.fs.open_output_stream(f"{writer.staging}/{ACCOUNTING_FILE}") as out:
            out.write(text.encode())
        writer.manifest = Manifest(dataset="reports/validation", partition=DAY.isoformat(), step="validate")
    return root.uri(f"{target}/{ACCOUNTING_FILE}")


def test_accounting_reads_back_the_fields_publish_uses(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    _write_report(root, _accounting(extra_field={"kept": True}))
    accounting = read_accounting(root, DAY)
    assert (accounting.verdict, accounting.rows_in, accounting.accepted, accounting.quarantined) == (
        "passed",
        3,
        2,
        1,
    )
    assert accounting.inputs["staging"].files == {"part-00000.parquet": "ab" * 32}
    assert [f.sha256 for f in accounting.outputs["accepted"].files] == ["cd"]
    assert accounting.model_extra == {"dataset": "trips", "extra_field": {"kept": True}}


@pytest.mark.parametrize(
    ("doc", "field", "problem"),
    [
        (_accounting(rows_in="many"), "rows_in", "valid integer"),
        (_accounting(verdict="maybe"), "verdict", "'passed' or 'failed'"),
        ({k: v for k, v in _accounting().items() if k != "by_reason"}, "by_reason", "Field required"),
        (_accounting(inputs={"staging": {"files": ["x"]}}), "inputs.staging.files", "should be an object"),
        (_accounting(failures=[{"rule": "x"}]), "failures.0.message", "Field required"),
    ],
)
def test_a_corrupt_accounting_names_file_and_field(
    tmp_path: Path, doc: dict[str, Any], field: str, problem: str
) -> None:
    root = DataRoot(str(tmp_path))
    uri = _write_report(root, doc)
    with pytest.raises(ContractFileError) as err:
        read_accounting(root, DAY)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{uri} is corrupt: ")
    assert f"field {field!r}" in message and problem in message


def test_publish_refuses_a_corrupt_accounting_with_the_reason(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path / "data"))
    uri = _write_report(root, "{not json")
    settings = Settings(data_root=str(tmp_path / "data"))
    with pytest.raises(AccountingError) as err:
        publish(root, Interval(DAY, DAY + dt.timedelta(days=1)), settings)
    assert f"dt={DAY}: {uri} is corrupt: Invalid JSON" in str(err.value)
    assert "run `ml-tasks validate` for this day again" in str(err.value)
    assert not root.exists(root.partition_path("curated", "trips", DAY))


# -- the monitor's decision.json, read back by the next intervals' hysteresis and cooldown -------------


def _decision(day: dt.date, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format_version": 1,
        "model": {"name": MODEL, "version": "3", "uri": f"models:/{MODEL}/3"},
        "interval": {"start": day.isoformat(), "end": (day + dt.timedelta(days=1)).isoformat()},
        "verdict": "drift",
        "alert": True,
        "retrain": False,
        "reasons": ["a reason"],
    }
    doc.update(overrides)
    return doc


def _write_decision(root: DataRoot, day: dt.date, doc: dict[str, Any]) -> str:
    target = root.partition_path(MONITORING_LAYER, MODEL, day)
    with root.write_partition(target) as writer:
        with root.fs.open_output_stream(f"{writer.staging}/{DECISION_JSON}") as out:
            out.write(json.dumps(doc).encode())
        writer.manifest = Manifest(dataset=f"monitoring/{MODEL}", partition=day.isoformat(), step="monitor")
    return root.uri(f"{target}/{DECISION_JSON}")


def test_previous_decisions_are_read_back_unchanged_in_order(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    later, earlier = _decision(DAY + dt.timedelta(days=1)), _decision(DAY, verdict="no_drift", alert=False)
    _write_decision(root, DAY + dt.timedelta(days=1), later)
    _write_decision(root, DAY, earlier)
    _write_decision(root, DAY + dt.timedelta(days=2), _decision(DAY + dt.timedelta(days=2)))
    this = Interval(DAY + dt.timedelta(days=2), DAY + dt.timedelta(days=3))
    assert previous_decisions(root, MODEL, this) == [earlier, later]


@pytest.mark.parametrize(
    ("doc", "field", "problem"),
    [
        (_decision(DAY, interval={"start": "yesterday", "end": "2024-03-05"}), "interval.start", "date"),
        (_decision(DAY, verdict="drifting"), "verdict", "unknown verdict 'drifting'"),
        (_decision(DAY, retrain="sometimes"), "retrain", "valid boolean"),
        (_decision(DAY, model={"name": MODEL}), "model.version", "Field required"),
    ],
)
def test_a_corrupt_previous_decision_names_file_and_field(
    tmp_path: Path, doc: dict[str, Any], field: str, problem: str
) -> None:
    root = DataRoot(str(tmp_path))
    uri = _write_decision(root, DAY, doc)
    this = Interval(DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2))
    with pytest.raises(ContractFileError) as err:
        previous_decisions(root, MODEL, this)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{uri} is corrupt: ")
    assert f"field {field!r}" in message and problem in message


# -- the model's reference_stats.json, read back by monitoring ----------------------------------------


def _reference(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    n = 200
    frame = pa.table(
        {
            "company": pa.array(rng.choice(["A", "B"], n)),
            "fare": pa.array(rng.gamma(2.0, 5.0, n)),
            "big_tipper": pa.array(rng.uniform(size=n) < 0.3),
        }
    )
    sample, stats = compute_reference(
        frame, ["company"], ["fare"], lambda t: np.full(t.num_rows, 0.5), rows=50, seed=1
    )
    write_reference(tmp_path, sample, stats)
    return tmp_path / REFERENCE_STATS, json.loads((tmp_path / REFERENCE_STATS).read_text())


def test_reference_stats_read_back_unchanged(tmp_path: Path) -> None:
    _, stats = _reference(tmp_path)
    assert load_reference_dir(tmp_path).stats == stats


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (lambda s: s["columns"]["fare"].update(min="low"), "columns.fare.numeric.min", "valid number"),
        (lambda s: s["columns"]["company"].pop("values"), "columns.company.categorical.values", "required"),
        (lambda s: s["inputs"].update(numeric="fare"), "inputs.numeric", "valid array"),
        (lambda s: s.pop("score"), "score", "Field required"),
        (lambda s: s["columns"].pop("fare"), None, "input 'fare' has no numeric statistics in 'columns'"),
    ],
)
def test_a_corrupt_reference_names_file_and_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], field: str | None, problem: str
) -> None:
    path, stats = _reference(tmp_path)
    change(stats)
    path.write_text(json.dumps(stats))
    with pytest.raises(ContractFileError) as err:
        load_reference_dir(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path} is corrupt: ")
    assert problem in message
    if field is not None:
        assert f"field {field!r}" in message


def test_a_reference_of_another_format_is_refused_as_such(tmp_path: Path) -> None:
    path, stats = _reference(tmp_path)
    path.write_text(json.dumps({**stats, "format_version": 2, "columns": "a new layout"}))
    with pytest.raises(MonitoringReferenceError, match="format_version 2 is not supported"):
        load_reference_dir(tmp_path)
    path.write_text("[1, 2]")
    with pytest.raises(ContractFileError, match="is corrupt: Input should be an object"):
        load_reference_dir(tmp_path)
