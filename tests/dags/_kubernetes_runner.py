"""Pods rendered as the worker renders them and built by the provider's ``build_pod_request_obj``.

A ``RuntimeTaskInstance`` made with ``model_construct`` (as ``task_runner.startup`` makes it), then
``get_template_context()`` and ``render_templates()``; upstream XCom values are stand-ins (the XCom store
lives in the API server). Manifests are checked with ``kubernetes-validate --strict``.
"""

from __future__ import annotations

import copy
import functools
import uuid
from typing import Any

import pendulum

from tests.dags.conftest import DAGS

#: oldest supported, a common production version, and the newest schema kubernetes-validate ships
TARGET_VERSIONS = ("1.31", "1.33", "latest")
#: the upstream output a mapped step expands over (two intervals: two pods)
PLAN = [["--start", "2024-01-02", "--end", "2024-01-03"], ["--start", "2024-01-03", "--end", "2024-01-05"]]


def versions() -> list[str]:
    import kubernetes_validate.utils

    return [kubernetes_validate.utils.latest_version() if v == "latest" else v for v in TARGET_VERSIONS]


# -- rendering and building, as a worker does --------------------------------------------------------------
class Pulled(dict[str, Any]):
    """An upstream task's JSON summary: known keys, else a recognisable placeholder."""

    def __init__(self, task_id: str, values: dict[str, Any] | None = None) -> None:
        super().__init__(values or {})
        self.task_id = task_id

    def __missing__(self, key: str) -> str:
        return f"xcom-{self.task_id}-{key}"


def expanded_upstreams(dag: Any) -> set[str]:
    """Tasks whose output a mapped step expands over (their XCom is a list of argv lists)."""
    upstreams: set[str] = set()
    for task in dag.tasks:
        if task.is_mapped:
            for value in task._get_specified_expand_input().value.values():
                upstreams.update(op.task_id for op, _ in value.iter_references())
    return upstreams


@functools.cache
def stand_in_ti_class() -> Any:
    """RuntimeTaskInstance whose ``xcom_pull`` answers from stand-ins instead of the API server."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    class StandInXComTI(RuntimeTaskInstance):
        def xcom_pull(self, task_ids: Any = None, *args: Any, **kwargs: Any) -> Any:
            assert isinstance(task_ids, str), f"stand-in XCom pulls one task, not {task_ids!r}"
            if task_ids in expanded_upstreams(self.task.dag):
                return copy.deepcopy(PLAN)
            key = kwargs.get("key", "return_value")
            # an XComArg argv element pulls one field of the upstream's summary (multiple_outputs)
            return Pulled(task_ids) if key == "return_value" else Pulled(task_ids)[key]

    return StandInXComTI


def make_ti(dag: Any, task: Any, *, conf: dict[str, Any] | None = None, map_index: int = -1) -> Any:
    """A RuntimeTaskInstance of ``task`` in a scheduled run of ``dag`` (2024-01-07, Chicago day)."""
    from airflow.dag_processing.bundles.local import LocalDagBundle
    from airflow.sdk.api.datamodels._generated import DagRun, DagRunState, DagRunType, TIRunContext

    # the API server sends UTC datetimes
    start = pendulum.datetime(2024, 1, 7, tz="America/Chicago").in_timezone("UTC")
    run = DagRun(
        dag_id=dag.dag_id,
        run_id="scheduled__2024-01-08T06:00:00+00:00",
        logical_date=start,
        data_interval_start=start,
        data_interval_end=start.add(days=1),
        run_after=start.add(days=1),
        start_date=start.add(days=1),
        end_date=None,
        run_type=DagRunType.SCHEDULED,
        state=DagRunState.RUNNING,
        conf=conf or {},
        consumed_asset_events=[],
        partition_key=None,
    )
    # built like task_runner.startup builds it (model_construct: the supervisor validated the fields)
    return stand_in_ti_class().model_construct(
        id=uuid.uuid4(),
        task_id=task.task_id,
        dag_id=dag.dag_id,
        run_id=run.run_id,
        try_number=1,
        dag_version_id=uuid.uuid4(),
        map_index=map_index,
        task=copy.deepcopy(task),
        bundle_instance=LocalDagBundle(name="dags", path=str(DAGS)),
        _ti_context_from_server=TIRunContext(dag_run=run, max_tries=2),
        max_tries=2,
        start_date=pendulum.now("UTC"),
    )


def rendered(dag: Any, task: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """The task rendered for the run (a mapped task becomes its unmapped instance) and its context."""
    ti = make_ti(dag, task, **kwargs)
    context = ti.get_template_context()
    ti.render_templates(context)
    return ti.task, context


def local_argv(dag: Any, task: Any, **kwargs: Any) -> list[str]:
    """The local runner's command line after ``ml-tasks``, rendered for the same run."""
    op, _ = rendered(dag, task, **kwargs)
    assert type(op).__name__ == "MlStepOperator"
    return list(op.command()[1:])


def pod_manifest(dag: Any, task: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """The rendered pod operator and its Pod manifest from the provider's ``build_pod_request_obj``."""
    from kubernetes.client import ApiClient

    op, context = rendered(dag, task, **kwargs)
    assert type(op).__name__ == "MlStepPodOperator"
    op.name = op._set_name(op.name)  # what execute() does before building the pod
    pod = op.build_pod_request_obj(context)
    manifest: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    return op, manifest


def validate(manifest: dict[str, Any]) -> list[str]:
    import kubernetes_validate

    return [kubernetes_validate.validate(manifest, version, strict=True) for version in versions()]


def base(manifest: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = manifest["spec"]["containers"][0]
    assert container["name"] == "base"
    return container
