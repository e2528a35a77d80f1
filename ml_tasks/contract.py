"""Names every step agrees on: storage layers, columns, MLflow tags and artifact files (defined once, here).

Cheap to import on purpose (stdlib only): DAG helpers, the CLI and every layer of ``ml_tasks`` read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

# -- storage: (layer, dataset) under the data root ----------------------------------------------------
RAW = ("raw", "trips")
STAGING = ("staging", "trips")
ACCEPTED = ("staging", "trips_accepted")
CURATED = ("curated", "trips")
QUARANTINE = ("quarantine", "trips")
VALIDATION_REPORTS = ("reports", "validation")
FEATURES_LAYER = "features"
TRAINING_SETS_LAYER = "training_sets"
MODELS_LAYER = "models"
PREDICTIONS_LAYER = "predictions"
MONITORING_LAYER = "monitoring"

# -- files ----------------------------------------------------------------------------------------------
MANIFEST = "_manifest.json"  # beside every partition: inputs + hashes, code version, row counts
PART_FILE = "part-00000.parquet"  # the data file of a partition written whole
ACCOUNTING_FILE = "accounting.json"  # validation: counts, rules, verdict, input/output hashes
GX_RESULT_FILE = "gx_result.json"  # validation: the GX suite result (long row-id lists truncated)
DATA_DOCS_FILE = "data_docs.html"  # validation: GX's own data docs page for that result
INDEX_FILE = "index.html"  # validation: one readable page per day
MODEL_FILE = "model.pt"  # bundle: torch weights
MODEL_JSON = "model.json"  # bundle: config, threshold, training facts
PREPROCESSING_JSON = "preprocessing.json"  # bundle: the fitted input encoding
ONNX_FILE = "model.onnx"
EXPORT_JSON = "onnx_export.json"  # export: sha256, opset, bytes, seconds
CHECK_JSON = "onnx.json"  # check: passed, reasons, parity, latency (the gate's input)
EVALUATION_JSON = "evaluation.json"
RELIABILITY_PNG = "reliability.png"
MODEL_CARD_MD = "model_card.md"
DECISION_JSON = "decision.json"  # the gate's decision (bundle) and the monitor's decision (partition)
REFERENCE_SAMPLE = "reference_sample.parquet"  # monitoring reference, stored with the model
REFERENCE_STATS = "reference_stats.json"
REFERENCE_FILES = (REFERENCE_SAMPLE, REFERENCE_STATS)
DRIFT_REPORT_HTML = "drift_report.html"
DRIFT_REPORT_JSON = "drift_report.json"
SHARDS_DIR = "_shards"  # prediction: the staging area of a sharded run
SHARD_JSON = "_shard.json"

# -- columns --------------------------------------------------------------------------------------------
TRIP_KEY = "trip_key"
EVENT_TIMESTAMP = "event_timestamp"
LABEL = "big_tipper"
SCORE = "score"

# -- MLflow: experiment, registered model, aliases, tags ------------------------------------------------
EXPERIMENT = "flywheel-taxi-tips"
REGISTERED_MODEL = "taxi_tips"
FEATURE_SERVICE = "taxi_tips_v1"  # the feature service the reference model reads (Feast)
CHAMPION = "champion"
CHALLENGER = "challenger"
CHAMPION_SPEC = f"{REGISTERED_MODEL}@{CHAMPION}"  # the model a prediction or monitoring run uses by default
TAG_DAG_ID = "flywheel.dag_id"
TAG_DAG_RUN_ID = "flywheel.dag_run_id"
TAG_TASK_ID = "flywheel.task_id"
TAG_CODE_VERSION = "flywheel.code_version"
TAG_DATA_INTERVAL_START = "flywheel.data_interval_start"
TAG_DATA_INTERVAL_END = "flywheel.data_interval_end"
TAG_FEATURE_SERVICE = "flywheel.feature_service"
TAG_TRAINING_SET_URI = "flywheel.training_set.uri"
TAG_TRAINING_SET_SHA256 = "flywheel.training_set.sha256"
TAG_ONNX_SHA256 = "flywheel.onnx_sha256"
TAG_PREPROCESSING_SHA256 = "flywheel.preprocessing_sha256"
TAG_METRIC = "flywheel.metric"  # prefix: flywheel.metric.<name> on a model version
TAG_RUN_ID = "flywheel.run_id"  # prefix: flywheel.run_id.<task> on a model version
TAG_DECISION = "flywheel.promotion.decision"
TAG_REASONS = "flywheel.promotion.reasons"
TAG_DETAILS = "flywheel.promotion.details"
TAG_DECIDED_AT = "flywheel.promotion.decided_at"
TAG_FORCED = "flywheel.promotion.forced"
TAG_FORCE_REASON = "flywheel.promotion.force_reason"
TAG_PREVIOUS_CHAMPION = "flywheel.promotion.previous_champion"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag (the UI draws the tree from it)


def training_set_digest(outputs: Iterable[Mapping[str, Any]]) -> str:
    """The identity of a training-set snapshot: sha256 over its files' sha256 in manifest order."""
    return hashlib.sha256("".join(str(o["sha256"]) for o in outputs).encode()).hexdigest()
