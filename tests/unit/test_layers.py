"""The one-way layers of ml_tasks (import-linter, as `make lint` runs it) hold; a back-edge breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=package_parent, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "ml_tasks", tmp_path / "ml_tasks", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "ml_tasks"


def test_the_layers_hold_on_the_repo(tmp_path: Path) -> None:
    _copy(tmp_path)
    proc = _lint_imports(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("module", "planted", "edge"),
    [
        # a sibling edge: prediction reaching into training internals
        (
            "prediction/__init__.py",
            "from ml_tasks.training import gate",
            "ml_tasks.prediction -> ml_tasks.training",
        ),
        # an upward edge hidden in a function body: the models layer importing monitoring
        (
            "models/reference.py",
            "def _planted():\n    from ml_tasks.monitoring import policy",
            "ml_tasks.models",
        ),
        # the bottom importing a heavy layer
        ("contract.py", "import ml_tasks.features.spec", "ml_tasks.contract -> ml_tasks.features"),
    ],
)
def test_a_planted_back_edge_breaks_the_contract(
    tmp_path: Path, module: str, planted: str, edge: str
) -> None:
    package = _copy(tmp_path)
    target = package / module
    target.write_text(target.read_text() + f"\n\n{planted}\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "BROKEN" in proc.stdout and "0 kept, 1 broken" in proc.stdout
    assert edge in proc.stdout, proc.stdout
