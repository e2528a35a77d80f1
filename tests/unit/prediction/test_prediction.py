"""Batch prediction helpers: model specs, shard assignment, the output schema, missing features, errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ml_tasks.intervals import Interval
from ml_tasks.models.preprocess import Inputs
from ml_tasks.models.registry import RegistryError
from ml_tasks.prediction import predict as p
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot

MODEL = p.ResolvedModel(
    name="taxi_tips",
    version="3",
    run_id="abc",
    uri="models:/taxi_tips/3",
    onnx_sha256="f" * 64,
    feature_service="taxi_tips_v1",
    threshold=0.4123456789,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("taxi_tips@champion", ("taxi_tips", "champion", None)),
        ("taxi_tips/12", ("taxi_tips", None, "12")),
        ("models:/taxi_tips@challenger", ("taxi_tips", "challenger", None)),
        ("models:/taxi_tips/3", ("taxi_tips", None, "3")),
        (" taxi-tips.v2@champion ", ("taxi-tips.v2", "champion", None)),
    ],
)
def test_model_specs_parse(spec: str, expected: tuple[str, str | None, str | None]) -> None:
    assert p.parse_model_spec(spec) == expected


@pytest.mark.parametrize(
    "spec", ["taxi_tips", "taxi_tips@", "taxi_tips/v3", "models:/taxi_tips/3/4", "", "@champion", "a b@c"]
)
def test_bad_model_specs_are_refused_with_the_forms(spec: str) -> None:
    with pytest.raises(ValueError, match=r"is not NAME@ALIAS, NAME/VERSION"):
        p.parse_model_spec(spec)


def test_error_types_map_to_the_cli_families() -> None:
    from ml_tasks.features.store import FeatureStoreError

    assert issubclass(p.NoModelError, RegistryError) and issubclass(p.ModelLoadError, RegistryError)
    assert issubclass(p.FeatureServiceMismatch, FeatureStoreError)
    assert issubclass(p.FeatureServiceMismatch, p.PredictionError)


@pytest.mark.parametrize("rows", [0, 1, 2, 5, 17, 1000])
@pytest.mark.parametrize("shards", [1, 2, 3, 8])
def test_shards_cover_every_row_exactly_once_and_are_balanced(rows: int, shards: int) -> None:
    parts = [p.shard_positions(rows, i, shards) for i in range(shards)]
    merged = np.concatenate(parts)
    assert merged.dtype == np.int64
    np.testing.assert_array_equal(np.sort(merged), np.arange(rows))
    sizes = [len(part) for part in parts]
    assert sum(sizes) == rows and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(("shard", "shards"), [(0, 0), (3, 3), (-1, 2), (5, 2)])
def test_bad_shard_numbers_are_refused(shard: int, shards: int) -> None:
    with pytest.raises(ValueError, match=f"shard {shard} of {shards}"):
        p.check_shard(shard, shards)


def _trips(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    # few distinct instants: many ties broken by trip_key
    seconds = rng.integers(0, 5, n) * 60
    ts = [dt.datetime(2024, 4, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=int(s)) for s in seconds]
    keys = [f"k{int(k):05d}" for k in rng.permutation(n)]
    return pa.table(
        {
            "trip_key": pa.array(keys),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "fare": pa.array(rng.random(n)),
        }
    )


def test_sorted_order_is_by_timestamp_then_trip_key() -> None:
    table = _trips(200)
    ordered = table.take(p.sorted_order(table))
    pairs = list(zip(ordered["event_timestamp"].to_pylist(), ordered["trip_key"].to_pylist(), strict=True))
    assert pairs == sorted(pairs) and len(set(pairs)) == 200


def test_shards_of_a_day_merge_back_to_the_sorted_day() -> None:
    """What predict_shard + commit do with positions: any shard count gives the same merged rows."""
    table = _trips(101, seed=3)
    order = p.sorted_order(table)
    expected = table.take(order)
    for shards in (1, 2, 3, 7):
        staged = []
        for shard in range(shards):
            positions = p.shard_positions(table.num_rows, shard, shards)
            rows = table.take(order.take(pa.array(positions)))
            staged.append(rows.append_column(p.POSITION, pa.array(positions)))
        merged = pa.concat_tables(staged[::-1])  # arrival order must not matter
        merged = merged.take(pa.compute.sort_indices(merged[p.POSITION])).drop_columns([p.POSITION])
        assert merged.equals(expected), shards


def test_output_schema_is_the_contract_then_the_inputs() -> None:
    inputs = Inputs(("payment_type", "company"), ("fare", "company_stats__trips_1d"))
    types = {
        "payment_type": pa.string(),
        "company": pa.string(),
        "fare": pa.float64(),
        "company_stats__trips_1d": pa.int64(),
    }
    schema = p.output_schema(inputs, types)
    assert schema.names == [*p.CORE_COLUMNS, "payment_type", "company", "fare", "company_stats__trips_1d"]
    assert schema.field("company_stats__trips_1d").type == pa.int64()
    assert schema.field("missing_feature_views").type == pa.int8()
    assert schema.field("interval_start").type == pa.date32()
    with pytest.raises(p.PredictionError, match=r"no type known.*\['fare'\]"):
        p.output_schema(inputs, {k: v for k, v in types.items() if k != "fare"})
    with pytest.raises(p.PredictionError, match="collide"):
        p.output_schema(Inputs((), ("score",)), {"score": pa.float64()})


def test_missing_views_counts_rows_whose_view_columns_are_all_null() -> None:
    table = pa.table(
        {
            "a__x": pa.array([1.0, None, None, None]),
            "a__y": pa.array([None, None, 2.0, None]),  # row 0 and 2 have a row of view a
            "b__x": pa.array([None, 1.0, None, None]),
        }
    )
    counts, per_row = p.missing_views(table, {"a": ["a__x", "a__y"], "b": ["b__x"]})
    assert counts == {"a": 2, "b": 3}
    assert per_row.type == pa.int8() and per_row.to_pylist() == [1, 1, 1, 2]


def test_service_lacking_model_columns_is_named() -> None:
    inputs = Inputs(("company",), ("fare", "company_stats__trips_1d", "company_stats__fare_mean_7d"))
    p.check_service_columns(MODEL, inputs, ["company_stats__trips_1d", "company_stats__fare_mean_7d"])
    with pytest.raises(p.FeatureServiceMismatch) as info:
        p.check_service_columns(MODEL, inputs, ["company_stats__trips_1d", "pickup_area_stats__trips_1d"])
    message = str(info.value)
    assert "'taxi_tips_v1'" in message and "['company_stats__fare_mean_7d']" in message
    assert "models:/taxi_tips/3" in message


def test_resolved_model_round_trips_as_json() -> None:
    import json

    data = json.loads(json.dumps(MODEL.to_dict()))
    assert p.ResolvedModel.from_dict(data) == MODEL
    assert MODEL.record() == {
        "model": {
            "name": "taxi_tips",
            "version": "3",
            "run_id": "abc",
            "uri": "models:/taxi_tips/3",
            "onnx_sha256": "f" * 64,
            "feature_service": "taxi_tips_v1",
        }
    }
    with pytest.raises(ValueError, match="not a resolved model description"):
        p.ResolvedModel.from_dict({"name": "taxi_tips"})


def test_staging_paths_are_safe_and_per_run(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    interval = Interval(dt.date(2024, 4, 1), dt.date(2024, 4, 3))
    path = p.shard_path(root, "taxi_tips", "scheduled__2024-04-01T00:00:00+00:00", interval, 3, 8)
    assert path == (
        f"{tmp_path}/predictions/taxi_tips/_shards/scheduled__2024-04-01T00_00_00_00_00/"
        "2024-04-01_2024-04-03/shard-0003-of-0008"
    )
    assert p.safe_key("../..") == "_" and p.safe_key("a/b") == "a_b"


def test_commit_without_shards_names_them_and_writes_nothing(tmp_path: Path) -> None:
    settings = Settings(data_root=str(tmp_path))
    interval = Interval(dt.date(2024, 4, 1), dt.date(2024, 4, 2))
    with pytest.raises(p.PredictionError, match=r"shard\(s\) \[0, 1, 2\] of 3 have no complete output"):
        p.commit_predictions(settings, interval, "taxi_tips@champion", 3, "run1")
    with pytest.raises(ValueError, match="shards must be >= 1"):
        p.commit_predictions(settings, interval, "taxi_tips@champion", 0, "run1")
    assert not (tmp_path / "predictions").exists()


def test_postgres_statements_and_copy_format() -> None:
    from ml_tasks.prediction import postgres

    assert postgres.sqlalchemy_uri("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert postgres.sqlalchemy_uri("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert postgres.sqlalchemy_uri("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    create = postgres._create_sql("preds").as_string(None)
    assert 'PRIMARY KEY ("trip_key", "model_version")' in create and '"score" double precision' in create
    merge = postgres._merge_sql("preds", "tmp").as_string(None)
    assert 'ON CONFLICT ("trip_key", "model_version") DO UPDATE SET "event_timestamp"' in merge
    assert '"trip_key" = EXCLUDED' not in merge  # the key is not updated
    assert set(postgres.SQL_TYPES) == set(p.CORE_COLUMNS)
    table = pa.table({"s": pa.array(["a", None]), "f": pa.array([0.1234567890123456789, 1e-300])})
    assert postgres._csv(table) == b'"a",0.12345678901234568\n,1e-300\n'
