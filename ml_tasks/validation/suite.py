"""The GX side: an ephemeral context, the suite defined in code, and row ids of failing rows.

Row ids come back as one list per expectation (a named ``_row_id`` index, ``Batch.validate``, only the
columns the rules read): ~2.5 s per 1M rows. The measurements are in ``docs/ingest.md``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.expectation import Expectation

from ml_tasks.errors import FlywheelError
from ml_tasks.validation.rules import (
    EMPTY_PARTITION,
    PARTITION_END,
    PARTITION_START,
    RESULT_FORMAT,
    ROW_ID,
    SUITE_NAME,
    ExpectationSpec,
    RuleConfig,
    gx_columns,
    suite_specs,
)

log = logging.getLogger(__name__)


class GxEvaluationError(FlywheelError, RuntimeError):
    """GX could not evaluate an expectation (a bug or a broken frame, never a data verdict)."""


@dataclass
class GxOutcome:
    """What one GX run decided about one partition."""

    result: ExpectationSuiteValidationResult
    row_ids: dict[str, npt.NDArray[np.int64]]  # reject code -> failing row positions (sorted)
    row_count_ok: bool
    seconds: float
    unexpected_counts: dict[str, int] = field(default_factory=dict)  # as GX reported them


# pandas nanosecond timestamps span 1677-09-21 .. 2262-04-11
NS_SAFE_MIN = dt.datetime(1678, 1, 1)
NS_SAFE_MAX = dt.datetime(2262, 1, 1)


def _clamp_to_ns_range(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Clamp absurd timestamps (year 9999 parses fine) into pandas' nanosecond range.

    A clamped value stays far outside any day partition, so ``outside_partition`` still rejects the
    row; without the clamp the conversion to pandas would fail for the whole partition.
    """
    typ = values.type
    tz = dt.UTC if typ.tz else None
    low = pa.scalar(NS_SAFE_MIN.replace(tzinfo=tz), typ)
    high = pa.scalar(NS_SAFE_MAX.replace(tzinfo=tz), typ)
    # if_else keeps nulls null (min/max_element_wise would replace them by the bound)
    capped = pc.if_else(pc.greater(values, high), high, values)
    return pc.if_else(pc.less(capped, low), low, capped)


def gx_frame(table: pa.Table, day_shift: pa.Array | None = None) -> pd.DataFrame:
    """The columns the rules read, as pandas, indexed by ``_row_id`` (position in ``table``).

    ``day_shift`` (one duration per row, multi-day chunks only): how far the row's own partition day
    lies after the chunk's first day. ``trip_start_timestamp`` is moved back by it, so that
    ``outside_partition`` (start in ``[D, D+1)`` for the row's own day D) becomes the same bounds
    ``[D0, D0+1)`` for every row of the chunk: one expectation, the same verdict per row (a shift
    by whole days preserves the comparison; timestamps are floating wall-clock times, days are 24 h).
    """
    columns = table.select(gx_columns())
    if day_shift is not None:
        i = columns.schema.get_field_index("trip_start_timestamp")
        # shift in Arrow (microseconds, +-290k years) before the clamp to pandas' nanosecond range
        shifted = pc.subtract(columns["trip_start_timestamp"], day_shift)
        columns = columns.set_column(i, "trip_start_timestamp", shifted)
    for i, fld in enumerate(columns.schema):
        if pa.types.is_timestamp(fld.type):
            columns = columns.set_column(i, fld.name, _clamp_to_ns_range(columns[fld.name]))
    # Strings as pandas categoricals (dictionary-encoded in Arrow): GX fingerprints and copies the frame
    # per metric, and object columns make that the dominant cost (1M rows: 3.5 s -> 2.1 s).
    for i, fld in enumerate(columns.schema):
        if pa.types.is_string(fld.type):
            columns = columns.set_column(i, fld.name, pc.dictionary_encode(columns[fld.name]))
    # nanosecond timestamps: GX's between-check is vectorised only for datetime64[ns] (per-row Python
    # otherwise: 7 s instead of 0.1 s per 1M rows)
    frame: pd.DataFrame = columns.to_pandas(coerce_temporal_nanoseconds=True)
    frame.index = pd.RangeIndex(table.num_rows, name=ROW_ID)
    return frame


def gx_expectation(spec: ExpectationSpec) -> Expectation:
    """The GX expectation object of ``spec`` (its class by GX's expectation type name)."""
    cls = getattr(gxe, "".join(part.capitalize() for part in spec.type.split("_")))
    exp: Expectation = cls(**spec.kwargs)
    exp.meta = dict(spec.meta)
    exp.notes = spec.notes
    return exp


def suite_expectations(config: RuleConfig) -> list[Expectation]:
    """The suite's expectations in order: one per row rule, then the row count (``empty_partition``)."""
    return [gx_expectation(spec) for spec in suite_specs(config)]


class TripSuite:
    """The trips expectation suite in an ephemeral GX context, reusable across day partitions."""

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self._batch_definition: Any = None  # the GX context, made on the first run (not for empty days)
        self.suite: gx.ExpectationSuite | None = None

    def _batch(self, frame: pd.DataFrame) -> Any:
        """A GX batch of ``frame``; the ephemeral context and the suite are made on the first call."""
        if self._batch_definition is None:
            context = gx.get_context(mode="ephemeral")
            # tqdm bars on stderr would drown the step's own log lines
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            asset = context.data_sources.add_pandas("flywheel").add_dataframe_asset("staging_trips")
            self._batch_definition = asset.add_batch_definition_whole_dataframe("day_partition")
            suite = gx.ExpectationSuite(name=SUITE_NAME, expectations=suite_expectations(self.config))
            self.suite = context.suites.add(suite)
        return self._batch_definition.get_batch(batch_parameters={"dataframe": frame})

    def run(self, table: pa.Table, day: dt.date) -> GxOutcome:
        """Validate one day's rows; return GX's result and the failing row ids per reject code."""
        return self.run_chunk(table, [(day, table.num_rows)])

    def run_chunk(self, table: pa.Table, days: list[tuple[dt.date, int]]) -> GxOutcome:
        """Validate the rows of several whole days at once (``table``: the days concatenated in order).

        Args:
            table: the rows of ``days``, each day's rows contiguous, in the order of ``days``.
            days: (partition day, row count) per day; the counts add up to ``table.num_rows``.

        Returns:
            the outcome over the chunk: row ids are positions in ``table``; the row-count expectation
            judged the whole chunk (per-day row counts are the caller's, see :mod:`.step`).
        """
        started = time.perf_counter()
        day_rows = [n for _, n in days]
        if sum(day_rows) != table.num_rows:  # pragma: no cover - a caller bug
            raise ValueError(f"day row counts {sum(day_rows)} != {table.num_rows} rows in the chunk")
        first = days[0][0]
        shift = None
        if len(days) > 1:
            offsets = np.repeat(
                np.asarray([(d - first).days for d, _ in days], dtype=np.int64) * 86_400_000_000, day_rows
            )
            shift = pa.array(offsets.astype("timedelta64[us]"), pa.duration("us"))
        frame = gx_frame(table, shift)
        batch = self._batch(frame)
        bounds = {
            PARTITION_START: dt.datetime.combine(first, dt.time()),
            PARTITION_END: dt.datetime.combine(first + dt.timedelta(days=1), dt.time()),
        }
        result = batch.validate(self.suite, result_format=RESULT_FORMAT, expectation_parameters=bounds)
        # GX's execution engine keeps the last batch's frame, and through its zero-copy columns the
        # Arrow buffers of the whole day it came from: drop it (one day in memory, not two)
        manager = batch.data.execution_engine.batch_manager
        manager.reset_batch_cache()
        manager.batch_data_cache.clear()
        del batch, frame
        seconds = time.perf_counter() - started
        row_ids: dict[str, npt.NDArray[np.int64]] = {}
        counts: dict[str, int] = {}
        row_count_ok = True
        for res in result.results:
            meta = (res.expectation_config.meta or {}) if res.expectation_config else {}
            info = res.exception_info or {}
            if info.get("raised_exception"):
                raise GxEvaluationError(
                    f"GX could not evaluate {res.expectation_config.type if res.expectation_config else '?'}"
                    f" ({meta}): {info.get('exception_message')}"
                )
            if meta.get("batch_code") == EMPTY_PARTITION:
                row_count_ok = bool(res.success)
                continue
            code = meta["reject_code"]
            ids = _row_ids(res.result)
            count = int(res.result.get("unexpected_count") or 0)
            if len(ids) != count:  # pragma: no cover - would mean GX changed its result format
                raise GxEvaluationError(f"GX returned {len(ids)} row ids for {code} but counted {count}")
            row_ids[code] = ids
            counts[code] = count
        log.info(
            "GX: %d expectations on %d rows of %d day(s) in %.2f s",
            len(result.results), table.num_rows, len(days), seconds,
        )  # fmt: skip
        return GxOutcome(result, row_ids, row_count_ok, seconds, counts)


def _row_ids(result: dict[str, Any]) -> npt.NDArray[np.int64]:
    """Failing row ids from a COMPLETE result with ``exclude_unexpected_values`` ([{"_row_id": [...]}])."""
    ids: list[int] = []
    for entry in result.get("unexpected_index_list") or []:
        ids.extend(entry[ROW_ID])
    return np.unique(np.asarray(ids, dtype=np.int64))
