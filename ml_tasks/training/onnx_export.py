"""ONNX export of a bundle (dynamic batch, pinned opset, preprocessing embedded) and the checks on it.

A failed check is a result (``passed=False`` with reasons), not an exception; see docs/training.md.
torch / onnx / onnxruntime are imported inside functions: this module is imported only by the steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ml_tasks.contract import CHECK_JSON, EXPORT_JSON, ONNX_FILE
from ml_tasks.errors import FlywheelError
from ml_tasks.models.scorer import (
    INPUT_CATEGORICAL,
    INPUT_NUMERIC,
    META_MODEL,
    META_PREPROCESSING,
    OUTPUT,
    OnnxScorer,
)
from ml_tasks.storage import atomic_write_bytes, file_sha256, write_json

if TYPE_CHECKING:
    import onnx

    from ml_tasks.models.network import Bundle
    from ml_tasks.models.preprocess import Preprocessor

log = logging.getLogger(__name__)

OPSET = 18
BATCH_DIM = "batch"


class OnnxExportError(FlywheelError, ValueError):
    """Unusable arguments to export / check (a missing bundle, an empty sample)."""


def _bundle_dir(bundle_dir: str | Path) -> Path:
    path = Path(bundle_dir)
    if not (path / "model.json").is_file():
        raise OnnxExportError(f"bundle_dir {path} is not a bundle (no model.json)")
    return path


def _example_inputs(preprocessor: Preprocessor, sample: pa.Table) -> tuple[Any, Any]:
    import torch

    if sample.num_rows == 0:
        raise OnnxExportError("sample: at least one row is needed to trace the model, got an empty table")
    encoded = preprocessor.encode(sample.slice(0, 64))
    numeric, categorical = encoded.numeric, encoded.categorical
    if numeric.shape[0] < 2:
        # a batch of 1 would let the tracer specialise the batch dim to the constant 1
        numeric, categorical = np.repeat(numeric, 2, axis=0), np.repeat(categorical, 2, axis=0)
    return torch.from_numpy(np.ascontiguousarray(numeric)), torch.from_numpy(
        np.ascontiguousarray(categorical)
    )


def export_onnx(bundle_dir: str | Path, *, sample: pa.Table, opset: int = OPSET) -> dict[str, Any]:
    """Export the bundle's model to ``<bundle_dir>/model.onnx`` (atomically); record in onnx_export.json.

    Args:
        bundle_dir: A bundle written by ``save_bundle``.
        sample: A few raw rows (training-set columns) used to trace the model.
        opset: The ONNX opset to pin.

    Returns:
        ``{onnx_sha256, opset, export_seconds, bytes, path}``.

    Raises:
        OnnxExportError: not a bundle, or an empty sample.
    """
    import onnx
    import torch

    from ml_tasks.contract import MODEL_JSON, PREPROCESSING_JSON
    from ml_tasks.models.network import load_bundle

    path = _bundle_dir(bundle_dir)
    started = time.perf_counter()
    bundle = load_bundle(path)
    model = bundle.model.eval()
    numeric, categorical = _example_inputs(bundle.preprocessor, sample)
    batch = torch.export.Dim(BATCH_DIM, min=1)
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            model,
            (numeric, categorical),
            dynamo=True,
            input_names=[INPUT_NUMERIC, INPUT_CATEGORICAL],
            output_names=[OUTPUT],
            dynamic_shapes=({0: batch}, {0: batch}),
            opset_version=opset,
            optimize=True,
            external_data=False,
            verbose=False,
        )
    if program is None:  # only the legacy TorchScript exporter returns None
        raise RuntimeError("torch.onnx.export returned no program")
    proto: onnx.ModelProto = program.model_proto
    # Metadata: the serialised preprocessing makes the file self-contained (OnnxScorer needs nothing else).
    props = {
        META_MODEL: (path / MODEL_JSON).read_text(),
        META_PREPROCESSING: (path / PREPROCESSING_JSON).read_text(),
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "flywheel"
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic_write_bytes(path / ONNX_FILE, data)
    seconds = time.perf_counter() - started
    actual_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    result: dict[str, Any] = {
        "path": str(path / ONNX_FILE),
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "opset": int(actual_opset),
        "export_seconds": round(seconds, 3),
        "bytes": len(data),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
    }
    write_json(path / EXPORT_JSON, result)
    log.info(
        "exported %s: %d bytes, opset %d, sha256 %s in %.2f s",
        path / ONNX_FILE, len(data), actual_opset, result["onnx_sha256"][:12], seconds,
    )  # fmt: skip
    return result


def _dims(value_info: Any) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _graph_problems(proto: onnx.ModelProto, n_numeric: int, n_categorical: int) -> list[str]:
    """Names, element types and shapes of the graph's inputs and output (batch dim must be symbolic)."""
    import onnx

    problems: list[str] = []
    inputs = {i.name: i for i in proto.graph.input}
    outputs = {o.name: o for o in proto.graph.output}
    expected = {
        INPUT_NUMERIC: (inputs, onnx.TensorProto.FLOAT, [n_numeric]),
        INPUT_CATEGORICAL: (inputs, onnx.TensorProto.INT64, [n_categorical]),
        OUTPUT: (outputs, onnx.TensorProto.FLOAT, []),
    }
    if sorted(inputs) != sorted([INPUT_NUMERIC, INPUT_CATEGORICAL]):
        problems.append(f"graph inputs are {sorted(inputs)}, expected ['categorical', 'numeric']")
    if list(outputs) != [OUTPUT]:
        problems.append(f"graph outputs are {list(outputs)}, expected ['probability']")
    for name, (where, elem, rest) in expected.items():
        if name not in where:
            continue
        info = where[name]
        if info.type.tensor_type.elem_type != elem:
            problems.append(
                f"{name} has element type {onnx.TensorProto.DataType.Name(info.type.tensor_type.elem_type)},"
                f" expected {onnx.TensorProto.DataType.Name(elem)}"
            )
        dims = _dims(info)
        if not dims or not isinstance(dims[0], str):
            problems.append(f"{name} has no dynamic batch dimension (shape {dims})")
        elif dims[1:] != rest:
            problems.append(f"{name} has shape {dims}, expected [batch, *{rest}]")
    return problems


def _repeat_rows(array: npt.NDArray[Any], rows: int) -> npt.NDArray[Any]:
    reps = -(-rows // array.shape[0])
    return np.ascontiguousarray(np.tile(array, (reps, 1))[:rows])


def check_onnx(
    bundle_dir: str | Path,
    rows: pa.Table,
    *,
    expected_sha256: str,
    tolerance: float = 1e-5,
    latency_batch: int = 1,
    latency_calls: int = 200,
    large_batch: int = 10_000,
    threads: int | None = None,
) -> dict[str, Any]:
    """Check ``<bundle_dir>/model.onnx`` and write the result to ``<bundle_dir>/onnx.json`` (CHECK_JSON).

    Args:
        bundle_dir: The bundle holding the torch model and its ONNX export.
        rows: Real rows (training-set columns) for the parity check (the evaluation window).
        expected_sha256: The sha256 recorded by :func:`export_onnx`.
        tolerance: Maximum allowed absolute difference between ONNX and torch probabilities.
        latency_batch: Batch size of the latency measurement (1: one request).
        latency_calls: Number of timed calls for the latency percentiles.
        large_batch: Rows of the throughput run (the real rows repeated); also proves the dynamic batch dim.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).

    Returns:
        ``passed`` (bool), ``reasons`` (list of human sentences, empty when passed) and the measured numbers:
        ``sha256``, ``parity`` (max_abs_diff, decisions_differ, rows), ``latency`` (batch-1 p50/p95 ms,
        large-batch rows/s), ``graph`` (opset, input shapes), ``seconds``; the headline numbers also as
        flat top-level keys (``parity_max_abs_diff``, ``latency_p50_ms``, ``latency_p95_ms``,
        ``large_batch_rows_per_second``) for metric logging, and the export record under ``export``.

    Raises:
        OnnxExportError: not a bundle, empty ``rows``, or non-positive sizes.
    """
    import onnx

    from ml_tasks.models.network import load_bundle

    path = _bundle_dir(bundle_dir)
    if rows.num_rows == 0:
        raise OnnxExportError("rows: the parity check needs at least one real row, got an empty table")
    if tolerance <= 0 or latency_batch < 1 or latency_calls < 1 or large_batch < 1:
        raise OnnxExportError(
            f"tolerance, latency_batch, latency_calls and large_batch must be positive "
            f"({tolerance}, {latency_batch}, {latency_calls}, {large_batch})"
        )
    started = time.perf_counter()
    onnx_path = path / ONNX_FILE
    reasons: list[str] = []
    result: dict[str, Any] = {
        "path": str(onnx_path),
        "expected_sha256": expected_sha256,
        "tolerance": tolerance,
    }

    def finish() -> dict[str, Any]:
        result["passed"] = not reasons
        result["reasons"] = reasons
        result["seconds"] = round(time.perf_counter() - started, 3)
        if "parity" in result:
            result["parity_max_abs_diff"] = result["parity"]["max_abs_diff"]
            result["parity_decisions_differ"] = result["parity"]["decisions_differ"]
        if "latency" in result:
            for key in ("p50_ms", "p95_ms"):
                result[f"latency_{key}"] = result["latency"][key]
            result["large_batch_rows_per_second"] = result["latency"]["large_batch_rows_per_second"]
        if (path / EXPORT_JSON).is_file():
            result["export"] = json.loads((path / EXPORT_JSON).read_text())
        write_json(path / CHECK_JSON, result)
        log.info("ONNX check of %s: %s %s", onnx_path, "passed" if not reasons else "FAILED", reasons)
        return result

    if not onnx_path.is_file():
        reasons.append(f"{ONNX_FILE} does not exist in {path}")
        return finish()
    actual = file_sha256(onnx_path)
    result["sha256"] = actual
    if actual != expected_sha256:
        reasons.append(
            f"sha256 of {ONNX_FILE} is {actual[:16]}..., but the export recorded {expected_sha256[:16]}...:"
            " the file was modified or corrupted after export"
        )
    bundle = load_bundle(path)
    try:
        proto = onnx.load(str(onnx_path))
        onnx.checker.check_model(proto)
        scorer = OnnxScorer(onnx_path, threads=threads)
    except Exception as exc:  # any load failure is a failed check with its message, not a crash
        reasons.append(f"onnxruntime cannot load {ONNX_FILE}: {type(exc).__name__}: {str(exc)[:300]}")
        return finish()
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    result["graph"] = {
        "opset": opset,
        "inputs": {i.name: _dims(i) for i in proto.graph.input},
        "outputs": {o.name: _dims(o) for o in proto.graph.output},
    }
    n_numeric, n_categorical = len(bundle.preprocessor.stats), len(bundle.preprocessor.vocabularies)
    graph_problems = _graph_problems(proto, n_numeric, n_categorical)
    reasons.extend(graph_problems)
    if scorer.preprocessor.sha256() != bundle.preprocessor.sha256():
        reasons.append("the preprocessing embedded in the ONNX metadata differs from the bundle's")
    if graph_problems:
        return finish()

    try:
        _parity_and_latency(
            result, reasons, bundle, scorer, rows, tolerance, latency_batch, latency_calls, large_batch
        )
    except Exception as exc:  # onnxruntime failing at run time (e.g. a corrupted graph) is a failed check
        reasons.append(f"onnxruntime failed to score: {type(exc).__name__}: {str(exc)[:300]}")
    result["latency_threads"] = threads
    return finish()


def _parity_and_latency(
    result: dict[str, Any],
    reasons: list[str],
    bundle: Bundle,
    scorer: OnnxScorer,
    rows: pa.Table,
    tolerance: float,
    latency_batch: int,
    latency_calls: int,
    large_batch: int,
) -> None:
    """Parity with torch on ``rows``, batch-1 latency and large-batch throughput (fills ``result``)."""
    from ml_tasks.models.network import predict_encoded

    # Parity on real rows: the same encoded arrays through torch and onnxruntime.
    encoded = bundle.preprocessor.encode(rows)

    torch_p = predict_encoded(bundle.model, encoded.numeric, encoded.categorical)
    onnx_p = scorer.predict_encoded(encoded.numeric, encoded.categorical)
    diff = np.abs(torch_p - onnx_p)
    finite = bool(np.isfinite(onnx_p).all())
    max_diff = float(np.nanmax(diff)) if finite else float("inf")
    threshold = bundle.threshold
    decisions_differ = int(np.count_nonzero((torch_p >= threshold) != (onnx_p >= threshold)))
    result["parity"] = {
        "rows": rows.num_rows,
        "max_abs_diff": max_diff,
        "mean_abs_diff": float(np.nanmean(diff)) if finite else float("inf"),
        "threshold": threshold,
        "decisions_differ": decisions_differ,
    }
    if not finite:
        reasons.append(f"ONNX probabilities contain {int((~np.isfinite(onnx_p)).sum())} non-finite value(s)")
    elif max_diff > tolerance:
        reasons.append(
            f"parity: max abs difference ONNX vs torch {max_diff:.3g} > tolerance {tolerance:g}"
            f" on {rows.num_rows} real rows"
        )
    if decisions_differ:
        reasons.append(
            f"parity: {decisions_differ} of {rows.num_rows} decisions at threshold {threshold:.4f} differ"
            " between ONNX and torch"
        )

    # Latency (batch of latency_batch rows, single-threaded caller) and throughput (large batch).
    session = scorer.session
    small = {
        INPUT_NUMERIC: _repeat_rows(encoded.numeric, latency_batch),
        INPUT_CATEGORICAL: _repeat_rows(encoded.categorical, latency_batch),
    }
    for _ in range(min(20, latency_calls)):  # warm-up: first calls allocate
        session.run([OUTPUT], small)
    timings = np.empty(latency_calls, dtype=np.float64)
    for i in range(latency_calls):
        t0 = time.perf_counter()
        session.run([OUTPUT], small)
        timings[i] = time.perf_counter() - t0
    big = {
        INPUT_NUMERIC: _repeat_rows(encoded.numeric, large_batch),
        INPUT_CATEGORICAL: _repeat_rows(encoded.categorical, large_batch),
    }
    runs: list[float] = []
    big_out: npt.NDArray[Any] = np.empty(0)
    for _ in range(3):
        t0 = time.perf_counter()
        big_out = session.run([OUTPUT], big)[0]
        runs.append(time.perf_counter() - t0)
    if big_out.shape != (large_batch,):
        reasons.append(f"a batch of {large_batch} rows gave output shape {big_out.shape}")
    small_out = session.run([OUTPUT], small)[0]
    if small_out.shape != (latency_batch,):
        reasons.append(f"a batch of {latency_batch} row(s) gave output shape {small_out.shape}")
    best = min(runs)
    result["latency"] = {
        "batch": latency_batch,
        "calls": latency_calls,
        "p50_ms": round(float(np.percentile(timings, 50)) * 1e3, 4),
        "p95_ms": round(float(np.percentile(timings, 95)) * 1e3, 4),
        "large_batch": large_batch,
        "large_batch_seconds": round(best, 5),
        "large_batch_rows_per_second": round(large_batch / best, 1),
    }


def corrupt_onnx(path: str | Path, n_bytes: int = 64) -> dict[str, Any]:
    """Fault injector: flip ``n_bytes`` bytes in the middle of ``path`` in place (size unchanged).

    The middle of an exported model is initializer data, so the file usually still loads and only the
    integrity and parity checks can notice: exactly the failure the gate must catch.
    """
    target = Path(path)
    data = bytearray(target.read_bytes())
    if len(data) < 2 * n_bytes:
        raise ValueError(f"{target} has {len(data)} bytes: too small to corrupt {n_bytes} in the middle")
    start = len(data) // 2 - n_bytes // 2
    for i in range(start, start + n_bytes):
        data[i] ^= 0xFF
    before = file_sha256(target)
    target.write_bytes(bytes(data))
    log.warning("corrupted %s: flipped %d bytes at offset %d", target, n_bytes, start)
    return {"path": str(target), "offset": start, "bytes": n_bytes, "sha256_before": before}
