"""The validation rules: one stable reject code each, expressed as great-expectations expectations.

Row rules quarantine a row with their code (``reject_reason`` lists codes in the order defined here);
batch rules (schema, empty, reject share) fail the whole day. Codes are a contract: change one only
with a migration note. The rules are plain data (expectation type and kwargs): this module does not
import great_expectations, whose objects are built only when GX runs (:func:`.suite.gx_expectation`).
See ``docs/ingest.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ml_tasks.schema import COMMUNITY_AREAS, PAYMENT_TYPES, RAW_COLUMNS
from ml_tasks.settings import Settings

# the GX suite's name, its index of row positions and its result format (the row ids of failing rows)
SUITE_NAME = "flywheel_taxi_trips"
ROW_ID = "_row_id"
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW_ID],
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 20,
}
# suite parameters filled per partition at validation time
PARTITION_START = "partition_start"
PARTITION_END = "partition_end"

# prefix of the unparseable code; the full reason names the columns: "unparseable:fare,tips"
UNPARSEABLE = "unparseable"
# columns that must be non-null for a trip to be usable for the big-tipper label and its features
NOT_NULL_COLUMNS: tuple[str, ...] = (
    "trip_key",
    "trip_start_timestamp",
    "trip_seconds",
    "trip_miles",
    "fare",
    "tips",
    "payment_type",
)


@dataclass(frozen=True)
class RuleConfig:
    """Thresholds of the rules (defaults: the portal's plausible ranges)."""

    max_fare: float = 1000.0
    max_trip_miles: float = 1000.0
    max_trip_seconds: int = 86_400
    max_reject_rate: float = 0.05
    allow_empty: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RuleConfig:
        """Thresholds from settings (env ``FLYWHEEL_MAX_FARE`` etc., or CLI flags)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class ExpectationSpec:
    """One GX expectation as plain data (no great_expectations import): what GX's configuration holds.

    ``kwargs`` are in the form GX's ``Expectation.configuration`` reports them (bounds of a between
    check as floats, a row condition as its dict); :func:`.suite.gx_expectation` builds the GX object.
    """

    type: str  # GX's expectation_type, e.g. "expect_column_values_to_not_be_null"
    kwargs: dict[str, Any]
    meta: dict[str, Any]
    notes: str


@dataclass(frozen=True)
class RowRule:
    """A row-level rule: its reject code, what it means, and the GX expectation (type, kwargs) checking it."""

    code: str
    description: str
    columns: tuple[str, ...]  # what GX reads (the frame handed to GX holds only these)
    expectation_type: str
    kwargs: Callable[[RuleConfig], dict[str, Any]]

    def spec(self, config: RuleConfig) -> ExpectationSpec:
        """The rule's expectation for ``config``, with its reject code in ``meta``."""
        meta = {"reject_code": self.code}
        return ExpectationSpec(self.expectation_type, self.kwargs(config), meta, self.description)


def _param(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"


def _not_null(column: str) -> RowRule:
    return RowRule(
        code=f"missing_{column}",
        description=f"{column} is required and must not be null",
        columns=(column,),
        expectation_type=NOT_NULL,
        kwargs=lambda c: {"column": column},
    )


ROW_RULES: tuple[RowRule, ...] = (
    RowRule(
        code=UNPARSEABLE,
        description="a source value could not be typed (see _parse_errors); reason lists the columns",
        columns=("_parse_errors",),
        expectation_type="expect_column_values_to_be_null",
        kwargs=lambda c: {"column": "_parse_errors"},
    ),
    *(_not_null(col) for col in NOT_NULL_COLUMNS),
    RowRule(
        code="fare_out_of_range",
        description="fare must be > 0 and <= max_fare",
        columns=("fare",),
        expectation_type=BETWEEN,
        kwargs=lambda c: {
            "column": "fare",
            "min_value": 0.0,
            "max_value": float(c.max_fare),
            "strict_min": True,
        },
    ),
    RowRule(
        code="tips_negative",
        description="tips must be >= 0",
        columns=("tips",),
        expectation_type=BETWEEN,
        kwargs=lambda c: {"column": "tips", "min_value": 0.0},
    ),
    RowRule(
        code="trip_seconds_out_of_range",
        description="trip_seconds must be within 0..max_trip_seconds (one day)",
        columns=("trip_seconds",),
        expectation_type=BETWEEN,
        kwargs=lambda c: {"column": "trip_seconds", "min_value": 0.0, "max_value": float(c.max_trip_seconds)},
    ),
    RowRule(
        code="trip_miles_out_of_range",
        description="trip_miles must be within 0..max_trip_miles",
        columns=("trip_miles",),
        expectation_type=BETWEEN,
        kwargs=lambda c: {"column": "trip_miles", "min_value": 0.0, "max_value": float(c.max_trip_miles)},
    ),
    RowRule(
        code="zero_seconds_positive_miles",
        description="a trip of 0 seconds cannot cover a positive distance",
        columns=("trip_miles", "trip_seconds"),
        expectation_type=BETWEEN,
        kwargs=lambda c: {
            "column": "trip_miles",
            "max_value": 0.0,
            # GX's row condition `Column("trip_seconds") == 0`, as its configuration serialises it
            "row_condition": {
                "type": "comparison",
                "column": {"name": "trip_seconds"},
                "operator": "==",
                "parameter": 0,
            },
        },
    ),
    RowRule(
        code="end_before_start",
        description="trip_end_timestamp must not be before trip_start_timestamp (compared as UTC instants)",
        columns=("trip_end_ts_utc", "trip_start_ts_utc"),
        expectation_type="expect_column_pair_values_a_to_be_greater_than_b",
        kwargs=lambda c: {
            "column_A": "trip_end_ts_utc",
            "column_B": "trip_start_ts_utc",
            "or_equal": True,
            "ignore_row_if": "either_value_is_missing",
        },
    ),
    RowRule(
        code="payment_type_unknown",
        description="payment_type must be one of schema.PAYMENT_TYPES",
        columns=("payment_type",),
        expectation_type=IN_SET,
        kwargs=lambda c: {"column": "payment_type", "value_set": list(PAYMENT_TYPES)},
    ),
    RowRule(
        code="pickup_community_area_unknown",
        description="pickup_community_area must be 1..77 or null (null: outside Chicago)",
        columns=("pickup_community_area",),
        expectation_type=IN_SET,
        kwargs=lambda c: {"column": "pickup_community_area", "value_set": list(COMMUNITY_AREAS)},
    ),
    RowRule(
        code="dropoff_community_area_unknown",
        description="dropoff_community_area must be 1..77 or null (null: outside Chicago)",
        columns=("dropoff_community_area",),
        expectation_type=IN_SET,
        kwargs=lambda c: {"column": "dropoff_community_area", "value_set": list(COMMUNITY_AREAS)},
    ),
    RowRule(
        code="outside_partition",
        description="trip_start_timestamp (local wall clock) must fall inside the partition's day [D, D+1)",
        columns=("trip_start_timestamp",),
        expectation_type=BETWEEN,
        kwargs=lambda c: {
            "column": "trip_start_timestamp",
            "min_value": _param(PARTITION_START),  # a GX suite parameter
            "max_value": _param(PARTITION_END),
            "strict_max": True,
        },
    ),
    RowRule(
        code="duplicate_trip",
        description="a later copy of a trip_key already seen in the partition (transform keeps the first)",
        columns=("_is_duplicate",),
        expectation_type=IN_SET,
        kwargs=lambda c: {"column": "_is_duplicate", "value_set": [False]},
    ),
)

ROW_CODES: tuple[str, ...] = tuple(r.code for r in ROW_RULES)

SCHEMA_MISMATCH = "schema_mismatch"
EMPTY_PARTITION = "empty_partition"
REJECT_RATE_EXCEEDED = "reject_rate_exceeded"
BATCH_CODES: tuple[str, ...] = (SCHEMA_MISMATCH, EMPTY_PARTITION, REJECT_RATE_EXCEEDED)

# the raw columns _parse_errors can name, in schema order (the order of columns in "unparseable:...")
PARSEABLE_COLUMNS: tuple[str, ...] = tuple(RAW_COLUMNS)


def gx_columns() -> list[str]:
    """The columns GX needs, in schema order of first use."""
    seen: dict[str, None] = {}
    for rule in ROW_RULES:
        for col in rule.columns:
            seen.setdefault(col, None)
    return list(seen)


def row_count_expectation(config: RuleConfig) -> ExpectationSpec:
    """The ``empty_partition`` batch rule (a GX table expectation)."""
    return ExpectationSpec(
        "expect_table_row_count_to_be_between",
        {"min_value": 0 if config.allow_empty else 1},
        {"batch_code": EMPTY_PARTITION},
        "a day partition must have trips unless allow_empty is set",
    )


def suite_specs(config: RuleConfig) -> list[ExpectationSpec]:
    """The suite's expectations in order: one per row rule, then the row count (``empty_partition``)."""
    return [rule.spec(config) for rule in ROW_RULES] + [row_count_expectation(config)]
