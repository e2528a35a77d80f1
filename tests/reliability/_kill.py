"""Run ``ml-tasks`` as a process paused at a storage point (``FLYWHEEL_PAUSE_AT``), then kill -9 it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PAUSED = "flywheel: paused at "


def kill_at(point: str, argv: list[str], env: dict[str, str], timeout: float = 120.0) -> str:
    """Start ``ml-tasks ARGV``, wait until it pauses at ``point``, kill -9 it; returns its stderr so far.

    Raises:
        AssertionError: the process ended (or took ``timeout`` seconds) without reaching ``point``.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_tasks.cli", *argv],
        stdout=subprocess.DEVNULL,
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
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return "".join(lines)
            if time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    raise AssertionError(f"ml-tasks {argv[0]} never paused at {point}:\n{''.join(lines)[-3000:]}")


def leftovers(root: Path) -> list[str]:
    """Staging folders, moved-aside partitions and writer locks anywhere under ``root``."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name.startswith(".staging-") or ".old-" in p.name
    )
