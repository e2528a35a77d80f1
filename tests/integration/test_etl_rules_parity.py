"""The pyarrow floor of ``validate.gx_vs_pyarrow`` (bench/_etl_rules.py) fails exactly the rows GX fails."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench._etl_rules import pyarrow_row_ids
from ml_tasks.intervals import Interval
from ml_tasks.storage import DataRoot
from ml_tasks.transform import transform
from ml_tasks.validation.rules import ROW_CODES, RuleConfig
from ml_tasks.validation.suite import TripSuite
from tests.unit.validation.trip_rows import DAY, read, settings, trip, trips, write_raw

DAY2 = DAY + dt.timedelta(days=1)
BAD: list[dict[str, Any]] = [
    {"fare": None, "_parse_errors": "fare=abc"},
    {"trip_start_timestamp": None},
    {"trip_seconds": None},
    {"trip_miles": None},
    {"tips": None},
    {"payment_type": None},
    {"trip_id": None, "trip_seconds": 0, "trip_miles": 0.5},
    {"fare": 0.0},
    {"fare": 1000.01},
    {"tips": -0.01},
    {"trip_seconds": 86_401},
    {"trip_miles": -0.1},
    {"trip_end_timestamp": dt.datetime(2000, 1, 1)},
    {"payment_type": "cash"},
    {"pickup_community_area": 0},
    {"dropoff_community_area": 99},
    {"pickup_community_area": None, "dropoff_community_area": None},  # null areas are valid
    {"trip_start_timestamp": dt.datetime(9999, 1, 1), "trip_end_timestamp": None},
    {"trip_id": "dup"},
    {"trip_id": "dup"},
]


def test_pyarrow_rules_fail_the_rows_gx_fails(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    tables = []
    for day in (DAY, DAY2):
        bad = [trip(100 + i, day, **{**o, "trip_id": o.get("trip_id", f"b{i}")}) for i, o in enumerate(BAD)]
        # day 2 also gets a trip of day 1: outside_partition must use each row's own day
        extra = [trip(200, DAY, trip_id="early")] if day == DAY2 else []
        write_raw(root, [*trips(30, day), *bad, *extra], day)
        transform(root, Interval(day, day + dt.timedelta(days=1)), settings(tmp_path))
        tables.append(read(root, "staging", "trips", day).replace_schema_metadata(None))
    table = pa.concat_tables(tables)
    days = [(DAY, tables[0].num_rows), (DAY2, tables[1].num_rows)]
    config = RuleConfig()

    gx = TripSuite(config).run_chunk(table, days).row_ids
    ours = pyarrow_row_ids(table, days, config)

    assert set(ours) == set(ROW_CODES)
    for code in ROW_CODES:
        # every rule is exercised, so the comparison can fail (transform never leaves trip_key null)
        assert len(ours[code]) > 0 or code == "missing_trip_key", code
        assert np.array_equal(gx.get(code, np.empty(0, dtype=np.int64)), ours[code]), code
    early = tables[0].num_rows + tables[1]["trip_id"].to_pylist().index("early")
    assert early in ours["outside_partition"]
