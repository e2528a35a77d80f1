"""The file source: CSV / Parquet / JSON, globs and URIs, and what happens to bad input."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import random
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
from ml_tasks.schema import RAW_SCHEMA, SchemaError
from ml_tasks.settings import Settings
from ml_tasks.sources import get_source
from ml_tasks.sources.base import SourceBatch, SourceError
from ml_tasks.sources.file import FileSource
from ml_tasks.storage import DataRoot

ANY = Interval(dt.date(2014, 1, 1), dt.date(2014, 1, 2))  # a file source is not filtered by interval
HEADER = [
    "trip_id", "trip_start_timestamp", "trip_seconds", "trip_miles", "fare", "tips", "payment_type",
    "pickup_community_area", "company",
]  # fmt: skip


def good_line(i: int) -> str:
    start = dt.datetime(2014, 1, 1) + dt.timedelta(minutes=15 * i)
    return f"t{i:04d},{start:%Y-%m-%dT%H:%M:%S},{60 + i},{i / 10:.1f},{5 + i}.25,1.5,Cash,{1 + i % 77},Co {i}"


def write(path: Path, lines: list[str] | bytes, header: list[str] = HEADER) -> Path:
    data = lines if isinstance(lines, bytes) else ("\n".join([",".join(header), *lines]) + "\n").encode()
    path.write_bytes(data)
    return path


def read_all(source: FileSource) -> tuple[pa.Table, list[SourceBatch]]:
    batches = list(source.read(ANY))
    return pa.concat_tables([RAW_SCHEMA.empty_table()] + [b.table for b in batches]), batches


def test_csv_rows_are_typed_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path / "trips.csv", [good_line(i) for i in range(5)], [*HEADER])
    table, batches = read_all(FileSource([str(path)]))

    assert table.schema == RAW_SCHEMA
    assert table["trip_id"].to_pylist() == [f"t{i:04d}" for i in range(5)]
    assert table["_source_row"].to_pylist() == [0, 1, 2, 3, 4]
    assert set(table["_source"].to_pylist()) == {f"file:{path}"}
    row = table.slice(2, 1).to_pylist()[0]
    assert row["trip_start_timestamp"] == dt.datetime(2014, 1, 1, 0, 30)
    assert (row["trip_seconds"], row["trip_miles"], row["fare"], row["pickup_community_area"]) == (
        62,
        0.2,
        7.25,
        3,
    )
    assert row["company"] == "Co 2" and row["_parse_errors"] is None
    assert "taxi_id" in batches[0].missing_optional and batches[0].extra_columns == ()


def test_extra_columns_are_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.csv", [good_line(0) + ",POINT (-87.6 41.8)"], [*HEADER, "pickup_centroid_location"]
    )
    _, batches = read_all(FileSource([str(path)]))

    assert batches[0].extra_columns == ("pickup_centroid_location",)


def test_malformed_lines_become_rows_at_their_position(tmp_path: Path) -> None:
    lines = [good_line(i) for i in range(400)]
    bad = {0: "x,y,z", 1: "only,three,fields", 57: good_line(57) + ",extra", 58: "b", 250: "c,d", 399: "last"}
    for i, text in bad.items():
        lines[i] = text
    lines.insert(100, "")  # blank lines are not records
    # 4 KiB blocks and 64-row batches: bad lines fall on block and batch boundaries
    table, batches = read_all(
        FileSource([str(write(tmp_path / "m.csv", lines))], batch_rows=64, block_bytes=4096)
    )

    assert table.num_rows == 400 and max(b.table.num_rows for b in batches) <= 64
    assert table["_source_row"].to_pylist() == list(range(400))
    errors = table["_parse_errors"].to_pylist()
    ids = table["trip_id"].to_pylist()
    for i in range(400):
        if i in bad:
            assert errors[i].startswith("malformed_csv_line: expected 9 fields, got "), (i, errors[i])
            assert ids[i] is None and table["trip_start_timestamp"][i].as_py() is None
        else:
            assert ids[i] == f"t{i:04d}" and errors[i] is None, (i, ids[i], errors[i])
    assert errors[0] == "malformed_csv_line: expected 9 fields, got 3 at row 2 (header = row 1): x,y,z"
    assert errors[57].startswith("malformed_csv_line: expected 9 fields, got 10 at row 59")
    assert "at row 401 " in errors[399]  # the blank line is not counted


@pytest.mark.parametrize("batch_rows", [1, 7, 16, 1000])
def test_many_malformed_lines_keep_file_order(tmp_path: Path, batch_rows: int) -> None:
    rng = random.Random(batch_rows)
    lines, kinds = [], []
    for i in range(600):
        if rng.random() < 0.25:
            lines.append(",".join(["bad"] * rng.choice([1, 2, 8, 10, 12])))
            kinds.append("bad")
        else:
            lines.append(good_line(i))
            kinds.append(f"t{i:04d}")
        if rng.random() < 0.05:
            lines.append("")  # blank: not a record
    path = write(tmp_path / "many.csv", lines)
    table, batches = read_all(FileSource([str(path)], batch_rows=batch_rows, block_bytes=4096))

    assert table.num_rows == 600 and max(b.table.num_rows for b in batches) <= batch_rows
    assert table["_source_row"].to_pylist() == list(range(600))
    ids, errors = table["trip_id"].to_pylist(), table["_parse_errors"].to_pylist()
    got = [e.split(":")[0] if e else i for i, e in zip(ids, errors, strict=True)]
    assert got == [k if k != "bad" else "malformed_csv_line" for k in kinds]


def test_invalid_utf8_is_kept_and_flagged(tmp_path: Path) -> None:
    raw = (",".join(HEADER) + "\n").encode()
    raw += good_line(0).encode() + b"\n"
    raw += b"t1,2014-01-01T00:15:00,60,1.0,1\xff.5,0,Cash,8,Caf\xe9 Cab\n"
    raw += good_line(2).encode() + b"\n"
    table, _ = read_all(FileSource([str(write(tmp_path / "u.csv", raw))]))

    assert table.num_rows == 3
    row = table.slice(1, 1).to_pylist()[0]
    assert row["trip_id"] == "t1" and row["company"] == "Caf\ufffd Cab" and row["fare"] is None
    assert row["_parse_errors"] == "invalid_utf8 in column fare;invalid_utf8 in column company;fare=1\ufffd.5"
    assert table["_parse_errors"].null_count == 2


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_malformed_line_is_quarantined_whatever_its_bytes(tmp_path: Path, encoding: str) -> None:
    # a ragged line holding a byte UTF-8 cannot decode: the same policy as any ragged line (it failed
    # the whole file when read as UTF-8: pyarrow cannot hand an undecodable line to the handler)
    path = write(tmp_path / "mu.csv", [good_line(0), good_line(1), "caf\xe9,x", good_line(3)])
    path.write_bytes(path.read_bytes().replace("caf\xe9".encode(), b"caf\xe9"))
    table, _ = read_all(FileSource([str(path)], encoding=encoding))

    shown = "caf\ufffd" if encoding == "utf-8" else "caf\xe9"
    assert table["_source_row"].to_pylist() == [0, 1, 2, 3]
    assert table["trip_id"].to_pylist() == ["t0000", "t0001", None, "t0003"]
    assert table["_parse_errors"].to_pylist() == [
        None,
        None,
        f"malformed_csv_line: expected 9 fields, got 2 at row 4 (header = row 1): {shown},x",
        None,
    ]


def test_latin1_file_with_encoding_option(tmp_path: Path) -> None:
    raw = (",".join(HEADER) + "\n").encode() + "t1,2014-01-01T00:15:00,60,1.0,1.5,0,Cash,8,Café Cab\n".encode(
        "latin-1"
    )
    table, _ = read_all(FileSource([str(write(tmp_path / "l.csv", raw))], encoding="latin-1"))

    assert table["company"].to_pylist() == ["Café Cab"] and table["_parse_errors"].null_count == 1


def test_bom_crlf_and_tsv(tmp_path: Path) -> None:
    crlf = ("\ufeff" + ",".join(HEADER) + "\r\n" + good_line(0) + "\r\n").encode()
    tsv = ("\t".join(HEADER) + "\n" + good_line(1).replace(",", "\t") + "\n").encode()
    table, _ = read_all(
        FileSource([str(write(tmp_path / "a.csv", crlf)), str(write(tmp_path / "b.tsv", tsv))])
    )

    assert table["trip_id"].to_pylist() == ["t0000", "t0001"]
    assert table["company"].to_pylist() == ["Co 0", "Co 1"]


def test_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"empty\.csv is empty"):
        FileSource([str(write(tmp_path / "empty.csv", b""))]).describe(ANY)
    with pytest.raises(SourceError, match="is empty"):
        read_all(FileSource([str(write(tmp_path / "empty.csv", b""))]))
    with pytest.raises(SourceError, match=r"pattern .*nothing-\*\.csv.* matches no file"):
        FileSource([str(tmp_path / "nothing-*.csv")])
    with pytest.raises(SourceError, match="does not exist"):
        FileSource([str(tmp_path / "missing.csv")])
    with pytest.raises(SourceError, match="at least one"):
        FileSource([])

    table, batches = read_all(FileSource([str(write(tmp_path / "header.csv", []))]))
    assert table.num_rows == 0 and table.schema == RAW_SCHEMA and len(batches) == 1


def test_missing_required_column_is_a_schema_error(tmp_path: Path) -> None:
    header = [c for c in HEADER if c != "fare"]
    path = write(
        tmp_path / "nofare.csv",
        [",".join(["t1", "2014-01-01T00:00:00", "1", "1", "1", "Cash", "8", "x"])],
        header,
    )
    with pytest.raises(SchemaError, match="fare"):
        read_all(FileSource([str(path)]))
    with pytest.raises(SchemaError, match="fare"):  # also with no rows at all
        read_all(FileSource([str(write(tmp_path / "nofare-empty.csv", [], header))]))


def test_format_by_extension_or_option(tmp_path: Path) -> None:
    path = write(tmp_path / "trips.dat", [good_line(0)])
    with pytest.raises(SourceError, match="format=csv"):
        FileSource([str(path)])
    table, _ = read_all(FileSource([str(path)], fmt="csv"))
    assert table.num_rows == 1


def test_globs_folders_and_repeated_uris_are_sorted_and_deduplicated(tmp_path: Path) -> None:
    b = write(tmp_path / "b.csv", [good_line(2)])
    a = write(tmp_path / "a.csv", [good_line(0), good_line(1)])
    (tmp_path / "_SUCCESS").write_text("")
    source = FileSource([str(tmp_path / "*.csv"), str(a), str(tmp_path)])
    table, _ = read_all(source)

    assert [f.uri for f in source.files] == [str(a), str(b)]
    assert table["trip_id"].to_pylist() == ["t0000", "t0001", "t0002"]
    assert table["_source_row"].to_pylist() == [0, 1, 0]  # positions within each file
    described = source.describe(ANY)
    assert described["source"] == "file" and described["mapping"] == "portal"
    assert described["uris"] == [str(tmp_path / "*.csv"), str(a), str(tmp_path)]
    assert described["files"][0] == {
        "uri": str(a), "bytes": a.stat().st_size, "sha256": hashlib.sha256(a.read_bytes()).hexdigest(),
        "format": "csv", "mapping": "portal",
    }  # fmt: skip


def test_gzip_csv(tmp_path: Path) -> None:
    plain = write(tmp_path / "p.csv", [good_line(i) for i in range(3)])
    packed = tmp_path / "p2.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    source = FileSource([str(packed)])
    table, _ = read_all(source)

    assert table["trip_id"].to_pylist() == ["t0000", "t0001", "t0002"]
    assert source.describe(ANY)["files"][0]["sha256"] == hashlib.sha256(packed.read_bytes()).hexdigest()


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
