"""The rules as plain data match what great_expectations makes of them (type names, kwargs, meta).

accounting.json names each rule's expectation type and an empty day's gx_result.json lists every
expectation's configuration, both without importing GX: these strings and dicts must be exactly what GX's
own classes report, or the files of a day with rows and of an empty day would drift apart.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from great_expectations.expectations.core.expect_column_pair_values_a_to_be_greater_than_b import (
    ExpectColumnPairValuesAToBeGreaterThanB,
)
from great_expectations.expectations.core.expect_column_values_to_be_between import (
    ExpectColumnValuesToBeBetween,
)
from great_expectations.expectations.core.expect_column_values_to_be_in_set import ExpectColumnValuesToBeInSet
from great_expectations.expectations.core.expect_column_values_to_be_null import ExpectColumnValuesToBeNull
from great_expectations.expectations.core.expect_column_values_to_not_be_null import (
    ExpectColumnValuesToNotBeNull,
)
from great_expectations.expectations.core.expect_table_row_count_to_be_between import (
    ExpectTableRowCountToBeBetween,
)
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.row_conditions import Column

from ml_tasks.validation.rules import (
    NOT_NULL_COLUMNS,
    ROW_CODES,
    ROW_RULES,
    ExpectationSpec,
    RuleConfig,
    suite_specs,
)
from ml_tasks.validation.suite import gx_expectation, suite_expectations

CONFIGS = (
    RuleConfig(),
    RuleConfig(max_fare=250, max_trip_miles=40, max_trip_seconds=7200, allow_empty=True),
    RuleConfig(max_fare=99.5, max_trip_miles=12.25, max_trip_seconds=3600, max_reject_rate=0.5),
)


#: the GX class checking each rule (the classes the rules were built from before they became plain data)
GX_CLASS: dict[str, type[Expectation]] = {
    "unparseable": ExpectColumnValuesToBeNull,
    **{f"missing_{c}": ExpectColumnValuesToNotBeNull for c in NOT_NULL_COLUMNS},
    "fare_out_of_range": ExpectColumnValuesToBeBetween,
    "tips_negative": ExpectColumnValuesToBeBetween,
    "trip_seconds_out_of_range": ExpectColumnValuesToBeBetween,
    "trip_miles_out_of_range": ExpectColumnValuesToBeBetween,
    "zero_seconds_positive_miles": ExpectColumnValuesToBeBetween,
    "end_before_start": ExpectColumnPairValuesAToBeGreaterThanB,
    "payment_type_unknown": ExpectColumnValuesToBeInSet,
    "pickup_community_area_unknown": ExpectColumnValuesToBeInSet,
    "dropoff_community_area_unknown": ExpectColumnValuesToBeInSet,
    "outside_partition": ExpectColumnValuesToBeBetween,
    "duplicate_trip": ExpectColumnValuesToBeInSet,
}


def _json(value: Any) -> str:
    """``value`` as the report files write it (json_bytes: sorted keys, default=str): 0 and 0.0 differ."""
    return json.dumps(value, sort_keys=True, default=str)


def test_every_rule_type_is_the_type_gx_reports() -> None:
    assert sorted(GX_CLASS) == sorted(ROW_CODES)
    for rule in ROW_RULES:
        cls = GX_CLASS[rule.code]
        assert rule.expectation_type == cls.expectation_type, rule.code
        exp = gx_expectation(rule.spec(RuleConfig()))
        assert type(exp) is cls, rule.code
        assert exp.expectation_type == rule.expectation_type
        assert exp.meta == {"reject_code": rule.code}
        assert exp.notes == rule.description
    row_count = gx_expectation(suite_specs(RuleConfig())[-1])
    assert type(row_count) is ExpectTableRowCountToBeBetween


@pytest.mark.parametrize("config", CONFIGS, ids=["defaults", "ints-allow-empty", "floats"])
def test_specs_equal_gx_configurations(config: RuleConfig) -> None:
    specs = suite_specs(config)
    expectations = suite_expectations(config)
    assert len(specs) == len(expectations) == len(ROW_RULES) + 1
    for spec, exp in zip(specs, expectations, strict=True):
        cfg = exp.configuration
        assert cfg.type == spec.type == exp.expectation_type
        assert _json(dict(cfg.kwargs)) == _json(spec.kwargs), spec.meta
        assert dict(cfg.meta or {}) == spec.meta
    row_count = specs[-1]
    assert row_count == ExpectationSpec(
        "expect_table_row_count_to_be_between",
        {"min_value": 0 if config.allow_empty else 1},
        {"batch_code": "empty_partition"},
        "a day partition must have trips unless allow_empty is set",
    )
    by_code = {s.meta.get("reject_code"): s.kwargs for s in specs}
    assert by_code["fare_out_of_range"]["max_value"] == float(config.max_fare)
    assert by_code["trip_seconds_out_of_range"]["max_value"] == float(config.max_trip_seconds)
    assert by_code["trip_miles_out_of_range"]["max_value"] == float(config.max_trip_miles)


def test_row_condition_is_gxs_own() -> None:
    spec = next(r for r in ROW_RULES if r.code == "zero_seconds_positive_miles").spec(RuleConfig())
    exp = gx_expectation(spec)
    assert isinstance(exp, ExpectColumnValuesToBeBetween)
    assert exp.row_condition == (Column("trip_seconds") == 0)
