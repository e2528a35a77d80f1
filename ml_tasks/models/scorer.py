"""Scoring raw rows with an exported ONNX model: its graph names, metadata keys and the scorer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

if TYPE_CHECKING:
    import onnxruntime as ort

INPUT_NUMERIC = "numeric"
INPUT_CATEGORICAL = "categorical"
OUTPUT = "probability"
META_MODEL = "flywheel.model"
META_PREPROCESSING = "flywheel.preprocessing"


def session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxScorer:
    """Scores raw rows with an ONNX model exported by ``ml-tasks export-onnx`` (the Scorer protocol).

    The preprocessing (vocabularies, input columns) and the threshold come from the file's metadata, so the
    file is all it needs. One onnxruntime session on the CPU provider, reused for every call; rows are
    encoded and scored in batches of ``batch_size`` (bounded memory).
    """

    def __init__(self, path: str | Path, *, batch_size: int = 65_536, threads: int | None = None) -> None:
        from ml_tasks.models.preprocess import Preprocessor

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} does not exist")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.session = session(self.path, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in (META_MODEL, META_PREPROCESSING) if k not in meta]
        if missing:
            raise ValueError(
                f"ONNX model {self.path} has no metadata {missing}: not exported by ml-tasks export-onnx"
            )
        self.metadata: dict[str, Any] = json.loads(meta[META_MODEL])
        self.preprocessor = Preprocessor.from_json(meta[META_PREPROCESSING])
        self._threshold = float(self.metadata["threshold"])

    @property
    def threshold(self) -> float:
        """The decision threshold chosen at training time."""
        return self._threshold

    def predict_encoded(
        self, numeric: npt.NDArray[np.float32], categorical: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """Probabilities for already-encoded arrays (batched)."""
        out = np.empty(numeric.shape[0], dtype=np.float64)
        for start in range(0, numeric.shape[0], self.batch_size):
            stop = start + self.batch_size
            feeds = {
                INPUT_NUMERIC: np.ascontiguousarray(numeric[start:stop], dtype=np.float32),
                INPUT_CATEGORICAL: np.ascontiguousarray(categorical[start:stop], dtype=np.int64),
            }
            out[start:stop] = self.session.run([OUTPUT], feeds)[0]
        return out

    def predict_proba(self, table: pa.Table) -> npt.NDArray[np.float64]:
        """Probabilities of the positive class, row-aligned with ``table`` (float64)."""
        out = np.empty(table.num_rows, dtype=np.float64)
        for start in range(0, table.num_rows, self.batch_size):
            chunk = table.slice(start, self.batch_size)
            encoded = self.preprocessor.encode(chunk)
            out[start : start + chunk.num_rows] = self.predict_encoded(encoded.numeric, encoded.categorical)
        return out
