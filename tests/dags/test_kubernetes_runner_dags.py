"""The repo's DAG files under the kubernetes runner: the same argv in valid pods, serialized round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.dags._kubernetes_runner import base, local_argv, pod_manifest, validate
from tests.dags.conftest import DAG_FILES, DAGS


# -- the repo's DAG files under the kubernetes runner ------------------------------------------------------
@pytest.fixture(scope="module")
def bags(kube_runner_env: dict[str, str]) -> dict[str, Any]:
    """Every DAG file parsed with each runner, as the dag-processor parses them."""
    from airflow.dag_processing.dagbag import BundleDagBag

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FLYWHEEL_RUNNER")
        local = BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)
    kubernetes = BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)
    assert local.import_errors == {} and kubernetes.import_errors == {}, (
        local.import_errors,
        kubernetes.import_errors,
    )
    return {"local": local, "kubernetes": kubernetes}


def operator_class(task: Any) -> str:
    return str(task.operator_class.__name__ if task.is_mapped else type(task).__name__)


def _step_tasks(dag: Any) -> list[Any]:
    return [t for t in dag.tasks if operator_class(t) in {"MlStepOperator", "MlStepPodOperator"}]


def profile_of(task: Any) -> str:
    return str(task.partial_kwargs["profile"] if task.is_mapped else task.profile)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_repo_dags_run_the_same_argv_in_valid_pods(bags: dict[str, Any], path: Path) -> None:
    local, kubernetes = bags["local"].dags[path.stem], bags["kubernetes"].dags[path.stem]
    steps = _step_tasks(kubernetes)
    assert steps, f"{path.name}: no ml-tasks steps"
    assert sorted(t.task_id for t in steps) == sorted(t.task_id for t in _step_tasks(local))
    for task in steps:
        for map_index in (0, 1) if task.is_mapped else (-1,):
            _, manifest = pod_manifest(kubernetes, task, map_index=map_index)
            validate(manifest)
            argv = local_argv(local, local.get_task(task.task_id), map_index=map_index)
            assert base(manifest)["command"] + base(manifest)["args"] == ["ml-tasks", *argv], task.task_id
            profile = manifest["metadata"]["labels"]["profile"]
            limits = base(manifest)["resources"]["limits"]
            assert ("nvidia.com/gpu" in limits) == (profile == "gpu"), task.task_id
            gpu_placement = {
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
            }
            placement = {k: manifest["spec"].get(k) or None for k in gpu_placement}
            assert placement == (gpu_placement if profile == "gpu" else dict.fromkeys(gpu_placement)), (
                task.task_id
            )
            assert manifest["spec"]["securityContext"]["runAsNonRoot"] is True
    # the training DAG asks for a GPU where it trains, and only there
    if path.stem == "taxi_training":
        gpu = sorted(t.task_id for t in steps if profile_of(t) == "gpu")
        assert gpu == ["train"]


def test_serialized_dags_keep_the_pod_settings(bags: dict[str, Any]) -> None:
    """The scheduler stores DAGs serialized: the pod operators and the mapped step survive a round trip."""
    from airflow.serialization.serialized_objects import DagSerialization

    for dag_id, dag in bags["kubernetes"].dags.items():
        restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        for task in _step_tasks(dag):
            again = restored.get_task(task.task_id)
            assert again.operator_name == "MlStepPodOperator", (dag_id, task.task_id)
