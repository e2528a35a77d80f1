"""The PostgreSQL upsert's statements and COPY format (the server: tests/integration)."""

from __future__ import annotations

import pyarrow as pa

from ml_tasks.prediction.schema import CORE_COLUMNS


def test_postgres_statements_and_copy_format() -> None:
    from ml_tasks.prediction import postgres

    assert postgres.sqlalchemy_uri("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert postgres.sqlalchemy_uri("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert postgres.sqlalchemy_uri("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    create = postgres._create_sql("preds").as_string(None)
    assert 'PRIMARY KEY ("trip_key", "model_version")' in create and '"score" double precision' in create
    merge = postgres._merge_sql("preds", "tmp").as_string(None)
    assert 'ON CONFLICT ("trip_key", "model_version") DO UPDATE SET "event_timestamp"' in merge
    assert '"trip_key" = EXCLUDED' not in merge  # the key is not updated
    assert set(postgres.SQL_TYPES) == set(CORE_COLUMNS)
    table = pa.table({"s": pa.array(["a", None]), "f": pa.array([0.1234567890123456789, 1e-300])})
    assert postgres._csv(table) == b'"a",0.12345678901234568\n,1e-300\n'
