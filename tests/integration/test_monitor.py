"""Monitoring end to end on a temporary data root: real data (no drift), the synthetic drift scenario (drift,
hysteresis, cooldown, labels after the delay), degenerate columns and the bad inputs.

Models are tiny (2 epochs) and trained here; predictions partitions are written in the contract format with
the bundle's own scores, so ``run_monitoring`` reads them exactly as it reads ``taxi_batch_predict``'s.
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
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, PartitionError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL = "taxi_tips"
D0 = dt.date(2024, 3, 4)  # a Monday
DRIFT_FROM = D0 + dt.timedelta(days=4)
TRIPS_PER_DAY = 2_500


def train_bundle(frame: pa.Table, out: Path, seed: int = 7) -> Path:
    from ml_tasks.models.network import ModelConfig, save_bundle
    from ml_tasks.training.split import split_by_time
    from ml_tasks.training.train import train_model

    config = ModelConfig(hidden=(32, 16), max_epochs=2, patience=1, batch_size=256, seed=seed)
    result = train_model(split_by_time(frame, 0.1, 0.1), config, checkpoint_dir=None, device="cpu")
    save_bundle(
        out, result.model, result.preprocessor, config, result.bundle_metadata(feature_service="none")
    )
    return out


def predictions_table(frame: pa.Table, bundle_dir: Path, day: dt.date, version: str = "1") -> pa.Table:
    """``frame``'s rows as the predictions partition of ``day`` (contract columns, bundle scores)."""
    from ml_tasks.models.network import load_bundle

    bundle = load_bundle(bundle_dir)
    inputs = list(bundle.preprocessor.inputs.columns)
    frame = frame.sort_by([("event_timestamp", "ascending"), ("trip_key", "ascending")])
    score = bundle.predict_proba(frame)
    n = frame.num_rows
    columns: dict[str, Any] = {
        "trip_key": frame["trip_key"],
        "event_timestamp": frame["event_timestamp"],
        "trip_date": frame["trip_date"],
        "score": pa.array(score, pa.float64()),
        "decision": pa.array(score >= bundle.threshold),
        "threshold": pa.array(np.full(n, bundle.threshold)),
        "model_name": pa.array([MODEL] * n),
        "model_version": pa.array([version] * n),
        "model_run_id": pa.array(["run-test"] * n),
        "feature_service": pa.array(["none"] * n),
        "interval_start": pa.array([day] * n, pa.date32()),
        "interval_end": pa.array([day + dt.timedelta(days=1)] * n, pa.date32()),
        "missing_feature_views": pa.array(np.zeros(n, np.int8)),
    }
    for name in inputs:
        columns[name] = frame[name]
    return pa.table(columns)


def write_predictions(root: DataRoot, table: pa.Table, day: dt.date, version: str = "1") -> str:
    path = root.partition_path("predictions", MODEL, day)
    root.write_table(
        path,
        table,
        table.schema,
        Manifest(
            dataset=f"predictions/{MODEL}",
            partition=day.isoformat(),
            step="predict",
            inputs=[{"model": {"name": MODEL, "version": version, "uri": f"models:/{MODEL}/{version}"}}],
            row_counts={"rows": table.num_rows},
        ),
    )
    return path


def settings_for(root: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "data_root": str(root),
        "monitor_reference_rows": 5_000,
        "monitor_sample_rows": 3_000,
        "monitor_label_delay_days": 2,
        "drift_hysteresis": 2,
        "retrain_cooldown_days": 7,
        **extra,
    }
    return Settings(**values)


# -- real data: tfdv_train (reference) vs tfdv_eval (current) ------------------------------------------------


@pytest.fixture(scope="module")
def tfdv_bundle(tfdv_frames: tuple[pa.Table, pa.Table], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ml_tasks.models.reference import build_reference

    out = train_bundle(tfdv_frames[0], tmp_path_factory.mktemp("tfdv") / "bundle")
    build_reference(out, tfdv_frames[0], settings_for(out.parent / "unused"))
    return out


def test_reference_files_are_seeded_and_scored_by_the_model(
    tfdv_frames: tuple[pa.Table, pa.Table], tfdv_bundle: Path, tmp_path: Path
) -> None:
    import shutil

    from ml_tasks.models.network import load_bundle
    from ml_tasks.models.reference import build_reference, load_reference_dir

    train = tfdv_frames[0]
    ref = load_reference_dir(tfdv_bundle)
    assert ref.sample.num_rows == 5_000 < train.num_rows
    assert ref.stats["rows"] == train.num_rows and ref.stats["sample_rows"] == 5_000
    bundle = load_bundle(tfdv_bundle)
    assert ref.inputs == list(bundle.preprocessor.inputs.columns)
    assert ref.sample.column_names == [*ref.inputs, "big_tipper", "score"]
    np.testing.assert_allclose(ref.sample["score"].to_numpy(), bundle.predict_proba(ref.sample), atol=1e-7)
    # the drift thresholds' null distributions: every input and the score, a threshold per size
    null = ref.stats["drift_null"]
    assert sorted(null["columns"]) == sorted([*ref.inputs, "score"])
    assert all(len(c["thresholds"]) == len(null["sizes"]) for c in null["columns"].values())
    fare_null = null["columns"]["fare"]["thresholds"]
    assert fare_null[0] > 0.1 > fare_null[-1]  # the noise shrinks with the sample size
    # statistics over EVERY training row (not the sample)
    fare = ref.stats["columns"]["fare"]
    assert fare["count"] == train.num_rows
    assert fare["max"] == pytest.approx(pc.max(train["fare"]).as_py())
    assert fare["mean"] == pytest.approx(pc.mean(train["fare"]).as_py())
    assert ref.stats["label_rate"] == pytest.approx(
        pc.mean(pc.cast(train["big_tipper"], pa.float64())).as_py()
    )
    company = ref.stats["columns"]["company"]
    assert company["null_count"] == train["company"].null_count
    assert sum(n for _, n in company["values"]) + company["null_count"] == train.num_rows
    # deterministic: rebuilding in a copy of the bundle gives the same bytes
    copy = Path(shutil.copytree(tfdv_bundle, tmp_path / "copy"))
    build_reference(copy, train, settings_for(tmp_path / "unused"))
    for name in ("reference_sample.parquet", "reference_stats.json"):
        assert (copy / name).read_bytes() == (tfdv_bundle / name).read_bytes()
    # another seed samples other rows
    other = build_reference(copy, train, settings_for(tmp_path / "unused", monitor_seed=1))
    assert other["files"]["reference_sample.parquet"] != ref.files["reference_sample.parquet"]


def test_tfdv_eval_against_tfdv_train_is_no_drift(
    tfdv_frames: tuple[pa.Table, pa.Table], tfdv_bundle: Path, tmp_path: Path
) -> None:
    from ml_tasks.monitoring.monitor import run_monitoring

    root = DataRoot(str(tmp_path / "data"))
    day = dt.date(2024, 1, 10)
    write_predictions(root, predictions_table(tfdv_frames[1], tfdv_bundle, day), day)
    settings = settings_for(tmp_path / "data")
    summary = run_monitoring(settings, Interval(day, day + dt.timedelta(days=1)), reference=tfdv_bundle)
    decision = summary["decision"]
    print(
        "\ntfdv no-drift:", json.dumps({k: summary[k] for k in ("drift_share", "drifted_columns", "seconds")})
    )
    assert summary["rows"] == tfdv_frames[1].num_rows and summary["sample_rows"] == 3_000
    assert summary["verdict"] == "no_drift" and summary["retrain"] is False
    assert summary["drift_share"] is not None and summary["drift_share"] < settings.monitor_drift_share
    # day of week and month are calendar columns: a one-day interval is excluded from their drift test
    assert len(decision["drift"]["tested_columns"]) == 10
    assert sorted(decision["drift"]["excluded_columns"]) == ["trip_start_day_of_week", "trip_start_month"]
    assert decision["prediction_drift"]["drifted"] is False
    methods = {m["method"] for m in decision["drift"]["column_methods"].values()}
    assert methods <= {"Wasserstein distance (normed)", "Jensen-Shannon distance"}
    # size-aware: each column's threshold at its own non-null count, never below the minimum effect
    assert decision["drift"]["calibration"].startswith("stored with the reference")
    fare = decision["drift"]["column_methods"]["fare"]
    assert fare["sample_size"] == 3_000 and fare["threshold"] >= 0.1
    assert fare["decided_by"] in {"null quantile at this size", "minimum effect"}
    company = decision["drift"]["column_methods"]["company"]
    assert company["sample_size"] < 3_000  # company is null in a third of the trips
    out = Path(str(tmp_path / "data" / "monitoring" / MODEL / f"dt={day}"))
    assert sorted(p.name for p in out.iterdir()) == [
        "_manifest.json", "decision.json", "drift_report.html", "drift_report.json",
    ]  # fmt: skip
    assert json.loads((out / "decision.json").read_text()) == json.loads(json.dumps(decision))
    report = json.loads((out / "drift_report.json").read_text())
    quality = report["data_quality"]["columns"]
    assert quality["fare"]["count"] == tfdv_frames[1].num_rows  # every row, not the sample
    assert quality["company"]["null_count"] == tfdv_frames[1]["company"].null_count
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["step"] == "monitor" and manifest["row_counts"]["rows"] == tfdv_frames[1].num_rows
    assert any("reference" in i for i in manifest["inputs"])
    page = (out / "drift_report.html").read_text()
    assert "<html" in page[:2000].lower()
    # the data-quality table of every row opens the page; Evidently's summary preset is opt-in
    assert f"<p>{tfdv_frames[1].num_rows} current rows (every row;" in page
    assert page.index('<section id="flywheel-data-quality"') == page.index("<body>") + len("<body>")
    assert report["evidently"] is not None and len(report["evidently"]["metrics"]) == 10 + 1


def test_no_predictions_is_a_clear_error(tmp_path: Path) -> None:
    from ml_tasks.monitoring.monitor import run_monitoring

    with pytest.raises(PartitionError, match=r"no predictions for taxi_tips .*run taxi_batch_predict"):
        run_monitoring(settings_for(tmp_path / "data"), Interval(D0, D0 + dt.timedelta(days=1)))


def test_a_bundle_without_reference_is_a_clear_error(tfdv_bundle: Path, tmp_path: Path) -> None:
    from ml_tasks.models.reference import ReferenceNotFoundError, load_reference_dir

    with pytest.raises(ReferenceNotFoundError, match="without a monitoring reference"):
        load_reference_dir(tmp_path)


# -- the synthetic drift scenario --------------------------------------------------------------------------


def curated_day(day: dt.date) -> pa.Table:
    """One synthetic day through the project's code path: source -> transform -> the pipeline's row rules."""
    from ml_tasks.sources.synthetic import SyntheticSource
    from ml_tasks.training.frames import reject_masks
    from ml_tasks.transform import trips_with_derived_columns

    source = SyntheticSource(trips_per_day=TRIPS_PER_DAY, drift_from=DRIFT_FROM)
    raw = pa.concat_tables([b.table for b in source.read(Interval(day, day + dt.timedelta(days=1)))])
    curated = trips_with_derived_columns(raw, "America/Chicago")
    rejected = np.zeros(curated.num_rows, dtype=bool)
    for mask in reject_masks(curated, Settings()).values():
        rejected |= mask
    return curated.filter(pa.array(~rejected))


def with_degenerate_features(frame: pa.Table) -> pa.Table:
    """Two feature-store-style inputs: a constant and an all-null one (the model takes every ``a__b``)."""
    n = frame.num_rows
    frame = frame.append_column("zone__constant", pa.array(np.full(n, 1.0)))
    return frame.append_column("zone__missing", pa.nulls(n, pa.float64()))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Curated days D0..D0+6 (drift from D0+4), a model + reference on D0..D0+1, predictions D0+2..D0+6."""
    from ml_tasks.models.reference import build_reference
    from ml_tasks.schema import CURATED_SCHEMA
    from ml_tasks.training.frames import training_frame_from_trips

    base = tmp_path_factory.mktemp("scenario")
    root = DataRoot(str(base / "data"))
    frames: dict[dt.date, pa.Table] = {}
    for k in range(7):
        day = D0 + dt.timedelta(days=k)
        curated = curated_day(day)
        root.write_table(
            root.partition_path("curated", "trips", day),
            curated,
            CURATED_SCHEMA,
            Manifest(dataset="curated/trips", partition=day.isoformat(), step="publish",
                     row_counts={"curated": curated.num_rows}),
        )  # fmt: skip
        frames[day] = with_degenerate_features(training_frame_from_trips(curated))
    train = pa.concat_tables([frames[D0], frames[D0 + dt.timedelta(days=1)]])
    bundle = train_bundle(train, base / "bundle")
    build_reference(bundle, train, settings_for(base / "data"))
    for k in range(2, 7):
        day = D0 + dt.timedelta(days=k)
        write_predictions(root, predictions_table(frames[day], bundle, day), day)
    return {"root": root, "base": base, "bundle": bundle, "frames": frames}


def monitor(scenario: dict[str, Any], k: int, **extra: Any) -> dict[str, Any]:
    from ml_tasks.monitoring.monitor import run_monitoring

    day = D0 + dt.timedelta(days=k)
    settings = settings_for(scenario["base"] / "data", **extra)
    return run_monitoring(settings, Interval(day, day + dt.timedelta(days=1)), reference=scenario["bundle"])


@pytest.fixture(scope="module")
def runs(scenario: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Monitoring of D0+2 .. D0+6 in order (the daily DAG's sequence)."""
    return {k: monitor(scenario, k) for k in range(2, 7)}


def test_before_the_drift_no_drift_and_labels_not_landed(runs: dict[int, dict[str, Any]]) -> None:
    first = runs[2]
    assert first["verdict"] == "no_drift" and first["alert"] is False and first["retrain"] is False
    assert first["consecutive_drift"] == 0
    assert first["drift_share"] < 0.3
    # labels of D0 (2 days before) exist, its predictions do not: "labels not landed", no error
    assert first["performance"] == "labels_not_landed"
    assert "no predictions for 2024-03-04" in first["decision"]["performance"]["reason"]
    assert runs[3]["verdict"] == "no_drift"


def test_drift_is_detected_on_the_drifted_columns(runs: dict[int, dict[str, Any]]) -> None:
    drifted = runs[4]
    print(
        "\nsynthetic drift:",
        json.dumps({k: drifted[k] for k in ("drift_share", "drifted_columns", "seconds")}),
    )
    assert drifted["verdict"] == "drift" and drifted["alert"] is True
    assert {"fare", "payment_type", "company"} <= set(drifted["drifted_columns"])
    assert drifted["drift_share"] >= 0.3
    quality = drifted["decision"]["data_quality"]
    assert quality["new_categories"]["company"] >= 4  # the scenario's new companies
    assert quality["new_categories"]["payment_type"] >= 1  # Mobile


def test_degenerate_columns_are_handled_and_reported(runs: dict[int, dict[str, Any]]) -> None:
    drift = runs[4]["decision"]["drift"]
    assert "zone__missing" in drift["excluded_columns"]
    assert "all null" in drift["excluded_columns"]["zone__missing"]
    assert "zone__missing" not in drift["tested_columns"]
    assert "zone__constant" in drift["tested_columns"]  # Evidently handles a constant
    assert "constant" in drift["degenerate_columns"]["zone__constant"]
    assert drift["column_methods"]["zone__constant"]["score"] == pytest.approx(0.0)
    assert "zone__constant" not in drift["drifted_columns"]


def test_hysteresis_then_retrain_then_cooldown(runs: dict[int, dict[str, Any]]) -> None:
    first, second, third = runs[4], runs[5], runs[6]
    assert first["consecutive_drift"] == 1 and first["retrain"] is False
    assert any("hysteresis needs 2" in r for r in first["reasons"])
    assert second["consecutive_drift"] == 2 and second["retrain"] is True
    assert third["consecutive_drift"] == 3 and third["retrain"] is False
    assert any(
        r.startswith("cooldown: last retrain requested for interval ending 2024-03-10, 1 of 7 days ago")
        for r in third["reasons"]
    ), third["reasons"]
    assert third["decision"]["cooldown"] == {
        "active": True, "days": 7, "last_retrain_interval_end": "2024-03-10", "days_since": 1,
    }  # fmt: skip


def test_performance_once_labels_land(runs: dict[int, dict[str, Any]], scenario: dict[str, Any]) -> None:
    perf = runs[5]["decision"]["performance"]  # labels of D0+3 (pre-drift predictions)
    assert perf["status"] == "evaluated"
    assert perf["interval"] == {"start": "2024-03-07", "end": "2024-03-08"}
    assert perf["labelled_rows"] == scenario["frames"][D0 + dt.timedelta(days=3)].num_rows
    assert 0.5 < perf["metrics"]["roc_auc"] <= 1.0
    assert perf["baseline"]["source"].startswith("reference sample")
    assert perf["auc_drop"] == pytest.approx(perf["baseline"]["roc_auc"] - perf["metrics"]["roc_auc"])
    # independent check of the AUC with scikit-learn on the same join
    from sklearn.metrics import roc_auc_score

    root: DataRoot = scenario["root"]
    day = D0 + dt.timedelta(days=3)
    preds = pq.read_table(root.partition_path("predictions", MODEL, day), columns=["trip_key", "score"])
    labels = pq.read_table(root.partition_path("curated", "trips", day), columns=["trip_key", "big_tipper"])
    joined = preds.join(labels, "trip_key")
    expected = roc_auc_score(joined["big_tipper"].to_numpy().astype(int), joined["score"].to_numpy())
    assert perf["metrics"]["roc_auc"] == pytest.approx(expected)


def test_rerun_replaces_and_never_counts_itself(
    runs: dict[int, dict[str, Any]], scenario: dict[str, Any]
) -> None:
    again = monitor(scenario, 5)
    assert again["consecutive_drift"] == 2 and again["retrain"] is True
    assert again["decision"] == runs[5]["decision"]  # same inputs, same decision
    out = Path(str(scenario["base"] / "data" / "monitoring" / MODEL))
    assert sorted(p.name for p in out.iterdir()) == [f"dt={D0 + dt.timedelta(days=k)}" for k in range(2, 7)]


def test_performance_alert_when_auc_drops(scenario: dict[str, Any]) -> None:
    # a tolerance of 0 makes any drop below the in-sample baseline an alert: the branch runs end to end
    result = monitor(scenario, 5, monitor_max_auc_drop=0.0, monitor_drift_share=1.0,
                     monitor_prediction_drift=False)  # fmt: skip
    perf = result["decision"]["performance"]
    assert perf["status"] == "evaluated" and perf["auc_drop"] > 0.0
    assert perf["alert"] is True
    assert result["verdict"] == "performance"
