"""The one-JSON-line contract: every CLI subcommand ends by printing its summary on stdout."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ml_tasks import redaction

XCOM_ENV = "FLYWHEEL_XCOM_FILE"


def emit(summary: dict[str, Any]) -> None:
    """Print ``summary`` as one JSON line; also write it to ``$FLYWHEEL_XCOM_FILE`` when set.

    The file is how a KubernetesPodOperator pod hands XCom back (``/airflow/xcom/return.json``).
    """
    line = json.dumps(summary, sort_keys=True, default=str, separators=(",", ":"))
    target = os.environ.get(XCOM_ENV)
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(redaction.redact(line) + "\n")
    print(line, flush=True)


def read_summary(stdout: str) -> dict[str, Any]:
    """The summary a step printed: the last stdout line that is a JSON object (ValueError if none)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise ValueError(f"no JSON summary line on stdout: {stdout[-500:]!r}")
