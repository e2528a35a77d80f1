"""Import Feast without the two import-time costs no Flywheel step uses (measured in docs/features.md).

* Feast decorates its classes with typeguard's ``@typechecked``, which re-parses and recompiles each
  decorated module's source on import (about 8 s of Feast's ~11 s import on 2 cores). typeguard documents
  the decorator as a development aid that is a no-op under ``python -O``; :func:`import_feast` makes it a
  no-op for Feast's own objects only (every other user of typeguard keeps it).
* ``feast.torch_wrapper`` imports torch eagerly (~3.5 s, ~180 MiB) for tensor outputs no step asks for:
  torch is hidden while Feast is imported, then visible again (a later ``import torch`` works as before).

The declarations in feature_repo/ keep their type checks in the tests (tests/unit/test_feast_import.py).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

#: the one module Feast imports torch from (``feast.torch_wrapper._import_torch``)
_TORCH = "torch"


def _skip_feast(original: Any) -> Any:
    def typechecked(target: Any = None, **options: Any) -> Any:
        if target is None:
            return lambda t: typechecked(t, **options)
        if str(getattr(target, "__module__", "")).partition(".")[0] == "feast":
            return target
        return original(target, **options)

    typechecked.__wrapped__ = original  # type: ignore[attr-defined]
    return typechecked


def import_feast() -> Any:
    """``import feast`` without typeguard instrumenting it and without importing torch; returns it."""
    if "feast" in sys.modules:
        return sys.modules["feast"]
    import typeguard

    if not hasattr(typeguard.typechecked, "__wrapped__"):
        typeguard.typechecked = _skip_feast(typeguard.typechecked)
    hide_torch = _TORCH not in sys.modules
    if hide_torch:
        sys.modules[_TORCH] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        return importlib.import_module("feast")
    finally:
        if hide_torch and sys.modules.get(_TORCH, 0) is None:
            del sys.modules[_TORCH]
