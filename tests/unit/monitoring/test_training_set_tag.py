"""Monitoring reads the model's training set from the tag the registry writes (once a silent mismatch)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from ml_tasks.contract import TAG_TRAINING_SET_URI
from ml_tasks.models.version_tags import version_tags
from ml_tasks.monitoring.monitor import training_end, training_set_uri

TAGGED = "file:///data/training_sets/taxi_tips_v1/2024-01-01_2024-01-15"
RECORDED = "file:///data/training_sets/taxi_tips_v1/2023-01-01_2023-02-01"


def test_the_version_tag_wins_over_the_reference_record(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text(json.dumps({"training_set_uri": TAGGED, "threshold": 0.4}))
    tags = version_tags(tmp_path, onnx_sha256="0" * 64, run_ids={"train": "r1"}, metrics={})
    assert tags[TAG_TRAINING_SET_URI] == TAGGED
    uri = training_set_uri(tags, {"training_set_uri": RECORDED})
    assert uri == TAGGED
    assert training_end(uri) == dt.date(2024, 1, 15)


def test_without_the_tag_the_reference_record_is_used() -> None:
    assert training_set_uri({"flywheel.training_set_uri": TAGGED}, {"training_set_uri": RECORDED}) == RECORDED
    assert training_set_uri(None, {"training_set_uri": RECORDED}) == RECORDED
    assert training_end(training_set_uri(None, {})) is None
