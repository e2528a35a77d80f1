"""Training on the real Chicago samples: AUC targets, the file loader's accounting, checkpoint resume.

Targets (issue 4): trained on tfdv_train.csv, ROC-AUC >= 0.95 on tfdv_eval.csv; trained on 2013-2015 of
tfx_simple_data.csv, ROC-AUC >= 0.92 on 2016 (a gradient-boosted tree gets 0.957 / 0.932). AUCs are
computed with scikit-learn, independently of the training code's own metrics.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ml_tasks.models.network import ModelConfig, load_bundle, save_bundle
from ml_tasks.models.preprocess import labels
from ml_tasks.settings import Settings
from ml_tasks.training.checkpoint import CHECKPOINT_FILE
from ml_tasks.training.frames import (
    REJECT_CODES,
    curated_trips_from_file,
    frame_report,
    rows_between,
    training_frame_from_csv,
)
from ml_tasks.training.split import split_by_time
from ml_tasks.training.train import TrainResult, train_model

# one torch thread: 2 shared cores; also makes runs bitwise repeatable
pytestmark = [pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def tfdv_result(tfdv_frames: tuple[pa.Table, pa.Table]) -> TrainResult:
    # test_fraction 0: tfdv_eval.csv is the test set; the newest 10 % of train validates
    return train_model(
        split_by_time(tfdv_frames[0], 0.1, 0.0), ModelConfig(), checkpoint_dir=None, device="cpu"
    )


def auc(result: TrainResult, table: pa.Table) -> float:
    encoded = result.preprocessor.encode(table)
    with torch.inference_mode():
        probs = result.model(torch.from_numpy(encoded.numeric), torch.from_numpy(encoded.categorical)).numpy()
    return float(roc_auc_score(labels(table).astype(int), probs))


def test_file_loader_accounts_for_every_row(
    chicago_samples: Path, tfdv_frames: tuple[pa.Table, pa.Table]
) -> None:
    csv = chicago_samples / "tfdv_train.csv"
    report = frame_report(tfdv_frames[0])
    assert report["rows_read"] == 10_000
    assert report["rows_kept"] + report["rows_rejected"] == 10_000 == report["rows_kept"] + 47
    assert tfdv_frames[0].num_rows == report["rows_kept"]
    # the rule counts, straight from the CSV with DuckDB's own typing (not our code)
    row = duckdb.sql(
        f"""SELECT count(*) FILTER (WHERE fare <= 0 OR fare > 1000),
                   count(*) FILTER (WHERE trip_seconds = 0 AND trip_miles > 0)
            FROM read_csv('{csv}', header = true)"""
    ).fetchone()
    assert row is not None
    assert report["rejected_by_reason"] == {
        "fare_out_of_range": row[0],
        "zero_seconds_positive_miles": row[1],
    }
    # the nulls that validation allows (e.g. a trip ending outside Chicago) are kept, not dropped
    assert tfdv_frames[0]["dropoff_community_area"].null_count > 200
    # stricter settings reject more, and say why
    strict = curated_trips_from_file(csv, settings=Settings(max_fare=50.0))
    assert strict.rejected_by_reason["fare_out_of_range"] > row[0]
    assert strict.rows_read == strict.trips.num_rows + strict.rejected


def test_file_loader_is_fast(chicago_samples: Path) -> None:
    import time

    training_frame_from_csv(chicago_samples / "tfdv_eval.csv")  # warm: first-use imports are not the loader's
    started = time.perf_counter()
    frame = training_frame_from_csv(chicago_samples / "tfdv_train.csv")
    seconds = time.perf_counter() - started
    print(f"\ntfdv_train.csv (10k rows) -> training frame in {seconds:.2f} s")
    assert frame.num_rows > 9_900
    assert seconds < 2.0  # measured 0.2-0.4 s on a busy 2-core box


def test_reject_codes_are_the_pipelines() -> None:
    from ml_tasks.validation.rules import ROW_CODES  # imports great_expectations: ~10 s

    assert REJECT_CODES == ROW_CODES


def test_training_frame_columns_match_a_training_set(tfdv_frames: tuple[pa.Table, pa.Table]) -> None:
    from ml_tasks.features.request import REQUEST_FEATURES
    from ml_tasks.features.retrieval import ENTITY_COLUMNS

    frame = tfdv_frames[0]
    expected = [*ENTITY_COLUMNS, *REQUEST_FEATURES]
    assert frame.column_names == expected
    for name, typ in {**ENTITY_COLUMNS, **REQUEST_FEATURES}.items():
        assert frame.schema.field(name).type == typ, name
    assert frame["big_tipper"].null_count == 0
    rate = float(np.mean(labels(frame)))
    assert 0.2 < rate < 0.25  # README: 22.5 % big tippers


def test_tfdv_train_to_eval_auc(tfdv_frames: tuple[pa.Table, pa.Table], tfdv_result: TrainResult) -> None:
    measured = auc(tfdv_result, tfdv_frames[1])
    print(f"\nTFDV train -> eval ROC-AUC {measured:.4f} (best epoch {tfdv_result.best_epoch})")
    assert measured >= 0.95
    assert 0.05 <= tfdv_result.threshold <= 0.95
    assert tfdv_result.metrics["validation"]["roc_auc"] > 0.9


def test_tfx_2013_2015_to_2016_auc(chicago_samples: Path) -> None:
    frame = training_frame_from_csv(chicago_samples / "tfx_simple_data.csv")
    train = rows_between(frame, dt.date(2013, 1, 1), dt.date(2016, 1, 1))
    later = rows_between(frame, dt.date(2016, 1, 1), dt.date(2017, 1, 1))
    assert train.num_rows > 10_000 and later.num_rows > 500  # the sample thins out in 2016
    result = train_model(split_by_time(train, 0.1, 0.0), ModelConfig(), checkpoint_dir=None, device="cpu")
    measured = auc(result, later)
    print(f"\nTFX 2013-2015 -> 2016 ROC-AUC {measured:.4f} (best epoch {result.best_epoch})")
    assert measured >= 0.92


def test_bundle_on_real_data_scores_like_the_model(
    tfdv_frames: tuple[pa.Table, pa.Table], tfdv_result: TrainResult, tmp_path: Path
) -> None:
    save_bundle(
        tmp_path,
        tfdv_result.model,
        tfdv_result.preprocessor,
        tfdv_result.config,
        tfdv_result.bundle_metadata(),
    )
    bundle = load_bundle(tmp_path)
    probs = bundle.predict_proba(tfdv_frames[1])
    assert roc_auc_score(labels(tfdv_frames[1]).astype(int), probs) == pytest.approx(
        auc(tfdv_result, tfdv_frames[1]), abs=1e-6
    )
    # calibrated despite the class weights: the mean probability is close to the positive rate
    assert abs(float(probs.mean()) - float(labels(tfdv_frames[1]).mean())) < 0.03


RESUME = ModelConfig(max_epochs=4, patience=10, batch_size=1024)


class Interrupted(RuntimeError):
    """Stands for a killed pod."""


def test_interrupted_run_resumes_to_the_same_weights(
    tfdv_frames: tuple[pa.Table, pa.Table], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    split = split_by_time(tfdv_frames[0].slice(0, 4000), 0.2, 0.1)
    whole = train_model(split, RESUME, checkpoint_dir=tmp_path / "whole", device="cpu")

    def crash_after_two(metrics: dict[str, float], epoch: int) -> None:
        assert metrics["val_log_loss"] > 0
        if epoch == 2:
            raise Interrupted("pod killed after epoch 2")

    ckpt = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train_model(split, RESUME, checkpoint_dir=ckpt, device="cpu", log_metrics=crash_after_two)
    assert (ckpt / CHECKPOINT_FILE).is_file()
    logged: list[int] = []
    resumed = train_model(
        split, RESUME, checkpoint_dir=ckpt, device="cpu", log_metrics=lambda m, e: logged.append(e)
    )
    assert resumed.resumed_from_epoch == 2
    assert logged == [3, 4]  # only the epochs this run trained
    assert len(resumed.history) == len(whole.history) == 4
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert [h["val_log_loss"] for h in resumed.history] == [h["val_log_loss"] for h in whole.history]
    assert resumed.best_epoch == whole.best_epoch and resumed.threshold == whole.threshold

    # a finished run restarted (e.g. a retried task) returns at once with the same model
    again = train_model(split, RESUME, checkpoint_dir=ckpt, device="cpu")
    assert again.resumed_from_epoch == 4
    assert all(torch.equal(a[k], again.model.state_dict()[k]) for k in a)

    # another config: the checkpoint is ignored (logged) and replaced
    caplog.set_level(logging.WARNING, logger="ml_tasks.training.checkpoint")
    other = train_model(split, RESUME.replace(seed=1, max_epochs=1), checkpoint_dir=ckpt, device="cpu")
    assert other.resumed_from_epoch == 0
    assert any("belongs to another run" in r.getMessage() for r in caplog.records)
    state = torch.load(ckpt / CHECKPOINT_FILE, weights_only=True)
    assert state["fingerprint"] == other.fingerprint != whole.fingerprint
    assert state["epoch"] == 1
