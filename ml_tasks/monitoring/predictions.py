"""The predictions of a monitored interval: their partitions, model versions and projected record batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml_tasks.contract import MANIFEST, PREDICTIONS_LAYER
from ml_tasks.intervals import Interval
from ml_tasks.monitoring import MonitoringError
from ml_tasks.storage import DataRoot, PartitionError

BATCH_ROWS = 65_536


def prediction_partitions(root: DataRoot, model_name: str, interval: Interval) -> list[str]:
    """The complete predictions partitions of every day of ``interval``.

    Raises:
        PartitionError: a day has no (complete) predictions partition.
    """
    paths = {d: root.partition_path(PREDICTIONS_LAYER, model_name, d) for d in interval.days()}
    missing = [d.isoformat() for d, p in paths.items() if not root.exists(f"{p}/{MANIFEST}")]
    if missing:
        raise PartitionError(
            f"no predictions for {model_name} on {len(missing)} day(s) of {interval}:"
            f" {', '.join(missing[:10])} (looked in"
            f" {root.uri(root.dataset_path(PREDICTIONS_LAYER, model_name))}); run taxi_batch_predict"
            " for them first"
        )
    return list(paths.values())


def parquet_files(root: DataRoot, paths: list[str]) -> list[pq.ParquetFile]:
    return [pq.ParquetFile(root.fs.open_input_file(f)) for p in paths for f in root.parquet_files(p)]


def model_versions(files: list[pq.ParquetFile]) -> Counter[str]:
    """Rows per ``model_version`` over the files (one projected column)."""
    counts: Counter[str] = Counter()
    for file in files:
        if "model_version" not in file.schema_arrow.names:
            raise MonitoringError(
                "a predictions file has no model_version column: not a predictions partition"
            )
        vc = pc.value_counts(file.read(columns=["model_version"]).column(0))
        for value, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
            counts[str(value)] += int(n)
    return counts


def prediction_batches(
    files: list[pq.ParquetFile], columns: list[str], version: str | None
) -> Iterator[pa.RecordBatch]:
    """The files' rows (projected on ``columns``), only those of ``version`` when given, in file order."""
    read = [*columns, "model_version"] if version is not None else columns
    for file in files:
        absent = [c for c in read if c not in file.schema_arrow.names]
        if absent:
            raise MonitoringError(
                f"a predictions file lacks the column(s) {absent} the model's reference needs"
            )
        for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=read):
            if version is not None:
                batch = batch.filter(pc.equal(batch.column("model_version"), version)).select(columns)
            yield batch
