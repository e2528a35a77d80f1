"""The file source on CSV: types, malformed lines, encodings, empty input, globs and gzip."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import random
from pathlib import Path

import pytest

from ml_tasks.schema import RAW_SCHEMA, SchemaError
from ml_tasks.sources.base import SourceError
from ml_tasks.sources.file import FileSource
from tests.unit.sources._file_source import ANY, HEADER, good_line, read_all, write


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
