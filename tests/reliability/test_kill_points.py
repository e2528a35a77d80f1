"""kill -9 at staged points of each writing step; the re-run gives the bytes of an uninterrupted run and
leaves nothing behind (staging folders, moved-aside partitions, writer locks).

Points (``ml_tasks.writers.pause_point``), each at the step's SECOND partition write, so one partition is
already replaced and the next is in flux: ``staged`` (data written, no manifest), ``moved-aside`` (the old
partition renamed away, the new one not yet in place), ``committed`` (the new one in place, the old one not
yet deleted).
"""

from __future__ import annotations

import difflib
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.reliability._kill import kill_at, leftovers

WINDOW = ["--start", "2024-03-01", "--end", "2024-03-03"]
STEPS: dict[str, list[str]] = {
    "extract": ["extract", *WINDOW, "--trips-per-day", "300"],
    "transform": ["transform", *WINDOW],
    "validate": ["validate", *WINDOW],
    "publish": ["publish", *WINDOW],
}
POINTS = ["staged", "moved-aside", "committed"]
# GX's own result and data docs hold its run time and ids (docs/ingest.md): everything else must match
VOLATILE = ("gx_result.json", "data_docs.html")


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in VOLATILE
    }


def _diff(got: bytes, expected: bytes) -> str:
    lines = difflib.unified_diff(
        expected.decode(errors="replace").splitlines(), got.decode(errors="replace").splitlines()
    )
    return "\n".join(list(lines)[:40])


def _pipeline(root: Path) -> None:
    env = {"FLYWHEEL_DATA_ROOT": str(root)}
    for argv in STEPS.values():
        run_cli(*argv, env=env)


def _diff(got: bytes, expected: bytes) -> str:
    lines = difflib.unified_diff(
        expected.decode(errors="replace").splitlines(), got.decode(errors="replace").splitlines()
    )
    return "\n".join(list(lines)[:40])


@dataclass(frozen=True)
class Baseline:
    root: Path  # every test works here: manifests record absolute URIs (and hash files that hold them)
    pristine: Path
    files: dict[str, bytes]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    """One uninterrupted run; each test restores it into the same root (one worker runs tests in turn)."""
    base = tmp_path_factory.mktemp("kill")
    root = base / "data"
    _pipeline(root)
    shutil.copytree(root, base / "pristine")
    return Baseline(root, base / "pristine", _snapshot(root))


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("step", list(STEPS))
def test_kill_then_rerun_gives_the_same_bytes(step: str, point: str, baseline: Baseline) -> None:
    root = baseline.root
    shutil.rmtree(root)
    shutil.copytree(baseline.pristine, root)
    env = {"FLYWHEEL_DATA_ROOT": str(root), "FLYWHEEL_CODE_VERSION": "killed-run"}

    kill_at(f"{point}:2", STEPS[step], env)
    left = leftovers(root)
    assert left, "the kill left nothing to sweep: the point was not inside a write"
    if point == "moved-aside":  # the partition is away, not half-there: readers see it missing
        assert any(".old-" in entry for entry in left)

    run_cli(*STEPS[step], env={"FLYWHEEL_DATA_ROOT": str(root)})

    assert leftovers(root) == []
    got = _snapshot(root)
    assert sorted(got) == sorted(baseline.files)
    differ = [name for name in baseline.files if got[name] != baseline.files[name]]
    assert differ == [], _diff(got[differ[0]], baseline.files[differ[0]])
