"""The local runner: ``ml-tasks <step> <argv...>`` as a subprocess of the Python environment running the task.

Its stderr streams into the task log, the LAST stdout line is parsed as JSON and returned (XCom); a
non-zero exit fails the task with the CLI's error line.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from _lib import stepclient
from _lib.argv import Arg
from _lib.config import Profile
from _lib.events import attach_event_extra, step_event_extra

#: the line the CLI prints on stderr for an expected error (ml_tasks/cli/__init__.py)
CLI_ERROR_PREFIX = "ml-tasks: error:"


def ml_tasks_executable() -> Path:
    """The ``ml-tasks`` console script of the Python environment running this task."""
    # not resolved: a venv's bin/python is a symlink to the base interpreter, the script sits beside it
    return Path(sys.executable).with_name("ml-tasks")


def error_line(stderr_tail: Sequence[str]) -> str:
    """The most telling line of a failed CLI run: its ``ml-tasks: error:`` line, else the last line."""
    lines = [line.strip() for line in stderr_tail if line.strip()]
    for line in reversed(lines):
        if line.startswith(CLI_ERROR_PREFIX):
            return line
    return lines[-1] if lines else "(no output on stderr)"


class MlStepOperator(BaseOperator):
    """Run ``ml-tasks <step> <argv...>`` locally; return the CLI's JSON summary (XCom).

    When the task has Asset outlets, each asset event's extra carries the step's interval and output
    partitions (see :meth:`event_extra`), so consumers learn which data changed.
    """

    template_fields: Sequence[str] = ("argv",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"argv": "py"}
    ui_color = "#e8f4ea"

    def __init__(self, *, step: str, argv: Sequence[Arg] = (), profile: Profile = "cpu", **kwargs: Any):
        super().__init__(**kwargs)
        self.step = step
        self.argv = [step, *argv]
        self.profile = profile
        self._proc: subprocess.Popen[str] | stepclient.ServedStep | None = None

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        # unset optional flags render to "": drop them, so the rendered argv shown in the UI is the command
        self.argv = [str(a) for a in self.argv if str(a) != ""]

    def command(self) -> list[str]:
        """The full command line (after rendering), empty elements dropped."""
        return [str(ml_tasks_executable()), *(str(a) for a in self.argv if str(a) != "")]

    def execute(self, context: Any) -> dict[str, Any]:
        exe = ml_tasks_executable()
        if not exe.is_file():
            raise AirflowFailException(
                f"{exe} not found: the local runner needs the flywheel-ml-tasks package installed in the"
                " Python environment that runs Airflow tasks"
            )
        result = self.run_cli(self.command())
        attach_event_extra(self.outlets, step_event_extra(self.step, result, context), context)
        return result

    def run_cli(self, cmd: list[str]) -> dict[str, Any]:
        """Run ``cmd``, stream its stderr into the task log, parse its last stdout line as JSON."""
        self.log.info("running %s (profile %s)", shlex.join(cmd), self.profile)
        started = time.monotonic()
        stdout: list[str] = []
        tail: deque[str] = deque(maxlen=200)
        served, why_not = stepclient.start(cmd[1:])
        if served is not None:
            self.log.info("served by the local step server (%s), pid %d", stepclient.SOCKET_ENV, served.pid)
        elif os.environ.get(stepclient.SOCKET_ENV):
            self.log.info("running as a subprocess: %s", why_not)
        proc_cm = served or subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        with proc_cm as proc:
            self._proc = proc
            assert proc.stdout is not None and proc.stderr is not None
            # stdout is drained in a thread so a chatty child never blocks on a full pipe
            reader = threading.Thread(target=lambda: stdout.extend(proc.stdout or ()), daemon=True)
            reader.start()
            for raw in proc.stderr:
                line = raw.rstrip("\n")
                tail.append(line)
                self._log_cli_line(line)
            reader.join()
            returncode = proc.wait()
        self._proc = None
        seconds = time.monotonic() - started
        if returncode != 0:
            raise AirflowException(
                f"ml-tasks {self.step} failed (exit status {returncode}, {seconds:.1f} s): {error_line(tail)}"
            )
        lines = [line.strip() for line in stdout if line.strip()]
        for line in lines[:-1]:
            self.log.info("stdout: %s", line)
        if not lines:
            raise AirflowException(f"ml-tasks {self.step} exited 0 but printed no JSON summary on stdout")
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise AirflowException(
                f"ml-tasks {self.step}: the last stdout line is not JSON ({exc}): {lines[-1][:500]}"
            ) from exc
        if not isinstance(result, dict):
            raise AirflowException(
                f"ml-tasks {self.step}: the JSON summary is not an object: {lines[-1][:500]}"
            )
        self.log.info("ml-tasks %s succeeded in %.1f s: %s", self.step, seconds, lines[-1][:2000])
        return result

    def _log_cli_line(self, line: str) -> None:
        # keep the CLI's own level visible in the task log (format: "time LEVEL logger: message")
        if line.startswith(CLI_ERROR_PREFIX) or " ERROR " in line or " CRITICAL " in line:
            self.log.error("%s", line)
        elif " WARNING " in line:
            self.log.warning("%s", line)
        else:
            self.log.info("%s", line)

    def event_extra(self, result: Mapping[str, Any], context: Any) -> dict[str, Any]:
        """Asset event extra: the interval and partitions the step wrote, and the producing run."""
        return step_event_extra(self.step, result, context)

    def on_kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.log.warning("terminating ml-tasks %s (pid %d)", self.step, proc.pid)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
