"""The Kubernetes runner's operator: ``ml-tasks <step> <argv...>`` as a KubernetesPodOperator pod.

Imported only by :func:`_lib.steps.ml_step` when ``FLYWHEEL_RUNNER=kubernetes``: the provider import costs
~4 s, which the local runner's DAG parse never pays. The pod runs exactly the local runner's argv; the
CLI writes its JSON summary to ``/airflow/xcom/return.json``, which the provider's sidecar hands back as
the task's XCom. Settings and pod pieces: ``_lib.kube``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s

from _lib.argv import Arg
from _lib.config import Profile
from _lib.events import attach_event_extra, step_event_extra
from _lib.kube import XCOM_FILE, KubeSettings
from _lib.kube_env import ENV_PREFIX

if TYPE_CHECKING:
    from airflow.sdk import XComArg
    from airflow.sdk.definitions.mappedoperator import MappedOperator

log = logging.getLogger(__name__)


def pod_name_prefix(dag_id: str, task_id: str) -> str:
    """Deterministic pod name prefix ``<dag_id>-<task_id>`` as a DNS label (the provider adds a suffix)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{dag_id}-{task_id}".lower()).strip("-")
    # 63 - 9 for the provider's "-xxxxxxxx" random suffix
    return slug[:54].rstrip("-") or "flywheel-step"


class MlStepPodOperator(KubernetesPodOperator):
    """``ml-tasks <step> <argv...>`` in a pod; returns the CLI's JSON summary (XCom) like the local runner.

    ``arguments`` is ``[step, *argv]``: the local runner's argv, same templates, and elements that render
    to ``""`` are dropped (optional flags). With Asset outlets, each event's extra is built from the
    summary exactly as locally (:func:`_lib.events.step_event_extra`).
    """

    template_fields_renderers: ClassVar[dict[str, str]] = {
        **KubernetesPodOperator.template_fields_renderers,
        "arguments": "py",
    }
    ui_color = "#d9e8f5"

    def __init__(self, *, step: str, profile: Profile = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.profile = profile

    def _do_render_template_fields(
        self, parent: Any, template_fields: Any, context: Any, jinja_env: Any, seen_oids: set[int]
    ) -> None:
        # Hooked here, not in render_template_fields: a mapped task is rendered through this method of
        # the unmapped operator only (as the provider does for env_vars); both paths pass parent=self.
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
        if parent is self:
            self.arguments = [str(a) for a in self.arguments if str(a) != ""]

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        """The provider's pod, named ``<dag_id>-<task_id>-<random>`` (deterministic prefix)."""
        if not self.name:
            self.name = pod_name_prefix(self.dag_id, self.task_id)
        pod: k8s.V1Pod = super().build_pod_request_obj(context, dry_run=dry_run)
        return pod

    def execute(self, context: Any) -> Any:
        result = super().execute(context)
        if not self.deferrable:
            self._emit_events(result, context)
        return result

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        result = super().trigger_reentry(context, event)
        self._emit_events(result, context)
        return result

    def _emit_events(self, result: Any, context: Any) -> None:
        if not self.outlets:
            return
        if not isinstance(result, Mapping):
            # consumers plan their work from the event's interval: an event without it is worse than none
            raise AirflowException(
                f"ml-tasks {self.step}: the pod returned no JSON summary in {XCOM_FILE} ({result!r}), so"
                " the Asset event would not say which data changed"
            )
        attach_event_extra(self.outlets, step_event_extra(self.step, result, context), context)


@functools.cache
def _warn_withheld(names: tuple[str, ...]) -> None:
    # once per parse, not once per step
    if names:
        log.warning(
            "kubernetes runner: %s not passed to pods (secret-looking); pods get secrets from %sENV_SECRET",
            ", ".join(names),
            ENV_PREFIX,
        )


def _with_step(step: str) -> Any:
    def prepend_step(argv: Sequence[str]) -> list[str]:
        return [step, *argv]

    return prepend_step


def pod_step(
    step: str,
    argv: Sequence[Arg],
    *,
    expand_argv: XComArg | None,
    profile: Profile,
    task_id: str,
    settings: KubeSettings | None = None,
    **kwargs: Any,
) -> MlStepPodOperator | MappedOperator:
    """The task :func:`_lib.steps.ml_step` builds on the Kubernetes runner.

    Args:
        step: CLI subcommand.
        argv: arguments after it (Jinja templates; "" elements dropped after rendering).
        expand_argv: an upstream output that is a LIST of argv lists: one pod per argv (mapped).
        profile: ``cpu`` or ``gpu``.
        task_id: the task id.
        settings: the runner's settings (default: :meth:`KubeSettings.from_env`, read now).
        **kwargs: BaseOperator arguments (outlets, retries, doc_md, ...).
    """
    settings = settings or KubeSettings.from_env()
    pod_kwargs = settings.pod_kwargs(step, profile)
    clash = sorted(set(pod_kwargs) & set(kwargs))
    if clash:
        raise TypeError(f"step {step!r}: {clash} are set by the kubernetes runner (_lib.kube), not by DAGs")
    _warn_withheld(settings.withheld_env)
    if expand_argv is not None:
        mapped: MappedOperator = MlStepPodOperator.partial(
            task_id=task_id,
            step=step,
            profile=profile,
            map_index_template="{{ task.arguments[1:] | join(' ') }}",
            **pod_kwargs,
            **kwargs,
        ).expand(arguments=expand_argv.map(_with_step(step)))
        return mapped
    return MlStepPodOperator(
        task_id=task_id, step=step, profile=profile, arguments=[step, *argv], **pod_kwargs, **kwargs
    )
