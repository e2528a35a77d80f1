"""Trip ids of the synthetic source: 40 hex digits, a bijection of a 64-bit key per seed (no collisions)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ml_tasks.sources.synthetic_calibration import U64

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: U64) -> U64:
    """SplitMix64's finalizer: a bijection on 64-bit words (so distinct keys give distinct ids)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hex_ids(keys: U64, salt: int) -> pa.Array:
    """40-hex-digit ids (160 bits) from distinct 64-bit keys, built straight into an arrow buffer."""
    n = len(keys)
    # mix, xor the mixed salt, mix again: a bijection per salt, unrelated between salts
    salted = _mix64(np.asarray([salt], dtype=np.uint64) + _GOLDEN)
    w0 = _mix64(_mix64(keys) ^ salted)
    w1 = _mix64(w0 + _GOLDEN)
    w2 = _mix64(w1 + _GOLDEN)
    raw = np.stack([w0, w1, w2], axis=1).astype(">u8").view(np.uint8).reshape(n, 24)[:, :20]
    text = np.empty((n, 40), dtype=np.uint8)
    text[:, 0::2] = raw >> 4
    text[:, 1::2] = raw & 15
    # nibble -> ASCII '0'-'9' (48..57) or 'a'-'f' (97..102), arithmetic instead of a lookup
    text += 48
    text += (text > 57).astype(np.uint8) * 39
    offsets = np.arange(0, 40 * (n + 1), 40, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))
