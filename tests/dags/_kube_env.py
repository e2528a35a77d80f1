"""The kubernetes runner's test environment: a dummy kubeconfig and production-like FLYWHEEL_* settings."""

from __future__ import annotations

from pathlib import Path

IMAGE = "ghcr.io/acme/flywheel-ml-tasks:1.4.0"
DATA_ROOT = "/data/flywheel"


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
        "FLYWHEEL_K8S_IMAGE_PULL_SECRETS": "ghcr-pull, mirror-pull",  # pragma: allowlist secret
        "FLYWHEEL_K8S_DATA_PVC": "flywheel-data",
        "FLYWHEEL_K8S_ENV_SECRET": "flywheel-step-env",  # pragma: allowlist secret
        "FLYWHEEL_K8S_STARTUP_TIMEOUT_SECONDS": "480",
        "FLYWHEEL_K8S_ON_FINISH": "delete_succeeded_pod",
        "FLYWHEEL_DATA_ROOT": DATA_ROOT,
        "FLYWHEEL_FEAST_ENV": "production",
        "FLYWHEEL_CODE_VERSION": "1.4.0+g1234abc",
        "MLFLOW_TRACKING_URI": "http://mlflow.flywheel.svc:5000",
        # secrets in the scheduler's environment must never be copied into a pod spec
        "FLYWHEEL_POSTGRES_URI": "postgresql://user:hunter2@db/taxi",  # pragma: allowlist secret
        "FLYWHEEL_CHICAGO_APP_TOKEN": "t0ken",
    }
