"""Argv elements of a step, as Jinja templates rendered per run; an element rendering to ``""`` is dropped.

:data:`START` / :data:`END` are the run's interval (typed params ``interval_start`` / ``interval_end`` win
over its data interval); they need the DAG to register :data:`STEP_MACROS` as ``user_defined_macros``.
Optional flags come from :func:`opt` and :func:`switch`; an upstream step's output from :func:`result`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from airflow.sdk import BaseOperator, XComArg

from _lib.intervals import interval_end, interval_start

#: an argv element: a Jinja template, or an upstream step's output (:func:`result`)
Arg: TypeAlias = "str | XComArg"

START = "{{ interval_start() }}"
END = "{{ interval_end() }}"
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


def result(task: BaseOperator | XComArg, key: str) -> XComArg:
    """Field ``key`` of an upstream step's JSON summary (or of a TaskFlow dict), resolved at run time.

    The upstream must push its fields (``multiple_outputs=True``); it becomes a dependency of the task
    whose argv holds the value.
    """
    operator: Any = next(op for op, _ in task.iter_references()) if isinstance(task, XComArg) else task
    return XComArg(operator, key=key)
