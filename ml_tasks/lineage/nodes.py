"""The nodes of a lineage graph: kinds, the check record, the verified / MISMATCH / unverified status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from ml_tasks.storage import PartitionError, file_sha256

# Layers of the data root (ARCHITECTURE.md) and the node kind each one maps to.
KIND_BY_LAYER = {
    "predictions": "predictions",
    "training_sets": "training_set",
    "features": "features",
    "curated": "curated",
    "staging": "staging",
    "raw": "raw",
    "quarantine": "quarantine",
    "reports": "report",
    "monitoring": "monitoring",
}
MODEL, RUN = "model_version", "mlflow_run"
# order of children in the tree: the chain's order
CHAIN_ORDER = ("predictions", "monitoring", MODEL, RUN, "training_set", "features", "curated", "staging",
               "raw", "quarantine", "report", "partition")  # fmt: skip
RANK = {kind: i for i, kind in enumerate(CHAIN_ORDER)}
VERIFIED, MISMATCH, UNVERIFIED = "verified", "MISMATCH", "unverified"


class LineageError(PartitionError):
    """The lineage target does not exist or cannot be understood (the CLI's one-line error, exit 1)."""


@dataclass
class Node:
    """One partition, model version or MLflow run reached by the walk."""

    id: str
    kind: str
    uri: str
    exists: bool = True
    manifest: bool | None = None  # None: this kind has no manifest (model versions, runs)
    facts: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)

    def status(self) -> str | None:
        """verified / MISMATCH / unverified (nothing could be compared) / None (nothing to compare)."""
        if not self.checks:
            return UNVERIFIED if self.manifest is not None else None
        return MISMATCH if any(not c["ok"] for c in self.checks) else VERIFIED

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "uri": self.uri,
            "exists": self.exists,
            "manifest": self.manifest,
            "status": self.status(),
            "facts": self.facts,
            "files": self.files,
            "checks": self.checks,
            "problems": self.problems,
            "children": self.children,
        }


def check(what: str, ok: bool, expected: Any, actual: Any, source: str) -> dict[str, Any]:
    """One comparison made on a node: what, whether it held, both sides and who recorded the expectation."""
    return {"what": what, "ok": ok, "expected": expected, "actual": actual, "source": source}


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)


def sha256(fs: pafs.FileSystem, path: str) -> str | None:
    """The file's sha256, None when it is gone."""
    return file_sha256(path, fs) if exists(fs, path) else None


def diff(expected: dict[str, Any], actual: dict[str, Any]) -> str:
    """``name: <expected> != <actual>`` for each file hash that differs (hashes shortened)."""
    names = sorted(set(expected) | set(actual))
    parts = [
        f"{n}: {str(expected.get(n))[:12]} != {str(actual.get(n))[:12]}"
        for n in names
        if expected.get(n) != actual.get(n)
    ]
    return "; ".join(parts)


def short(exc: BaseException) -> str:
    """The first line of an exception's text (at most 300 characters)."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
