"""Batch prediction on a real pipeline data root: Feast PIT features, the registered ONNX champion, shards.

The shared ``pipeline_root`` (tests/integration/_pipeline.py: synthetic trips, features, a registered
``taxi_tips@champion``) is copied per module (Feast re-applied on the copy: its registry names the data
root's paths), so breaking things on purpose never touches the shared root.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ml_tasks.intervals import Interval
from tests.integration._pipeline import MODEL, PipelineRoot, day
from tests.integration._predict import (
    own_tracking_uri,  # noqa: F401  (autouse: every test here)
    partition_dir,
    settings_of,
    snapshot,
)

pytestmark = [pytest.mark.timeout(1200)]

#: the two days after the eval day (curated trips and features, nothing scored yet)
SCORED = Interval(day(5), day(7))


@pytest.fixture(scope="module")
def unsharded(predict_root: PipelineRoot) -> dict[str, Any]:
    from ml_tasks.prediction.commit import predict_interval

    summary = predict_interval(settings_of(predict_root), SCORED, f"{MODEL}@champion", run_key="unsharded")
    return {"summary": summary, "files": snapshot(predict_root, SCORED)}


@pytest.fixture(scope="module")
def sharded(predict_root: PipelineRoot, unsharded: dict[str, Any]) -> dict[str, Any]:
    """3 shards (shard 1 run twice, a commit attempted while shard 2 is missing), then the commit."""
    from ml_tasks.prediction.commit import commit_predictions
    from ml_tasks.prediction.resolve import resolve_model
    from ml_tasks.prediction.schema import PredictionError
    from ml_tasks.prediction.score import predict_shard

    settings = settings_of(predict_root)
    model = resolve_model(settings, f"{MODEL}@champion")
    shards = [predict_shard(settings, SCORED, model, i, 3, "scheduled__x:y+1") for i in (0, 1)]
    with pytest.raises(PredictionError, match=r"shard\(s\) \[2\] of 3 have no complete output") as missing:
        commit_predictions(settings, SCORED, model, 3, "scheduled__x:y+1")
    rerun = predict_shard(settings, SCORED, model.to_dict(), 1, 3, "scheduled__x:y+1")
    shards.append(predict_shard(settings, SCORED, model, 2, 3, "scheduled__x:y+1"))
    summary = commit_predictions(settings, SCORED, f"{MODEL}@champion", 3, "scheduled__x:y+1")
    return {
        "summary": summary,
        "shards": shards,
        "rerun": rerun,
        "missing_error": str(missing.value),
        "files": snapshot(predict_root, SCORED),
    }


def curated_rows(predict_root: PipelineRoot, when: dt.date) -> int:
    path = predict_root.data_root / "curated" / "trips" / f"dt={when.isoformat()}"
    return sum(pq.ParquetFile(p).metadata.num_rows for p in path.glob("*.parquet"))


CONTRACT = [
    "trip_key", "event_timestamp", "trip_date", "score", "decision", "threshold", "model_name",
    "model_version", "model_run_id", "feature_service", "interval_start", "interval_end",
    "missing_feature_views",
]  # fmt: skip


def test_partitions_follow_the_contract(predict_root: PipelineRoot, unsharded: dict[str, Any]) -> None:
    from ml_tasks.models.scorer import OnnxScorer

    summary = unsharded["summary"]
    version = predict_root.version
    assert summary["model"]["version"] == version and summary["model"]["feature_service"] == "taxi_tips_v1"
    assert summary["model"]["run_id"] == predict_root.steps["train"]["run_id"]
    expected_rows = {when.isoformat(): curated_rows(predict_root, when) for when in SCORED.days()}
    assert {p["dt"]: p["rows"] for p in summary["partitions"]} == expected_rows
    assert summary["rows"] == sum(expected_rows.values()) > 2000
    assert summary["shards"] == 1 and summary["postgres_rows"] is None and summary["empty_days"] == []
    scorer = OnnxScorer(predict_root.bundle / "model.onnx")
    inputs = list(scorer.preprocessor.inputs.columns)
    for when in SCORED.days():
        table = pq.read_table(partition_dir(predict_root, when) / "part-00000.parquet")
        assert table.column_names == CONTRACT + inputs
        assert table.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
        assert table.schema.field("missing_feature_views").type == pa.int8()
        assert "big_tipper" not in table.column_names
        order = pc.sort_indices(
            table, sort_keys=[("event_timestamp", "ascending"), ("trip_key", "ascending")]
        )
        assert order.to_pylist() == list(range(table.num_rows))
        assert len(set(table["trip_key"].to_pylist())) == table.num_rows
        assert set(table["interval_start"].to_pylist()) == {SCORED.start}
        assert set(table["interval_end"].to_pylist()) == {SCORED.end}
        assert set(table["trip_date"].to_pylist()) == {when}
        assert set(table["model_version"].to_pylist()) == {version}
        assert set(table["threshold"].to_pylist()) == {scorer.threshold}
        scores = table["score"].to_numpy()
        assert np.all((scores > 0) & (scores < 1))
        np.testing.assert_array_equal(table["decision"].to_numpy(), scores >= scorer.threshold)
        # one row group per day here (fixed size: 131,072 rows), whatever the batch size was
        assert (
            pq.ParquetFile(partition_dir(predict_root, when) / "part-00000.parquet").metadata.num_row_groups
            == 1
        )
        manifest = json.loads((partition_dir(predict_root, when) / "_manifest.json").read_text())
        assert manifest["dataset"] == f"predictions/{MODEL}" and manifest["step"] == "predict"
        assert manifest["row_counts"]["rows"] == table.num_rows
        assert manifest["params"]["interval"] == {
            "start": SCORED.start.isoformat(),
            "end": SCORED.end.isoformat(),
        }
        assert manifest["params"]["model"] == f"models:/{MODEL}/{version}"
        uris = [i.get("uri", "") for i in manifest["inputs"]]
        assert any(u.endswith(f"curated/trips/dt={when.isoformat()}") for u in uris)
        assert any("/features/company_stats/dt=" in u for u in uris)
        assert any("/features/pickup_area_stats/dt=" in u for u in uris)
        models = [i["model"] for i in manifest["inputs"] if "model" in i]
        keys = ("name", "version", "run_id", "uri", "onnx_sha256", "feature_service")
        assert models == [{k: summary["model"][k] for k in keys}]
        counts = np.bincount(table["missing_feature_views"].to_numpy(), minlength=3)
        assert manifest["row_counts"]["missing_features"] == int(counts[1:].sum())


def test_scores_equal_the_training_path_and_the_registered_model(
    predict_root: PipelineRoot, unsharded: dict[str, Any]
) -> None:
    """The same rows through training's PIT join score identically with the registry's ONNX file."""
    from ml_tasks.features.store import open_store
    from ml_tasks.features.training_set import build_training_set
    from ml_tasks.models.loading import load_champion_scorer
    from ml_tasks.models.network import load_bundle

    settings = settings_of(predict_root)
    from ml_tasks.storage import DataRoot

    built = build_training_set(open_store(settings), DataRoot(str(predict_root.data_root)), SCORED, settings,
                               "taxi_tips_v1", name="predict_check")  # fmt: skip
    reference = pq.read_table(Path(built["uri"]) / "part-00000.parquet")
    # one intra-op thread, as the prediction step runs it (predict_threads default): onnxruntime's Gemm split
    # over several threads may differ by one ulp (measured: 1 row of 3030, 3e-8, with 16 PLE bins)
    scorer, info = load_champion_scorer(settings, MODEL, threads=1)
    assert scorer is not None and info is not None and info["version"] == predict_root.version
    predicted = pa.concat_tables(
        [pq.read_table(partition_dir(predict_root, when) / "part-00000.parquet") for when in SCORED.days()]
    )
    assert predicted["trip_key"].equals(reference["trip_key"])
    for column in scorer.preprocessor.inputs.columns:
        assert predicted[column].equals(reference[column].cast(predicted[column].type)), column
    expected = scorer.predict_proba(reference)
    np.testing.assert_array_equal(predicted["score"].to_numpy(), expected)
    torch_scores = load_bundle(predict_root.bundle).predict_proba(reference)
    np.testing.assert_allclose(predicted["score"].to_numpy(), torch_scores, atol=1e-5)
    # missing features: a row's count is the number of views whose columns are all null
    views = {"pickup_area_stats", "company_stats"}
    expected_missing = np.zeros(reference.num_rows, dtype=np.int8)
    for view in views:
        cols = [c for c in reference.column_names if c.startswith(f"{view}__")]
        expected_missing += np.all(
            [reference[c].is_null().to_numpy(zero_copy_only=False) for c in cols], axis=0
        )
    np.testing.assert_array_equal(predicted["missing_feature_views"].to_numpy(), expected_missing)
    summary = unsharded["summary"]
    assert summary["missing_features"] == built["rows_without_features"]


def test_sharded_equals_unsharded_byte_for_byte(
    predict_root: PipelineRoot, unsharded: dict[str, Any], sharded: dict[str, Any]
) -> None:
    assert "run (or re-run) them first" in sharded["missing_error"]
    rows = [s["rows"] for s in sharded["shards"]]
    assert sum(rows) == unsharded["summary"]["rows"] and max(rows) - min(rows) <= 2  # balanced per day
    assert sharded["rerun"]["rows"] == sharded["shards"][1]["rows"]
    parquet = {k: v for k, v in unsharded["files"].items() if k.endswith(".parquet")}
    assert parquet and parquet == {k: v for k, v in sharded["files"].items() if k.endswith(".parquet")}
    a, b = unsharded["summary"], sharded["summary"]
    assert [p["sha256"] for p in a["partitions"]] == [p["sha256"] for p in b["partitions"]]
    assert a["missing_features"] == b["missing_features"] and b["shards"] == 3
    # the manifests differ only in the shard count
    for key, data in unsharded["files"].items():
        if key.endswith("_manifest.json"):
            one, three = json.loads(data), json.loads(sharded["files"][key])
            assert one["params"].pop("shards") == 1 and three["params"].pop("shards") == 3
            assert one == three
    # the staging area is gone
    assert not (predict_root.data_root / "predictions" / MODEL / "_shards").exists()


def test_rerun_gives_identical_bytes(
    predict_root: PipelineRoot, unsharded: dict[str, Any], sharded: dict[str, Any]
) -> None:
    from ml_tasks.prediction.commit import predict_interval

    predict_interval(settings_of(predict_root), SCORED, f"{MODEL}/{predict_root.version}")
    assert snapshot(predict_root, SCORED) == unsharded["files"]
    # another batch size: the same bytes (fixed row groups)
    predict_interval(settings_of(predict_root, predict_batch_rows=64), SCORED, f"models:/{MODEL}@champion")
    assert snapshot(predict_root, SCORED) == unsharded["files"]


def test_commit_refuses_shards_of_another_model(predict_root: PipelineRoot, sharded: dict[str, Any]) -> None:
    from ml_tasks.prediction.commit import commit_predictions
    from ml_tasks.prediction.resolve import resolve_model
    from ml_tasks.prediction.schema import PredictionError
    from ml_tasks.prediction.score import predict_shard

    settings = settings_of(predict_root)
    one = Interval(day(6), day(7))
    model = resolve_model(settings, f"{MODEL}@champion")
    for shard in (0, 1):
        predict_shard(settings, one, model, shard, 2, "mixed")
    shards = predict_root.data_root / "predictions" / MODEL / "_shards" / "mixed"
    shard_json = shards / "2024-04-07_2024-04-08" / "shard-0001-of-0002" / "_shard.json"
    record = json.loads(shard_json.read_text())
    record["model"]["version"] = "999"
    shard_json.write_text(json.dumps(record))
    before = snapshot(predict_root, one)
    with pytest.raises(PredictionError, match="different models"):
        commit_predictions(settings, one, model, 2, "mixed")
    assert snapshot(predict_root, one) == before


def test_a_day_without_feature_rows_is_counted_and_scored(predict_root: PipelineRoot) -> None:
    """The fixture's first day has no earlier features: every trip misses both views."""
    from ml_tasks.models.scorer import OnnxScorer
    from ml_tasks.prediction.commit import predict_interval

    first = Interval(day(0), day(1))
    summary = predict_interval(settings_of(predict_root), first, f"{MODEL}@champion")
    rows = curated_rows(predict_root, day(0))
    assert summary["rows"] == rows > 1000
    assert summary["missing_features"] == {"pickup_area_stats": rows, "company_stats": rows}
    assert summary["rows_with_missing_features"] == rows
    table = pq.read_table(partition_dir(predict_root, day(0)) / "part-00000.parquet")
    assert set(table["missing_feature_views"].to_pylist()) == {2}
    assert all(table[c].null_count == rows for c in table.column_names if "__" in c)
    scorer = OnnxScorer(predict_root.bundle / "model.onnx")
    np.testing.assert_array_equal(table["score"].to_numpy(), scorer.predict_proba(table))
    assert np.all(np.isfinite(table["score"].to_numpy()))
    manifest = json.loads((partition_dir(predict_root, day(0)) / "_manifest.json").read_text())
    assert manifest["row_counts"] == {
        "rows": rows,
        "missing_features": rows,
        "missing_pickup_area_stats": rows,
        "missing_company_stats": rows,
    }


def test_empty_day_writes_an_empty_partition(predict_root: PipelineRoot, unsharded: dict[str, Any]) -> None:
    from ml_tasks.prediction.commit import commit_predictions
    from ml_tasks.prediction.resolve import resolve_model
    from ml_tasks.prediction.score import predict_shard
    from ml_tasks.storage import DataRoot, Manifest

    data = DataRoot(str(predict_root.data_root))
    empty_day = day(7)
    schema = pq.read_schema(
        predict_root.data_root / "curated" / "trips" / f"dt={day(6)}" / "part-00000.parquet"
    )
    data.write_table(data.partition_path("curated", "trips", empty_day), schema.empty_table(), schema,
                     Manifest(dataset="curated/trips", partition=empty_day.isoformat(), step="publish",
                              row_counts={"rows": 0}))  # fmt: skip
    settings = settings_of(predict_root)
    interval = Interval(day(6), day(8))
    model = resolve_model(settings, f"{MODEL}@champion")
    for shard in range(3):
        predict_shard(settings, interval, model, shard, 3, "with-empty")
    summary = commit_predictions(settings, interval, model, 3, "with-empty")
    assert summary["empty_days"] == [empty_day.isoformat()]
    assert [p["rows"] for p in summary["partitions"]] == [curated_rows(predict_root, day(6)), 0]
    table = pq.read_table(partition_dir(predict_root, empty_day) / "part-00000.parquet")
    full = pq.read_table(partition_dir(predict_root, day(6)) / "part-00000.parquet")
    assert table.num_rows == 0 and table.schema == full.schema
    # day 6 was scored before in SCORED's run: the same bytes from a different interval's shards, except
    # the interval columns (the run's interval)
    assert set(full["interval_start"].to_pylist()) == {day(6)}
    before = pq.read_table(io_bytes(unsharded["files"][f"{day(6)}/part-00000.parquet"]))
    assert full.drop_columns(["interval_start", "interval_end"]).equals(
        before.drop_columns(["interval_start", "interval_end"])
    )


def io_bytes(data: bytes) -> pa.BufferReader:
    return pa.BufferReader(data)
