"""``ml-tasks``: one subcommand per pipeline step; the argv is the contract.

The same argv runs in a test, as a local subprocess of a DAG task and as a Kubernetes pod's command.
Logs go to stderr; each subcommand ends by printing one JSON line on stdout. Steps import their heavy
libraries inside the command, so ``ml-tasks --help`` stays fast.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import traceback
from typing import NoReturn

from ml_tasks import redaction
from ml_tasks.cli import features, ingest, serving, training
from ml_tasks.cli.app import StepError, app
from ml_tasks.errors import FlywheelError

__all__ = ["StepError", "app", "entry", "features", "finish", "ingest", "main", "serving", "training"]


def _one_line(exc: BaseException) -> str:
    """The error as one line (the DAG helper reads the line after ``ml-tasks: error:``)."""
    return " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def configured_secrets(argv: list[str] | None) -> list[str]:
    """Every secret this process knows of: the secret settings, environment variables named like secrets
    or holding a URI with a password, and such URIs given on the command line."""
    from ml_tasks.settings import Settings

    values: list[str] = []
    # invalid settings are reported by the step itself; the env scan below still runs
    with contextlib.suppress(Exception):
        values += Settings().secret_values()
    for name, value in os.environ.items():
        if redaction.SECRET_NAME.search(name) or redaction.userinfo_password(value):
            values.append(value)
    for arg in argv if argv is not None else sys.argv[1:]:
        for part in arg.split("=", 1)[-1:]:
            if redaction.userinfo_password(part):
                values.append(part)
    return values


def _debug() -> bool:
    return os.environ.get("FLYWHEEL_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: logs to stderr, one clear line and exit 1 on expected errors.

    Everything the step prints passes the redaction filter (``ml_tasks.redaction``). ``FLYWHEEL_DEBUG=1``
    adds the traceback of an expected error (redacted too).
    """
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with redaction.install(redaction.Redactor(configured_secrets(argv))) as redact:
        try:
            # standalone: click itself reports usage errors (exit 2) and aborts; a step's exceptions propagate
            app(args=argv, standalone_mode=True)
        except Exception as exc:
            from pydantic import ValidationError

            if not isinstance(exc, FlywheelError | ValidationError):
                # a bug: its traceback, redacted, and exit 1 (as the interpreter would, unredacted)
                print(redact("".join(traceback.format_exception(exc))), end="", file=sys.stderr)
                sys.exit(1)
            if _debug():
                print(redact("".join(traceback.format_exception(exc))), end="", file=sys.stderr)
            print(f"ml-tasks: error: {redact(_one_line(exc))}", file=sys.stderr)
            sys.exit(1)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)  # as the interpreter does with a non-integer code
    return 1


def finish(code: int) -> NoReturn:
    """End the process with ``code`` without tearing down its modules (~1 s after importing Evidently,
    Feast or GX). What the interpreter's exit does before that still happens, in its order: threading's
    exit hooks (an idle executor's workers are told to stop) and the join of non-daemon threads, the exit
    handlers, the streams flushed."""
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def entry() -> NoReturn:
    """The ``ml-tasks`` console script: :func:`main`, then :func:`finish`."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc)
    finish(code)
