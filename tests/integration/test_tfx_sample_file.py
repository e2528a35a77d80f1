"""`ml-tasks extract --source file --mapping tfx` on the real TFX taxi sample (15,002 trips, 2013-2016)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pytest

from tests.conftest import run_cli

ROWS = 15_002


@pytest.fixture(scope="module")
def extracted(
    chicago_samples: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path, Path]:
    """Run the real CLI once for the module: (its JSON summary, the data root, the sample CSV)."""
    root = tmp_path_factory.mktemp("tfx") / "data"
    sample = chicago_samples / "tfx_simple_data.csv"
    out = run_cli(
        "extract", "--source", "file", "--mapping", "tfx", "--uri", str(sample),
        "--start", "2013-01-01", "--end", "2017-01-01", "--data-root", str(root),
        env={"FLYWHEEL_CODE_VERSION": "test"},  # skips a git call per partition manifest
    )  # fmt: skip
    return out, root, sample


@pytest.fixture(scope="module")
def raw(extracted: tuple[dict[str, Any], Path, Path]) -> pa.Table:
    """Every raw row with its partition key ``dt``, in file order."""
    _, root, _ = extracted
    dataset = ds.dataset(
        root / "raw" / "trips", format="parquet", partitioning="hive"
    )  # skips _manifest.json
    table = dataset.to_table()
    return table.set_column(table.schema.get_field_index("dt"), "dt", table["dt"].cast(pa.string())).sort_by(
        "_source_row"
    )


def test_every_row_lands_in_a_raw_partition(
    extracted: tuple[dict[str, Any], Path, Path], raw: pa.Table
) -> None:
    out, root, sample = extracted

    assert out["rows_read"] == ROWS and out["rows_written"] == ROWS and out["rows_other_intervals"] == 0
    assert len(out["partitions"]) == (dt.date(2017, 1, 1) - dt.date(2013, 1, 1)).days  # empty days included
    assert sum(p["rows"] for p in out["partitions"]) == ROWS
    table = raw
    assert table.num_rows == ROWS
    assert table["_source_row"].to_pylist() == list(range(ROWS))
    assert set(table["_source"].to_pylist()) == {f"file:{sample}"}
    # no malformed lines or unparseable values in this file
    assert table["_parse_errors"].null_count == ROWS
    manifest = json.loads((root / "raw/trips/dt=2014-05-16/_manifest.json").read_text())
    (inp,) = manifest["inputs"]
    assert inp["mapping"] == "tfx" and inp["files"][0]["uri"] == str(sample)
    assert inp["files"][0]["bytes"] == sample.stat().st_size and len(inp["files"][0]["sha256"]) == 64


def test_unix_seconds_become_chicago_wall_clock(
    extracted: tuple[dict[str, Any], Path, Path], raw: pa.Table
) -> None:
    sample = extracted[2]
    table = raw
    first = table.slice(0, 1).to_pylist()[0]

    # line 2: ,12.45,5,19,6,1400269500,,,,,0.0,,,Credit Card,Chicago Elite Cab Corp. (Chicago Carriag,0,,0.0
    assert first["trip_start_timestamp"] == dt.datetime(2014, 5, 16, 19, 45) and first["dt"] == "2014-05-16"
    assert (first["fare"], first["tips"], first["trip_miles"], first["trip_seconds"]) == (12.45, 0.0, 0.0, 0)
    assert first["payment_type"] == "Credit Card"
    assert first["company"] == "Chicago Elite Cab Corp. (Chicago Carriag"
    assert first["pickup_community_area"] is None and first["pickup_centroid_latitude"] is None
    third = table.slice(2, 1).to_pylist()[0]  # 60,27.05,10,2,3,1380593700,41.836150155,-87.648787952,...
    assert third["trip_start_timestamp"] == dt.datetime(2013, 10, 1, 2, 15)
    assert third["pickup_community_area"] == 60 and third["pickup_centroid_latitude"] == 41.836150155

    # every row: the file's own month / hour / weekday columns agree with the converted timestamp
    csv = pacsv.read_csv(sample)
    ts = table["trip_start_timestamp"]
    assert pc.month(ts).to_pylist() == csv["trip_start_month"].to_pylist()
    assert pc.hour(ts).to_pylist() == csv["trip_start_hour"].to_pylist()
    sunday_first = pc.day_of_week(ts, count_from_zero=False, week_start=7)  # the file's 1 = Sunday
    assert sunday_first.to_pylist() == csv["trip_start_day"].to_pylist()
    assert table["dt"].to_pylist() == pc.strftime(ts, "%Y-%m-%d").to_pylist()
    assert pc.sum(table["fare"]).as_py() == pytest.approx(pc.sum(csv["fare"]).as_py())
