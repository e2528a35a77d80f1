"""helm and checkov from the git-ignored .tools/ folder (scripts/tools/fetch.sh), rendering helm/flywheel."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

TOOLS = REPO / ".tools"
HELM = TOOLS / "bin" / "helm"
CHECKOV = TOOLS / "checkov" / "bin" / "checkov"
CHART = REPO / "helm" / "flywheel"
AIRFLOW_VALUES = REPO / "helm" / "airflow-values.yaml"
CHECKOV_CONFIG = REPO / "helm" / "checkov.yaml"
RELEASE, NAMESPACE = "flywheel", "flywheel"
#: values files per rendering: the chart's defaults, and the production overrides on top
VARIANTS: dict[str, tuple[Path, ...]] = {
    "default": (),
    "production": (CHART / "values-production.yaml",),
}


def tool(path: Path) -> Path:
    """``path`` if fetched; else skip (fail when FLYWHEEL_REQUIRE_TOOLS=1, as scripts/run_tests.sh sets)."""
    if not path.is_file():
        reason = f"{path.relative_to(REPO)} is missing: run scripts/tools/fetch.sh (make tools)"
        if os.environ.get("FLYWHEEL_REQUIRE_TOOLS") == "1":
            pytest.fail(f"FLYWHEEL_REQUIRE_TOOLS=1 but {reason}")
        pytest.skip(reason)
    return path


def helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm; offline (no repository or cluster is contacted by lint/template)."""
    homes = {"HELM_CACHE_HOME": str(TOOLS / "helm-cache"), "HELM_CONFIG_HOME": str(TOOLS / "helm")}
    env = {**os.environ, **homes}
    return subprocess.run(
        [str(tool(HELM)), *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )


def value_args(variant: str) -> list[str]:
    return [arg for path in VARIANTS[variant] for arg in ("-f", str(path))]


@functools.cache
def rendered_text(variant: str) -> str:
    done = helm("template", RELEASE, CHART, "--namespace", NAMESPACE, *value_args(variant))
    assert done.returncode == 0, done.stderr
    return done.stdout


def rendered(variant: str) -> list[dict[str, Any]]:
    """The documents ``helm template`` renders for ``variant`` (fresh copies)."""
    return [doc for doc in yaml.safe_load_all(rendered_text(variant)) if doc]


def values(variant: str) -> dict[str, Any]:
    """The chart's values merged as helm merges them (shallow files, deep maps)."""
    merged: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in VARIANTS[variant]:
        _merge(merged, yaml.safe_load(path.read_text()))
    return merged


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template of the workloads, by ``Kind/name``."""
    specs = {}
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
            specs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc["spec"]["template"]["spec"]
    return specs


def checkov(folder: Path) -> dict[str, Any]:
    """checkov's JSON report over the manifests in ``folder`` (helm/checkov.yaml: framework, skips)."""
    done = subprocess.run(
        [str(tool(CHECKOV)), "--config-file", str(CHECKOV_CONFIG), "-d", str(folder), "-o", "json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(done.stdout)
    result: dict[str, Any] = report[0] if isinstance(report, list) else report
    return result
