"""Reliability tier: the bad-input corpus, server faults, kill points and secrets (docs/reliability.md).

``outcome`` runs one ``ml-tasks`` argv in-process and returns either its JSON summary or its one error line,
asserting the process contract on the way: exit 0 with one JSON line, or exit 1 with exactly one
``ml-tasks: error:`` line and no traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.conftest import run_cli

ERROR = "ml-tasks: error: "


@dataclass
class Outcome:
    """What one CLI run ended with: the summary (exit 0) or the one error line (exit 1), and stderr."""

    summary: dict[str, Any] | None
    error: str | None
    stderr: str


def outcome(*argv: str, env: dict[str, str] | None = None) -> Outcome:
    result = run_cli(*argv, env=env, check=False)
    if "returncode" not in result:
        return Outcome(result, None, "")
    stderr = result["stderr"]
    assert result["returncode"] == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith(ERROR)]
    assert len(errors) == 1, stderr[-3000:]
    assert result["stdout"].strip() == ""
    return Outcome(None, errors[0].removeprefix(ERROR), stderr)


# the small real pipeline root of the integration tier (built once per run, shared with it)
from tests.integration.conftest import pipeline_root as pipeline_root  # noqa: E402
