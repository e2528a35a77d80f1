"""Feast declarations of the reference pipeline: entities, sources, feature views, feature services.

Declarations only. The columns come from ``ml_tasks.features.spec`` (the same module that computes
them), so what Feast serves is what ``ml-tasks build-features`` writes. Sources point at the offline
feature tables under the data root, read from ``FLYWHEEL_DATA_ROOT`` when the repo is loaded (the
registry records the resolved location; ``ml-tasks feature-apply --check`` notices when it moved).

Apply with ``ml-tasks feature-apply`` (or ``feast -f <feature_store yaml> apply`` from this folder
with ``FLYWHEEL_DATA_ROOT`` and ``FLYWHEEL_FEAST_DIR`` set).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow as pa
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64, PrimitiveFeastType, String

from ml_tasks.contract import EVENT_TIMESTAMP, FEATURE_SERVICE, FEATURES_LAYER
from ml_tasks.features.spec import FEATURE_SERVICES, VIEWS, ViewSpec

_DATA_ROOT = os.environ.get("FLYWHEEL_DATA_ROOT") or str(
    Path(__file__).resolve().parent.parent / ".flywheel/data"
)
_FEAST_TYPES: dict[pa.DataType, PrimitiveFeastType] = {
    pa.int64(): Int64,
    pa.float64(): Float64,
    pa.string(): String,
}
_VALUE_TYPES: dict[pa.DataType, ValueType] = {pa.int64(): ValueType.INT64, pa.string(): ValueType.STRING}


def _source_path(view: ViewSpec) -> str:
    # one parquet file per day partition; the `dt=` folders are hive partitions DuckDB recognises
    root = _DATA_ROOT.rstrip("/")
    return f"{root}/{FEATURES_LAYER}/{view.dataset}/dt=*/*.parquet"


pickup_community_area = Entity(
    name="pickup_community_area",
    join_keys=["pickup_community_area"],
    value_type=ValueType.INT64,
    description="City of Chicago community area (1-77) where the trip started",
)
company = Entity(
    name="company",
    join_keys=["company"],
    value_type=ValueType.STRING,
    description="Taxi company name as published by the City of Chicago",
)
_ENTITIES = {e.name: e for e in (pickup_community_area, company)}


def _feature_view(view: ViewSpec) -> FeatureView:
    source = FileSource(
        name=f"{view.name}_source",
        path=_source_path(view),
        file_format=ParquetFormat(),
        timestamp_field=EVENT_TIMESTAMP,
        description=f"ml-tasks build-features: {FEATURES_LAYER}/{view.dataset}/dt=YYYY-MM-DD",
    )
    return FeatureView(
        name=view.name,
        entities=[_ENTITIES[view.entity]],
        ttl=dt.timedelta(days=view.ttl_days),
        schema=[Field(name=name, dtype=_FEAST_TYPES[typ]) for name, typ in view.feature_columns().items()],
        source=source,
        online=True,
        description=view.description,
        tags={"owner": "flywheel", "built_by": "ml-tasks build-features"},
    )


pickup_area_stats, company_stats = (_feature_view(v) for v in VIEWS)
_VIEWS = {fv.name: fv for fv in (pickup_area_stats, company_stats)}

taxi_tips_v1 = FeatureService(
    name=FEATURE_SERVICE,
    features=[_VIEWS[name] for name in FEATURE_SERVICES[FEATURE_SERVICE]],
    description="Features of the taxi_tips model, version 1: pickup-area and company trailing statistics",
    tags={"model": "taxi_tips"},
)
