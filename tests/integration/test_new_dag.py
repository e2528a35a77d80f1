"""The DAG scaffold: the README's "Adding a DAG" commands run verbatim in a copy of the repository, and
every shape's generated DAG passes tests/dags untouched and runs one interval under ``dag.test()``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.new_dag.cli import main

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parents[1]


def _copy(tmp_path: Path) -> Path:
    """What the scaffold and tests/dags need: dags, scripts, plugins, the test harness, the configs."""
    repo = tmp_path / "repo"
    for folder in ("dags", "scripts", "plugins", "tests/dags"):
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "tests/__init__.py", "tests/conftest.py"):
        shutil.copy2(REPO / name, repo / name)
    (repo / ".venv").symlink_to(VENV)
    return repo


def readme_commands() -> str:
    """The bash block of the README's "Adding a DAG" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Adding a DAG\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section has exactly one bash block (the commands a newcomer runs)"
    return blocks[0]


def test_readme_commands_then_every_shape(tmp_path: Path) -> None:
    repo = _copy(tmp_path)
    readme = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_commands()], cwd=repo, capture_output=True, text=True
    )
    assert readme.returncode == 0, readme.stdout[-3000:] + readme.stderr[-3000:]
    assert re.search(r"\b(\d+) passed\b", readme.stdout), readme.stdout[-2000:]
    assert "wrote dags/trip_counts.py" in readme.stdout
    for path in ("dags/trip_counts.py", "tests/dags/test_trip_counts.py", "docs/dags/trip_counts.md"):
        assert (repo / path).is_file(), path

    steps = ["--step", "extract --source synthetic --trips-per-day 60", "--step", "transform"]
    assert main(["trip_assets", "--repo", str(repo), "--shape", "asset", "--asset", "FEATURES", *steps]) == 0
    assert main(["trip_fanout", "--repo", str(repo), "--shape", "fanout", *steps]) == 0
    ruff = [str(VENV / "bin" / "ruff"), "check", "dags", "tests/dags"]
    lint = subprocess.run(ruff, cwd=repo, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-2000:]
    generated = ["tests/dags/test_trip_assets.py", "tests/dags/test_trip_fanout.py"]
    pytest_argv = [str(VENV / "bin" / "pytest"), "-q", "-rA", "-p", "no:xdist"]
    suite = [*pytest_argv, "tests/dags/test_dag_integrity.py", *generated]
    run = subprocess.run(suite, cwd=repo, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:]
    for test in generated:  # each generated test passed: the wiring, and one interval under dag.test()
        for name in ("test_wiring", "test_one_interval_runs"):
            assert f"PASSED {test}::{name}" in run.stdout, run.stdout[-3000:]
    for name in ("trip_assets.py", "trip_counts.py", "trip_fanout.py"):  # the integrity suite saw all three
        assert f"test_dag_conventions[{name}]" in run.stdout, run.stdout[-3000:]
    assert " failed" not in run.stdout and " skipped" not in run.stdout, run.stdout[-2000:]
    produced = sorted(p.name for p in (repo / "dags").glob("trip_*.py"))
    assert produced == ["trip_assets.py", "trip_counts.py", "trip_fanout.py"]


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["Bad-Name", "--step", "transform"], "use lower_snake_case"),
        (["ok_name", "--step", "nosuch"], "'nosuch': not an ml-tasks step"),
        (["ok_name", "--shape", "asset", "--asset", "NOPE", "--step", "transform"], "not an Asset"),
        (["ok_name", "--shape", "fanout", "--step", "transform"], "give two --step"),
        (["ok_name", "--step", "transform", "--step", "transform"], "each step once"),
        (["taxi_ingest", "--step", "transform"], "dags/taxi_ingest.py"),  # exists: nothing overwritten
    ],
)
def test_bad_arguments_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "dags", repo / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    assert main([*argv, "--repo", str(repo)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("new_dag: error: ") and error in out and out.count("\n") == 1, out
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before
    assert (repo / "dags" / "taxi_ingest.py").read_text() == (REPO / "dags" / "taxi_ingest.py").read_text()
