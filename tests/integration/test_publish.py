"""publish after a real GX validation: accounting re-checked, curated partition + manifest, refusals."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from ml_tasks.intervals import Interval
from ml_tasks.publish import AccountingError, publish
from ml_tasks.schema import CURATED_SCHEMA, QUARANTINE_SCHEMA
from ml_tasks.storage import DataRoot, Manifest, PartitionError
from ml_tasks.transform import transform
from ml_tasks.validation import ValidationFailed, validate
from tests.unit.validation.trip_rows import (
    DAY,
    ONE_DAY,
    partition_bytes,
    read,
    settings,
    trip,
    trips,
    write_raw,
)

DAY2 = DAY + dt.timedelta(days=1)
TWO_DAYS = Interval(DAY, DAY2 + dt.timedelta(days=1))


def validated(tmp_path: Path, days: tuple[dt.date, ...] = (DAY,)) -> DataRoot:
    """Each day: 20 good trips + 1 negative fare + 1 duplicate, transformed and validated."""
    root = DataRoot(str(tmp_path))
    for day in days:
        write_raw(
            root, [*trips(20, day), trip(20, day, fare=-2.0), trip(21, day, trip_id=f"trip-{day}-00004")], day
        )
        interval = Interval(day, day + dt.timedelta(days=1))
        transform(root, interval, settings(tmp_path))
        validate(root, interval, settings(tmp_path, max_reject_rate=0.1))
    return root


def rewrite(root: DataRoot, layer: str, dataset: str, table: pa.Table, row_counts: dict[str, int]) -> None:
    """Replace a partition behind the pipeline's back (a concurrent job, a manual fix, a bug)."""
    path = root.partition_path(layer, dataset, DAY)
    old = root.read_manifest(path)
    with root.write_partition(path) as writer:
        writer.write(table)
        writer.manifest = Manifest(
            dataset=old.dataset,
            partition=old.partition,
            step=old.step,
            inputs=old.inputs,
            outputs=writer.outputs(),
            row_counts=row_counts,
        )


def test_publish_writes_curated_rows_and_a_manifest_with_the_full_accounting(tmp_path: Path) -> None:
    root = validated(tmp_path)
    summary = publish(root, ONE_DAY, settings(tmp_path))
    curated = read(root, "curated", "trips")
    accepted = read(root, "staging", "trips_accepted")
    assert curated.schema == CURATED_SCHEMA
    assert curated.num_rows == 20
    assert curated.equals(accepted)
    assert sorted(curated["_source_row"].to_pylist()) == list(range(20))
    path = root.partition_path("curated", "trips", DAY)
    manifest = root.read_manifest(path)
    assert manifest.step == "publish"
    assert manifest.row_counts["raw"] == 22
    assert manifest.row_counts["curated"] == 20
    assert manifest.row_counts["quarantined"] == 2
    assert manifest.row_counts["quarantined.fare_out_of_range"] == 1
    assert manifest.row_counts["quarantined.duplicate_trip"] == 1
    assert manifest.row_counts["quarantined.payment_type_unknown"] == 0
    roles = {i["role"]: i for i in manifest.inputs}
    assert list(roles) == ["raw", "staging", "accepted", "quarantine", "validation_report"]
    raw_manifest = root.read_manifest(root.partition_path("raw", "trips", DAY))
    assert roles["raw"]["files"] == {"part-00000.parquet": raw_manifest.outputs[0]["sha256"]}
    assert roles["quarantine"]["uri"] == root.uri(root.partition_path("quarantine", "trips", DAY))
    assert set(roles["validation_report"]["files"]) == {"accounting.json", "index.html"}
    reports = manifest.params["reports"]
    for key in ("index", "accounting", "gx_result", "data_docs"):
        assert Path(reports[key]).is_file(), key
    assert summary == {
        "step": "publish",
        "interval": {"start": "2024-05-01", "end": "2024-05-02"},
        "partitions": [
            {
                "dt": "2024-05-01",
                "uri": root.uri(path),
                "rows": 20,
                "raw": 22,
                "quarantined": 2,
                "by_reason": {"duplicate_trip": 1, "fare_out_of_range": 1},
                "quarantine_uri": root.uri(root.partition_path("quarantine", "trips", DAY)),
                "report_uri": reports["index"],
            }
        ],
        "totals": {"raw": 22, "curated": 20, "quarantined": 2},
        "seconds": summary["seconds"],
    }
    json.dumps(summary)


def test_publish_is_idempotent(tmp_path: Path) -> None:
    root = validated(tmp_path)
    publish(root, ONE_DAY, settings(tmp_path))
    first = partition_bytes(root, "curated", "trips")
    publish(root, ONE_DAY, settings(tmp_path))
    assert partition_bytes(root, "curated", "trips") == first


def test_refuses_a_day_that_failed_validation(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    write_raw(root, [*trips(3), trip(3, fare=-1.0)])
    transform(root, ONE_DAY, settings(tmp_path))
    with pytest.raises(ValidationFailed):
        validate(root, ONE_DAY, settings(tmp_path, max_reject_rate=0.1))
    with pytest.raises(AccountingError) as err:
        publish(root, ONE_DAY, settings(tmp_path))
    assert "dt=2024-05-01: validation verdict is 'failed', not published" in str(err.value)
    assert "reject_rate_exceeded: 1 of 4 rows rejected" in str(err.value)
    assert isinstance(err.value, PartitionError)  # the CLI reports it as one line, exit 1


def test_refuses_rows_that_do_not_add_up(tmp_path: Path) -> None:
    root = validated(tmp_path)
    quarantine = read(root, "quarantine", "trips")
    rewrite(root, "quarantine", "trips", quarantine.slice(0, 1).cast(QUARANTINE_SCHEMA), {"rows": 1})
    with pytest.raises(AccountingError) as err:
        publish(root, ONE_DAY, settings(tmp_path))
    message = str(err.value)
    assert "refusing to publish [2024-05-01, 2024-05-02)" in message
    assert "rows do not add up: raw 22 != curated 20 + quarantined 1 (difference 1)" in message
    assert "accounting.json says quarantined=2 but the partitions hold 1" in message
    assert not root.exists(root.partition_path("curated", "trips", DAY))


def test_refuses_when_raw_changed_after_transform(tmp_path: Path) -> None:
    root = validated(tmp_path)
    write_raw(root, [*trips(20), trip(20, fare=-2.0), trip(21, trip_id="trip-2024-05-01-00004"), trip(22)])
    with pytest.raises(AccountingError) as err:
        publish(root, ONE_DAY, settings(tmp_path))
    message = str(err.value)
    assert "raw 23 != curated 20 + quarantined 2" in message
    assert "staging was built from other raw files than those present: re-run transform" in message


def test_refuses_accepted_rows_the_accounting_does_not_describe(tmp_path: Path) -> None:
    root = validated(tmp_path)
    accepted = read(root, "staging", "trips_accepted")
    tampered = accepted.set_column(
        accepted.schema.get_field_index("fare"), "fare", pa.array([99.0] * accepted.num_rows)
    )
    rewrite(root, "staging", "trips_accepted", tampered.cast(CURATED_SCHEMA), {"rows": 20})
    with pytest.raises(
        AccountingError, match="accepted files differ from those the validation accounting describes"
    ):
        publish(root, ONE_DAY, settings(tmp_path))


def test_an_interval_is_published_whole_or_not_at_all(tmp_path: Path) -> None:
    root = validated(tmp_path, days=(DAY,))
    write_raw(root, trips(5, DAY2), DAY2)  # day 2 extracted but never transformed nor validated
    with pytest.raises(AccountingError, match=r"dt=2024-05-02: no validation report"):
        publish(root, TWO_DAYS, settings(tmp_path))
    assert not root.exists(root.partition_path("curated", "trips", DAY))


def test_publishes_every_day_of_the_interval(tmp_path: Path) -> None:
    root = validated(tmp_path, days=(DAY, DAY2))
    summary = publish(root, TWO_DAYS, settings(tmp_path))
    assert [(p["dt"], p["rows"], p["quarantined"]) for p in summary["partitions"]] == [
        ("2024-05-01", 20, 2), ("2024-05-02", 20, 2)
    ]  # fmt: skip
    assert summary["totals"] == {"raw": 44, "curated": 40, "quarantined": 4}
