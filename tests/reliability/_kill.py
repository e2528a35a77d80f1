"""Run ``ml-tasks`` paused at a point (``FLYWHEEL_PAUSE_AT``), then kill -9 it or let it go on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.reliability.conftest import ERROR

if TYPE_CHECKING:
    from tests.integration._servers.mlflow import MlflowServer

PAUSED = "flywheel: paused at "


@dataclass
class Paused:
    """A step stopped at a pause point (SIGSTOP) and what it wrote to stderr until then."""

    proc: subprocess.Popen[str]
    stderr: str

    def kill(self) -> None:
        """kill -9 it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)

    def resume(self, timeout: float = 300.0) -> tuple[int, str, str]:
        """Let it go on (SIGCONT) and wait for it: (exit code, stdout, the whole stderr)."""
        self.proc.send_signal(signal.SIGCONT)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(
                f"the step did not end {timeout:.0f} s after SIGCONT:\n{err[-3000:]}"
            ) from None
        return self.proc.returncode, out, self.stderr + err


def pause_at(point: str, argv: list[str], env: dict[str, str], timeout: float = 120.0) -> Paused:
    """Start ``ml-tasks ARGV`` and return it stopped at ``point``.

    Raises:
        AssertionError: the process ended (or took ``timeout`` seconds) without reaching ``point``.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_tasks.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env, "FLYWHEEL_PAUSE_AT": point},
    )
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith(PAUSED):
                return Paused(proc, "".join(lines))
            if time.monotonic() > deadline:
                break
    finally:
        if not lines or not lines[-1].startswith(PAUSED):
            proc.kill()
            proc.wait(timeout=30)
    raise AssertionError(f"ml-tasks {argv[0]} never paused at {point}:\n{''.join(lines)[-3000:]}")


def kill_at(point: str, argv: list[str], env: dict[str, str], timeout: float = 120.0) -> str:
    """Start ``ml-tasks ARGV``, wait until it pauses at ``point``, kill -9 it; returns its stderr so far.

    Raises:
        AssertionError: the process ended (or took ``timeout`` seconds) without reaching ``point``.
    """
    paused = pause_at(point, argv, env, timeout)
    paused.kill()
    return paused.stderr


def leftovers(root: Path) -> list[str]:
    """Staging folders, moved-aside partitions and writer locks anywhere under ``root``."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.startswith(".staging-") or ".old-" in p.name
    )


def fails_while_down(
    point: str, argv: list[str], env: dict[str, str], server: MlflowServer, task: str
) -> None:
    """Run the step paused at ``point``, stop ``server`` (an MLflow server), let the step go on: it must
    fail with exit 1, nothing on stdout, no traceback and the one line naming the server and ``task``."""
    paused = pause_at(point, argv, env)
    server.stop()
    code, out, err = paused.resume()
    assert code == 1, err[-3000:]
    assert out == ""
    assert "Traceback" not in err, err[-3000:]
    errors = [line.removeprefix(ERROR) for line in err.splitlines() if line.startswith(ERROR)]
    assert errors == [
        f"MLflow tracking server {server.url} unreachable during {task}: Connection refused; "
        "the step's results were not recorded: retry the task once the server is back"
    ]
