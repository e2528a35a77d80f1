"""What a step produced, read from its JSON summary: MLflow run, model version, files and partitions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel_ui.paths import relative_to_root

#: beside every partition (ml_tasks.contract.MANIFEST: the plugin cannot import ml_tasks)
MANIFEST = "_manifest.json"


@dataclass
class StepOutputs:
    """The links a step summary supports (paths relative to the data root)."""

    run_id: str | None = None
    model: tuple[str, str] | None = None  # (registered model name, version)
    reports: list[str] = field(default_factory=list)  # .html files
    partitions: list[str] = field(default_factory=list)  # folders holding a _manifest.json
    files: list[str] = field(default_factory=list)  # other files (json, parquet, onnx)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _run_id(summary: dict[str, Any]) -> str | None:
    for holder in (summary, summary.get("model")):
        if isinstance(holder, dict) and isinstance(holder.get("run_id"), str) and holder["run_id"]:
            return str(holder["run_id"])
    return None


def _model_version(summary: dict[str, Any]) -> tuple[str, str] | None:
    """``{"model": "taxi_tips", "version": "2"}`` (register, promote), ``{"model": {"name", "version"}}``."""
    model: Any = summary.get("model")
    version: Any = summary.get("version")
    if isinstance(model, dict):
        model, version = model.get("name"), model.get("version")
    if isinstance(model, str) and model and version not in (None, ""):
        return model, str(version)
    return None


def step_outputs(summary: Any, root: Path | None) -> StepOutputs:
    """Everything ``summary`` points at; paths outside the data root (or a remote root) are left out."""
    if not isinstance(summary, dict):
        return StepOutputs()
    out = StepOutputs(run_id=_run_id(summary), model=_model_version(summary))
    if root is None:
        return out
    seen: set[str] = set()
    for value in _strings(summary):
        rel = relative_to_root(root, value) if value.startswith(("/", "file://")) else None
        if rel is None or rel in seen:
            continue
        seen.add(rel)
        path = root / rel
        if path.is_dir() and (path / MANIFEST).is_file():
            out.partitions.append(rel)
        elif path.suffix == ".html" and path.is_file():
            out.reports.append(rel)
        elif path.is_file():
            out.files.append(rel)
        elif path.is_dir():
            # a bundle or a report folder: its html reports count, the rest is listed with the folder
            out.reports.extend(p.relative_to(root).as_posix() for p in sorted(path.glob("*.html")))
            out.files.append(rel)
    # a partition's own reports (monitor: drift_report.html beside the decision) are reports too
    for rel in out.partitions:
        for report in sorted((root / rel).glob("*.html")):
            name = report.relative_to(root).as_posix()
            if name not in out.reports:
                out.reports.append(name)
    return out
