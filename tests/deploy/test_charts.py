"""helm/flywheel checked offline: lint, render, schema validation, policy scan, and what the objects say.

Everything here runs without a cluster: helm lint/template, kubernetes-validate's bundled OpenAPI schemas
and checkov read files only. What only a cluster shows (scheduling, storage classes, network plugins
enforcing the policies) is listed in docs/deploy.md.
"""

from __future__ import annotations

import collections
import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy._charts import (
    AIRFLOW_VALUES,
    CHART,
    VARIANTS,
    checkov,
    helm,
    one,
    pod_specs,
    rendered,
    rendered_text,
    value_args,
    values,
)

K8S_VERSIONS = ("1.31", "1.33")
#: env var names that carry credentials: never a literal value, only a secretKeyRef
SECRET_ENV = re.compile(
    r"PASSWORD|SECRET|TOKEN|_KEY($|_)|CREDENTIAL|BACKEND_STORE_URI|CONNECTION|REGISTRY_URI|DSN"
)
#: what the step launchers may touch: their pods, the pods' logs and XCom (exec), events
LAUNCHER_RESOURCES = {"pods", "pods/log", "pods/exec", "events"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict(variant: str) -> None:
    done = helm("lint", "--strict", CHART, *value_args(variant))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_rendered_objects() -> None:
    counts = {v: collections.Counter(d["kind"] for d in rendered(v)) for v in VARIANTS}
    assert counts["default"] == {
        "ConfigMap": 1, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "PriorityClass": 1,
        "PersistentVolumeClaim": 2, "Deployment": 1, "StatefulSet": 1, "Service": 2, "Job": 1,
        "NetworkPolicy": 3,
    }  # fmt: skip
    # production: object store (no PVCs), external Redis (no StatefulSet, Service or its policy)
    assert counts["production"] == {
        "ConfigMap": 1, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "PriorityClass": 1,
        "Deployment": 1, "Service": 1, "Job": 1, "NetworkPolicy": 2,
    }  # fmt: skip
    for variant in VARIANTS:
        for doc in rendered(variant):
            if doc["kind"] != "PriorityClass":  # cluster-scoped
                assert doc["metadata"]["namespace"] == "flywheel", doc["metadata"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_mlflow_runs_without_its_job_runner(variant: str) -> None:
    """The MLflow server's job runner (GenAI scorer jobs: ~8 more processes, ~800 MiB) is off: the
    pipeline uses none of it, and it would eat most of the container's memory limit."""
    (deployment,) = [d for d in rendered(variant) if d["kind"] == "Deployment"]
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_document_validates_strictly(variant: str, version: str) -> None:
    docs = rendered(variant)
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    # the validator is not a rubber stamp: an unknown field fails under --strict
    broken = one(rendered(variant), "Deployment")
    broken["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_checkov_has_no_failed_check(tmp_path: Path) -> None:
    for variant in VARIANTS:
        (tmp_path / f"{variant}.yaml").write_text(rendered_text(variant))
    report = checkov(tmp_path)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and summary["failed"] == 0, failed
    assert summary["passed"] > 300 and summary["resource_count"] >= 25, summary
    skips = yaml.safe_load((CHART.parent / "checkov.yaml").read_text())["skip-check"]
    assert len(skips) <= 3, skips


@pytest.mark.parametrize("variant", VARIANTS)
def test_credentials_only_by_secret_reference(variant: str) -> None:
    docs = rendered(variant)
    assert not [d for d in docs if d["kind"] == "Secret"]  # the chart never carries a credential
    config = one(docs, "ConfigMap")["data"]
    # FLYWHEEL_K8S_ENV_SECRET / _IMAGE_PULL_SECRETS name Secrets; no other key or value is a credential
    assert not [k for k in config if SECRET_ENV.search(k) and not k.startswith("FLYWHEEL_K8S_")], config
    assert not [v for v in config.values() if re.search(r"://[^/@\s]+:[^/@\s]+@", v)], config
    checked = 0
    for where, spec in pod_specs(docs).items():
        for container in spec["containers"]:
            for env in container.get("env", []):
                if SECRET_ENV.search(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], (where, env)
                    checked += 1
            for source in container.get("envFrom", []):
                assert set(source) <= {"configMapRef", "secretRef"}, (where, source)
    assert checked >= 2  # MLflow's backend URI and Redis' password (default) / S3 keys (production)


@pytest.mark.parametrize("variant", VARIANTS)
def test_launcher_role_is_namespaced_and_minimal(variant: str) -> None:
    docs = rendered(variant)
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "flywheel"
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert resources == LAUNCHER_RESOURCES
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    verbs = {r: set(rule["verbs"]) for rule in role["rules"] for r in rule["resources"]}
    assert verbs["events"] == {"get", "list", "watch"} and verbs["pods/log"] == {"get", "list"}
    assert "*" not in set().union(*verbs.values())
    binding = one(docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}  # fmt: skip
    # the step pods' own account can do nothing and mounts no token
    account = one(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["name"] not in {s["name"] for s in binding["subjects"]}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_is_limited_probed_and_restricted(variant: str) -> None:
    specs = pod_specs(rendered(variant))
    assert len(specs) == (3 if variant == "default" else 2)
    for where, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 10000, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        for container in spec["containers"]:
            name = f"{where}/{container['name']}"
            limits, requests = container["resources"]["limits"], container["resources"]["requests"]
            assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests), name
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["runAsNonRoot"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
            if not where.startswith("Job/"):  # a run-to-completion hook has nothing to probe
                assert {"readinessProbe", "livenessProbe"} <= set(container), name
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, name  # the only writable path of a read-only root


def test_network_policies_cover_every_served_port() -> None:
    docs = rendered("default")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {"matchLabels": {"app": "flywheel"}}]
    assert len(deny) == 1 and deny[0]["spec"]["ingress"] == []
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        guarding = [p for p in policies if p["spec"]["podSelector"].get("matchLabels") == selector]
        assert len(guarding) == 1, service["metadata"]["name"]
        ports = {p["port"] for rule in guarding[0]["spec"]["ingress"] for p in rule["ports"]}
        assert ports == {p["port"] for p in service["spec"]["ports"]}


def test_airflow_values_agree_with_the_chart() -> None:
    airflow = yaml.safe_load(AIRFLOW_VALUES.read_text())
    ours = values("default")
    assert airflow["executor"] == "KubernetesExecutor" and airflow["allowPodLaunching"] is True
    assert (airflow["uid"], airflow["gid"]) == (50000, 0)
    assert airflow["postgresql"]["enabled"] is False and airflow["data"]["metadataSecretName"]
    env_from = yaml.safe_load(airflow["extraEnvFrom"])
    assert env_from == [{"configMapRef": {"name": ours["names"]["settingsConfigMap"]}}]
    launchers = {airflow[c]["serviceAccount"]["name"] for c in ("workers", "scheduler", "triggerer")}
    assert launchers == set(ours["airflow"]["launcherServiceAccounts"])
    pyproject = (CHART.parents[1] / "pyproject.toml").read_text()
    assert f'"apache-airflow=={airflow["airflowVersion"]}"' in pyproject
    assert not re.search(r"(?i)password|pass:|fernetKey:\s*\S", AIRFLOW_VALUES.read_text())


def test_official_chart_renders_with_our_values() -> None:
    chart = os.environ.get("FLYWHEEL_AIRFLOW_CHART")
    if not chart:
        pytest.skip(
            "the official apache-airflow chart cannot be fetched here: set FLYWHEEL_AIRFLOW_CHART=DIR"
            " (an unpacked chart) to render it with helm/airflow-values.yaml"
        )
    done = helm("template", "flywheel-airflow", chart, "--namespace", "flywheel", "-f", AIRFLOW_VALUES)
    assert done.returncode == 0, done.stderr
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(done.stdout) if d]
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    assert "flywheel-settings" in done.stdout and "KubernetesExecutor" in done.stdout
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert {"flywheel-airflow-worker", "flywheel-airflow-scheduler"} <= accounts
