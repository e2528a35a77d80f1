"""The lineage tests' data root (tests/unit/lineage/_tree.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_tasks.storage import DataRoot
from tests.unit.lineage._tree import build_root


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DataRoot:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return build_root(tmp_path / "data")
