"""The staging area of a sharded prediction run: which rows a shard scores, where, and its ``_shard.json``."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ml_tasks.contract import PREDICTIONS_LAYER, SHARD_JSON, SHARDS_DIR
from ml_tasks.intervals import Interval
from ml_tasks.prediction.resolve import ResolvedModel
from ml_tasks.prediction.schema import PredictionError
from ml_tasks.storage import DataRoot


class ShardRecordError(PredictionError):
    """A ``_shard.json`` that is not valid JSON or lacks a field (names the file and the fields)."""


class StagedFile(BaseModel):
    """One staged parquet file, as :meth:`PartitionWriter.outputs` describes it."""

    uri: str
    sha256: str
    rows: int


class ShardDay(BaseModel):
    """What a shard scored of one day."""

    day_rows: int  # the day's trips (all shards)
    rows: int  # the shard's rows
    missing: dict[str, int]  # per view, rows without a feature row
    missing_features: int  # rows missing at least one view
    inputs: list[dict[str, Any]]  # the manifest inputs the day was scored from (kept verbatim)
    file: StagedFile


class ShardRecord(BaseModel):
    """``_shard.json``: written last, so a shard without it is incomplete."""

    model_config = ConfigDict(populate_by_name=True)

    model: ResolvedModel
    interval: dict[str, str]
    shard: int
    shards: int
    run_key: str
    views: list[str]
    columns: list[str] = Field(alias="schema")
    days: dict[str, ShardDay]
    rows: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The JSON document (``schema`` as the key of :attr:`columns`)."""
        return self.model_dump(mode="json", by_alias=True)


def check_shard(shard: int, shards: int) -> None:
    """Raises ValueError unless ``0 <= shard < shards``."""
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: need shards >= 1 and 0 <= shard < shards")


def shard_positions(rows: int, shard: int, shards: int) -> npt.NDArray[np.int64]:
    """Positions (in the day's sorted order) of the rows shard ``shard`` of ``shards`` scores."""
    check_shard(shard, shards)
    return np.arange(shard, rows, shards, dtype=np.int64)


def safe_key(run_key: str) -> str:
    """A path component from a run key (``scheduled__2024-01-01T00:00:00+00:00`` -> filesystem-safe)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_key).strip("._") or "_"


def staging_path(root: DataRoot, model_name: str, run_key: str, interval: Interval) -> str:
    """The staging folder of one run's shards of ``interval``."""
    span = f"{interval.start.isoformat()}_{interval.end.isoformat()}"
    return f"{root.dataset_path(PREDICTIONS_LAYER, model_name)}/{SHARDS_DIR}/{safe_key(run_key)}/{span}"


def shard_dir(shard: int, shards: int) -> str:
    """A shard's folder name under the staging folder."""
    return f"shard-{shard:04d}-of-{shards:04d}"


def shard_path(
    root: DataRoot, model_name: str, run_key: str, interval: Interval, shard: int, shards: int
) -> str:
    """The staging folder of one shard."""
    return f"{staging_path(root, model_name, run_key, interval)}/{shard_dir(shard, shards)}"


def interval_dict(interval: Interval) -> dict[str, str]:
    """``{"start": ..., "end": ...}`` in ISO dates."""
    return {"start": interval.start.isoformat(), "end": interval.end.isoformat()}


def read_shard_record(root: DataRoot, path: str) -> ShardRecord:
    """The shard record at ``path``.

    Raises:
        ShardRecordError: not JSON, or a field missing or of the wrong type (one line, naming each field).
    """
    with root.fs.open_input_stream(path) as stream:
        text = stream.read()
    try:
        return ShardRecord.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}" for e in exc.errors()
        )
        raise ShardRecordError(
            f"{root.uri(path)} is not a valid shard record ({problems}): re-run that shard"
        ) from None


def read_shards(
    root: DataRoot, base: str, interval: Interval, shards: int, run_key: str
) -> list[ShardRecord]:
    """The records of all ``shards`` shards under ``base``, checked to belong to one run of one model.

    Raises:
        PredictionError: a shard is incomplete, or the shards disagree (shard numbers, interval, model,
            columns).
        ShardRecordError: a record does not parse.
    """
    records: list[ShardRecord] = []
    absent: list[int] = []
    for shard in range(shards):
        path = f"{base}/{shard_dir(shard, shards)}/{SHARD_JSON}"
        if root.exists(path):
            records.append(read_shard_record(root, path))
        else:
            absent.append(shard)
    if absent:
        raise PredictionError(
            f"cannot commit the predictions of {interval} (run {run_key!r}): shard(s) {absent} of {shards}"
            f" have no complete output under {root.uri(base)}; run (or re-run) them first"
        )
    first = records[0]
    keys = ("name", "version", "run_id", "onnx_sha256", "feature_service", "threshold")
    for shard, record in enumerate(records):
        if record.shard != shard or record.shards != shards or record.interval != interval_dict(interval):
            raise PredictionError(
                f"shard {shard} of {shards} under {root.uri(base)} describes shard {record.shard} of"
                f" {record.shards} for {record.interval}: not this run's shard"
            )
        if any(getattr(record.model, k) != getattr(first.model, k) for k in keys):
            raise PredictionError(
                f"shards of {interval} were scored with different models: shard 0 with"
                f" {first.model.uri} ({first.model.onnx_sha256[:12]}), shard {shard} with"
                f" {record.model.uri} ({record.model.onnx_sha256[:12]}); re-run the shards"
            )
        if record.columns != first.columns or record.views != first.views:
            raise PredictionError(f"shard {shard} of {interval} has a different schema than shard 0")
    return records


def remove_empty_parents(root: DataRoot, path: str, stop: str) -> None:
    """Delete ``path`` and its parents up to (not including) ``stop`` while they are empty."""
    while path != stop and path.startswith(stop):
        if root.exists(path) and root.fs.get_file_info(pafs.FileSelector(path, recursive=False)):
            return
        if root.exists(path):
            root.fs.delete_dir(path)
        path = path.rsplit("/", 1)[0]
