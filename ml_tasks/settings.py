"""Typed settings read from the environment (prefix ``FLYWHEEL_``) and overridable by CLI flags.

Importing this module has no side effects: nothing is created or contacted until a value is used.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ml_tasks.contract import EXPERIMENT, REGISTERED_MODEL

CHICAGO_TZ = "America/Chicago"


class Settings(BaseSettings):
    """Runtime configuration shared by every ``ml-tasks`` step."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", extra="ignore")

    data_root: str = Field(
        default=".flywheel/data",
        description="Root of all partitions: a local folder or any fsspec/pyarrow URI (s3://..., gs://...).",
    )
    timezone: str = Field(default=CHICAGO_TZ, description="Time zone of the source's floating timestamps.")
    code_version: str | None = Field(
        default=None, description="Code version recorded in manifests (default: package version + git sha)."
    )
    chicago_app_token: SecretStr | None = Field(
        default=None, description="Optional Socrata app token for the City of Chicago portal."
    )
    chicago_base_url: str = Field(
        default="https://data.cityofchicago.org", description="City of Chicago data portal base URL."
    )
    postgres_uri: SecretStr | None = Field(
        default=None, description="SQLAlchemy URI of the postgres source (secret: never logged)."
    )
    max_reject_rate: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Batch fails when more than this share of rows is rejected."
    )
    allow_empty: bool = Field(default=False, description="Accept an interval with no trips.")
    max_fare: float = Field(default=1000.0, gt=0, description="Fares above this are rejected.")
    max_trip_miles: float = Field(default=1000.0, gt=0, description="Longer trips are rejected.")
    max_trip_seconds: int = Field(default=86_400, gt=0, description="Longer trips are rejected (one day).")
    synthetic_trips_per_day: int = Field(default=20_000, ge=0, description="Synthetic source volume.")
    synthetic_drift_from: str | None = Field(
        default=None, description="ISO date from which the synthetic source drifts (None: never)."
    )

    feature_repo: str | None = Field(
        default=None,
        description="Feast feature repo (default: feature_repo/ beside ml_tasks, else ./feature_repo).",
    )
    feast_env: Literal["local", "redis", "production"] = Field(
        default="local",
        description="Which feature_store yaml to load: local (SQLite online), redis, production.",
    )
    feast_dir: str | None = Field(
        default=None, description="Local registry and SQLite online store folder (default <data_root>/feast)."
    )
    materialize_batch_rows: int = Field(
        default=20_000, gt=0, description="Rows per online-store write batch when materializing."
    )
    training_set_chunk_rows: int = Field(
        default=250_000, gt=0, description="Entity rows per point-in-time join (bounds memory)."
    )

    # -- training, evaluation and the registry ------------------------------------------------------
    model_name: str = Field(
        default=REGISTERED_MODEL, description="Registered model name in the MLflow registry."
    )
    mlflow_experiment: str = Field(default=EXPERIMENT, description="MLflow experiment of the training runs.")
    train_trials: int = Field(
        default=2, ge=1, le=50, description="Hyperparameter trials per training run (trial 0 = defaults)."
    )
    train_search_seconds: float | None = Field(
        default=None, ge=0,
        description="Time budget of the hyperparameter search (checked between trials; trial 0 always runs);"
        " unset: only train_trials bounds it.",
    )  # fmt: skip
    train_seed: int = Field(default=20240101, description="Seed of the split, trials and initialisation.")
    train_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Training device: auto = CUDA when present, else CPU."
    )
    train_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch CPU threads of a training process (default: half the cores, at least 1; measured"
        " here: 1 thread trained as fast as 2 on a 2-core machine, and far faster when the cores were busy).",
    )
    train_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Data-parallel training processes per trial (one per GPU of a multi-GPU pod): above 1,"
        " each trial runs under torchrun (DDP; NCCL on CUDA, gloo on CPU).",
    )
    promotion_metric: Literal["roc_auc", "pr_auc"] = Field(
        default="roc_auc", description="Metric the gate compares (higher is better)."
    )
    promotion_margin: float = Field(
        default=0.005, ge=0.0, le=1.0,
        description="A candidate may be this much worse than the champion on the metric and still win.",
    )  # fmt: skip
    onnx_tolerance: float = Field(
        default=1e-5, gt=0, description="Largest |ONNX - torch| probability difference accepted."
    )
    allow_fault_injection: bool = Field(
        default=False,
        description="Honour --inject-fault flags (tests and fault-injection runs only; off in production).",
    )

    # -- batch prediction ---------------------------------------------------------------------------
    predict_shards: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Shards a taxi_batch_predict interval fans out over (mapped tasks).",
    )
    predict_batch_rows: int = Field(
        default=65_536, gt=0, description="Rows per record batch streamed through onnxruntime."
    )
    predict_threads: int | None = Field(
        default=None, ge=1, description="onnxruntime intra-op threads of a prediction process (default: 1)."
    )
    predictions_postgres_uri: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URI of a PostgreSQL database the predictions are also upserted into"
        " (key: trip, model version); unset: parquet only. Secret: never logged.",
    )
    predictions_postgres_table: str = Field(
        default="taxi_tip_predictions", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="Table of the PostgreSQL upsert (created when missing).",
    )  # fmt: skip

    # -- monitoring and the retraining loop ------------------------------------------------------------
    monitor_reference_rows: int = Field(
        default=50_000,
        ge=1_000,
        description="Rows of the reference sample stored with a model at training time.",
    )
    monitor_sample_rows: int = Field(
        default=100_000, ge=1_000,
        description="Current rows compared by Evidently per interval (a seeded sample above this; statistics"
        " of the data-quality summary always use every row).",
    )  # fmt: skip
    monitor_seed: int = Field(default=20240101, description="Seed of the reference and current samples.")
    monitor_drift_share: float = Field(
        default=0.3, gt=0.0, le=1.0,
        description="Dataset drift when at least this share of the model's input columns drifted.",
    )  # fmt: skip
    monitor_share_columns: Literal["trip", "all"] = Field(
        default="trip",
        description="Inputs the drift share counts: trip = the trip's own fields and request-time features;"
        " all = also the feature-store aggregates (<view>__<feature>), which trend with the history a store"
        " holds (a 28-day count grows for 28 days) and are tested and reported either way.",
    )
    monitor_evidently_summary: bool = Field(
        default=False,
        description="Add Evidently's DataSummaryPreset (per-column statistics and histograms of the sample"
        " and the reference sample) to drift_report.html/json: ~60% of the drift step's Evidently time; the"
        " data-quality summary over every row is written either way.",
    )
    monitor_prediction_drift: bool = Field(
        default=True, description="A drifted prediction distribution alone is also a drift verdict."
    )
    monitor_label_delay_days: int = Field(
        default=2, ge=0, le=366,
        description="Labels of a day are treated as landed this many days after it (simulated label delay):"
        " performance is measured on the interval that many days before the monitored one.",
    )  # fmt: skip
    monitor_max_auc_drop: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="Performance alert when labelled ROC-AUC is this much below the training-time value.",
    )  # fmt: skip
    drift_hysteresis: int = Field(
        default=2, ge=1, le=30, description="Retrain only after drift on this many consecutive intervals."
    )
    retrain_cooldown_days: int = Field(
        default=7, ge=0, le=366,
        description="No drift-triggered retrain within this many days (data time) after the previous one.",
    )  # fmt: skip

    def secret_values(self) -> list[str]:
        """The values of every secret setting (``SecretStr`` fields), for the redaction filter."""
        values = [getattr(self, name) for name in type(self).model_fields]
        return [v.get_secret_value() for v in values if isinstance(v, SecretStr) and v.get_secret_value()]

    def resolved_data_root(self) -> str:
        """The data root as an absolute local path or an unchanged URI."""
        if "://" in self.data_root:
            return self.data_root.rstrip("/")
        return str(Path(self.data_root).expanduser().resolve())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
