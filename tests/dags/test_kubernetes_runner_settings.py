"""The kubernetes runner's settings: defaults, overrides, parse-time errors; the local runner's imports."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest

from tests.dags._kube_env import IMAGE, kube_env
from tests.dags.conftest import DAG_FILES, DAGS, run_python


@pytest.fixture(scope="module")
def kube() -> Any:
    from _lib import kube

    return kube


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
    monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, kube_runner_env: dict[str, str]
) -> None:
    from _lib import ml_step
    from airflow.sdk import DAG

    monkeypatch.delenv("FLYWHEEL_K8S_IMAGE")
    needs_image = pytest.raises(ValueError, match="FLYWHEEL_RUNNER=kubernetes needs FLYWHEEL_K8S_IMAGE")
    with DAG("k8s_no_image", schedule=None, start_date=dt.datetime(2024, 1, 1)), needs_image:
        ml_step("train", ["--x"], profile="gpu")


def test_dag_kwargs_cannot_override_the_pod_settings(kube_runner_env: dict[str, str]) -> None:
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
