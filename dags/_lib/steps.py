"""Build pipeline step tasks: the one place that decides where ``ml-tasks <step> ...`` runs.

DAG files name the step, its argv (Jinja templates) and a resource profile, nothing else. The runner
comes from the environment variable ``FLYWHEEL_RUNNER``:

* ``local`` (default): the CLI runs as a subprocess of this Python environment; its stderr streams into
  the task log, the LAST stdout line is parsed as JSON and returned (XCom); a non-zero exit fails the
  task with the CLI's error line.
* ``kubernetes`` (later issue): the same argv becomes the command of a KubernetesPodOperator pod.

Argv conventions:

* elements are Jinja templates, rendered per run; an element that renders to ``""`` is dropped, which
  is how optional flags work (see :func:`opt` and :func:`switch`);
* the interval comes from :data:`START` / :data:`END`, which need the DAG to register
  :data:`STEP_MACROS` as ``user_defined_macros``: typed params ``interval_start`` / ``interval_end``
  override the run's data interval, and a run that has neither (a manual run with
  ``logical_date: null``) fails without retries and says how to fix it.

Parse-time cost matters (DAG files parse in milliseconds): this module imports only the standard
library, jinja2 (already loaded by Airflow) and ``airflow.sdk``.
"""

from __future__ import annotations

import datetime as dt
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
from typing import Any, ClassVar, Literal

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from jinja2 import pass_context
from jinja2.runtime import Context as JinjaContext

RUNNER_ENV = "FLYWHEEL_RUNNER"
RUNNERS = ("local", "kubernetes")
Profile = Literal["cpu", "gpu"]
PROFILES: tuple[Profile, ...] = ("cpu", "gpu")
#: the line the CLI prints on stderr for an expected error (ml_tasks/cli.py)
CLI_ERROR_PREFIX = "ml-tasks: error:"

START = "{{ interval_start() }}"
END = "{{ interval_end() }}"

NO_INTERVAL_MESSAGE = (
    "this run has no data interval (a manual run triggered with logical_date null): set the params"
    " interval_start (and optionally interval_end, exclusive; default start + 1 day) as YYYY-MM-DD,"
    " or trigger the run with a logical date"
)


# -- interval macros ----------------------------------------------------------------------------------
def resolve_interval(
    params: Mapping[str, Any] | None, data_interval_start: Any, data_interval_end: Any
) -> tuple[str, str]:
    """The run's interval as CLI boundaries: explicit params win, else the run's data interval.

    Raises:
        AirflowFailException: no interval at all, or inconsistent params (retrying cannot help).
    """
    params = params or {}
    start, end = params.get("interval_start"), params.get("interval_end")
    if start:
        try:
            first = dt.date.fromisoformat(str(start))
            last = dt.date.fromisoformat(str(end)) if end else first + dt.timedelta(days=1)
        except ValueError as exc:
            raise AirflowFailException(
                f"params interval_start/interval_end must be YYYY-MM-DD: {exc}"
            ) from exc
        if last <= first:
            raise AirflowFailException(f"params interval_end {last} must be after interval_start {first}")
        return first.isoformat(), last.isoformat()
    if end:
        raise AirflowFailException("params interval_end is set without interval_start: set both, or neither")
    if data_interval_start is None or data_interval_end is None:
        raise AirflowFailException(NO_INTERVAL_MESSAGE)
    # Airflow renders aware datetimes (UTC); the CLI converts them to local time and checks midnight.
    return data_interval_start.isoformat(), data_interval_end.isoformat()


def _interval_from(ctx: JinjaContext) -> tuple[str, str]:
    # Context.get returns None for names the run does not define (no logical date -> no data interval)
    return resolve_interval(ctx.get("params"), ctx.get("data_interval_start"), ctx.get("data_interval_end"))


@pass_context
def interval_start(ctx: JinjaContext) -> str:
    """Jinja macro: the interval start of the task being rendered."""
    return _interval_from(ctx)[0]


@pass_context
def interval_end(ctx: JinjaContext) -> str:
    """Jinja macro: the interval end (exclusive) of the task being rendered."""
    return _interval_from(ctx)[1]


#: pass as ``user_defined_macros`` of every DAG that uses :data:`START` / :data:`END`
STEP_MACROS: dict[str, Any] = {"interval_start": interval_start, "interval_end": interval_end}


def opt(flag: str, expr: str, prefix: str = "") -> str:
    """Argv element ``FLAG=PREFIXVALUE`` when the Jinja expression ``expr`` is set, else dropped.

    Examples: ``opt("--trips-per-day", "params.trips_per_day")`` renders ``--trips-per-day=2000``;
    ``opt("--option", "params.dirty_rate", prefix="dirty_rate=")`` renders ``--option=dirty_rate=0.2``.
    """
    if "'" in flag + prefix:
        raise ValueError(f"opt(): quotes are not allowed in flag/prefix: {flag!r} {prefix!r}")
    return f"{{{{ '{flag}={prefix}' ~ ({expr}) if ({expr}) not in (none, '') else '' }}}}"


def switch(flag: str, expr: str) -> str:
    """Argv element ``FLAG`` when the Jinja expression ``expr`` is true, else dropped."""
    return f"{{% if {expr} %}}{flag}{{% endif %}}"


# -- the local runner -----------------------------------------------------------------------------------
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

    def __init__(self, *, step: str, argv: Sequence[str] = (), profile: Profile = "cpu", **kwargs: Any):
        super().__init__(**kwargs)
        self.step = step
        self.argv = [step, *argv]
        self.profile = profile
        self._proc: subprocess.Popen[str] | None = None

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
        if self.outlets:
            extra = self.event_extra(result, context)
            for outlet in self.outlets:
                if isinstance(outlet, Asset):
                    context["outlet_events"][outlet].extra.update(extra)
        return result

    def run_cli(self, cmd: list[str]) -> dict[str, Any]:
        """Run ``cmd``, stream its stderr into the task log, parse its last stdout line as JSON."""
        self.log.info("running %s (profile %s)", shlex.join(cmd), self.profile)
        started = time.monotonic()
        stdout: list[str] = []
        tail: deque[str] = deque(maxlen=200)
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        ) as proc:
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
        partitions = [
            {k: p[k] for k in ("dt", "uri", "rows") if k in p}
            for p in result.get("partitions", [])
            if isinstance(p, Mapping)
        ]
        return {
            "step": self.step,
            "interval": result.get("interval"),
            "partitions": partitions,
            "run_id": context.get("run_id"),
        }

    def on_kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.log.warning("terminating ml-tasks %s (pid %d)", self.step, proc.pid)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- the one helper DAGs call ------------------------------------------------------------------------------
def runner() -> str:
    """The runner named by ``FLYWHEEL_RUNNER`` (default ``local``)."""
    name = os.environ.get(RUNNER_ENV, "local").strip().lower() or "local"
    if name not in RUNNERS:
        raise ValueError(f"{RUNNER_ENV}={name!r} is not a runner; choose one of {list(RUNNERS)}")
    return name


def ml_step(
    step: str,
    argv: Sequence[str] = (),
    *,
    profile: Profile = "cpu",
    task_id: str | None = None,
    **kwargs: Any,
) -> BaseOperator:
    """A task that runs ``ml-tasks <step> <argv...>`` on the configured runner.

    Args:
        step: CLI subcommand (``extract``, ``transform``, ...); also the default task id.
        argv: arguments after the subcommand, Jinja templates; elements rendering to "" are dropped.
        profile: resource profile, ``cpu`` or ``gpu`` (the Kubernetes runner maps it to requests/limits;
            locally it is recorded only).
        task_id: defaults to ``step``.
        **kwargs: BaseOperator arguments (outlets, retries, doc_md, ...).
    """
    if profile not in PROFILES:
        raise ValueError(f"step {step!r}: profile {profile!r} is not one of {list(PROFILES)}")
    if isinstance(argv, str):
        raise TypeError(f"step {step!r}: argv must be a list of strings, not one string")
    kind = runner()
    if kind == "kubernetes":
        return _kubernetes_step(step, list(argv), profile=profile, task_id=task_id or step, **kwargs)
    return MlStepOperator(task_id=task_id or step, step=step, argv=list(argv), profile=profile, **kwargs)


def _kubernetes_step(
    step: str, argv: list[str], *, profile: Profile, task_id: str, **kwargs: Any
) -> BaseOperator:
    # The later issue adds, here and only here (the provider import costs ~4 s of parse time):
    #   from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    # with image docker/ml-tasks, arguments [step, *argv] (same templates; drop empty elements before the
    # pod is built), requests/limits and node selector from `profile`, the data root and settings as env,
    # and do_xcom_push with FLYWHEEL_XCOM_FILE=/airflow/xcom/return.json.
    raise NotImplementedError(
        f"{RUNNER_ENV}=kubernetes is not implemented yet (task {task_id!r}, step {step!r}, profile"
        f" {profile!r}): unset {RUNNER_ENV} or set it to 'local'"
    )
