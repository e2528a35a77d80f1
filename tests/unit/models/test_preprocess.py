"""Preprocessor: inputs inferred from the schema; vocabularies and statistics fitted on the train split."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from ml_tasks.models.numeric_stats import bin_edges, signed_log1p
from ml_tasks.models.preprocess import Inputs, PreprocessError, Preprocessor, infer_inputs, labels


def table(**columns: list[object]) -> pa.Table:
    return pa.table(columns)


def training_schema(with_features: bool) -> pa.Schema:
    fields = [
        pa.field("trip_key", pa.string()),
        pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
        pa.field("trip_date", pa.date32()),
        pa.field("pickup_community_area", pa.int64()),
        pa.field("dropoff_community_area", pa.int64()),
        pa.field("company", pa.string()),
        pa.field("payment_type", pa.string()),
        pa.field("fare", pa.float64()),
        pa.field("trip_miles", pa.float64()),
        pa.field("trip_seconds", pa.int64()),
        pa.field("big_tipper", pa.bool_()),
        pa.field("trip_start_hour", pa.int8()),
        pa.field("trip_start_day_of_week", pa.int8()),
        pa.field("trip_start_month", pa.int8()),
        pa.field("fare_per_mile", pa.float64()),
        pa.field("speed_mph", pa.float64()),
    ]
    if with_features:
        fields += [
            pa.field("pickup_area_stats__trips_7d", pa.int64()),
            pa.field("company_stats__tip_rate_mean_28d", pa.float64()),
        ]
    return pa.schema(fields)


def test_infer_inputs_from_a_training_set_schema() -> None:
    inputs = infer_inputs(training_schema(with_features=True))
    assert inputs.categorical == (
        "payment_type",
        "company",
        "pickup_community_area",
        "dropoff_community_area",
        "trip_start_hour",
        "trip_start_day_of_week",
        "trip_start_month",
    )
    assert inputs.numeric == (
        "fare",
        "trip_miles",
        "trip_seconds",
        "fare_per_mile",
        "speed_mph",
        "pickup_area_stats__trips_7d",
        "company_stats__tip_rate_mean_28d",
    )
    for never in ("trip_key", "event_timestamp", "trip_date", "big_tipper"):
        assert never not in inputs.columns
    # without Feast columns the same table still has inputs
    assert infer_inputs(training_schema(with_features=False)).numeric[-1] == "speed_mph"


def test_infer_inputs_rejects_unusable_types() -> None:
    schema = training_schema(False).append(pa.field("company_stats__name", pa.string()))
    with pytest.raises(PreprocessError, match="company_stats__name"):
        infer_inputs(schema)
    with pytest.raises(PreprocessError, match="no model input"):
        infer_inputs(pa.schema([pa.field("trip_key", pa.string())]))


def test_vocabulary_min_count_sorted_and_oov_index_zero() -> None:
    train = table(payment_type=["Cash", "Credit Card", "Cash", "Mobile", None, "Credit Card"], fare=[1.0] * 6)
    inputs = Inputs(("payment_type",), ("fare",))
    pre = Preprocessor.fit(train, inputs, min_count=2)
    assert pre.vocabularies[0].values == ("Cash", "Credit Card")  # Mobile seen once, null never counted
    assert pre.vocabulary_sizes() == [3]
    other = table(payment_type=["Credit Card", "Mobile", None, "Cash", "Prcard"], fare=[1.0] * 5)
    assert pre.encode(other).categorical[:, 0].tolist() == [2, 0, 0, 1, 0]


def test_integer_categoricals_of_any_width() -> None:
    train = table(trip_start_hour=pa.array([3, 3, 7, 7, 7], pa.int8()), fare=[1.0] * 5)
    pre = Preprocessor.fit(train, Inputs(("trip_start_hour",), ("fare",)), min_count=1)
    assert pre.vocabularies[0].kind == "int"
    assert pre.vocabularies[0].values == (3, 7)
    test = table(trip_start_hour=pa.array([7, 3, 23, None], pa.int8()), fare=[1.0] * 4)
    assert pre.encode(test).categorical[:, 0].tolist() == [2, 1, 0, 0]


def test_vocabulary_and_stats_come_from_the_table_given_to_fit_only() -> None:
    inputs = Inputs(("company",), ("fare",))
    train = table(company=["A", "A", "B", "B"], fare=[10.0, 20.0, 30.0, 40.0])
    validation = table(company=["C", "C", "C", "A"], fare=[1000.0, 1000.0, 1000.0, 1000.0])
    pre = Preprocessor.fit(train, inputs, min_count=1)
    assert pre.vocabularies[0].values == ("A", "B")
    assert pre.stats[0].mean == pytest.approx(25.0)
    assert pre.stats[0].std == pytest.approx(np.std([10.0, 20.0, 30.0, 40.0]))
    assert pre.encode(validation).categorical[:, 0].tolist() == [0, 0, 0, 1]


def test_numeric_nulls_nan_inf_are_missing_and_ignored_by_the_stats() -> None:
    train = table(
        fare=[1.0, None, 3.0, float("nan"), float("inf")], trip_seconds=pa.array([60, None, 60, 60, 60])
    )
    pre = Preprocessor.fit(train, Inputs((), ("fare", "trip_seconds")))
    fare, seconds = pre.stats
    assert [fare.mean, fare.std] == pytest.approx([2.0, 1.0])
    assert (seconds.mean, seconds.std) == (60.0, 1.0)  # constant column: std 0 stored as 1
    assert seconds.log_std == 1.0
    assert fare.log_mean == pytest.approx((math.log1p(1.0) + math.log1p(3.0)) / 2)
    encoded = pre.encode(train)
    assert encoded.numeric.dtype == np.float32
    assert encoded.categorical.shape == (5, 0)
    assert np.isnan(encoded.numeric[:, 0]).tolist() == [False, True, False, True, True]
    assert np.isnan(encoded.numeric[:, 1]).tolist() == [False, True, False, False, False]


def test_all_null_numeric_column_gets_neutral_stats() -> None:
    train = table(fare=pa.array([None, None], pa.float64()))
    pre = Preprocessor.fit(train, Inputs((), ("fare",)))
    assert (pre.stats[0].mean, pre.stats[0].std) == (0.0, 1.0)


def test_signed_log1p_handles_negative_and_nan() -> None:
    out = signed_log1p(np.array([-math.e + 1, 0.0, math.e - 1, np.nan]))
    assert out[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0])
    assert np.isnan(out[3])


def test_encode_names_every_missing_column_and_wrong_types() -> None:
    pre = Preprocessor.fit(
        table(company=["A"], fare=[1.0], trip_miles=[2.0]), Inputs(("company",), ("fare", "trip_miles")), 1
    )
    with pytest.raises(PreprocessError, match=r"\['company', 'trip_miles'\]"):
        pre.encode(table(fare=[1.0]))
    with pytest.raises(PreprocessError, match=r"'fare'.*integer or float"):
        pre.encode(table(company=["A"], fare=["1.0"], trip_miles=[2.0]))
    with pytest.raises(PreprocessError, match="'company' was fitted on string"):
        pre.encode(table(company=[1], fare=[1.0], trip_miles=[2.0]))


def test_round_trip_and_hash() -> None:
    train = table(
        payment_type=["Cash", "Cash", "Credit Card"],
        pickup_community_area=[8, 8, 32],
        fare=[5.0, 7.5, 12.25],
    )
    inputs = Inputs(("payment_type", "pickup_community_area"), ("fare",))
    pre = Preprocessor.fit(train, inputs, min_count=1)
    again = Preprocessor.from_json(pre.to_json())
    assert again == pre
    assert again.sha256() == pre.sha256()
    assert len(pre.sha256()) == 64
    np.testing.assert_array_equal(again.encode(train).categorical, pre.encode(train).categorical)
    # any change of the fitted values changes the hash
    other = Preprocessor.fit(train.slice(0, 2), inputs, min_count=1)
    assert other.sha256() != pre.sha256()
    assert Preprocessor.fit(train, inputs, min_count=2).sha256() != pre.sha256()


def test_bin_edges_are_distinct_train_quantiles() -> None:
    values = np.arange(101, dtype=np.float64)
    assert bin_edges(values, 4) == (0.0, 25.0, 50.0, 75.0, 100.0)
    # few distinct values: duplicate quantiles merge into fewer bins; NaN is ignored
    few = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 3.0, np.nan])
    assert bin_edges(few, 32) == (1.0, 2.0, 3.0)
    assert bin_edges(np.array([5.0, 5.0, np.nan]), 8) == ()  # constant: nothing to split
    assert bin_edges(np.array([np.nan]), 8) == ()
    assert bin_edges(values, 0) == ()


def test_fit_stores_bin_edges_in_the_dict_and_hash() -> None:
    train = table(fare=[float(v) for v in range(20)] + [None], trip_miles=[1.0] * 21)
    inputs = Inputs((), ("fare", "trip_miles"))
    pre = Preprocessor.fit(train, inputs, min_count=1, numeric_bins=4, min_rows_per_bin=1)
    assert pre.stats[0].edges == (0.0, 4.0, 9.0, 14.0, 19.0)
    assert pre.stats[1].edges == ()
    assert pre.max_bins() == 4
    data = pre.to_dict()
    assert data["numeric"][0]["edges"] == [0.0, 4.0, 9.0, 14.0, 19.0]
    assert "edges" not in data["numeric"][1]  # no bins: the format-1 JSON of before bins, same hash
    again = Preprocessor.from_json(pre.to_json())
    assert again == pre and again.stats[0].edges == pre.stats[0].edges
    coarser = Preprocessor.fit(train, inputs, min_count=1, numeric_bins=2, min_rows_per_bin=1)
    assert coarser.sha256() != pre.sha256()
    assert Preprocessor.fit(train, inputs, min_count=1, numeric_bins=4).max_bins() == 0  # 20 rows < 250
    off = Preprocessor.fit(train, inputs, min_count=1, numeric_bins=0, min_rows_per_bin=1)
    assert off.max_bins() == 0 and all("edges" not in s for s in off.to_dict()["numeric"])
    with pytest.raises(PreprocessError, match="numeric_bins"):
        Preprocessor.fit(train, inputs, numeric_bins=-1)
    for bad in ([1.0], [1.0, 1.0], [2.0, 1.0]):
        broken = {**data, "numeric": [{**data["numeric"][0], "edges": bad}, data["numeric"][1]]}
        with pytest.raises(PreprocessError, match="bin edges"):
            Preprocessor.from_dict(broken)


def test_from_dict_errors() -> None:
    pre = Preprocessor.fit(table(fare=[1.0]), Inputs((), ("fare",)))
    data = pre.to_dict()
    with pytest.raises(PreprocessError, match="format_version"):
        Preprocessor.from_dict({**data, "format_version": 99})
    broken = {**data, "numeric": [{"column": "fare"}]}
    with pytest.raises(PreprocessError, match="malformed"):
        Preprocessor.from_dict(broken)
    with pytest.raises(PreprocessError, match="min_count"):
        Preprocessor.fit(table(fare=[1.0]), Inputs((), ("fare",)), min_count=0)


def test_labels() -> None:
    assert labels(table(big_tipper=[True, False, True])).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(PreprocessError, match="null"):
        labels(table(big_tipper=[True, None]))
    with pytest.raises(PreprocessError, match="no label column"):
        labels(table(fare=[1.0]))


def test_target_aware_edges_fall_on_the_labels_steps() -> None:
    """Quantile edges sit where the fares are dense; a tree on the label puts one at the 10 $ step."""
    rng = np.random.default_rng(0)
    fare = np.round(rng.gamma(2.0, 4.0, 6000) + 3.0, 2)
    label = rng.uniform(size=fare.size) < np.where(fare <= 10.0, 0.8, 0.3)
    train = pa.table({"fare": fare, "big_tipper": label})
    target = Preprocessor.fit(train, Inputs((), ("fare",)), numeric_bins=4, bin_method="target")
    quantile = Preprocessor.fit(train, Inputs((), ("fare",)), numeric_bins=4, bin_method="quantile")
    nearest = {name: min(abs(e - 10.0) for e in p.stats[0].edges) for name, p in (("target", target),
               ("quantile", quantile))}  # fmt: skip
    assert nearest["target"] < 0.01 < nearest["quantile"]
    edges = target.stats[0].edges
    assert edges[0] == pytest.approx(fare.min()) and edges[-1] == pytest.approx(fare.max())
    assert 2 < len(edges) <= 5 and bool(np.all(np.diff(edges) > 0))
    with pytest.raises(PreprocessError, match="bin_method"):
        Preprocessor.fit(train, Inputs((), ("fare",)), bin_method="median")  # type: ignore[arg-type]
