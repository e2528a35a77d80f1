"""The reference of a model: what monitoring compares current data with, stored with the model when trained.

``reference_sample.parquet`` (a seeded sample of training rows with the model's scores) and
``reference_stats.json`` (statistics over every training row); deterministic. See ``docs/monitoring.md``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml_tasks.contract import LABEL, REFERENCE_FILES, REFERENCE_SAMPLE, REFERENCE_STATS, SCORE
from ml_tasks.errors import FlywheelError
from ml_tasks.models import drift_null
from ml_tasks.models.column_stats import (
    categorical_stats,
    finite_or_none,
    is_numeric_type,
    numeric_stats,
    sample_indices,
)
from ml_tasks.models.reference_stats import FORMAT_VERSION, read_reference_stats
from ml_tasks.storage import ContractFileError

if TYPE_CHECKING:
    from ml_tasks.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_ROW_GROUP = 65_536

ScoreFn = Callable[[pa.Table], npt.NDArray[np.float64]]


class MonitoringReferenceError(FlywheelError, RuntimeError):
    """A monitoring reference that cannot be built or read (names the input and the problem)."""


class ReferenceNotFoundError(MonitoringReferenceError):
    """The model version (or bundle) has no reference files (models trained before monitoring existed)."""


@dataclass(frozen=True)
class Reference:
    """A loaded reference: the sample, the statistics and where they came from."""

    sample: pa.Table
    stats: dict[str, Any]
    source: str
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    model_name: str | None = None
    model_version: str | None = None

    @property
    def categorical(self) -> list[str]:
        return list(self.stats["inputs"]["categorical"])

    @property
    def numeric(self) -> list[str]:
        return list(self.stats["inputs"]["numeric"])

    @property
    def inputs(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    def record(self) -> dict[str, Any]:
        """The manifest ``inputs`` entry of this reference."""
        uri = (
            f"models:/{self.model_name}/{self.model_version}"
            if self.model_name and self.model_version
            else self.source
        )
        return {"reference": {"uri": uri, "source": self.source, "files": dict(sorted(self.files.items()))}}


def column_stats(table: pa.Table, categorical: list[str], numeric: list[str]) -> dict[str, dict[str, Any]]:
    """Statistics of every listed column of ``table`` (over all its rows)."""
    missing = [c for c in (*categorical, *numeric) if c not in table.column_names]
    if missing:
        raise MonitoringReferenceError(f"the table lacks the model input column(s) {missing}")
    out: dict[str, dict[str, Any]] = {}
    for name in categorical:
        out[name] = categorical_stats(table.column(name))
    for name in numeric:
        if not is_numeric_type(table.column(name).type):
            raise MonitoringReferenceError(
                f"numeric input {name!r} is {table.column(name).type}, not a number"
            )
        out[name] = numeric_stats(table.column(name))
    return out


# -- building ---------------------------------------------------------------------------------------------


def compute_reference(
    training_set: pa.Table,
    categorical: list[str],
    numeric: list[str],
    score: ScoreFn,
    *,
    rows: int,
    seed: int,
    extra: Mapping[str, Any] | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """The reference sample and statistics of ``training_set`` (see the module docstring).

    Args:
        training_set: every training row (the model's input columns and the label).
        categorical: the model's categorical inputs.
        numeric: the model's numeric inputs.
        score: the model's probability for a table of rows.
        rows: the sample's size cap.
        seed: the sample's seed.
        extra: more keys for the statistics (training set uri / sha256, model identity).

    Raises:
        MonitoringReferenceError: missing columns, an empty training set, or a label with nulls.
    """
    if training_set.num_rows == 0:
        raise MonitoringReferenceError("the training set has no rows: no reference can be built")
    if LABEL not in training_set.column_names:
        raise MonitoringReferenceError(f"the training set has no label column {LABEL!r}")
    columns = column_stats(training_set, categorical, numeric)
    label = training_set.column(LABEL)
    if label.null_count:
        raise MonitoringReferenceError(f"the training set has {label.null_count} null label(s)")
    index = sample_indices(training_set.num_rows, rows, seed)
    sample = training_set.select([*categorical, *numeric, LABEL]).take(pa.array(index))
    scores = np.asarray(score(sample), dtype=np.float64)
    if scores.shape != (sample.num_rows,) or not np.all(np.isfinite(scores)):
        raise MonitoringReferenceError(
            f"the model returned {scores.shape} scores for {sample.num_rows} rows (or NaN)"
        )
    sample = sample.append_column(SCORE, pa.array(scores, pa.float64()))
    calibrated = [(c, "categorical") for c in categorical] + [(c, "numeric") for c in (*numeric, SCORE)]
    stats: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "inputs": {"categorical": list(categorical), "numeric": list(numeric)},
        "label": LABEL,
        "rows": training_set.num_rows,
        "sample_rows": sample.num_rows,
        "seed": seed,
        "label_rate": finite_or_none(pc.mean(pc.cast(label, pa.float64())).as_py()),
        "columns": columns,
        "score": {**numeric_stats(sample.column(SCORE)), "over": "sample"},
        "sample_label_rate": finite_or_none(pc.mean(pc.cast(sample.column(LABEL), pa.float64())).as_py()),
        "drift_null": drift_null.calibrate(sample, calibrated, seed=seed),
        **dict(extra or {}),
    }
    return sample, stats


def _write_sample(path: Path, sample: pa.Table) -> str:
    from ml_tasks.storage import file_sha256

    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(sample, tmp, compression="zstd", row_group_size=SAMPLE_ROW_GROUP, write_statistics=True)
    tmp.replace(path)
    return file_sha256(path)


def write_reference(directory: Path, sample: pa.Table, stats: dict[str, Any]) -> dict[str, str]:
    """Write both files into ``directory`` (each atomically; the statistics last, with the sample's hash)."""
    from ml_tasks.storage import atomic_write_bytes, file_sha256

    directory.mkdir(parents=True, exist_ok=True)
    sample_sha = _write_sample(directory / REFERENCE_SAMPLE, sample)
    document = {**stats, "sample_sha256": sample_sha}
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(directory / REFERENCE_STATS, text.encode())
    return {REFERENCE_SAMPLE: sample_sha, REFERENCE_STATS: file_sha256(directory / REFERENCE_STATS)}


def _read_training_set(training_set: pa.Table | str | Path) -> pa.Table:
    if isinstance(training_set, pa.Table):
        return training_set
    path = Path(str(training_set).removeprefix("file://"))
    if "://" in str(training_set) and not str(training_set).startswith("file://"):
        return pq.read_table(str(training_set))
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise MonitoringReferenceError(f"training set {training_set}: no parquet file in the folder")
        return pa.concat_tables([pq.read_table(f) for f in files])
    if not path.is_file():
        raise MonitoringReferenceError(f"training set {training_set} does not exist")
    return pq.read_table(path)


def build_reference(bundle_dir: Path, training_set: pa.Table | str, settings: Settings) -> dict[str, Any]:
    """Write ``reference_sample.parquet`` and ``reference_stats.json`` into the bundle; return a summary.

    Args:
        bundle_dir: a trained bundle (``load_bundle`` must load it).
        training_set: the training set as a table, or the uri / path of its partition folder or file.
        settings: ``monitor_reference_rows`` and ``monitor_seed``.

    Returns:
        ``{"files": {name: sha256}, "rows", "sample_rows", "seed", "label_rate"}``.

    Raises:
        MonitoringReferenceError: an empty training set, missing input columns or labels.
    """
    from ml_tasks.models.network import load_bundle

    bundle = load_bundle(bundle_dir)
    table = _read_training_set(training_set)
    inputs = bundle.preprocessor.inputs
    meta = bundle.metadata
    extra = {
        "training_set_uri": meta.get("training_set_uri")
        or (training_set if isinstance(training_set, str) else None),
        "training_set_sha256": meta.get("training_set_sha256"),
        "preprocessing_sha256": meta.get("preprocessing_sha256"),
        "threshold": float(meta["threshold"]),
        "feature_service": meta.get("feature_service"),
    }
    sample, stats = compute_reference(
        table,
        list(inputs.categorical),
        list(inputs.numeric),
        bundle.predict_proba,
        rows=settings.monitor_reference_rows,
        seed=settings.monitor_seed,
        extra=extra,
    )
    files = write_reference(Path(bundle_dir), sample, stats)
    log.info(
        "reference of %s: %d of %d training rows sampled (seed %d)",
        bundle_dir, sample.num_rows, table.num_rows, settings.monitor_seed,
    )  # fmt: skip
    return {
        "files": files,
        "rows": stats["rows"],
        "sample_rows": stats["sample_rows"],
        "seed": stats["seed"],
        "label_rate": stats["label_rate"],
    }


# -- loading ---------------------------------------------------------------------------------------------


def load_reference_dir(
    directory: str | Path, *, model_name: str | None = None, model_version: str | None = None
) -> Reference:
    """The reference stored in a local folder (a bundle, or a downloaded version's artifacts).

    Raises:
        ReferenceNotFoundError: a file is missing.
        MonitoringReferenceError: the sample does not match its recorded hash, or an unknown format.
        ContractFileError: the statistics file is corrupt (names the file and the field).
    """
    from ml_tasks.storage import file_sha256

    folder = Path(directory)
    missing = [name for name in REFERENCE_FILES if not (folder / name).is_file()]
    if missing:
        raise ReferenceNotFoundError(
            f"{folder} has no {' / '.join(missing)}: the model was stored without a monitoring reference"
            " (trained before monitoring existed); retrain it to monitor it"
        )
    version, stats = read_reference_stats(folder / REFERENCE_STATS)
    if stats is None:
        raise MonitoringReferenceError(
            f"{folder / REFERENCE_STATS}: format_version {version!r} is not supported"
        )
    files = {name: file_sha256(folder / name) for name in REFERENCE_FILES}
    if stats.get("sample_sha256") and files[REFERENCE_SAMPLE] != stats["sample_sha256"]:
        raise MonitoringReferenceError(
            f"{folder / REFERENCE_SAMPLE} has sha256 {files[REFERENCE_SAMPLE][:16]}..., the statistics say"
            f" {str(stats['sample_sha256'])[:16]}...: the reference files do not belong together"
        )
    sample = pq.read_table(folder / REFERENCE_SAMPLE)
    return Reference(sample, stats, str(folder), files, model_name, model_version)


def load_reference(settings: Settings, name: str, version: str) -> Reference:
    """The reference of ``models:/<name>/<version>``, downloaded once into the model cache.

    Cached in ``<data_root>/mlflow/model-cache/<name>/<version>/`` (beside the ONNX file of
    ``loading.download_onnx``); a cached pair is reused when the sample matches the statistics' hash.

    Raises:
        ReferenceNotFoundError: the version's artifacts have no reference (an older model).
    """
    import mlflow.artifacts

    from ml_tasks.models import loading, tracking

    cache_root = loading.model_cache_dir(settings)
    target = cache_root / name / str(version)
    if all((target / f).is_file() for f in REFERENCE_FILES):
        try:
            return load_reference_dir(target, model_name=name, model_version=str(version))
        except (MonitoringReferenceError, ContractFileError):
            log.warning("cached reference of %s/%s does not verify: downloading again", name, version)
    client = tracking.client(settings)
    uri = f"models:/{name}/{version}"
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_root, prefix=".reference-"))
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(staging / "dl"), tracking_uri=client.tracking_uri
            )
        )
        found = {f: next(iter(sorted(local.rglob(f))), None) for f in REFERENCE_FILES}
        absent = [f for f, p in found.items() if p is None]
        if absent:
            raise ReferenceNotFoundError(
                f"{uri} has no {' / '.join(absent)} artifact: it was registered without a monitoring"
                " reference (trained before monitoring existed); retrain it to monitor it"
            )
        target.mkdir(parents=True, exist_ok=True)
        # the sample first, the statistics (which name the sample's hash) last: a reader that sees the
        # statistics sees a matching sample, or refuses the pair
        for name_ in (REFERENCE_SAMPLE, REFERENCE_STATS):
            path = found[name_]
            assert path is not None
            tmp = target / f".{name_}.tmp"
            shutil.copyfile(path, tmp)
            tmp.replace(target / name_)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    reference = load_reference_dir(target, model_name=name, model_version=str(version))
    return Reference(reference.sample, reference.stats, uri, reference.files, name, str(version))
