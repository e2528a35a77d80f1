"""materialize's refusals (a missing partition, an unknown view, an old registry), the CLI, the local Redis.

Its own data root and stores, built like test_materialize.py's (``online_stores`` /
``empty_online_stores`` in conftest.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import redis

from ml_tasks.features.spec import VIEWS_BY_NAME
from ml_tasks.features.store import APPLY_HINT, FeatureStoreError, apply_declarations, open_store
from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from ml_tasks.storage import PartitionError
from tests.conftest import run_cli
from tests.integration._materialize import (
    DAYS,
    WINDOW,
    Stores,
    expected_values,
    latest_per_entity,
    online_values,
    run,
    sqlite_rows,
)

ENV = {"FLYWHEEL_CODE_VERSION": "test"}


def test_a_missing_feature_partition_names_the_day_and_writes_nothing(empty_online_stores: Stores) -> None:
    beyond = Interval(WINDOW.start, WINDOW.end + dt.timedelta(days=2))
    with pytest.raises(PartitionError) as err:
        run(empty_online_stores, "sqlite", beyond)
    message = str(err.value)
    assert "2024-03-05, 2024-03-06" in message and "2 day(s)" in message
    assert "`ml-tasks build-features`" in message and "pickup_area_stats" in message
    assert sum(len(rows) for rows in sqlite_rows(empty_online_stores).values()) == 0


def test_an_unknown_view_is_refused_with_the_choices(empty_online_stores: Stores) -> None:
    with pytest.raises(FeatureStoreError, match=r"unknown feature view\(s\) \['trip_stats'\]") as err:
        run(empty_online_stores, "sqlite", WINDOW, views=["pickup_area_stats", "trip_stats"])
    assert "company_stats" in str(err.value) and "pickup_area_stats" in str(err.value)
    assert sum(len(rows) for rows in sqlite_rows(empty_online_stores).values()) == 0


def test_cli_materializes_one_view_of_one_day(empty_online_stores: Stores) -> None:
    day = DAYS[1]
    env = {**ENV, "FLYWHEEL_DATA_ROOT": str(empty_online_stores.data)}
    out = run_cli(
        "materialize",
        "--start",
        day.isoformat(),
        "--view",
        "company_stats",
        "--batch-rows",
        "7",
        "--no-dependents",
        env=env,
    )
    view = VIEWS_BY_NAME["company_stats"]
    expected = latest_per_entity(empty_online_stores.root, view, [day])
    assert out["step"] == "materialize" and out["online_store"] == "sqlite"
    assert [(v["view"], v["rows_read"], v["rows_written"], v["writer"]) for v in out["views"]] == [
        ("company_stats", len(expected), len(expected), "sqlite")
    ]
    assert out["rows"] == len(expected) and out["peak_rss_mib"] > 0
    rows = sqlite_rows(empty_online_stores)
    assert rows["pickup_area_stats"] == []
    assert len(rows["company_stats"]) == len(expected) * len(view.feature_columns())
    got = online_values(empty_online_stores.sqlite, view, list(expected))
    assert got == {k: expected_values(row, view) for k, row in expected.items()}


def test_cli_refuses_an_out_of_date_registry(online_stores: Stores) -> None:
    """A registry applied for another data root differs from the declarations: exit 1, say to apply."""
    stale = online_stores.base / "feast-stale"
    other = online_stores.base / "other-data"
    other.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_DATA_ROOT", str(other))
        handle = open_store(Settings(data_root=str(other), feast_dir=str(stale)))
        apply_declarations(handle)
    env = {**ENV, "FLYWHEEL_DATA_ROOT": str(online_stores.data), "FLYWHEEL_FEAST_DIR": str(stale)}
    result = run_cli("materialize", "--start", DAYS[0].isoformat(), env=env, check=False)
    assert result["returncode"] == 1, result
    assert APPLY_HINT in result["stderr"] and "out of date" in result["stderr"]
    assert "pickup_area_stats_source" in result["stderr"]  # names what differs
    assert result["stdout"].strip() == ""


def test_redis_server_is_real_and_local(online_stores: Stores) -> None:
    client = redis.Redis(host="127.0.0.1", port=online_stores.server.port)
    try:
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        assert str(info["redis_version"]).startswith("6.2")
        assert online_stores.server.connection == f"127.0.0.1:{online_stores.server.port}"
    finally:
        client.close()
