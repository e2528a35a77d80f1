"""The bad-input corpus: every file through the real CLI chain, each row's exact outcome, or one error line.

Rows: one CSV holding one of each row problem, read as UTF-8, Latin-1, gzip and CRLF+BOM; every record ends
curated, quarantined with its exact reason, or counted as another interval's, and raw = curated +
quarantined. A ragged line is quarantined whatever bytes it holds and whatever the encoding (finding 5).
Files: inputs that cannot be read at all end in one ``ml-tasks: error:`` line naming the file (finding 4).
More single-problem cases (JSON, Parquet, globs, mappings) are pinned in ``tests/unit/sources``.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli
from tests.reliability.conftest import outcome

HEADER = b"trip_id,trip_start_timestamp,trip_end_timestamp,trip_seconds,trip_miles,fare,tips,payment_type,"
HEADER += b"pickup_community_area,company\n"
WINDOW = ["--start", "2024-05-01", "--end", "2024-05-02"]
OK, OTHER = "ok", "other_interval"
MALFORMED = (
    "unparseable;missing_trip_start_timestamp;missing_trip_seconds;missing_trip_miles;missing_fare;"
    "missing_tips;missing_payment_type"
)
# (record, outcome read as UTF-8, outcome read as Latin-1 when it differs); blank lines are not records
ROWS: list[tuple[bytes, str, str | None]] = [
    (b"a00,2024-05-01T08:00:00,2024-05-01T08:15:00,900,3.1,12.25,3.00,Credit Card,8,Flash Cab", OK, None),
    (b"a01,2024-05-01T09:00:00,only,three", MALFORMED, None),  # ragged, unquoted
    (b"a02,2024-05-01T09:30:00,2024-05-01T09:45:00,900,2.0,9.50,0,Cash,32,Caf\xe9,extra", MALFORMED, None),
    (b"a03,2024-05-01T10:00:00,2024-05-01T10:15:00,900,2.0,9.50,0,Cash,32,Caf\xe9 Taxi", "unparseable", OK),
    (b"a04,garbage,2024-05-01T11:15:00,900,2.0,9.50,0,Cash,32,",
     "unparseable:trip_start_timestamp;missing_trip_start_timestamp", None),
    (b"a05,2024-05-01T11:30:00,2024-05-01T11:45:00,abc,2.0,9.50,0,Cash,32,",
     "unparseable:trip_seconds;missing_trip_seconds", None),
    # no trip_id: trip_key is a hash of the row's values (transform), so the trip stands
    (b",2024-05-01T12:00:00,2024-05-01T12:15:00,900,2.0,9.50,0,Cash,32,", OK, None),
    (b"a07,2024-05-01T12:30:00,2024-05-01T12:45:00,900,2.0,-4.00,0,Cash,32,", "fare_out_of_range", None),
    (b"a08,2024-05-01T13:00:00,2024-05-01T13:15:00,900,1e12,9.50,0,Cash,32,", "trip_miles_out_of_range",
     None),
    (b"a09,2024-05-01T13:30:00,2024-05-01T13:45:00,900,2.0,9.50,0,Bitcoin,32,", "payment_type_unknown", None),
    (b"a00,2024-05-01T08:00:00,2024-05-01T08:15:00,900,3.1,12.25,3.00,Credit Card,8,Flash Cab",
     "duplicate_trip", None),
    (b"a11,2024-05-02T08:00:00,2024-05-02T08:15:00,900,2.0,9.50,0,Cash,32,", OTHER, None),
    (b'a12,2024-05-01T14:00:00,2024-05-01T14:15:00,900,2.0,9.50,0,Cash,32,"Flash\nCab"', OK, None),
    (b"", "blank", None),
    (b"a14,2024-05-01T15:00:00,2024-05-01T14:15:00,900,2.0,9.50,0,Cash,32,", "end_before_start", None),
    (b"a15,2024-05-01T16:00:00,2024-05-01T16:15:00,900,2.0,9.50,0,Cash,99,", "pickup_community_area_unknown",
     None),
]  # fmt: skip
CSV = HEADER + b"".join(line + b"\n" for line, _, _ in ROWS)
FORMS = {
    "utf-8": ("trips.csv", CSV, []),
    "latin-1": ("trips.csv", CSV, ["--option", "encoding=latin-1"]),
    "gzip": ("trips.csv.gz", gzip.compress(CSV, mtime=0), []),
    "crlf+bom": ("trips.csv", b"\xef\xbb\xbf" + CSV.replace(b"\n", b"\r\n"), []),
}


def _expected(form: str) -> dict[int, str]:
    """Outcome per record position (``_source_row``)."""
    records = [(ok, latin) for line, ok, latin in ROWS if ok != "blank"]
    return {i: (latin if form == "latin-1" and latin else ok) for i, (ok, latin) in enumerate(records)}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_record_has_its_exact_outcome(form: str, tmp_path: Path, data_root: Path) -> None:
    name, data, options = FORMS[form]
    path = tmp_path / name
    path.write_bytes(data)
    extracted = run_cli("extract", "--source", "file", "--uri", str(path), *options, *WINDOW)
    run_cli("transform", *WINDOW)
    run_cli("validate", *WINDOW, "--max-reject-rate", "1")
    published = run_cli("publish", *WINDOW)

    expected = _expected(form)
    day = "dt=2024-05-01"
    quarantined = pq.read_table(data_root / "quarantine" / "trips" / day)
    curated = pq.read_table(data_root / "curated" / "trips" / day)
    got = dict(
        zip(quarantined["_source_row"].to_pylist(), quarantined["reject_reason"].to_pylist(), strict=True)
    )
    got |= dict.fromkeys(curated["_source_row"].to_pylist(), OK)
    assert got == {i: o for i, o in expected.items() if o != OTHER}
    assert extracted["rows_read"] == len(expected)
    assert extracted["rows_other_intervals"] == sum(o == OTHER for o in expected.values())
    totals = published["totals"]
    assert totals["raw"] == totals["curated"] + totals["quarantined"] == extracted["rows_written"]


def _gz_truncated() -> bytes:
    data = gzip.compress(HEADER + ROWS[0][0] * 4000, mtime=0)
    return data[: len(data) // 2]


# (name, file name, bytes, extra argv, the one error line after the file's path)
FILES: list[tuple[str, str, bytes, list[str], str]] = [
    ("truncated gzip", "t.csv.gz", _gz_truncated(), [], r"cannot read CSV file {path}: OSError: Truncated"),
    ("binary garbage after the header", "g.csv", HEADER + bytes(range(256)) * 40, [],
     r"file:{path}: none of its \d+ rows has a usable trip_start_timestamp"),
    ("empty", "e.csv", b"", [], r"{path} is empty"),
    ("header with repeated names", "d.csv", b"trip_id,fare,fare\n1,2,3\n", [],
     r"the header of {path} has empty or repeated column names: \['fare'\]"),
    ("semicolons without the option", "s.csv", HEADER.replace(b",", b";") + b"x;y\n", [],
     r"source 'file:{path}' lacks required column\(s\) trip_start_timestamp, "),
    ("invalid header bytes", "h.csv", b"trip_id,f\xffare\n1,2\n", [],
     r"the header line of {path} is not valid"),
    ("broken JSON", "b.json", b'[{"trip_id": "a", ', [], r"cannot read JSON file {path}"),
    ("corrupt Parquet footer", "c.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1", [],
     r"cannot read Parquet file {path}"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "argv", "error"), [f[1:] for f in FILES], ids=[f[0] for f in FILES])
def test_unreadable_file_is_one_line_naming_it(
    name: str, data: bytes, argv: list[str], error: str, tmp_path: Path, data_root: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    result = outcome("extract", "--source", "file", "--uri", str(path), *argv, *WINDOW)

    assert result.error is not None
    assert re.search(error.format(path=re.escape(str(path))), result.error), result.error
    assert not (data_root / "raw").exists() or not any((data_root / "raw").rglob("*.parquet"))


@pytest.mark.parametrize(
    ("uri", "error"),
    [("{tmp}/nothing-*.csv", "pattern .* matches no file"), ("{tmp}/missing.csv", "does not exist")],
)
def test_paths_that_match_nothing(uri: str, error: str, tmp_path: Path, data_root: Path) -> None:
    result = outcome("extract", "--source", "file", "--uri", uri.format(tmp=tmp_path), *WINDOW)
    assert result.error is not None and re.search(error, result.error), result.error
