"""The Kubernetes runner (``FLYWHEEL_RUNNER=kubernetes``): pods built by the real KubernetesPodOperator.

There is no cluster here, so the pods are built, not run: operators come from the real ``ml_step(...)``
(the repo's DAG files: test_kubernetes_runner_dags.py); templates are rendered for a DAG run as the worker
renders them (a ``RuntimeTaskInstance`` made with ``model_construct`` as ``task_runner.startup`` makes it,
then ``get_template_context()`` and ``render_templates()``: _kubernetes_runner.py), the provider's own
``build_pod_request_obj(context)`` builds the pod against a dummy kubeconfig, the kubernetes client
serializes it to a manifest, and ``kubernetes-validate --strict`` checks it for the target Kubernetes
versions. Only upstream XCom values are stand-ins (the XCom store lives in the API server).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pendulum
import pytest

from tests.dags._kube_env import DATA_ROOT, IMAGE
from tests.dags._kubernetes_runner import PLAN, base, local_argv, pod_manifest, rendered, validate, versions


# -- a DAG of our own: every runner feature, independent of the repo's DAGs -------------------------------
def build_demo_dag() -> Any:
    """Train (gpu, optional flags), evaluate (cpu, Asset outlet) and a mapped step, via ``ml_step``."""
    from _lib import END, START, STEP_MACROS, ml_step, opt, switch
    from airflow.sdk import DAG, Asset, Param, task

    with DAG(
        "flywheel_k8s_demo",
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="America/Chicago"),
        user_defined_macros=STEP_MACROS,
        params={
            "trials": Param(None, type=["null", "integer"]),
            "force": Param(False, type="boolean"),
            "reason": Param(None, type=["null", "string"]),
        },
    ) as dag:

        @task(task_id="plan")
        def plan() -> list[list[str]]:
            return PLAN

        intervals = plan()
        train = ml_step(
            "train",
            [
                "--training-set", "{{ ti.xcom_pull(task_ids='training_set')['uri'] }}",
                "--start", START, "--end", END,
                opt("--trials", "params.trials"),
                switch("--force", "params.force"),
                opt("--force-reason", "params.reason"),
                "--dag-run-id", "{{ run_id }}",
                "--task-id", "{{ task.task_id }}",
            ],
            profile="gpu",
        )  # fmt: skip
        evaluate = ml_step(
            "evaluate", ["--start", START, "--end", END], outlets=[Asset("flywheel-k8s-demo", uri="x://demo")]
        )
        build = ml_step("build-features", expand_argv=intervals)
        train >> evaluate >> build
    return dag


@pytest.fixture(scope="module")
def demo(kube_runner_env: dict[str, str]) -> dict[str, Any]:
    """The demo DAG built with each runner (same DAG code, only FLYWHEEL_RUNNER differs)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FLYWHEEL_RUNNER")
        local = build_demo_dag()
    return {"local": local, "kubernetes": build_demo_dag()}


# -- the pod of a gpu step -----------------------------------------------------------------------------------
def test_gpu_pod_manifest_is_valid_and_complete(
    demo: dict[str, Any], kube_runner_env: dict[str, str]
) -> None:
    dag = demo["kubernetes"]
    op, manifest = pod_manifest(dag, dag.get_task("train"))
    validate(manifest)
    spec = manifest["spec"]
    container = base(manifest)

    # the same command line as the local runner, in the pinned image
    assert container["image"] == IMAGE and container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["ml-tasks"]
    assert container["args"] == local_argv(demo["local"], demo["local"].get_task("train"))
    assert container["args"] == [
        "train", "--training-set", "xcom-training_set-uri",
        "--start", "2024-01-07T06:00:00+00:00", "--end", "2024-01-08T06:00:00+00:00",
        "--dag-run-id", "scheduled__2024-01-08T06:00:00+00:00", "--task-id", "train",
    ]  # fmt: skip

    # gpu profile: the GPU limit, its toleration and node selector, memory limit, no CPU limit
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "24Gi"},
        "limits": {"memory": "24Gi", "nvidia.com/gpu": "1"},
    }
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}

    # volumes: XCom (provider), data PVC at the data root, writable /tmp, /dev/shm in memory
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["flywheel-data"]["persistentVolumeClaim"] == {"claimName": "flywheel-data"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert volumes["tmp"]["emptyDir"] == {} and volumes["xcom"]["emptyDir"] == {}
    assert {m["mountPath"]: m["name"] for m in container["volumeMounts"]} == {
        "/airflow/xcom": "xcom",
        DATA_ROOT: "flywheel-data",
        "/tmp": "tmp",
        "/dev/shm": "dshm",
    }

    # env: settings the CLI reads, the XCom file; secrets only through envFrom
    pod_env = {e["name"]: e["value"] for e in container["env"]}
    assert pod_env["FLYWHEEL_DATA_ROOT"] == DATA_ROOT
    assert pod_env["MLFLOW_TRACKING_URI"] == kube_runner_env["MLFLOW_TRACKING_URI"]
    assert pod_env["FLYWHEEL_XCOM_FILE"] == "/airflow/xcom/return.json"
    assert pod_env["FLYWHEEL_FEAST_ENV"] == "production"
    assert pod_env["FLYWHEEL_CODE_VERSION"] == kube_runner_env["FLYWHEEL_CODE_VERSION"]
    assert pod_env["HOME"] == "/tmp"
    assert not {"FLYWHEEL_RUNNER", "FLYWHEEL_POSTGRES_URI", "FLYWHEEL_CHICAGO_APP_TOKEN"} & set(pod_env)
    assert not [name for name in pod_env if name.startswith("FLYWHEEL_K8S_")]
    assert "hunter2" not in repr(manifest) and "t0ken" not in repr(manifest)
    assert container["envFrom"] == [{"secretRef": {"name": "flywheel-step-env"}}]

    # non-root, restricted: pod and every container (the XCom sidecar too)
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert [c["name"] for c in spec["containers"]] == ["base", "airflow-xcom-sidecar"]
    for each in spec["containers"]:
        security = each["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["readOnlyRootFilesystem"] is True
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001

    # identity, placement and pod behaviour
    meta = manifest["metadata"]
    assert re.fullmatch(r"flywheel-k8s-demo-train-[a-z0-9]{8}", meta["name"]), meta["name"]
    assert meta["namespace"] == "flywheel"  # our setting, not the kubeconfig context's namespace
    assert {k: meta["labels"][k] for k in ("app", "step", "profile", "dag_id", "task_id", "try_number")} == {
        "app": "flywheel",
        "step": "train",
        "profile": "gpu",
        "dag_id": "flywheel_k8s_demo",
        "task_id": "train",
        "try_number": "1",
    }
    assert spec["serviceAccountName"] == "flywheel-steps"
    assert spec["automountServiceAccountToken"] is False
    assert spec["imagePullSecrets"] == [{"name": "ghcr-pull"}, {"name": "mirror-pull"}]
    assert spec["restartPolicy"] == "Never"
    assert (op.reattach_on_restart, op.durable, op.do_xcom_push, op.get_logs) == (True, True, True, True)
    assert (op.startup_timeout_seconds, op.schedule_timeout_seconds) == (480, 900)
    assert op.on_finish_action.value == "delete_succeeded_pod"
    assert op.deferrable is False


def test_cpu_pod_has_no_gpu(demo: dict[str, Any]) -> None:
    dag = demo["kubernetes"]
    _, manifest = pod_manifest(dag, dag.get_task("evaluate"))
    validate(manifest)
    spec, container = manifest["spec"], base(manifest)
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
    assert "nvidia.com/gpu" not in repr(manifest)
    assert not spec.get("tolerations") and not spec.get("nodeSelector")
    assert "dshm" not in {v["name"] for v in spec["volumes"]}
    assert manifest["metadata"]["labels"]["profile"] == "cpu"
    assert container["args"] == local_argv(demo["local"], demo["local"].get_task("evaluate"))


@pytest.mark.parametrize(
    ("conf", "optional"),
    [
        ({}, []),
        (
            {"trials": 3, "force": True, "reason": "incident 42"},
            ["--trials=3", "--force", "--force-reason=incident 42"],
        ),
        ({"trials": 0, "force": False, "reason": ""}, ["--trials=0"]),
    ],
    ids=["unset", "set", "falsy"],
)
def test_optional_elements_drop_exactly_as_locally(
    demo: dict[str, Any], conf: dict[str, Any], optional: list[str]
) -> None:
    dag, local = demo["kubernetes"], demo["local"]
    op, manifest = pod_manifest(dag, dag.get_task("train"), conf=conf)
    expected = local_argv(local, local.get_task("train"), conf=conf)
    assert base(manifest)["args"] == expected == op.arguments
    assert [a for a in expected if a.startswith("--trials") or a.startswith("--force")] == optional
    assert "" not in base(manifest)["args"]


def test_mapped_step_runs_one_pod_per_argv(demo: dict[str, Any]) -> None:
    dag, local = demo["kubernetes"], demo["local"]
    mapped = dag.get_task("build-features")
    assert type(mapped).__name__ == "MappedOperator"
    assert mapped.partial_kwargs["map_index_template"] == "{{ task.arguments[1:] | join(' ') }}"
    names = []
    for index, argv in enumerate(PLAN):
        op, manifest = pod_manifest(dag, mapped, map_index=index)
        validate(manifest)
        assert base(manifest)["command"] == ["ml-tasks"]
        assert base(manifest)["args"] == ["build-features", *argv] == op.arguments
        assert base(manifest)["args"] == local_argv(local, local.get_task("build-features"), map_index=index)
        assert manifest["metadata"]["labels"]["map_index"] == str(index)
        # the UI labels each instance by its argv, as the local runner does
        label = dag.get_template_env().from_string(mapped.partial_kwargs["map_index_template"])
        assert label.render(task=op) == " ".join(argv)
        assert manifest["metadata"]["labels"]["step"] == "build-features"
        names.append(manifest["metadata"]["name"])
    assert all(re.fullmatch(r"flywheel-k8s-demo-build-features-[a-z0-9]{8}", n) for n in names), names
    assert len(set(names)) == 2


def test_asset_event_extra_comes_from_the_pod_summary(demo: dict[str, Any]) -> None:
    from _lib import MlStepOperator
    from airflow.sdk.exceptions import AirflowException

    dag, local = demo["kubernetes"], demo["local"]
    op, context = rendered(dag, dag.get_task("evaluate"))
    summary = {
        "step": "evaluate",
        "interval": {"start": "2024-01-07", "end": "2024-01-08"},
        "partitions": [{"dt": "2024-01-07", "uri": "s3://b/p", "rows": 12, "bytes": 99}],
    }
    op._emit_events(summary, context)
    (asset,) = op.outlets
    extra = dict(context["outlet_events"][asset].extra)
    local_op, local_context = rendered(local, local.get_task("evaluate"))
    assert isinstance(local_op, MlStepOperator)
    assert extra == local_op.event_extra(summary, local_context)
    assert extra == {
        "step": "evaluate",
        "interval": {"start": "2024-01-07", "end": "2024-01-08"},
        "partitions": [{"dt": "2024-01-07", "uri": "s3://b/p", "rows": 12}],
        "run_id": "scheduled__2024-01-08T06:00:00+00:00",
    }
    with pytest.raises(AirflowException, match="no JSON summary"):
        op._emit_events(None, context)


def test_strict_validation_catches_a_bad_manifest(demo: dict[str, Any]) -> None:
    """The validator is not a rubber stamp: an unknown field and a wrong type both fail."""
    import kubernetes_validate

    dag = demo["kubernetes"]
    _, manifest = pod_manifest(dag, dag.get_task("train"))
    unknown = copy.deepcopy(manifest)
    unknown["spec"]["containers"][0]["gpus"] = 1
    wrong_type = copy.deepcopy(manifest)
    wrong_type["spec"]["securityContext"]["runAsUser"] = "10001"
    for bad in (unknown, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, versions()[-1], strict=True)
