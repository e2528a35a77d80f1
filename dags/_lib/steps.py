"""Build pipeline step tasks: the one place that decides where ``ml-tasks <step> ...`` runs.

DAG files name the step, its argv (Jinja templates) and a resource profile, nothing else. The runner
comes from the environment variable ``FLYWHEEL_RUNNER``:

* ``local`` (default): the CLI runs as a subprocess of this Python environment; its stderr streams into
  the task log, the LAST stdout line is parsed as JSON and returned (XCom); a non-zero exit fails the
  task with the CLI's error line.
* ``kubernetes``: the same argv becomes the command of a KubernetesPodOperator pod in the ml-tasks
  image (``_lib.kube``: settings, resource profiles, security context); the pod's JSON summary
  comes back through ``/airflow/xcom/return.json``.

Argv conventions:

* elements are Jinja templates, rendered per run; an element that renders to ``""`` is dropped, which
  is how optional flags work (see :func:`opt` and :func:`switch`);
* the interval comes from :data:`START` / :data:`END`, which need the DAG to register
  :data:`STEP_MACROS` as ``user_defined_macros``: typed params ``interval_start`` / ``interval_end``
  override the run's data interval, and a run that has neither (a manual run with
  ``logical_date: null``) fails without retries and says how to fix it.
* Asset-scheduled DAGs have no data interval: their runs learn the intervals from the triggering asset
  events (:func:`plan_intervals`, one argv per merged interval) and map a step over them
  (``ml_step(step, expand_argv=<XComArg>)``: one task instance per interval).

Parse-time cost matters (DAG files parse in milliseconds): this module imports only the standard
library, jinja2 (already loaded by Airflow) and ``airflow.sdk``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, overload

from airflow.sdk import Asset, BaseOperator, Param, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from jinja2 import pass_context
from jinja2.runtime import Context as JinjaContext

if TYPE_CHECKING:
    from airflow.sdk import XComArg
    from airflow.sdk.definitions.mappedoperator import MappedOperator

log = logging.getLogger(__name__)

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
    params: Mapping[str, Any] | None,
    data_interval_start: Any,
    data_interval_end: Any,
    no_interval_message: str = NO_INTERVAL_MESSAGE,
) -> tuple[str, str]:
    """The run's interval as CLI boundaries: explicit params win, else the run's data interval.

    Args:
        params: the run's params (``interval_start`` / ``interval_end``, YYYY-MM-DD, end exclusive).
        data_interval_start: the run's data interval start (None when the run has none).
        data_interval_end: the run's data interval end (None when the run has none).
        no_interval_message: the error when there is neither (says how to fix it for this DAG).

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
        raise AirflowFailException(no_interval_message)
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


# -- intervals of asset-triggered runs ---------------------------------------------------------------------
#: a run of an asset-scheduled DAG that no asset event triggered (a manual run) and that has no params
NO_EVENTS_MESSAGE = (
    "this run was not triggered by asset events, so it has no interval: trigger it with the params"
    " interval_start (and optionally interval_end, exclusive; default start + 1 day) as YYYY-MM-DD"
)


def _event_day(value: Any, what: str) -> dt.date:
    if not isinstance(value, str):
        raise ValueError(f"{what} is {value!r}, not a YYYY-MM-DD string")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{what} is {value!r}, not a YYYY-MM-DD date") from None


def _extra_intervals(extra: Mapping[str, Any]) -> list[tuple[dt.date, dt.date]]:
    """The intervals one event names: ``extra.intervals`` (a list, for a producer run that publishes several
    intervals in one event) or ``extra.interval``."""
    many = extra.get("intervals")
    if many is not None and not (isinstance(many, list) and many):
        shown = json.dumps(many, default=str)[:200]
        raise ValueError(f"its extra.intervals is {shown}, not a non-empty list")
    found: list[tuple[dt.date, dt.date]] = []
    for interval in many if many is not None else [extra.get("interval")]:
        if not isinstance(interval, Mapping):
            raise ValueError(f"its extra has no interval: {json.dumps(extra, default=str)[:300]}")
        start = _event_day(interval.get("start"), "interval.start")
        end = _event_day(interval.get("end"), "interval.end")
        if end <= start:
            raise ValueError(f"interval end {end} is not after start {start}")
        found.append((start, end))
    return found


def event_intervals(extras: Iterable[Mapping[str, Any] | None]) -> list[tuple[dt.date, dt.date]]:
    """The ``[start, end)`` day intervals of the asset events, from their extras (``{"interval": ...}``, or
    ``{"intervals": [...]}`` for an event that publishes several).

    Raises:
        AirflowFailException: an event without a usable interval (for example one created by hand in
            the UI): which data changed is unknown, so no interval is guessed; retrying cannot help.
    """
    extras = list(extras)
    intervals: list[tuple[dt.date, dt.date]] = []
    for number, extra in enumerate(extras, start=1):
        extra = extra or {}
        label = f"asset event {number} of {len(extras)} (producer run {extra.get('run_id')!r})"
        try:
            intervals += _extra_intervals(extra)
        except ValueError as exc:
            raise AirflowFailException(
                f"{label}: {exc}; events must carry extra.interval = {{start, end}} (YYYY-MM-DD, end"
                " exclusive) or extra.intervals = [{start, end}, ...], or trigger this DAG with the params"
                " interval_start / interval_end"
            ) from None
    return intervals


def merge_intervals(
    intervals: Iterable[tuple[dt.date, dt.date]], max_days: int | None = None
) -> list[tuple[dt.date, dt.date]]:
    """Sorted, disjoint intervals covering exactly the days of ``intervals``.

    Overlapping, duplicate and adjacent intervals merge into one (a backfill of N days becomes one
    interval); gaps stay gaps, so no day is processed that no interval named. With ``max_days``, a
    merged interval longer than that is cut into consecutive pieces of at most ``max_days`` days (one
    task each: bounded task time, and a failure re-runs one piece).
    """
    if max_days is not None and max_days < 1:
        raise ValueError(f"max_days must be at least 1, got {max_days}")
    merged: list[tuple[dt.date, dt.date]] = []
    for start, end in sorted(intervals):
        if end <= start:
            raise ValueError(f"interval [{start}, {end}) is empty")
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    if max_days is None:
        return merged
    step = dt.timedelta(days=max_days)
    pieces: list[tuple[dt.date, dt.date]] = []
    for start, end in merged:
        while start < end:
            pieces.append((start, min(start + step, end)))
            start += step
    return pieces


def interval_argv(intervals: Iterable[tuple[dt.date, dt.date]]) -> list[list[str]]:
    """One CLI argv per interval: ``["--start", "YYYY-MM-DD", "--end", "YYYY-MM-DD"]``."""
    return [["--start", start.isoformat(), "--end", end.isoformat()] for start, end in intervals]


def plan_intervals(
    extras: Sequence[Mapping[str, Any] | None],
    params: Mapping[str, Any] | None = None,
    max_days: int | None = None,
) -> list[list[str]]:
    """The argv lists a run of an asset-scheduled DAG maps its steps over.

    Args:
        extras: the extras of the run's triggering asset events, in any order (a run consolidates every
            event queued since the previous run: backfills deliver several, maybe out of order).
        params: ``interval_start`` / ``interval_end`` (YYYY-MM-DD, end exclusive) win when set: that
            is how a manual run names its interval.
        max_days: longest interval per argv (see :func:`merge_intervals`).

    Raises:
        AirflowFailException: no params and no events, bad params, or an event without interval.
    """
    params = params or {}
    if params.get("interval_start") or params.get("interval_end") or not extras:
        # the run's own data interval is never used: asset-triggered runs have none, and a manual run
        # of an asset-scheduled DAG gets a zero-length one
        start, end = resolve_interval(params, None, None, no_interval_message=NO_EVENTS_MESSAGE)
        intervals = [(dt.date.fromisoformat(start), dt.date.fromisoformat(end))]
    else:
        intervals = event_intervals(extras)
    try:
        return interval_argv(merge_intervals(intervals, max_days))
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from exc


# -- asset-scheduled DAGs: params and the planning task ---------------------------------------------------
def interval_params(max_days: int, max_days_help: str) -> dict[str, Param]:
    """The params of an asset-scheduled DAG: a manual run's interval, and the longest interval per task."""
    return {
        "interval_start": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Manual runs: first local day (YYYY-MM-DD); overrides the asset events.",
        ),
        "interval_end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Manual runs: day after the last local day (exclusive; default interval_start + 1).",
        ),
        "max_days_per_task": Param(max_days, type="integer", minimum=1, description=max_days_help),
    }


def plan_intervals_task(asset: Asset) -> Any:
    """The ``plan_intervals`` task of a DAG scheduled on ``asset``: one ``["--start", S, "--end", E]`` per
    merged interval of the run's triggering events of that Asset (or of the params of a manual run), in
    pieces of at most the param ``max_days_per_task`` days. Call it inside the DAG; map steps over its output.
    """

    @task(task_id="plan_intervals")
    def plan(triggering_asset_events: Any = None, params: Any = None) -> list[list[str]]:
        events = list(triggering_asset_events.get(asset, [])) if triggering_asset_events else []
        argv = plan_intervals([e.extra for e in events], params, max_days=int(params["max_days_per_task"]))
        sources = sorted({str(e.source_run_id) for e in events})
        pieces = [f"[{a[1]}, {a[3]})" for a in argv]
        log.info("%d %s event(s) from %d run(s) %s -> %d interval(s): %s",
                 len(events), asset.name, len(sources), sources[:20], len(argv), pieces)  # fmt: skip
        return argv

    plan.__doc__ = f"One argv per merged interval of the triggering {asset.name} events (or the params)."
    return plan()


# -- argv templates -----------------------------------------------------------------------------------------
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


def step_event_extra(step: str, result: Mapping[str, Any] | None, context: Any) -> dict[str, Any]:
    """Asset event extra of a step: the interval and partitions it wrote, and the producing run.

    Shared by both runners (the local CLI's stdout summary and the pod's ``/airflow/xcom/return.json``
    are the same JSON), so consumers see one event contract (``_lib.assets``).
    """
    result = result or {}
    partitions = [
        {k: p[k] for k in ("dt", "uri", "rows") if k in p}
        for p in result.get("partitions", [])
        if isinstance(p, Mapping)
    ]
    return {
        "step": step,
        "interval": result.get("interval"),
        "partitions": partitions,
        "run_id": context.get("run_id"),
    }


def attach_event_extra(outlets: Iterable[Any], extra: Mapping[str, Any], context: Any) -> None:
    """Put ``extra`` on the events the task emits for each of its Asset ``outlets``."""
    for outlet in outlets or ():
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra.update(extra)


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
        attach_event_extra(self.outlets, step_event_extra(self.step, result, context), context)
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


# -- DAG defaults --------------------------------------------------------------------------------------------
def default_args(execution_timeout: dt.timedelta) -> dict[str, Any]:
    """``default_args`` shared by the project's DAGs: owner, retries with exponential backoff, a timeout.

    Retries come from ``FLYWHEEL_TASK_RETRIES`` (default 2) and ``FLYWHEEL_RETRY_DELAY_SECONDS``
    (default 120), read when the DAG file is parsed (tests set them low).
    """
    return {
        "owner": "flywheel",
        "retries": int(os.environ.get("FLYWHEEL_TASK_RETRIES", "2")),
        "retry_delay": dt.timedelta(seconds=float(os.environ.get("FLYWHEEL_RETRY_DELAY_SECONDS", "120"))),
        "retry_exponential_backoff": True,
        "execution_timeout": execution_timeout,
    }


# -- the one helper DAGs call ------------------------------------------------------------------------------
def runner() -> str:
    """The runner named by ``FLYWHEEL_RUNNER`` (default ``local``)."""
    name = os.environ.get(RUNNER_ENV, "local").strip().lower() or "local"
    if name not in RUNNERS:
        raise ValueError(f"{RUNNER_ENV}={name!r} is not a runner; choose one of {list(RUNNERS)}")
    return name


@overload
def ml_step(
    step: str,
    argv: Sequence[str] = (),
    *,
    expand_argv: None = None,
    profile: Profile = "cpu",
    task_id: str | None = None,
    **kwargs: Any,
) -> BaseOperator: ...


@overload
def ml_step(
    step: str,
    argv: Sequence[str] = (),
    *,
    expand_argv: XComArg,
    profile: Profile = "cpu",
    task_id: str | None = None,
    **kwargs: Any,
) -> MappedOperator: ...


def ml_step(
    step: str,
    argv: Sequence[str] = (),
    *,
    expand_argv: XComArg | None = None,
    profile: Profile = "cpu",
    task_id: str | None = None,
    **kwargs: Any,
) -> BaseOperator | MappedOperator:
    """A task that runs ``ml-tasks <step> <argv...>`` on the configured runner.

    Args:
        step: CLI subcommand (``extract``, ``transform``, ...); also the default task id.
        argv: arguments after the subcommand, Jinja templates; elements rendering to "" are dropped.
        expand_argv: instead of ``argv``, the output of an upstream task that returns a LIST of argv
            lists: the task is mapped, one instance per argv (``MlStepOperator.partial(...).expand``).
            Each instance's argv is used as given (plain strings, no optional elements).
        profile: resource profile, ``cpu`` or ``gpu`` (the Kubernetes runner maps it to requests/limits;
            locally it is recorded only).
        task_id: defaults to ``step``.
        **kwargs: BaseOperator arguments (outlets, retries, doc_md, max_active_tis_per_dagrun, ...).
    """
    if profile not in PROFILES:
        raise ValueError(f"step {step!r}: profile {profile!r} is not one of {list(PROFILES)}")
    if isinstance(argv, str):
        raise TypeError(f"step {step!r}: argv must be a list of strings, not one string")
    if expand_argv is not None and argv:
        raise TypeError(f"step {step!r}: give argv or expand_argv, not both")
    kind = runner()
    if kind == "kubernetes":
        return _kubernetes_step(
            step, list(argv), expand_argv=expand_argv, profile=profile, task_id=task_id or step, **kwargs
        )
    if expand_argv is not None:
        # Mapped: the unmapped operator is built per instance at run time (MlStepOperator(argv=one list));
        # the list is an XCom value, never rendered as a template source of its own.
        return MlStepOperator.partial(
            task_id=task_id or step,
            step=step,
            profile=profile,
            # the UI labels each instance by its argv ("--start 2024-01-02 --end 2024-01-05")
            map_index_template="{{ task.argv[1:] | join(' ') }}",
            **kwargs,
        ).expand(argv=expand_argv)
    return MlStepOperator(task_id=task_id or step, step=step, argv=list(argv), profile=profile, **kwargs)


def _kubernetes_step(
    step: str,
    argv: list[str],
    *,
    expand_argv: XComArg | None,
    profile: Profile,
    task_id: str,
    **kwargs: Any,
) -> BaseOperator | MappedOperator:
    """The step as a KubernetesPodOperator pod running the same argv (see :mod:`_lib.kube`)."""
    # imported here and only here: the provider costs ~4 s of parse time, the local runner never pays it
    from _lib import kube

    settings = kube.KubeSettings.from_env()
    return kube.pod_step(
        step, argv, expand_argv=expand_argv, profile=profile, task_id=task_id, settings=settings, **kwargs
    )
