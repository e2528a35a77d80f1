"""``ml-tasks``: one subcommand per pipeline step; the argv is the contract.

The same argv runs in a test, as a local subprocess of a DAG task and as a Kubernetes pod's command.
Logs go to stderr; each subcommand ends by printing one JSON line on stdout. Steps import their heavy
libraries inside the command, so ``ml-tasks --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys

from ml_tasks.cli import features, ingest, serving, training
from ml_tasks.cli.app import StepError, app
from ml_tasks.errors import FlywheelError

__all__ = ["StepError", "app", "features", "ingest", "main", "serving", "training"]


def _one_line(exc: BaseException) -> str:
    """The error as one line (the DAG helper reads the line after ``ml-tasks: error:``)."""
    return " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: logs to stderr, one clear line and exit 1 on expected errors."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        # standalone: click itself reports usage errors (exit 2) and aborts; a step's exceptions propagate
        app(args=argv, standalone_mode=True)
    except Exception as exc:
        from pydantic import ValidationError

        if isinstance(exc, FlywheelError | ValidationError):
            print(f"ml-tasks: error: {_one_line(exc)}", file=sys.stderr)
            sys.exit(1)
        raise
