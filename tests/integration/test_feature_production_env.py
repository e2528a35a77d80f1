"""The production feature_store yaml, for real: SQL registry in PostgreSQL, Redis online store.

The same declarations as the local environment; only the yaml differs. The offline data stays a local
data root here (production points FLYWHEEL_DATA_ROOT at an object store, which cannot exist on this
machine: the DuckDB reads of s3:// paths are not exercised).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from ml_tasks.features.build import build_features
from ml_tasks.features.materialize import materialize
from ml_tasks.features.online import online_features
from ml_tasks.features.store import apply_declarations, check_registry, open_store, registry_changes
from ml_tasks.intervals import make_interval
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot
from tests.conftest import run_cli
from tests.integration._servers.redis import RedisServer

DAYS = ("2024-04-01", "2024-04-03")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(folder=tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


def test_production_yaml_with_postgres_registry_and_redis(
    data_root: Path, postgres_database_uri: str, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for step in ("extract", "transform", "validate", "publish"):
        extra = ["--trips-per-day", "800"] if step == "extract" else []
        run_cli(step, "--start", DAYS[0], "--end", DAYS[1], *extra)
    monkeypatch.setenv("FLYWHEEL_FEAST_REGISTRY_URI", postgres_database_uri)
    monkeypatch.setenv("FLYWHEEL_REDIS_CONNECTION", redis_server.connection)
    settings = Settings(data_root=str(data_root), feast_env="production")
    root = DataRoot(settings.resolved_data_root())
    interval = make_interval(*DAYS)
    build_features(root, interval, settings)

    handle = open_store(settings)
    assert handle.describe()["online_store"] == "redis"
    applied = apply_declarations(handle)
    assert "create feature view pickup_area_stats" in applied["changes"]
    # the registry lives in PostgreSQL, nowhere under the data root
    assert not (data_root / "feast").exists()
    engine = sa.create_engine(postgres_database_uri, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        names = {row[0] for row in conn.execute(sa.text("SELECT feature_view_name FROM feature_views"))}
    engine.dispose()
    assert names == {"pickup_area_stats", "company_stats"}

    fresh = open_store(settings)
    check_registry(fresh)
    assert registry_changes(fresh) == []
    summary = materialize(fresh, root, interval, settings)
    assert summary["online_store"] == "redis"
    assert summary["rows"] > 0 and redis_server.client().dbsize() > 0

    # what Redis serves equals the last day's feature row
    last = pq.read_table(root.partition_path("features", "pickup_area_stats", "2024-04-02")).to_pylist()
    row = next(r for r in last if r["trips_1d"] > 0)
    served = online_features(fresh, "taxi_tips_v1", [f"pickup_community_area={row['pickup_community_area']}"])
    values = served["rows"][0]
    for name in ("trips_1d", "trips_28d", "fare_mean_7d", "big_tipper_rate_28d", "window_days_28d"):
        assert values[f"pickup_area_stats__{name}"] == row[name], name
    assert served["found"]["pickup_area_stats"] == 1
