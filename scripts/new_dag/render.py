"""Fill the templates of a shape and write the DAG, its test and its docs stub (never half of them)."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

SHAPES = ("interval", "asset", "fanout")
TEMPLATES = Path(__file__).with_name("templates")


class ScaffoldError(ValueError):
    """Bad arguments, or a file that exists already."""


@dataclass(frozen=True)
class Spec:
    name: str
    shape: str
    steps: list[tuple[str, list[str]]]
    asset: str
    summary: str


def _task_ids(spec: Spec) -> list[str]:
    steps = [step for step, _ in spec.steps]
    if spec.shape == "interval":
        return steps
    planned = ["plan_intervals", *(f"argv_{step}" for step, args in spec.steps if args)]
    return [*planned, "whole_span", *steps] if spec.shape == "fanout" else [*planned, *steps]


def _lib_import(spec: Spec) -> str:
    """``from _lib import (...)`` of the shape, sorted as ruff's isort does (constants, then functions)."""
    names = {"DAG_DEFAULTS", "START_DATE", spec.asset, "interval_params", "ml_step", "plan_intervals_task"}
    if spec.shape == "fanout":
        names.add("result")
    ordered = sorted(n for n in names if n.isupper()) + sorted(n for n in names if not n.isupper())
    return "from _lib import (\n" + "".join(f"    {name},\n" for name in ordered) + ")"


def render(spec: Spec) -> dict[str, str]:
    """The three files' contents, keyed by path relative to the repository."""
    values = {
        "dag_id": spec.name,
        "summary": spec.summary.replace('"', "'"),
        "steps": "".join(f"    ({json.dumps(step)}, {json.dumps(args)}),\n" for step, args in spec.steps),
        "lib_import": _lib_import(spec),
        "asset": spec.asset,
        "chain": " -> ".join(step for step, _ in spec.steps),
        "task_ids": json.dumps(sorted(_task_ids(spec))),
        "first": spec.steps[0][0],
        "last": spec.steps[-1][0],
    }
    out = {}
    for kind, target in (
        ("dag", f"dags/{spec.name}.py"),
        ("test", f"tests/dags/test_{spec.name}.py"),
        ("docs", f"docs/dags/{spec.name}.md"),
    ):
        source = TEMPLATES / (f"{spec.shape}.py.tmpl" if kind == "dag" else f"{kind}.tmpl")
        out[target] = string.Template(source.read_text()).substitute(values, shape=spec.shape)
    return out


def write(spec: Spec, repo: Path, *, force: bool = False) -> list[Path]:
    """Write every file, or none: existing files are refused unless ``force``."""
    if spec.shape not in SHAPES:
        raise ScaffoldError(f"--shape {spec.shape!r}: one of {list(SHAPES)}")
    files = {repo / rel: text for rel, text in render(spec).items()}
    existing = [str(p.relative_to(repo)) for p in files if p.exists()]
    if existing and not force:
        raise ScaffoldError(f"{', '.join(existing)} exist(s); pick another name or pass --force")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)
