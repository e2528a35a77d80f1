"""The Kubernetes runner (``FLYWHEEL_RUNNER=kubernetes``): pods built by the real KubernetesPodOperator.

There is no cluster here, so the pods are built, not run: operators come from the real ``ml_step(...)``
(and from the repo's DAG files), templates are rendered for a DAG run the way the worker renders them
(a ``RuntimeTaskInstance`` made with ``model_construct`` as ``task_runner.startup`` makes it, then
``get_template_context()`` and ``render_templates()``), the provider's own ``build_pod_request_obj(context)``
builds the pod against a dummy kubeconfig, the kubernetes client serializes it to a manifest, and
``kubernetes-validate --strict`` checks it for the target Kubernetes versions. Only upstream XCom values
are stand-ins (the XCom store lives in the API server).
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest

from tests.dags.conftest import DAG_FILES, DAGS, run_python

IMAGE = "ghcr.io/acme/flywheel-ml-tasks:1.4.0"
DATA_ROOT = "/data/flywheel"
#: oldest supported, a common production version, and the newest schema kubernetes-validate ships
TARGET_VERSIONS = ("1.31", "1.33", "latest")
#: the upstream output a mapped step expands over (two intervals: two pods)
PLAN = [["--start", "2024-01-02", "--end", "2024-01-03"], ["--start", "2024-01-03", "--end", "2024-01-05"]]

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: nobody
  user: {token: not-a-token}
contexts:
- name: nowhere
  context: {cluster: nowhere, user: nobody, namespace: elsewhere}
current-context: nowhere
"""


def kube_env(kubeconfig: Path) -> dict[str, str]:
    """A production-like runner environment (PVC data root, MLflow server, a Secret for credentials)."""
    return {
        "FLYWHEEL_RUNNER": "kubernetes",
        "FLYWHEEL_K8S_IMAGE": IMAGE,
        "FLYWHEEL_K8S_CONFIG_FILE": str(kubeconfig),
        "FLYWHEEL_K8S_SERVICE_ACCOUNT": "flywheel-steps",
        "FLYWHEEL_K8S_IMAGE_PULL_SECRETS": "ghcr-pull, mirror-pull",
        "FLYWHEEL_K8S_DATA_PVC": "flywheel-data",
        "FLYWHEEL_K8S_ENV_SECRET": "flywheel-step-env",
        "FLYWHEEL_K8S_STARTUP_TIMEOUT_SECONDS": "480",
        "FLYWHEEL_K8S_ON_FINISH": "delete_succeeded_pod",
        "FLYWHEEL_DATA_ROOT": DATA_ROOT,
        "FLYWHEEL_FEAST_ENV": "production",
        "FLYWHEEL_CODE_VERSION": "1.4.0+g1234abc",
        "MLFLOW_TRACKING_URI": "http://mlflow.flywheel.svc:5000",
        # secrets in the scheduler's environment must never be copied into a pod spec
        "FLYWHEEL_POSTGRES_URI": "postgresql://user:hunter2@db/taxi",
        "FLYWHEEL_CHICAGO_APP_TOKEN": "t0ken",
    }


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(KUBECONFIG)
    return path


@pytest.fixture(scope="module")
def env(kubeconfig: Path) -> Iterator[dict[str, str]]:
    """The kubernetes runner's environment for the whole module (DAGs read it at parse time)."""
    values = kube_env(kubeconfig)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in values.items():
            mp.setenv(name, value)
        yield values


@pytest.fixture(scope="module")
def kube() -> Any:
    from _lib import kube

    return kube


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
def demo(env: dict[str, str]) -> dict[str, Any]:
    """The demo DAG built with each runner (same DAG code, only FLYWHEEL_RUNNER differs)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FLYWHEEL_RUNNER")
        local = build_demo_dag()
    return {"local": local, "kubernetes": build_demo_dag()}


# -- the pod of a gpu step -----------------------------------------------------------------------------------
def test_gpu_pod_manifest_is_valid_and_complete(demo: dict[str, Any], env: dict[str, str]) -> None:
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
    assert pod_env["MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"]
    assert pod_env["FLYWHEEL_XCOM_FILE"] == "/airflow/xcom/return.json"
    assert pod_env["FLYWHEEL_FEAST_ENV"] == "production"
    assert pod_env["FLYWHEEL_CODE_VERSION"] == env["FLYWHEEL_CODE_VERSION"]
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


# -- the repo's DAG files under the kubernetes runner ------------------------------------------------------
@pytest.fixture(scope="module")
def bags(env: dict[str, str]) -> dict[str, Any]:
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


# -- settings: clear errors at parse time -------------------------------------------------------------------
def test_settings_defaults_and_overrides(kube: Any, kubeconfig: Path) -> None:
    env = kube_env(kubeconfig)
    settings = kube.KubeSettings.from_env(env)
    assert settings.namespace == "flywheel" and settings.on_finish_action == "delete_succeeded_pod"
    assert settings.withheld_env == ("FLYWHEEL_CHICAGO_APP_TOKEN", "FLYWHEEL_POSTGRES_URI")
    assert settings.profiles["gpu"].limits == {"memory": "24Gi", "nvidia.com/gpu": "1"}
    custom = kube.KubeSettings.from_env(
        {
            **env,
            "FLYWHEEL_DATA_ROOT": "s3://bucket/flywheel",
            "FLYWHEEL_K8S_DATA_PVC": "",
            "FLYWHEEL_K8S_NAMESPACE": "ml",
            "FLYWHEEL_K8S_GPU_NODE_SELECTOR": '{"cloud.google.com/gke-accelerator": "nvidia-l4"}',
            "FLYWHEEL_K8S_GPU_LIMITS": '{"memory": "40Gi"}',
            "FLYWHEEL_K8S_GPU_COUNT": "2",
            "FLYWHEEL_K8S_GPU_TOLERATIONS": '[{"key": "gpu", "operator": "Equal", "value": "l4",'
            ' "effect": "NoSchedule", "tolerationSeconds": 5}]',
            "FLYWHEEL_K8S_RUN_AS_USER": "2000",
            "FLYWHEEL_K8S_EXTRA_ENV": '{"FLYWHEEL_TRAIN_DEVICE": "cuda", "NCCL_DEBUG": "WARN"}',
            "FLYWHEEL_K8S_GPU_PRIORITY_CLASS": "flywheel-gpu",
            "FLYWHEEL_K8S_GPU_IMAGE": "ghcr.io/acme/flywheel-ml-tasks:1.4.0-cu128",
        }
    )
    gpu = custom.profiles["gpu"]
    assert gpu.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert gpu.limits == {"memory": "40Gi", "nvidia.com/gpu": "2"}  # the GPU survives a LIMITS override
    assert gpu.k8s_tolerations()[0].toleration_seconds == 5
    kwargs = custom.pod_kwargs("train", "gpu")
    assert kwargs["namespace"] == "ml"
    assert kwargs["priority_class_name"] == "flywheel-gpu"
    assert kwargs["image"] == "ghcr.io/acme/flywheel-ml-tasks:1.4.0-cu128"  # the CUDA build
    cpu = custom.pod_kwargs("transform", "cpu")
    assert cpu["priority_class_name"] is None and cpu["image"] == IMAGE
    assert settings.pod_kwargs("train", "gpu")["priority_class_name"] is None  # unset: cluster default
    assert [v.name for v in kwargs["volumes"]] == ["tmp", "dshm"]  # object store: no data volume
    assert (
        kwargs["env_vars"]["NCCL_DEBUG"] == "WARN" and kwargs["env_vars"]["FLYWHEEL_TRAIN_DEVICE"] == "cuda"
    )
    assert kwargs["security_context"].run_as_user == 2000 and kwargs["security_context"].fs_group == 10001


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"FLYWHEEL_K8S_IMAGE": ""}, "needs FLYWHEEL_K8S_IMAGE"),
        ({"FLYWHEEL_K8S_IMAGE": "ghcr.io/acme/flywheel-ml-tasks"}, "has no tag or digest"),
        ({"FLYWHEEL_K8S_GPU_IMAGE": "ghcr.io/acme/flywheel-ml-tasks"}, "GPU_IMAGE='ghcr.io/acme/"),
        ({"FLYWHEEL_DATA_ROOT": ""}, "FLYWHEEL_DATA_ROOT is not set"),
        ({"FLYWHEEL_K8S_DATA_PVC": ""}, "is a local path but FLYWHEEL_K8S_DATA_PVC is not set"),
        ({"FLYWHEEL_DATA_ROOT": "data/flywheel"}, "must be absolute"),
        ({"FLYWHEEL_DATA_ROOT": "s3://bucket/x"}, "is an object-store URI"),
        ({"FLYWHEEL_K8S_ON_FINISH": "delete"}, "FLYWHEEL_K8S_ON_FINISH='delete' is not one of"),
        (
            {"FLYWHEEL_K8S_GPU_NODE_SELECTOR": "{gpu: yes}"},
            "FLYWHEEL_K8S_GPU_NODE_SELECTOR is not valid JSON",
        ),
        ({"FLYWHEEL_K8S_GPU_TOLERATIONS": '{"key": "x"}'}, "GPU_TOLERATIONS must be a JSON list"),
        ({"FLYWHEEL_K8S_CPU_LIMITS": '{"nvidia.com/gpu": "1"}'}, "use the gpu profile"),
        ({"FLYWHEEL_K8S_STARTUP_TIMEOUT_SECONDS": "soon"}, "is not an integer"),
        ({"FLYWHEEL_K8S_RUN_AS_USER": "0"}, "FLYWHEEL_K8S_RUN_AS_USER=0 must be >= 1"),
        ({"FLYWHEEL_K8S_IN_CLUSTER": "maybe"}, "is not a boolean"),
        ({"FLYWHEEL_K8S_EXTRA_ENV": '{"AWS_SECRET_ACCESS_KEY": "x"}'}, "secret-looking"),
    ],
)
def test_settings_errors_name_the_variable(
    kube: Any, kubeconfig: Path, change: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        kube.KubeSettings.from_env({**kube_env(kubeconfig), **change})


def test_ml_step_refuses_at_parse_time_without_an_image(
    monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, env: dict[str, str]
) -> None:
    from _lib import ml_step
    from airflow.sdk import DAG

    monkeypatch.delenv("FLYWHEEL_K8S_IMAGE")
    needs_image = pytest.raises(ValueError, match="FLYWHEEL_RUNNER=kubernetes needs FLYWHEEL_K8S_IMAGE")
    with DAG("k8s_no_image", schedule=None, start_date=dt.datetime(2024, 1, 1)), needs_image:
        ml_step("train", ["--x"], profile="gpu")


def test_dag_kwargs_cannot_override_the_pod_settings(env: dict[str, str]) -> None:
    from _lib import ml_step
    from airflow.sdk import DAG

    clash = pytest.raises(TypeError, match=r"\['image'\] are set by the kubernetes runner")
    with DAG("k8s_clash", schedule=None, start_date=dt.datetime(2024, 1, 1)), clash:
        ml_step("train", [], image="busybox:1")


# -- parse cost: the provider only in the kubernetes branch ------------------------------------------------
# Airflow's provider discovery imports the provider's package metadata (get_provider_info, exceptions) on
# its own: what matters is what parsing the DAG files adds (the operator module and the kubernetes client).
IMPORT_PROBE = """
import json, sys
from pathlib import Path
import airflow.sdk
from airflow.dag_processing.dagbag import BundleDagBag
before = set(sys.modules)
dags = Path({dags!r})
bag = BundleDagBag(dag_folder=str(dags), bundle_path=dags)
new = set(sys.modules) - before
print(json.dumps({{
    "dags": sorted(bag.dags), "errors": sorted(bag.import_errors),
    "provider": sorted(m for m in new if m.startswith("airflow.providers.cncf.kubernetes")),
    "client": sorted(m for m in new if m.split(".")[0] == "kubernetes")[:3],
    "kube_helper": "_lib.kube" in sys.modules,
}}))
"""


def test_local_runner_never_imports_the_provider(kubeconfig: Path) -> None:
    probe = IMPORT_PROBE.format(dags=str(DAGS))
    local = run_python(probe, env={"FLYWHEEL_RUNNER": "local"})
    assert local["errors"] == [] and local["dags"] == sorted(p.stem for p in DAG_FILES)
    assert (local["provider"], local["client"], local["kube_helper"]) == ([], [], False)
    # the probe sees the import when it happens: the kubernetes runner does import it
    kubernetes = run_python(probe, env=kube_env(kubeconfig))
    assert kubernetes["errors"] == [] and kubernetes["dags"] == local["dags"]
    assert "airflow.providers.cncf.kubernetes.operators.pod" in kubernetes["provider"]
    assert kubernetes["client"] and kubernetes["kube_helper"] is True
