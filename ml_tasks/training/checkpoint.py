"""Training checkpoints: ``last.pt`` after every epoch, keyed by a fingerprint of what the run trains on.

A restarted run with the same fingerprint resumes after its last completed epoch; see docs/training.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as torch_dist

from ml_tasks.models.network import ModelConfig
from ml_tasks.models.preprocess import Encoded
from ml_tasks.storage import atomic_write_bytes
from ml_tasks.training.distributed import DistInfo

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.pt"
CHECKPOINT_FORMAT = 1


def data_sha256(parts: Sequence[tuple[Encoded, npt.NDArray[np.float32]]]) -> str:
    """Hash of the encoded arrays and labels of every split part (what the model actually sees)."""
    digest = hashlib.sha256()
    for encoded, y in parts:
        for array in (encoded.numeric, encoded.categorical, y):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    """The python / numpy / torch (and CUDA) random states, as a checkpoint stores them."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [int(v) for v in np.random.get_state()[1]],  # type: ignore[index]
        "numpy_pos": int(np.random.get_state()[2]),  # type: ignore[index]
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(obj: Any, path: Path) -> None:
    """``torch.save`` into a temp file renamed onto ``path``: a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def fingerprint(
    config: ModelConfig, preprocessing_sha256: str, training_data_sha256: str, world_size: int
) -> str:
    """What identifies a training run for resuming: same fingerprint, same trajectory."""
    payload = {
        "config": config.to_dict(),
        "preprocessing_sha256": preprocessing_sha256,
        "data_sha256": training_data_sha256,
        "world_size": world_size,
        "checkpoint_format": CHECKPOINT_FORMAT,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_checkpoint(path: Path, expected: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it is readable and its fingerprint is ``expected``, else None."""
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated/corrupt file must not stop a fresh start; say so loudly
        log.warning(
            "checkpoint %s cannot be read (%s): starting from scratch; it will be replaced", path, exc
        )
        return None
    found = state.get("fingerprint")
    if found != expected:
        log.warning(
            "checkpoint %s belongs to another run (fingerprint %s, this run %s): ignoring it;"
            " it will be replaced after the first epoch",
            path, str(found)[:12], expected[:12],
        )  # fmt: skip
        return None
    return state


def resume_state(path: Path, expected: str, info: DistInfo) -> dict[str, Any] | None:
    """The checkpoint to resume from, as rank 0 reads it, on every rank (other nodes may not see its disk)."""
    state = load_checkpoint(path, expected) if info.is_main else None
    if info.world_size > 1:
        shared: list[Any] = [state]
        torch_dist.broadcast_object_list(shared, src=0)
        state = shared[0]
    return state
