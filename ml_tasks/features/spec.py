"""What the feature tables hold: entities, trailing windows and aggregates, defined once.

``feature_repo/`` declares its Feast objects from this module and ``build-features`` computes exactly these
columns. Day D's row is stamped at the end of day D: a trip sees day D-1 at the latest (``docs/features.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ml_tasks.contract import EVENT_TIMESTAMP, FEATURE_SERVICE

#: trailing windows in days; the longest one bounds how much history a day reads
WINDOWS: tuple[int, ...] = (1, 7, 28)
MAX_WINDOW = max(WINDOWS)
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")  # DuckDB-based Feast reads need microseconds
#: days of the longest window that had a curated partition (a partial window is visible, not hidden)
COVERAGE = f"window_days_{MAX_WINDOW}d"

# aggregate name -> (arrow type, description); computed for every window
AGGREGATES: dict[str, tuple[pa.DataType, str]] = {
    "trips": (pa.int64(), "trips started"),
    "fare_mean": (pa.float64(), "mean fare (USD)"),
    "fare_per_mile_mean": (pa.float64(), "mean fare per mile, over trips with miles > 0"),
    "tip_rate_mean": (pa.float64(), "mean tips / fare, over trips with fare > 0"),
    "credit_card_share": (pa.float64(), "share of trips paid by credit card"),
    "big_tipper_rate": (pa.float64(), "share of trips with tips > 0.2 * fare"),
}


@dataclass(frozen=True)
class ViewSpec:
    """One entity's trailing-window aggregate table, and the Feast feature view over it."""

    name: str  # feature view name and dataset name under features/
    entity: str  # entity name == join key == column in curated trips
    key_type: pa.DataType
    description: str
    #: Feast ttl in days: an entity with no row for this long has no value (null), not a stale one
    ttl_days: int = 3

    @property
    def dataset(self) -> str:
        return self.name

    def feature_columns(self) -> dict[str, pa.DataType]:
        """Feature column -> arrow type, in declaration order."""
        columns = {f"{agg}_{w}d": typ for w in WINDOWS for agg, (typ, _) in AGGREGATES.items()}
        columns[COVERAGE] = pa.int64()
        return columns

    def schema(self) -> pa.Schema:
        """Schema of the view's partitions: join key, event timestamp, features."""
        return pa.schema(
            [pa.field(self.entity, self.key_type, nullable=False), pa.field(EVENT_TIMESTAMP, TIMESTAMP_TYPE)]
            + [pa.field(name, typ) for name, typ in self.feature_columns().items()]
        )


VIEWS: tuple[ViewSpec, ...] = (
    ViewSpec(
        name="pickup_area_stats",
        entity="pickup_community_area",
        key_type=pa.int64(),
        description="Trailing 1/7/28-day trip statistics of the pickup community area",
    ),
    ViewSpec(
        name="company_stats",
        entity="company",
        key_type=pa.string(),
        description="Trailing 1/7/28-day trip statistics of the taxi company",
    ),
)
VIEWS_BY_NAME: dict[str, ViewSpec] = {v.name: v for v in VIEWS}

#: feature services, one per model version: name -> feature views it serves (all of their features)
FEATURE_SERVICES: dict[str, tuple[str, ...]] = {
    FEATURE_SERVICE: ("pickup_area_stats", "company_stats"),
}
