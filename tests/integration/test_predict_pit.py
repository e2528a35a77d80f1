"""Prediction's DuckDB point-in-time join gives Feast's features, value for value, on a real data root.

Both joins run on the same entity rows against the same registry and feature files of the shared
``pipeline_root``: the real trips of every day with features, the same trips moved 1-4 days later (so
the ttl cuts some of them off), rows exactly at a feature row's time and at its ttl's end (and one
microsecond after), and rows whose company is null or unknown.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ml_tasks.contract import EVENT_TIMESTAMP, FEATURE_SERVICE, FEATURES_LAYER
from ml_tasks.settings import Settings
from tests.integration._pipeline import DAYS, PipelineRoot, day

pytestmark = [pytest.mark.timeout(900)]

US = dt.timedelta(microseconds=1)


@pytest.fixture(scope="module")
def settings(pipeline_root: PipelineRoot) -> Iterator[Settings]:
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield Settings(data_root=str(pipeline_root.data_root))
    mp.undo()


def _entities(settings: Settings, pipeline_root: PipelineRoot) -> pa.Table:
    """Real entity rows of every day, shifted copies, ttl-boundary rows and null / unknown keys."""
    from ml_tasks.features.retrieval import entity_frame, sorted_order
    from ml_tasks.storage import DataRoot

    root = DataRoot(settings.resolved_data_root())
    days = [entity_frame(root, day(i)) for i in range(1, DAYS)]
    base = pa.concat_tables(days).select([EVENT_TIMESTAMP, "pickup_community_area", "company"])
    parts = [base]
    for shift in (1, 2, 3, 4):
        moved = pc.add(base[EVENT_TIMESTAMP], pa.scalar(dt.timedelta(days=shift), pa.duration("us")))
        parts.append(base.set_column(0, EVENT_TIMESTAMP, moved.cast(base.schema.field(EVENT_TIMESTAMP).type)))
    # rows at a company feature row's own time, its ttl's end, and one microsecond before / after them
    features = pq.read_table(
        pipeline_root.data_root / FEATURES_LAYER / "company_stats" / f"dt={day(3).isoformat()}"
    ).slice(0, 5)
    ttl = dt.timedelta(days=3)
    for offset in (-US, dt.timedelta(0), ttl, ttl + US):
        stamps = [t + offset for t in features[EVENT_TIMESTAMP].to_pylist()]
        parts.append(
            pa.table(
                {
                    EVENT_TIMESTAMP: pa.array(stamps, base.schema.field(EVENT_TIMESTAMP).type),
                    "pickup_community_area": pa.array([8] * len(stamps), pa.int64()),
                    "company": features["company"],
                }
            )
        )
    odd = base.slice(0, 50)
    unknown = pa.array(["No Such Company"] * 25 + [None] * 25, pa.string())
    parts.append(odd.set_column(2, "company", unknown))
    parts.append(odd.set_column(1, "pickup_community_area", pa.nulls(50, pa.int64())))
    table = pa.concat_tables(parts)
    return table.take(sorted_order(table.append_column("trip_key", pa.array(map(str, range(len(table)))))))


def test_duckdb_join_equals_feasts(settings: Settings, pipeline_root: PipelineRoot) -> None:
    from ml_tasks.features.retrieval import ROW, join_features, resolve_service
    from ml_tasks.prediction import pit
    from ml_tasks.prediction.score import open_checked_store

    handle = open_checked_store(settings)
    service, views = resolve_service(handle, FEATURE_SERVICE)
    assert pit.supported(handle, views)
    entities = _entities(settings, pipeline_root)
    kwargs: dict[str, Any] = {"chunk_rows": 4_000, "refusing": "test"}
    feast = join_features(handle, service, views, entities, **kwargs)
    duck = join_features(
        handle, service, views, entities, join=functools.partial(pit.join, views, row=ROW), **kwargs
    )
    assert duck.schema == feast.schema
    assert duck.num_rows == feast.num_rows == entities.num_rows > 10_000
    for name in feast.column_names:
        assert duck[name].equals(feast[name]), name
    # the comparison covers rows with features, rows past the ttl and rows without a match
    filled = duck["company_stats__trips_1d"].is_valid().to_numpy(zero_copy_only=False)
    area = duck["pickup_area_stats__trips_1d"].is_valid().to_numpy(zero_copy_only=False)
    assert 1_000 < int(filled.sum()) < duck.num_rows - 1_000
    assert 1_000 < int(area.sum()) < duck.num_rows - 1_000
    stamps = duck[EVENT_TIMESTAMP].to_pylist()
    companies = duck["company"].to_pylist()
    probes = pq.read_table(
        pipeline_root.data_root / FEATURES_LAYER / "company_stats" / f"dt={day(3).isoformat()}"
    ).slice(0, 5)
    ttl = dt.timedelta(days=3)
    for company, ts in zip(probes["company"].to_pylist(), probes[EVENT_TIMESTAMP].to_pylist(), strict=True):
        found = {
            offset: bool(filled[i])
            for offset in (dt.timedelta(0), ttl, ttl + US)
            for i in range(len(stamps))
            if companies[i] == company and stamps[i] == ts + offset
        }
        assert found[dt.timedelta(0)] and found[ttl], (company, found)
    unknown = np.array([c == "No Such Company" or c is None for c in companies])
    assert not filled[unknown].any()


#: a prediction step in a fresh process that reports whether it imported Feast
_STEP = """
import datetime as dt, json, sys
from ml_tasks.intervals import Interval
from ml_tasks.prediction.commit import predict_interval
from ml_tasks.settings import Settings
day = dt.date.fromisoformat(sys.argv[2])
s = predict_interval(Settings(data_root=sys.argv[1]), Interval(day, day + dt.timedelta(days=1)), sys.argv[3])
print(json.dumps({"sha256": s["partitions"][0]["sha256"], "rows": s["rows"], "feast": "feast" in sys.modules,
                  "torch": "torch" in sys.modules}))
"""


def _step(root: PipelineRoot, when: dt.date) -> dict[str, Any]:
    import json
    import os
    import subprocess
    import sys

    from tests.integration._pipeline import MODEL

    env = {**os.environ, **root.env}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-c", _STEP, str(root.data_root), when.isoformat(), f"{MODEL}@champion"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_a_checked_registry_is_read_without_feast_and_scores_the_same_bytes(
    pipeline_root: PipelineRoot, tmp_path: Path
) -> None:
    from ml_tasks.prediction.checked_registry import RECORD

    root = pipeline_root.copy_to(tmp_path / "data")  # feature-apply on the copy
    record = root.data_root / "feast" / RECORD
    record.unlink(missing_ok=True)  # another test may have predicted on the shared root
    when = day(DAYS - 1)
    full = _step(root, when)  # opens Feast, checks the registry in full, records it
    assert full["feast"] and not full["torch"] and full["rows"] > 500
    assert record.is_file()
    fast = _step(root, when)
    assert not fast["feast"] and not fast["torch"]
    assert fast["sha256"] == full["sha256"] and fast["rows"] == full["rows"]


def test_a_changed_registry_or_declaration_is_checked_in_full(
    pipeline_root: PipelineRoot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from ml_tasks.features.store import RegistryOutOfDate, feature_repo_path
    from ml_tasks.prediction import checked_registry
    from ml_tasks.prediction.score import open_checked_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = pipeline_root.copy_to(tmp_path / "data")
    (root.data_root / "feast" / checked_registry.RECORD).unlink(missing_ok=True)
    repo = tmp_path / "feature_repo"
    shutil.copytree(feature_repo_path(Settings()), repo)
    settings = Settings(data_root=str(root.data_root), feature_repo=str(repo))
    assert checked_registry.checked_views(settings, FEATURE_SERVICE) is None  # never recorded
    open_checked_store(settings)  # the full check passes and records
    views = checked_registry.checked_views(settings, FEATURE_SERVICE)
    assert views is not None
    assert [v.name for v in views] == ["pickup_area_stats", "company_stats"]
    assert all(v.ttl == dt.timedelta(days=3) and len(v.features) == 19 for v in views)
    assert views[1].path.startswith(str(root.data_root)) and views[1].entity_columns[0].name == "company"
    # a declaration source changes (even a comment): the record no longer vouches for the registry
    declarations = repo / "flywheel_declarations.py"
    original = declarations.read_text()
    declarations.write_text(original + "\n# changed\n")
    assert checked_registry.checked_views(settings, FEATURE_SERVICE) is None
    declarations.write_text(original)
    assert checked_registry.checked_views(settings, FEATURE_SERVICE) is not None
    # a view's spec changes in the registry (its ttl): not trusted, and the full check refuses it
    registry_file = root.data_root / "feast" / "registry.db"
    registry = checked_registry._registry_message().FromString(registry_file.read_bytes())
    registry.feature_views[0].spec.ttl.FromTimedelta(dt.timedelta(days=9))
    registry_file.write_bytes(registry.SerializeToString())
    assert checked_registry.checked_views(settings, FEATURE_SERVICE) is None
    with pytest.raises(RegistryOutOfDate, match="ttl"):
        open_checked_store(settings)
