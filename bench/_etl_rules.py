"""The validation suite's row rules evaluated in pyarrow: the floor of ``validate.gx_vs_pyarrow``.

Same semantics as the GX expectations of ``ml_tasks.validation.rules`` (range and domain rules ignore
nulls, ``missing_*`` own them); ``bench/etl_throughput.py`` fails when the failing rows differ.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.schema import COMMUNITY_AREAS, PAYMENT_TYPES
from ml_tasks.validation.rules import NOT_NULL_COLUMNS, UNPARSEABLE, RuleConfig

_DAY_US = 86_400_000_000


def _ids(mask: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.int64]:
    """Positions where ``mask`` is true (null counts as false)."""
    filled = pc.fill_null(mask, False)
    return np.flatnonzero(filled.to_numpy(zero_copy_only=False)).astype(np.int64)


def _outside(table: pa.Table, days: list[tuple[dt.date, int]]) -> pa.Array:
    """Start timestamp outside its own day partition [D, D+1) (null start: not this rule's row)."""
    start = pc.cast(table["trip_start_timestamp"], pa.int64())
    day_us = np.repeat(
        np.asarray([(d - dt.date(1970, 1, 1)).days * _DAY_US for d, _ in days], dtype=np.int64),
        [n for _, n in days],
    )
    low = pa.array(day_us)
    return pc.or_(pc.less(start, low), pc.greater_equal(start, pc.add(low, _DAY_US)))


def pyarrow_row_ids(
    table: pa.Table, days: list[tuple[dt.date, int]], config: RuleConfig
) -> dict[str, npt.NDArray[np.int64]]:
    """Reject code -> sorted positions of the rows of ``table`` that fail it (``days``: as run_chunk)."""
    fare, tips, miles, seconds = table["fare"], table["tips"], table["trip_miles"], table["trip_seconds"]
    masks: dict[str, pa.ChunkedArray | pa.Array] = {UNPARSEABLE: pc.is_valid(table["_parse_errors"])}
    for col in NOT_NULL_COLUMNS:
        masks[f"missing_{col}"] = pc.is_null(table[col])
    masks["fare_out_of_range"] = pc.or_(pc.less_equal(fare, 0.0), pc.greater(fare, config.max_fare))
    masks["tips_negative"] = pc.less(tips, 0.0)
    masks["trip_seconds_out_of_range"] = pc.or_(
        pc.less(seconds, 0), pc.greater(seconds, config.max_trip_seconds)
    )
    masks["trip_miles_out_of_range"] = pc.or_(pc.less(miles, 0.0), pc.greater(miles, config.max_trip_miles))
    masks["zero_seconds_positive_miles"] = pc.and_(pc.equal(seconds, 0), pc.greater(miles, 0.0))
    masks["end_before_start"] = pc.less(table["trip_end_ts_utc"], table["trip_start_ts_utc"])
    payment = table["payment_type"]
    masks["payment_type_unknown"] = pc.and_(
        pc.is_valid(payment), pc.invert(pc.is_in(payment, value_set=pa.array(PAYMENT_TYPES)))
    )
    areas = pa.array(COMMUNITY_AREAS, pa.int64())
    for side in ("pickup", "dropoff"):
        col = table[f"{side}_community_area"]
        masks[f"{side}_community_area_unknown"] = pc.and_(
            pc.is_valid(col), pc.invert(pc.is_in(col, value_set=areas))
        )
    masks["outside_partition"] = _outside(table, days)
    masks["duplicate_trip"] = pc.equal(table["_is_duplicate"], True)
    return {code: _ids(mask) for code, mask in masks.items()}
