"""The one helper DAGs call: :func:`ml_step` decides where ``ml-tasks <step> <argv...>`` runs.

DAG files name the step, its argv (Jinja templates, see ``_lib.argv``) and a resource profile, nothing
else. ``FLYWHEEL_RUNNER`` picks the runner: ``local`` (default, ``_lib.local``: a subprocess) or
``kubernetes`` (``_lib.pod``: a pod in the ml-tasks image, imported only then: the provider costs ~4 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

from airflow.sdk import BaseOperator

from _lib.argv import Arg
from _lib.config import PROFILES, DagSettings, Profile
from _lib.local import MlStepOperator

if TYPE_CHECKING:
    from airflow.sdk import XComArg
    from airflow.sdk.definitions.mappedoperator import MappedOperator


def runner() -> str:
    """The runner named by ``FLYWHEEL_RUNNER`` (default ``local``), read now (tests switch it)."""
    return DagSettings().runner


@overload
def ml_step(
    step: str,
    argv: Sequence[Arg] = (),
    *,
    expand_argv: None = None,
    profile: Profile = "cpu",
    task_id: str | None = None,
    **kwargs: Any,
) -> BaseOperator: ...


@overload
def ml_step(
    step: str,
    argv: Sequence[Arg] = (),
    *,
    expand_argv: XComArg,
    profile: Profile = "cpu",
    task_id: str | None = None,
    **kwargs: Any,
) -> MappedOperator: ...


def ml_step(
    step: str,
    argv: Sequence[Arg] = (),
    *,
    expand_argv: XComArg | None = None,
    profile: Profile = "cpu",
    task_id: str | None = None,
    **kwargs: Any,
) -> BaseOperator | MappedOperator:
    """A task that runs ``ml-tasks <step> <argv...>`` on the configured runner.

    Args:
        step: CLI subcommand (``extract``, ``transform``, ...); also the default task id.
        argv: arguments after the subcommand: Jinja templates (elements rendering to "" are dropped) or
            XComArgs (``result(task, key)``: the upstream becomes a dependency).
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
        # imported here and only here: the provider costs ~4 s of parse time, the local runner never pays it
        from _lib import pod

        return pod.pod_step(
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
