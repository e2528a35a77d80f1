"""build-training-set's outputs and refusals: manifest, Feast views, reruns, chunked joins, bad input.

Its own data root, built like test_training_set.py's (the ``training_set_pipeline`` fixture in conftest.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ml_tasks.cli import main
from ml_tasks.contract import FEATURES_LAYER, LABEL
from ml_tasks.features.spec import FEATURE_SERVICES, VIEWS
from ml_tasks.features.store import FeatureStoreError
from ml_tasks.features.training_set import build_training_set
from ml_tasks.intervals import Interval
from ml_tasks.publish import publish
from ml_tasks.storage import PartitionError
from ml_tasks.transform import transform
from ml_tasks.validation import validate
from tests.integration._training_set import ALL, FEATURE_DAYS, HAND, SERVICE, TTL, Pipeline
from tests.unit.validation.trip_rows import write_raw


def test_manifest_records_service_views_inputs_counts_and_label_rate(training_set_pipeline: Pipeline) -> None:
    summary, table, root = (
        training_set_pipeline.summary,
        training_set_pipeline.table,
        training_set_pipeline.root,
    )
    manifest = root.read_manifest(summary["uri"])
    assert manifest.step == "training-set"
    assert manifest.params["feature_service"] == SERVICE == summary["feature_service"]
    views = manifest.params["feature_views"]
    assert sorted(views) == sorted(FEATURE_SERVICES[SERVICE])
    for record in views.values():
        assert len(record["spec_sha256"]) == 16 and int(record["spec_sha256"], 16) >= 0
        assert record["ttl_seconds"] == TTL.total_seconds()
    assert views["pickup_area_stats"]["spec_sha256"] != views["company_stats"]["spec_sha256"]
    curated = [i for i in manifest.inputs if "/curated/trips/" in i["uri"]]
    assert [i["uri"] for i in curated] == [root.partition_path("curated", "trips", d) for d in ALL.days()]
    for record in manifest.inputs:  # every input hash is the hash of the file there now
        for name, sha in record["files"].items():
            assert hashlib.sha256(Path(record["uri"], name).read_bytes()).hexdigest() == sha, record["uri"]
    featured = {i["uri"] for i in manifest.inputs} - {i["uri"] for i in curated}
    assert featured == {
        root.partition_path(FEATURES_LAYER, v.dataset, d) for v in VIEWS for d in FEATURE_DAYS.days()
    }
    labels = table[LABEL]
    positives = int(pc.sum(labels.cast(pa.int64())).as_py())
    assert manifest.row_counts == {
        "entity_rows": table.num_rows,
        "rows": table.num_rows,
        "labelled": table.num_rows - labels.null_count,
        "positives": positives,
    }
    assert manifest.params["label_rate"] == positives / (table.num_rows - labels.null_count)
    assert summary["label_rate"] == round(manifest.params["label_rate"], 6)
    (output,) = manifest.outputs
    assert output["rows"] == table.num_rows
    assert hashlib.sha256(output["sha256"].encode()).hexdigest() == summary["sha256"]


def test_view_partitions_match_the_registered_feast_views(training_set_pipeline: Pipeline) -> None:
    from feast.types import Float64, Int64, String

    feast_types = {pa.int64(): Int64, pa.float64(): Float64, pa.string(): String}
    store = training_set_pipeline.handle.store
    for view in VIEWS:
        fv = store.get_feature_view(view.name)
        assert [(f.name, f.dtype) for f in fv.features] == [
            (name, feast_types[typ]) for name, typ in view.feature_columns().items()
        ]
        assert [(e.name, e.dtype) for e in fv.entity_columns] == [(view.entity, feast_types[view.key_type])]
        assert fv.ttl == TTL
        for key in training_set_pipeline.root.list_partitions(FEATURES_LAYER, view.dataset):
            (file,) = training_set_pipeline.root.parquet_files(
                training_set_pipeline.root.partition_path(FEATURES_LAYER, view.dataset, key)
            )
            assert pq.read_schema(file).remove_metadata() == view.schema()
    service = store.get_feature_service(SERVICE)
    assert [p.name for p in service.feature_view_projections] == list(FEATURE_SERVICES[SERVICE])


def test_rerun_gives_the_same_sha256(training_set_pipeline: Pipeline) -> None:
    again = build_training_set(
        training_set_pipeline.handle,
        training_set_pipeline.root,
        ALL,
        training_set_pipeline.settings,
        SERVICE,
        name="rerun",
    )
    assert again["sha256"] == training_set_pipeline.summary["sha256"]
    assert again["rows"] == training_set_pipeline.summary["rows"]
    assert again["rows_without_features"] == training_set_pipeline.summary["rows_without_features"]
    assert pq.read_table(Path(again["uri"]) / "part-00000.parquet").equals(training_set_pipeline.table)


@pytest.fixture(scope="module")
def chunked(training_set_pipeline: Pipeline) -> dict[str, Any]:
    """The same window joined in chunks of whole days of at most ~300 rows."""
    settings = training_set_pipeline.settings.model_copy(update={"training_set_chunk_rows": 300})
    return build_training_set(
        training_set_pipeline.handle, training_set_pipeline.root, ALL, settings, SERVICE, name="chunked"
    )


def test_chunked_join_gives_the_same_rows_and_values(
    training_set_pipeline: Pipeline, chunked: dict[str, Any]
) -> None:
    table = pq.read_table(Path(chunked["uri"]) / "part-00000.parquet")
    assert table.equals(training_set_pipeline.table)
    assert chunked["rows_without_features"] == training_set_pipeline.summary["rows_without_features"]
    assert chunked["label_rate"] == training_set_pipeline.summary["label_rate"]


def test_chunked_join_gives_the_same_bytes(training_set_pipeline: Pipeline, chunked: dict[str, Any]) -> None:
    one = (Path(training_set_pipeline.summary["uri"]) / "part-00000.parquet").read_bytes()
    many = (Path(chunked["uri"]) / "part-00000.parquet").read_bytes()
    assert chunked["sha256"] == training_set_pipeline.summary["sha256"]
    assert many == one


def test_unknown_feature_service_names_the_registered_ones(training_set_pipeline: Pipeline) -> None:
    with pytest.raises(
        FeatureStoreError, match=r"'taxi_tips_v9' does not exist; registered: \['taxi_tips_v1'\]"
    ):
        build_training_set(
            training_set_pipeline.handle,
            training_set_pipeline.root,
            ALL,
            training_set_pipeline.settings,
            "taxi_tips_v9",
        )


def test_out_of_date_registry_stops_the_cli_with_the_apply_hint(
    training_set_pipeline: Pipeline,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The registry was applied for this data root; another root moves the sources: exit 1, say apply.

    The console-script entry point runs in-process (a subprocess would import Feast again: ~15 s).
    """
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    feast_dir = str(Path(training_set_pipeline.settings.resolved_data_root()) / "feast")
    # setenv first so that monkeypatch restores what open_store exports
    monkeypatch.setenv("FLYWHEEL_FEAST_DIR", feast_dir)
    monkeypatch.setenv("FLYWHEEL_DATA_ROOT", str(moved))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["training-set", "--start", HAND.start.isoformat(), "--data-root", str(moved)])
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no JSON summary: the step did not run
    assert "ml-tasks: error: the Feast registry" in captured.err
    assert "run `ml-tasks feature-apply`" in captured.err
    assert "update feature view pickup_area_stats" in captured.err
    assert not (moved / "training_sets").exists()


def test_an_empty_day_gives_an_empty_snapshot_and_a_missing_day_is_named(
    training_set_pipeline: Pipeline,
) -> None:
    empty_day = ALL.end + dt.timedelta(days=3)
    interval = Interval(empty_day, empty_day + dt.timedelta(days=1))
    settings = training_set_pipeline.settings.model_copy(update={"allow_empty": True})
    write_raw(training_set_pipeline.root, [], empty_day)
    transform(training_set_pipeline.root, interval, settings)
    assert validate(training_set_pipeline.root, interval, settings)["verdict"] == "passed"
    assert publish(training_set_pipeline.root, interval, settings)["totals"]["curated"] == 0

    summary = build_training_set(
        training_set_pipeline.handle, training_set_pipeline.root, interval, settings, SERVICE
    )
    assert summary["rows"] == summary["entity_rows"] == 0 and summary["label_rate"] is None
    table = pq.read_table(Path(summary["uri"]) / "part-00000.parquet")
    assert table.num_rows == 0
    assert set(training_set_pipeline.table.column_names) <= set(table.column_names)

    missing = Interval(empty_day, empty_day + dt.timedelta(days=2))
    with pytest.raises(PartitionError, match=f"{empty_day + dt.timedelta(days=1)}.*run taxi_ingest"):
        build_training_set(
            training_set_pipeline.handle, training_set_pipeline.root, missing, settings, SERVICE
        )
