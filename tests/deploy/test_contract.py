"""One contract from both sides: the gpu training pod dags/_lib builds vs the objects helm/flywheel renders.

The DAG side: ``dags/taxi_training.py`` parsed with the chart's ConfigMap as its environment (what the
official chart's ``extraEnvFrom`` gives the Airflow pods), its ``train`` task (gpu profile) rendered and
built into a Pod by the provider's ``build_pod_request_obj``. The only overrides are how to reach a
cluster: a dummy kubeconfig instead of in-cluster config (there is no cluster here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.dags._kube_env import KUBECONFIG
from tests.dags._kubernetes_runner import pod_manifest
from tests.dags.conftest import DAGS
from tests.deploy._charts import VARIANTS, one, rendered, values

ML_TASKS_UID = 10001  # docker/ml-tasks/Dockerfile's USER (tests/deploy/test_images.py checks the image)


@pytest.fixture(scope="module", params=list(VARIANTS))
def sides(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The chart's documents and values, and the training pod the DAG builds from the chart's ConfigMap."""
    from airflow.dag_processing.dagbag import BundleDagBag

    variant = str(request.param)
    docs = rendered(variant)
    config: dict[str, str] = one(docs, "ConfigMap")["data"]
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(KUBECONFIG)
    reach = {"FLYWHEEL_K8S_IN_CLUSTER": "false", "FLYWHEEL_K8S_CONFIG_FILE": str(kubeconfig)}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**config, **reach}.items():
            mp.setenv(name, value)
        path = DAGS / "taxi_training.py"
        bag = BundleDagBag(dag_folder=str(path), bundle_path=DAGS)
        assert bag.import_errors == {}, bag.import_errors
        dag = bag.dags["taxi_training"]
        train = dag.get_task("train")
        assert train.profile == "gpu"
        _, pod = pod_manifest(dag, train)
    return {"variant": variant, "docs": docs, "values": values(variant), "config": config, "pod": pod}


def test_training_pod_validates(sides: dict[str, Any]) -> None:
    for version in ("1.31", "1.33"):
        kubernetes_validate.validate(sides["pod"], version, strict=True)


def test_identity_and_namespace(sides: dict[str, Any]) -> None:
    docs, spec = sides["docs"], sides["pod"]["spec"]
    account = one(docs, "ServiceAccount")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert sides["pod"]["metadata"]["namespace"] == account["metadata"]["namespace"]
    assert sides["pod"]["metadata"]["namespace"] == one(docs, "Role")["metadata"]["namespace"]
    assert spec["automountServiceAccountToken"] is False


def test_gpu_scheduling(sides: dict[str, Any]) -> None:
    spec, chart = sides["pod"]["spec"], sides["values"]
    priority = one(sides["docs"], "PriorityClass")
    assert spec["priorityClassName"] == priority["metadata"]["name"]
    assert spec["nodeSelector"] == chart["gpu"]["nodeSelector"]
    assert spec["tolerations"] == chart["gpu"]["tolerations"]
    container = next(c for c in spec["containers"] if c["name"] == "base")
    limits = container["resources"]["limits"]
    assert limits == {**chart["steps"]["gpu"]["limits"], "nvidia.com/gpu": str(chart["gpu"]["count"])}
    assert container["resources"]["requests"] == chart["steps"]["gpu"]["requests"]
    image = chart["image"]
    assert container["image"] == f"{image['repository']}:{image['gpuTag'] or image['tag']}"


def test_storage_secret_and_settings(sides: dict[str, Any]) -> None:
    spec, config, docs = sides["pod"]["spec"], sides["config"], sides["docs"]
    container = next(c for c in spec["containers"] if c["name"] == "base")
    claims = {
        v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
    }
    pvcs = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    if config["FLYWHEEL_DATA_ROOT"].startswith("/"):
        assert claims == {config["FLYWHEEL_K8S_DATA_PVC"]} and claims <= pvcs
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert config["FLYWHEEL_DATA_ROOT"] in mounts
    else:  # object store: no volume, the URI and the Secret's credentials
        assert claims == set()
    # credentials: the Secret the chart's hook Job reads too, by reference only
    assert container["envFrom"] == [{"secretRef": {"name": config["FLYWHEEL_K8S_ENV_SECRET"]}}]
    hook = one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": config["FLYWHEEL_K8S_ENV_SECRET"]}} in hook["envFrom"]
    # every non-K8S FLYWHEEL_* key of the ConfigMap reaches the pod with the same value
    env = {e["name"]: e.get("value") for e in container["env"]}
    passed = {k: v for k, v in config.items() if not k.startswith(("FLYWHEEL_K8S_", "FLYWHEEL_RUNNER"))}
    assert {k: env.get(k) for k in passed} == passed
    assert not [k for k in env if k.startswith("FLYWHEEL_K8S_")]
    step_env = sides["values"]["settings"]["stepEnv"]
    assert {k: env.get(k) for k in step_env} == step_env
    assert bool(step_env) == (sides["variant"] == "production")


def test_security_matches_chart_and_image(sides: dict[str, Any]) -> None:
    spec, chart = sides["pod"]["spec"], sides["values"]["securityContext"]
    pod = spec["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (
        chart["runAsUser"], chart["runAsGroup"], chart["fsGroup"],
    )  # fmt: skip
    assert chart["runAsUser"] == ML_TASKS_UID
    hook = one(sides["docs"], "Job")["spec"]["template"]["spec"]
    assert hook["securityContext"]["runAsUser"] == pod["runAsUser"]
    assert hook["serviceAccountName"] == spec["serviceAccountName"]
    for container in spec["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # the NetworkPolicies select the step pods by the labels dags/_lib puts on them
    labels = sides["pod"]["metadata"]["labels"]
    deny = [p for p in sides["docs"] if p["kind"] == "NetworkPolicy" and p["spec"]["ingress"] == []]
    assert all(labels.get(k) == v for k, v in deny[0]["spec"]["podSelector"]["matchLabels"].items())


def test_kubeconfig_is_the_only_override(sides: dict[str, Any]) -> None:
    assert sides["config"]["FLYWHEEL_K8S_IN_CLUSTER"] == "true"  # in a cluster: in-cluster config
    assert Path(DAGS / "taxi_training.py").is_file()
