"""Shared fixtures: a temporary data root, the real Chicago sample data, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared/datasets/chicago_taxi beside the repo, or wherever FLYWHEEL_CHICAGO_SAMPLES points
CHICAGO_SAMPLES = Path(
    os.environ.get("FLYWHEEL_CHICAGO_SAMPLES", REPO.parent / "shared" / "datasets" / "chicago_taxi")
)


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty data root, also exported as FLYWHEEL_DATA_ROOT for subprocesses."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("FLYWHEEL_DATA_ROOT", str(root))
    from ml_tasks.settings import get_settings

    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def chicago_samples() -> Path:
    """The real Chicago trips samples; tests using it skip clearly when they are absent."""
    if not (CHICAGO_SAMPLES / "tfx_simple_data.csv").is_file():
        pytest.skip(
            f"real Chicago taxi samples not found at {CHICAGO_SAMPLES} (set FLYWHEEL_CHICAGO_SAMPLES)"
        )
    return CHICAGO_SAMPLES


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = True) -> dict[str, Any]:
    """Run ``ml-tasks ARGS`` as a subprocess (as a DAG would) and return its JSON summary line.

    With ``check=False`` returns ``{"returncode": ..., "stderr": ...}`` for failures.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "ml_tasks.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    if proc.returncode != 0:
        if check:
            raise AssertionError(
                f"ml-tasks {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        return {"returncode": proc.returncode, "stderr": proc.stderr, "stdout": proc.stdout}
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, (
        f"expected exactly one JSON line on stdout, got {len(lines)}: {proc.stdout[-2000:]}"
    )
    return dict(json.loads(lines[0]))
