"""transform step: raw/trips/dt=D -> staging/trips/dt=D (manifest, summary, errors, slices)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from ml_tasks import transform as transform_module
from ml_tasks.intervals import Interval
from ml_tasks.schema import CURATED_SCHEMA, RAW_SCHEMA, SchemaError
from ml_tasks.storage import DataRoot, Manifest, PartitionError
from ml_tasks.transform import staged_slices, transform, trips_with_derived_columns
from tests.unit._transform import CHICAGO
from tests.unit.validation.trip_rows import (
    DAY,
    ONE_DAY,
    partition_bytes,
    raw_table,
    read,
    settings,
    trip,
    trips,
    write_raw,
)


def test_transform_step_writes_staging_with_manifest_and_summary(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    rows = [
        *trips(5),
        trip(5, trip_id="trip-2024-05-01-00001"),
        trip(6, trip_id=None),
        trip(7, trip_start_timestamp=None),
    ]
    raw_path = write_raw(root, rows)
    summary = transform(root, ONE_DAY, settings(tmp_path))
    staged = read(root, "staging", "trips")
    assert staged.schema == CURATED_SCHEMA
    assert staged.num_rows == 8
    assert sum(staged["_is_duplicate"].to_pylist()) == 1
    manifest = root.read_manifest(root.partition_path("staging", "trips", DAY))
    assert manifest.step == "transform"
    assert manifest.row_counts == {"rows": 8, "duplicates": 1, "hashed_keys": 1, "rows_without_start": 1}
    raw_manifest = root.read_manifest(raw_path)
    assert manifest.inputs[0]["uri"] == root.uri(raw_path)
    assert manifest.inputs[0]["files"] == {"part-00000.parquet": raw_manifest.outputs[0]["sha256"]}
    assert manifest.params == {"timezone": CHICAGO, "ambiguous": "earliest", "nonexistent": "latest"}
    assert summary["step"] == "transform"
    assert summary["interval"] == {"start": "2024-05-01", "end": "2024-05-02"}
    assert summary["partitions"] == [
        {"dt": "2024-05-01", "uri": root.uri(root.partition_path("staging", "trips", DAY)), "rows": 8,
         "duplicates": 1, "hashed_keys": 1, "rows_without_start": 1}
    ]  # fmt: skip
    json.dumps(summary)  # the CLI prints it


def test_transform_is_byte_identical_across_runs_and_input_orders(tmp_path: Path) -> None:
    rows = [*trips(20), trip(20, trip_id=None), trip(21, trip_id="trip-2024-05-01-00003")]
    first = DataRoot(str(tmp_path / "a"))
    write_raw(first, rows)
    transform(first, ONE_DAY, settings(tmp_path / "a"))
    once = partition_bytes(first, "staging", "trips")
    transform(first, ONE_DAY, settings(tmp_path / "a"))
    assert partition_bytes(first, "staging", "trips") == once
    # same rows stored in another order (a source paging differently): same staging bytes
    second = DataRoot(str(tmp_path / "a"))
    write_raw(second, list(reversed(rows)))
    transform(second, ONE_DAY, settings(tmp_path / "a"))
    again = partition_bytes(second, "staging", "trips")
    assert again["part-00000.parquet"] == once["part-00000.parquet"]


def test_empty_raw_partition_gives_an_empty_staging_partition(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    write_raw(root, [])
    summary = transform(root, ONE_DAY, settings(tmp_path))
    staged = read(root, "staging", "trips")
    assert staged.num_rows == 0
    assert staged.schema == CURATED_SCHEMA
    assert summary["partitions"][0]["rows"] == 0


def test_every_day_of_the_interval_is_transformed(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    days = [DAY + dt.timedelta(days=i) for i in range(3)]
    for i, day in enumerate(days):
        write_raw(root, trips(i + 1, day), day)
    summary = transform(root, Interval(days[0], days[-1] + dt.timedelta(days=1)), settings(tmp_path))
    assert [(p["dt"], p["rows"]) for p in summary["partitions"]] == [
        ("2024-05-01", 1), ("2024-05-02", 2), ("2024-05-03", 3)
    ]  # fmt: skip
    assert summary["rows"] == 6
    assert read(root, "staging", "trips", days[2]).num_rows == 3


def test_missing_raw_partition_is_a_clear_error(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    with pytest.raises(PartitionError, match=r"raw/trips/dt=2024-05-01 is missing or incomplete"):
        transform(root, ONE_DAY, settings(tmp_path))
    assert not root.exists(root.partition_path("staging", "trips", DAY))


def test_raw_partition_in_another_schema_is_refused_by_name(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    table = raw_table(trips(3))
    table = table.set_column(table.schema.get_field_index("fare"), "fare", table["fare"].cast(pa.string()))
    table = table.drop_columns(["company"])
    path = root.partition_path("raw", "trips", DAY)
    with root.write_partition(path) as writer:
        writer.write(table)
        writer.manifest = Manifest(dataset="raw/trips", partition="2024-05-01", step="extract",
                                   outputs=writer.outputs(), row_counts={"rows": 3})  # fmt: skip
    with pytest.raises(SchemaError) as err:
        transform(root, ONE_DAY, settings(tmp_path))
    message = str(err.value)
    assert "raw/trips/dt=2024-05-01" in message
    assert "missing ['company']" in message
    assert "fare (string instead of double)" in message


def test_transform_never_mutates_its_input() -> None:
    table = raw_table([trip(1, trip_id=None), trip(0)])
    before = table.to_pylist()
    trips_with_derived_columns(table, CHICAGO)
    assert table.to_pylist() == before
    assert table.schema == RAW_SCHEMA


def test_staged_slices_are_the_staging_table_cut_in_order() -> None:
    rows = [
        *trips(20),
        trip(20, trip_id=None),
        {**trip(3), "_source_row": 99},
        trip(21, trip_start_timestamp=None),
    ]
    raw = raw_table(list(reversed(rows)))
    whole = trips_with_derived_columns(raw, CHICAGO)
    slices = list(staged_slices(raw, CHICAGO, slice_rows=5))
    assert [s.num_rows for s in slices] == [5, 5, 5, 5, 3]
    assert pa.concat_tables(slices).equals(whole)
    assert sum(s["_is_duplicate"].to_pylist().count(True) for s in slices) == 1
    assert [s.num_rows for s in staged_slices(raw_table([]), CHICAGO, slice_rows=5)] == [0]


def test_transform_writes_the_same_rows_and_counts_whatever_the_slice_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        *trips(20),
        trip(20, trip_id=None),
        {**trip(3), "_source_row": 99},
        trip(21, trip_start_timestamp=None),
    ]
    staged, counts = [], []
    for slice_rows in (1_000, 4):
        root = DataRoot(str(tmp_path / str(slice_rows)))
        write_raw(root, rows)
        monkeypatch.setattr(transform_module, "SLICE_ROWS", slice_rows)
        transform(root, ONE_DAY, settings(tmp_path / str(slice_rows)))
        staged.append(read(root, "staging", "trips"))
        counts.append(root.read_manifest(root.partition_path("staging", "trips", DAY)).row_counts)
    assert staged[1].num_rows == 23 and staged[1].equals(staged[0])
    assert counts[0] == counts[1] == {"rows": 23, "duplicates": 1, "hashed_keys": 1, "rows_without_start": 1}


def test_dictionary_encoded_raw_strings_give_the_same_keys_and_rows() -> None:
    """transform reads repetitive strings dictionary-encoded (memory): hashes and order must not change."""
    rows = [
        *trips(6),
        trip(6, trip_id=None, company="A"),
        trip(7, trip_id=None, company="B"),
        trip(8, trip_id=None),
    ]
    raw = raw_table(rows)
    encoded = raw
    for name in transform_module.DICTIONARY_COLUMNS:
        i = raw.schema.get_field_index(name)
        encoded = encoded.set_column(i, name, raw[name].dictionary_encode())
    assert pa.types.is_dictionary(encoded.schema.field("taxi_id").type)
    plain = trips_with_derived_columns(raw, CHICAGO)
    assert trips_with_derived_columns(encoded, CHICAGO).equals(plain)
    assert len({k for k in plain["trip_key"].to_pylist() if k.startswith("h_")}) == 3
