"""A CSV full of bad input through the real CLI chain: every line ends curated, quarantined with a reason,
or counted as belonging to another interval. Nothing is lost silently."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from tests.conftest import run_cli

HEADER = (
    "trip_id,trip_start_timestamp,trip_end_timestamp,trip_seconds,trip_miles,fare,tips,payment_type,"
    "pickup_community_area,company\n"
)
# (csv line, expected outcome): "ok", a reject reason, or "other_interval"
LINES: list[tuple[bytes, str]] = [
    (b"a1,2024-05-01T08:00:00,2024-05-01T08:15:00,900,3.1,12.25,3.00,Credit Card,8,Flash Cab\n", "ok"),
    (b"a2,2024-05-01T09:00:00,2024-05-01T09:15:00,900,2.0,9.50,0,Cash,32,\n", "ok"),
    (b"a3,2024-05-01T10:00:00,2024-05-01T10:15:00,900,2.0,-4.00,0,Cash,32,\n", "fare_out_of_range"),
    (b"a4,2024-05-01T11:00:00,2024-05-01T11:15:00,900,2.0,9.50,0,Bitcoin,32,\n", "payment_type_unknown"),
    (b"a5,2024-05-01T12:00:00,2024-05-01T12:00:00,0,4.0,9.50,0,Cash,32,\n", "zero_seconds_positive_miles"),
    (
        b"a1,2024-05-01T08:00:00,2024-05-01T08:15:00,900,3.1,12.25,3.00,Credit Card,8,Flash Cab\n",
        "duplicate_trip",
    ),
    (b"a7,not-a-time,2024-05-01T13:15:00,900,2.0,9.50,0,Cash,32,\n", "unparseable"),
    (b"a8,2024-05-01T14:00:00,2024-05-01T14:15:00,abc,2.0,9.50,0,Cash,32,\n", "unparseable"),
    (b"a9,2024-05-01T15:00:00,2024-05-01T14:15:00,900,2.0,9.50,0,Cash,32,\n", "end_before_start"),
    (b"a10,2024-05-01T16:00:00,only,three\n", "unparseable"),  # malformed line: wrong field count
    (
        b"a11,2024-05-01T17:00:00,2024-05-01T17:15:00,900,2.0,9.50,0,Cash,32,Caf\xe9 Taxi\n",
        "unparseable",
    ),  # bad UTF-8
    (b"a12,2024-05-02T08:00:00,2024-05-02T08:15:00,900,2.0,9.50,0,Cash,32,\n", "other_interval"),
    (
        b"a13,2024-05-01T18:00:00,2024-05-01T18:15:00,900,2.0,9.50,0,Cash,99,\n",
        "pickup_community_area_unknown",
    ),
]


def test_every_bad_line_is_curated_quarantined_or_counted(tmp_path: Path, data_root: Path) -> None:
    csv = tmp_path / "trips.csv"
    csv.write_bytes(HEADER.encode() + b"".join(line for line, _ in LINES))
    window = ["--start", "2024-05-01", "--end", "2024-05-02"]
    extracted = run_cli("extract", "--source", "file", "--mapping", "portal", "--uri", str(csv), *window)
    assert extracted["rows_read"] == len(LINES)
    assert extracted["rows_other_intervals"] == 1
    run_cli("transform", *window)
    run_cli("validate", *window, "--max-reject-rate", "1")
    published = run_cli("publish", *window)

    expected_ok = sum(1 for _, outcome in LINES if outcome == "ok")
    expected_rejected = sum(1 for _, outcome in LINES if outcome not in ("ok", "other_interval"))
    assert published["totals"] == {
        "raw": len(LINES) - 1,
        "curated": expected_ok,
        "quarantined": expected_rejected,
    }

    quarantine = pq.read_table(data_root / "quarantine" / "trips" / "dt=2024-05-01")
    reasons = dict(
        zip(quarantine["trip_id"].to_pylist(), quarantine["reject_reason"].to_pylist(), strict=True)
    )
    for line, outcome in LINES:
        trip_id = line.split(b",", 1)[0].decode()
        if outcome in ("ok", "other_interval") or trip_id in ("a1", "a10"):
            continue
        assert reasons[trip_id].split(";")[0].startswith(outcome), (trip_id, reasons[trip_id])
    # a malformed line keeps no values (which field is which?), only its text and position
    malformed = quarantine.filter(pc.is_null(quarantine["trip_id"]))
    assert malformed.num_rows == 1
    assert malformed["reject_reason"][0].as_py().startswith("unparseable")
    assert "malformed_csv_line: expected 10 fields, got 4" in malformed["_parse_errors"][0].as_py()
    # the second copy of a1 is the duplicate; the first copy is curated
    assert quarantine["trip_id"].to_pylist().count("a1") == 1 and reasons["a1"] == "duplicate_trip"
    curated = pq.read_table(data_root / "curated" / "trips" / "dt=2024-05-01")
    assert sorted(curated["trip_id"].to_pylist()) == ["a1", "a2"]
    # an invalid byte marks the row as corrupt: quarantined, with the byte kept visibly (U+FFFD)
    bad = quarantine.filter(pc.equal(quarantine["trip_id"], "a11"))
    assert bad["company"][0].as_py() == "Caf\ufffd Taxi"
    assert "invalid_utf8 in column company" in bad["_parse_errors"][0].as_py()
