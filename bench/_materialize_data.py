"""The data of ``bench/feature_materialize.py``: the generated feature partitions, and the floor's pairs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset  # pq.read_table imports it lazily (~2 s): loaded before any clock starts
import pyarrow.parquet as pq

from ml_tasks.contract import EVENT_TIMESTAMP
from ml_tasks.features.spec import VIEWS_BY_NAME, ViewSpec

VIEW = "pickup_area_stats"
SAMPLE_KEYS = 200
REDIS_PIPELINE_ROWS = 10_000


def generate(data_root: Path, rows: int, start: dt.date, days: int, timezone: str) -> dict[str, list[Any]]:
    """Write the feature partitions; return the expected values of a sample of entities (key -> values)."""
    from ml_tasks.contract import FEATURES_LAYER
    from ml_tasks.features.build import end_of_day_utc
    from ml_tasks.features.spec import COVERAGE, VIEWS
    from ml_tasks.storage import DataRoot, Manifest

    spec = VIEWS_BY_NAME[VIEW]
    root = DataRoot(str(data_root))
    rng = np.random.default_rng(20240501)
    keys = rng.permutation(rows).astype(np.int64) + 1  # distinct entities, not in key order in the files
    expected: dict[str, list[Any]] = {}
    sample = set(keys[:: max(1, rows // SAMPLE_KEYS)][:SAMPLE_KEYS].tolist())
    for i, day_keys in enumerate(np.array_split(keys, days)):
        day = start + dt.timedelta(days=i)
        n = len(day_keys)
        ts = end_of_day_utc(day, timezone)
        micros = int(ts.timestamp()) * 1_000_000
        columns: dict[str, pa.Array] = {
            spec.entity: pa.array(day_keys, pa.int64()),
            EVENT_TIMESTAMP: pa.array(np.full(n, micros, np.int64)).cast(spec.schema().field(1).type),
        }
        for name, typ in spec.feature_columns().items():
            if name == COVERAGE:
                columns[name] = pa.array(np.full(n, 28, np.int64))
            elif typ == pa.int64():
                columns[name] = pa.array(rng.integers(0, 20_000, n), pa.int64())
            else:
                mask = rng.random(n) < 0.03
                columns[name] = pa.array(rng.random(n) * 50.0, pa.float64(), mask=mask)
        table = pa.table(columns, schema=spec.schema())
        for view in VIEWS:
            data = table if view.name == VIEW else view.schema().empty_table()
            root.write_table(
                root.partition_path(FEATURES_LAYER, view.dataset, day),
                data,
                view.schema(),
                Manifest(
                    dataset=f"{FEATURES_LAYER}/{view.dataset}",
                    partition=day.isoformat(),
                    step="bench-feature-materialize",
                    row_counts={"rows": data.num_rows},
                    params={"view": view.name, "event_timestamp": ts.isoformat()},
                ),
            )
        picked = np.flatnonzero(np.isin(day_keys, list(sample)))
        names = list(spec.feature_columns())
        for row in table.take(pa.array(picked)).select([spec.entity, *names]).to_pylist():
            expected[str(row[spec.entity])] = [row[c] for c in names]
    return expected


def feature_files(data_root: str) -> list[str]:
    return sorted(str(p) for p in Path(data_root, "features", VIEW).glob("dt=*/part-*.parquet"))


def floor_pairs(data_root: str, spec: ViewSpec) -> tuple[list[bytes], list[bytes]]:
    """Read the rows back and encode each as (8-byte key, fixed-width blob of its values + timestamp)."""
    table = pa.concat_tables(pq.read_table(f) for f in feature_files(data_root))
    values = [table[c].to_numpy().astype(np.float64) for c in spec.feature_columns()]
    values.append(table[EVENT_TIMESTAMP].cast(pa.int64()).to_numpy().astype(np.float64))
    matrix = np.ascontiguousarray(np.column_stack(values))
    width = matrix.shape[1] * 8
    buf = matrix.tobytes()
    kbuf = table[spec.entity].to_numpy().astype(">i8").tobytes()
    n = table.num_rows
    return [kbuf[i * 8 : i * 8 + 8] for i in range(n)], [buf[i * width : (i + 1) * width] for i in range(n)]
