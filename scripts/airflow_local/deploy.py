"""Deploy-time ``ml-tasks`` steps run by ``start`` (not DAG tasks): ``feature-apply`` registers the
``feature_repo/`` declarations in the Feast registry of the data root. A running platform deploys again
only when what they read changed (a fingerprint kept in the home)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.airflow_local.config import BIN, REPO, PlatformError, log
from scripts.airflow_local.processes import summary

#: deploy-time commands run by Platform.start(), in order (argv after ``ml-tasks``)
DEPLOY_STEPS: tuple[tuple[str, ...], ...] = (("feature-apply",),)
#: what the deploy steps read: a running platform deploys again only when one of these changed
DEPLOY_INPUTS = (REPO / "feature_repo", REPO / "ml_tasks" / "features" / "spec.py")
DEPLOY_ENV = ("FLYWHEEL_DATA_ROOT", "FLYWHEEL_FEAST_ENV", "FLYWHEEL_FEAST_DIR", "FLYWHEEL_FEATURE_REPO")
DEPLOY_STATE_FILE = "deployed.json"


def ml_tasks_command(*args: str) -> list[str]:
    """``ml-tasks ARGS`` of this Python environment."""
    return [str(BIN / "ml-tasks"), *args]


@dataclass
class DeployStep:
    """A deploy-time ``ml-tasks`` command running in the background during start."""

    args: tuple[str, ...]
    proc: subprocess.Popen[str]
    log: Path
    started: float


def start_step(args: tuple[str, ...], env: Mapping[str, str], log_dir: Path, data_root: Path) -> DeployStep:
    path = log_dir / f"{args[0]}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"deploy: ml-tasks {' '.join(args)} (data root {data_root}; log {path})")
    with path.open("w") as err:
        proc = subprocess.Popen(
            ml_tasks_command(*args),
            env=dict(env),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    return DeployStep(args, proc, path, time.monotonic())


def finish_step(deploy: DeployStep, timeout: float) -> dict[str, Any]:
    """Wait for a deploy step; raise PlatformError (naming its log) when it fails or times out."""
    try:
        stdout, _ = deploy.proc.communicate(timeout=max(timeout, 60))
    except subprocess.TimeoutExpired:
        terminate([deploy])
        raise PlatformError(
            f"deploy step ml-tasks {' '.join(deploy.args)} did not finish in {max(timeout, 60):.0f} s"
            f" (log {deploy.log})"
        ) from None
    stderr = deploy.log.read_text(errors="replace") if deploy.log.is_file() else ""
    try:
        result = summary(deploy.args, deploy.proc.returncode, stdout, stderr)
    except PlatformError as exc:
        raise PlatformError(f"deploy step failed: {exc} (log {deploy.log})") from None
    changes = result.get("changes")
    detail = f"{len(changes)} registry change(s)" if isinstance(changes, list) else "done"
    seconds = time.monotonic() - deploy.started
    log(f"deploy: ml-tasks {' '.join(deploy.args)}: {detail} in {seconds:.1f} s")
    return result


def terminate(deploys: Iterable[DeployStep]) -> None:
    for deploy in deploys:
        if deploy.proc.poll() is None:
            deploy.proc.terminate()
            try:
                deploy.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                deploy.proc.kill()
                deploy.proc.wait()


def fingerprint(env: Mapping[str, str]) -> str:
    """sha256 over what the deploy steps read: the feature repo, the feature spec, the settings."""
    digest = hashlib.sha256(json.dumps({k: env.get(k) for k in DEPLOY_ENV}, sort_keys=True).encode())
    repo = Path(env["FLYWHEEL_FEATURE_REPO"]) if env.get("FLYWHEEL_FEATURE_REPO") else DEPLOY_INPUTS[0]
    for root in (repo, *DEPLOY_INPUTS[1:]):
        files = sorted(root.rglob("*")) if root.is_dir() else [root]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def deployed_fingerprint(home: Path) -> str | None:
    path = home / DEPLOY_STATE_FILE
    return str(json.loads(path.read_text()).get("fingerprint")) if path.is_file() else None


def record(home: Path, value: str) -> None:
    state = {"fingerprint": value, "steps": [list(s) for s in DEPLOY_STEPS]}
    (home / DEPLOY_STATE_FILE).write_text(json.dumps(state, indent=2))
