"""bench/report.py: parts merged into latest.json and one table; missing parts named; bounds fail the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench._results import Figure, emit

REPO = Path(__file__).resolve().parents[2]


def report(parts: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "bench/report.py", "--parts", str(parts), "--out", str(out), *extra]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60, check=False)


def test_parts_merge_into_one_table_and_missing_parts_are_named(tmp_path: Path) -> None:
    parts, out = tmp_path / "parts", tmp_path / "latest.json"
    assert (
        emit("startup", [Figure("features-pending", 0.9, "s", floor=0.05, goal=2.0, bound=6.0)], parts) == 0
    )
    fig = Figure("epoch", 40_000.0, "rows/s", floor=80_000.0, ratio=2.0, goal=1.5, bound=3.0, rows=179_140)
    assert emit("train", [fig], parts) == 0
    proc = report(parts, out)
    assert proc.returncode == 0, proc.stderr
    merged = json.loads(out.read_text())
    assert [(f["bench"], f["name"], f["value"]) for f in merged["figures"]] == [
        ("startup", "features-pending", 0.9),
        ("train", "epoch", 40_000.0),
    ]
    assert merged["missing"] == [
        "dag_parse",
        "etl",
        "feature_materialize",
        "feature_training_set",
        "predict",
        "monitor",
        "demo",
    ]
    assert {"cores", "cpu_model", "date"} <= set(merged["machine"])
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[1:] == [
        "| startup | features-pending | 0.9 | s | 0.05 |  | 2 | 6 |  |  |  |",
        "| train | epoch | 40,000 | rows/s | 80,000 | 2 | 1.5 | 3 | 179,140 |  | over goal |",
    ]
    assert "missing parts: dag_parse, etl" in proc.stderr


def test_a_figure_above_its_bound_fails_and_the_readme_table_is_rewritten_in_place(tmp_path: Path) -> None:
    parts, out, readme = tmp_path / "parts", tmp_path / "latest.json", tmp_path / "README.md"
    assert emit("dag_parse", [Figure("parse a.py", 500.0, "ms", goal=50.0, bound=400.0)], parts) == 1
    readme.write_text("# X\n\n<!-- bench-table:start -->\nold table\n<!-- bench-table:end -->\n\nafter\n")
    proc = report(parts, out, "--readme", str(readme))
    assert proc.returncode == 1
    assert "above their regression bound: dag_parse parse a.py" in proc.stderr
    text = readme.read_text()
    assert "old table" not in text
    assert "| dag_parse | parse a.py | 500 | ms |  |  | 50 | 400 |  |  | FAIL (over bound) |" in text
    assert text.startswith("# X\n\n<!-- bench-table:start -->\n") and text.endswith(
        "<!-- bench-table:end -->\n\nafter\n"
    )
    assert report(parts, out, "--readme", str(readme)).returncode == 1
    assert readme.read_text() == text  # idempotent: the same parts give the same README
