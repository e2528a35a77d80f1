"""The file source on JSON and Parquet, the TFX mapping, fsspec URIs, CLI options and extract."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ml_tasks.extract import extract
from ml_tasks.intervals import Interval
from ml_tasks.schema import RAW_SCHEMA
from ml_tasks.settings import Settings
from ml_tasks.sources import get_source
from ml_tasks.sources.base import SourceError
from ml_tasks.sources.file import FileSource
from ml_tasks.storage import DataRoot
from tests.unit.sources._file_source import ANY, good_line, read_all, write


def soda_rows() -> list[dict[str, Any]]:
    """Rows as the portal's .json endpoint sends them: strings, nulls as absent keys, points as objects."""
    return [
        {
            "trip_id": "j1", "taxi_id": "x", "trip_start_timestamp": "2014-01-01T10:15:00.000",
            "trip_end_timestamp": "2014-01-01T10:30:00.000", "trip_seconds": "900", "trip_miles": "2.1",
            "pickup_community_area": "8", "fare": "9.25", "tips": "2", "payment_type": "Credit Card",
            "company": "Flash Cab",
            "pickup_centroid_location": {"type": "Point", "coordinates": [-87.63, 41.89]},
        },
        {
            "trip_id": "j2", "trip_start_timestamp": "2014-01-01T11:00:00.000", "trip_seconds": "60",
            "trip_miles": "0", "fare": "3.25", "tips": "0", "payment_type": "Cash",
            "pickup_community_area": "32",
        },
    ]  # fmt: skip


def test_json_array_with_the_portal_layout(tmp_path: Path) -> None:
    path = tmp_path / "page.json"
    path.write_text(json.dumps(soda_rows()))
    table, batches = read_all(FileSource([str(path)]))

    assert table.schema == RAW_SCHEMA
    assert table["trip_id"].to_pylist() == ["j1", "j2"]
    assert table["trip_start_timestamp"].to_pylist() == [
        dt.datetime(2014, 1, 1, 10, 15),
        dt.datetime(2014, 1, 1, 11),
    ]
    assert table["fare"].to_pylist() == [9.25, 3.25] and table["trip_seconds"].to_pylist() == [900, 60]
    assert table["company"].to_pylist() == ["Flash Cab", None]  # absent key -> null
    assert table["_source_row"].to_pylist() == [0, 1] and table["_parse_errors"].null_count == 2
    assert batches[0].extra_columns == ("pickup_centroid_location",)


def test_json_lines_with_typed_values_and_odd_records(tmp_path: Path) -> None:
    rows = [dict(r, fare=float(r["fare"]), trip_seconds=int(r["trip_seconds"])) for r in soda_rows()]
    path = tmp_path / "trips.jsonl"
    path.write_text("\n".join([json.dumps(rows[0]), "42", json.dumps(rows[1])]) + "\n")
    table, _ = read_all(FileSource([str(path)], batch_rows=2))

    assert table.num_rows == 3 and table["_source_row"].to_pylist() == [0, 1, 2]
    assert table["fare"].to_pylist() == [9.25, None, 3.25] and table["trip_seconds"].to_pylist() == [
        900,
        None,
        60,
    ]
    assert table["_parse_errors"].to_pylist() == [None, "not_a_json_object: 42", None]


def test_json_empty_and_broken(tmp_path: Path) -> None:
    (tmp_path / "none.json").write_text("[]")
    table, batches = read_all(FileSource([str(tmp_path / "none.json")]))
    assert table.num_rows == 0 and batches == []

    (tmp_path / "broken.json").write_text('[{"trip_id": "a"}, {"trip_id": ')
    with pytest.raises(SourceError, match=r"cannot read JSON file .*broken\.json.*Malformed JSON"):
        read_all(FileSource([str(tmp_path / "broken.json")]))
    (tmp_path / "zero.json").write_text("")
    with pytest.raises(SourceError, match=r"zero\.json is empty"):
        read_all(FileSource([str(tmp_path / "zero.json")]))


def portal_parquet(path: Path, n: int) -> Path:
    start = dt.datetime(2014, 1, 1)
    table = pa.table(
        {
            "trip_id": [f"p{i}" for i in range(n)],
            "trip_start_timestamp": pa.array(
                [start + dt.timedelta(minutes=15 * i) for i in range(n)], pa.timestamp("us")
            ),
            "trip_seconds": pa.array([60 * i for i in range(n)], pa.int32()),
            "trip_miles": [i / 4 for i in range(n)],
            "fare": pa.array([None if i == 3 else 5.0 + i for i in range(n)], pa.float64()),
            "tips": [1.0] * n,
            "payment_type": ["Cash"] * n,
            "pickup_community_area": pa.array([i % 77 + 1 for i in range(n)], pa.int16()),
            "dropoff_centroid_location": [{"lat": 41.8, "lon": -87.6}] * n,
        }
    )
    pq.write_table(table, path)
    return path


def test_parquet_with_the_portal_layout(tmp_path: Path) -> None:
    path = portal_parquet(tmp_path / "trips.parquet", 7)
    table, batches = read_all(FileSource([str(path)], batch_rows=3))

    assert [b.table.num_rows for b in batches] == [3, 3, 1]
    assert table["_source_row"].to_pylist() == list(range(7))
    assert table["trip_start_timestamp"][5].as_py() == dt.datetime(2014, 1, 1, 1, 15)
    assert table["fare"].to_pylist()[:5] == [5.0, 6.0, 7.0, None, 9.0]
    assert table["trip_seconds"][2].as_py() == 120 and table["pickup_community_area"][6].as_py() == 7
    assert table["_parse_errors"].null_count == 7
    assert batches[0].extra_columns == ("dropoff_centroid_location",)


def test_corrupt_parquet_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match=r"cannot read Parquet file .*bad\.parquet"):
        read_all(FileSource([str(tmp_path / "bad.parquet")]))


TFX_HEADER = ["trip_start_timestamp", "pickup_latitude", "trip_seconds", "trip_miles", "fare", "tips",
              "payment_type", "pickup_community_area"]  # fmt: skip


def test_mapping_is_detected_and_can_be_forced(tmp_path: Path) -> None:
    path = write(tmp_path / "tfx.csv", ["1400269500,41.9,60,1.0,12.45,0,Credit Card,"], TFX_HEADER)
    auto = FileSource([str(path)])
    table, _ = read_all(auto)

    assert auto.describe(ANY)["mapping"] == "tfx"
    assert table["trip_start_timestamp"].to_pylist() == [dt.datetime(2014, 5, 16, 19, 45)]
    assert table["pickup_centroid_latitude"].to_pylist() == [41.9]
    forced, _ = read_all(FileSource([str(path)], mapping="portal"))
    assert forced["trip_start_timestamp"].null_count == 1
    assert forced["_parse_errors"][0].as_py() == "trip_start_timestamp=1400269500"


@pytest.fixture
def memory_fs() -> Iterator[fsspec.AbstractFileSystem]:
    fs = fsspec.filesystem("memory")
    yield fs
    fs.rm("/flywheel-test", recursive=True)


def test_any_fsspec_uri(memory_fs: fsspec.AbstractFileSystem, tmp_path: Path) -> None:
    csv_bytes = write(tmp_path / "a.csv", [good_line(0), "bad"]).read_bytes()
    memory_fs.pipe("/flywheel-test/a.csv", csv_bytes)
    memory_fs.pipe("/flywheel-test/b.parquet", portal_parquet(tmp_path / "b.parquet", 2).read_bytes())
    memory_fs.pipe("/flywheel-test/c.json", json.dumps(soda_rows()).encode())
    source = FileSource(["memory://flywheel-test/*"])
    table, _ = read_all(source)

    assert [f.uri for f in source.files] == [
        f"memory:///flywheel-test/{n}" for n in ("a.csv", "b.parquet", "c.json")
    ]
    assert table["trip_id"].to_pylist() == ["t0000", None, "p0", "p1", "j1", "j2"]
    assert table["_parse_errors"][1].as_py().startswith("malformed_csv_line")
    assert source.describe(ANY)["files"][0]["sha256"] == hashlib.sha256(csv_bytes).hexdigest()


def test_from_options_as_the_cli_passes_them(tmp_path: Path) -> None:
    path = write(tmp_path / "trips.csv", [good_line(i) for i in range(5)])
    source = get_source("file", Settings(), {"uri": [str(path)], "mapping": "portal", "batch_rows": "2"})
    assert isinstance(source, FileSource) and source.batch_rows == 2 and source.server_side_filter is False
    assert [b.table.num_rows for b in source.read(ANY)] == [2, 2, 1]

    with pytest.raises(SourceError, match=r"does not understand option\(s\) \['table'\]"):
        get_source("file", Settings(), {"uri": [str(path)], "table": "trips"})
    with pytest.raises(SourceError, match="unknown mapping"):
        get_source("file", Settings(), {"uri": [str(path)], "mapping": "nope"})
    with pytest.raises(SourceError, match="'batch_rows' must be an integer"):
        get_source("file", Settings(), {"uri": [str(path)], "batch_rows": "many"})


def test_extract_accounts_for_every_line(tmp_path: Path) -> None:
    lines = [good_line(i) for i in range(200)]  # 15-minute steps: 2014-01-01 .. 2014-01-03
    lines[10] = "broken"
    path = write(tmp_path / "trips.csv", lines)
    root = DataRoot(str(tmp_path / "data"))
    out = extract(root, FileSource([str(path)]), Interval(dt.date(2014, 1, 2), dt.date(2014, 1, 3)))

    # 96 trips on 2 January; 96 + 8 valid trips on other days are skipped; the broken line (no
    # timestamp) belongs to the day of the row before it (1 January): skipped here, extracted (and
    # quarantined) by the run of 1 January only
    assert out["rows_read"] == 200
    assert out["rows_other_intervals"] == 104 and out["rows_written"] == 96
    day = root.read_partition(root.partition_path("raw", "trips", "2014-01-02"))
    assert day.filter(pc.is_valid(day["_parse_errors"])).num_rows == 0
    first = extract(root, FileSource([str(path)]), Interval(dt.date(2014, 1, 1), dt.date(2014, 1, 2)))
    assert first["rows_written"] == 95 + 1  # 95 valid trips and the broken line
    day = root.read_partition(root.partition_path("raw", "trips", "2014-01-01"))
    assert day.filter(pc.is_valid(day["_parse_errors"]))["_source_row"].to_pylist() == [10]
