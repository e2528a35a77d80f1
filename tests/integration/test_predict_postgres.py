"""The PostgreSQL upsert of committed predictions, against a real PostgreSQL (``postgres_database_uri``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from tests.integration._pipeline import MODEL, PipelineRoot, day

pytestmark = [pytest.mark.timeout(900)]

TABLE = "tip_predictions_test"
INTERVAL = Interval(day(5), day(7))


@pytest.fixture(autouse=True)
def own_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: keep each data root on its own store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FLYWHEEL_CODE_VERSION", "test")


@pytest.fixture(scope="module")
def root(pipeline_root: PipelineRoot, tmp_path_factory: pytest.TempPathFactory) -> PipelineRoot:
    copy = pipeline_root.copy_to(tmp_path_factory.mktemp("predict_pg") / "data")
    return copy


def _rows(uri: str) -> pa.Table:
    import sqlalchemy as sa

    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(f"SELECT * FROM {TABLE} ORDER BY model_version, trip_key"))
            names = list(result.keys())
            data = [tuple(r) for r in result]
    finally:
        engine.dispose()
    return pa.table({n: [row[i] for row in data] for i, n in enumerate(names)})


def _parquet(root: PipelineRoot) -> pa.Table:
    from ml_tasks.prediction.schema import CORE_COLUMNS

    tables = [
        pq.read_table(
            root.data_root / "predictions" / MODEL / f"dt={d.isoformat()}" / "part-00000.parquet",
            columns=list(CORE_COLUMNS),
        )
        for d in INTERVAL.days()
    ]
    table = pa.concat_tables(tables)
    return table.sort_by([("model_version", "ascending"), ("trip_key", "ascending")])


def _as_python(table: pa.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        row["event_timestamp"] = row["event_timestamp"].astimezone(dt.UTC)
    return rows


def test_upsert_matches_parquet_is_idempotent_and_keyed_by_version(
    root: PipelineRoot, postgres_database_uri: str
) -> None:
    from ml_tasks.prediction.commit import predict_interval
    from ml_tasks.prediction.postgres import upsert_tables

    settings = Settings(
        data_root=str(root.data_root),
        predictions_postgres_uri=SecretStr(postgres_database_uri),
        predictions_postgres_table=TABLE,
        predict_batch_rows=1000,
    )
    first = predict_interval(settings, INTERVAL, f"{MODEL}@champion")
    parquet = _parquet(root)
    assert first["postgres_rows"] == first["rows"] == parquet.num_rows > 2000
    stored = _rows(postgres_database_uri)
    assert stored.column_names == parquet.column_names
    assert _as_python(stored) == _as_python(parquet)  # every value, scores to the last bit

    again = predict_interval(settings, INTERVAL, f"{MODEL}/{root.version}")
    assert again["postgres_rows"] == first["rows"]
    assert _rows(postgres_database_uri).num_rows == parquet.num_rows  # updated, not duplicated

    # a second model version of the same trips adds its own rows and leaves version 1's alone
    other = parquet.set_column(
        parquet.schema.get_field_index("model_version"),
        "model_version",
        pa.array(["2"] * parquet.num_rows),
    ).set_column(parquet.schema.get_field_index("score"), "score", pa.array([0.5] * parquet.num_rows))
    assert upsert_tables(postgres_database_uri, TABLE, [other]) == parquet.num_rows
    both = _rows(postgres_database_uri)
    assert both.num_rows == 2 * parquet.num_rows
    ones = both.filter(pc.equal(both["model_version"], root.version))
    assert _as_python(ones) == _as_python(parquet)
    twos = both.filter(pc.equal(both["model_version"], "2"))
    assert set(twos["score"].to_pylist()) == {0.5}


def test_database_error_names_the_table_not_the_uri(tmp_path: Path) -> None:
    from ml_tasks.prediction.postgres import upsert_tables
    from ml_tasks.prediction.schema import CORE_COLUMNS, PredictionError

    uri = f"postgresql://flywheel:s3cret-pw@/nodb?host={tmp_path}"  # no server listens on that socket dir
    with pytest.raises(PredictionError, match=TABLE) as info:
        upsert_tables(uri, TABLE, [pa.schema(CORE_COLUMNS).empty_table()])
    assert "s3cret-pw" not in str(info.value)
